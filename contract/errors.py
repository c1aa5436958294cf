"""Errors a user can cause: each becomes one line on stderr and exit status 2.

Bugs are not wrapped here; they keep their traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import traceback
from collections.abc import Callable

# Exit statuses of ``python -m trainer``: the local engine and the analysis read them too.
EXIT_FINISHED = 0  # finished, or stopped by SIGTERM (checkpoint saved)
EXIT_CRASHED = 1
USER_ERROR_EXIT = 2
EXIT_DIVERGED = 3
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: try again later (W&B requeues after mark_preempting)
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as a shell reports it
EXIT_CLOSED_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a tool whose reader has gone


class UserError(Exception):
    """Bad input: a config typo, an invalid sweep file, a missing data folder..."""


class ConfigError(UserError):
    """A config key whose value breaks a rule: names the key, the value and the rule."""

    def __init__(self, key: str, value: object, rule: str):
        self.key, self.value, self.rule = key, value, rule
        super().__init__(f"{key}={value!r}: {rule}")


# How long a command that has decided its exit status waits for W&B's service (wandb-core) to
# end. Its teardown can wait forever: wandb-core that missed the teardown message (seen after a
# request to a server that refused) waits for it until this process has gone, while this
# process waits for wandb-core to end. Past the deadline the service is stopped and the
# command ends with the status it had decided.
WANDB_TEARDOWN_S = 10.0
SERVICE_STOP_S = 2.0


def _wandb_service() -> object | None:
    """The wandb-core process this process started (a ``subprocess.Popen``), if any."""
    setup = sys.modules.get("wandb.sdk.wandb_setup")
    connection = getattr(getattr(setup, "_singleton", None), "_connection", None)
    return getattr(getattr(connection, "_proc", None), "_process", None)


def end_wandb(code: int, deadline_s: float = WANDB_TEARDOWN_S) -> bool:
    """Tear down W&B's service, if this process used one, within ``deadline_s``; past it,
    stop the service. True when it ended in time (wandb is never imported here)."""
    wandb = sys.modules.get("wandb")
    if wandb is None or not hasattr(wandb, "teardown"):
        return True
    service = _wandb_service()  # before teardown forgets it

    def teardown() -> None:
        # A service already gone (stopped with a cancelled job) leaves nothing to tear down:
        # its lost connection is no error of this command's.
        with contextlib.suppress(Exception):
            wandb.teardown(exit_code=code)

    ending = threading.Thread(target=teardown, daemon=True)
    ending.start()
    ending.join(deadline_s)
    if not ending.is_alive():
        return True
    if service is not None:
        service.terminate()
        try:
            service.wait(SERVICE_STOP_S)
        except Exception:  # still there: it holds this command's stdout and stderr open
            service.kill()
    return False


def _status(exc: SystemExit) -> int:
    return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)


def _closed_pipe() -> int:
    """Piped into `head`: end quietly, as a Unix tool does. What is still buffered for the
    closed pipe goes nowhere, so Python's own last flush cannot fail again."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_CLOSED_PIPE


def run_cli(main: Callable[[list[str] | None], int], prog: str) -> None:
    """Run ``main``; turn a UserError into one line on stderr and exit status 2. The command
    ends within a bounded time once its status is decided, whatever W&B's service does."""
    leaving: SystemExit | None = None
    try:
        code = main(None)
    except BrokenPipeError:
        code = _closed_pipe()
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        code = USER_ERROR_EXIT
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except SystemExit as exc:  # argparse's --help and usage errors
        leaving, code = exc, _status(exc)
    except Exception:  # a bug: its traceback, then the same bounded end
        traceback.print_exc()
        code = EXIT_CRASHED
    try:
        sys.stdout.flush()  # a reader that has gone shows here, not at interpreter exit
    except BrokenPipeError:
        leaving, code = None, _closed_pipe()
    try:
        ended = end_wandb(code)
    except KeyboardInterrupt:
        ended = False
    if not ended:
        # wandb's own exit hook would wait on the service again: leave without it.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)
    if leaving is not None:
        raise leaving
    sys.exit(code)
