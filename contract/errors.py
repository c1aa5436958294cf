"""Errors a user can cause: each becomes one line on stderr and exit status 2.

Bugs are not wrapped here; they keep their traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

# Exit statuses of ``python -m trainer``: the local engine and the analysis read them too.
EXIT_FINISHED = 0  # finished, or stopped by SIGTERM (checkpoint saved)
EXIT_CRASHED = 1
USER_ERROR_EXIT = 2
EXIT_DIVERGED = 3
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: try again later (W&B requeues after mark_preempting)
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as a shell reports it


class UserError(Exception):
    """Bad input: a config typo, an invalid sweep file, a missing data folder..."""


class ConfigError(UserError):
    """A config key whose value breaks a rule: names the key, the value and the rule."""

    def __init__(self, key: str, value: object, rule: str):
        self.key, self.value, self.rule = key, value, rule
        super().__init__(f"{key}={value!r}: {rule}")


def run_cli(main: Callable[[list[str] | None], int], prog: str) -> None:
    """Run ``main``; turn a UserError into one line on stderr and exit status 2."""
    try:
        code = main(None)
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        code = USER_ERROR_EXIT
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    sys.exit(code)
