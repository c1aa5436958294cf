"""Start trainer trials in milliseconds: fork them from a process that imported torch already.

A cold ``python -m trainer`` spends seconds importing torch, MONAI and wandb before its first
step. The agent starts this server once (``python -m sweeper.forkserver``, the same
interpreter the sweep's command names); it imports the trainer's heavy modules, never
touches CUDA, then forks one child per trial. Each child is still its own process: its own
environment (``WANDB_*``, ``CUDA_VISIBLE_DEVICES``), working folder and log file, and it
runs ``trainer.cli.main`` exactly as ``python -m trainer ARGS`` would. Signals go straight to
the child's pid; the server only reports its exit status, as ``Popen.returncode`` would
(negative for a signal).

Protocol on the server's stdin/stdout, one JSON object a line:
``{"argv", "env", "cwd", "log"}`` -> ``{"pid": N}``, later ``{"exit": code}``.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import importlib.util
import json
import os
import select
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

# Modules whose import is the cost a cold trial pays: the trainer's own (trainer.train imports
# torch, MONAI and wandb without initialising CUDA), then what a trial imports lazily, measured
# by diffing sys.modules around one run: the optimizer's first step pulls torch._dynamo
# (seconds), wandb.init pulls its launch and public-API modules. None of them touches CUDA.
PRELOAD = (
    "trainer.cli",
    "trainer.train",
    "torch._dynamo",
    "wandb.sdk.launch",
    "wandb.apis.public",
    "wandb.sdk.artifacts.artifact",
)
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Linux: SIGTERM this process when its parent dies (even by kill -9)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _child(request: dict) -> None:
    """In the forked child: become ``python -m trainer ARGV`` and never return."""
    code = 1
    try:
        die_with_parent()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        # Look like `python -m trainer` to wandb, which records the program from __main__.
        spec = importlib.util.find_spec("trainer.__main__")
        sys.modules["__main__"].__spec__ = spec
        sys.argv = [spec.origin, *request["argv"]]
        from contract.errors import run_cli
        from trainer.cli import main

        run_cli(main, "trainer")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _send(message: dict) -> None:
    os.write(1, (json.dumps(message) + "\n").encode())


def serve() -> None:
    die_with_parent()
    # A scheduler's preemption warning may reach every process of the job (scancel --full):
    # the server must outlive it; its children (the trainer) install their own handler.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    for name in PRELOAD:
        with contextlib.suppress(ModuleNotFoundError):
            importlib.import_module(name)
    _send({"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        _send({"pid": pid})
        _, status = os.waitpid(pid, 0)
        _send({"exit": os.waitstatus_to_exitcode(status)})


class Child:
    """One trial process, started by the fork server or as a plain subprocess."""

    def __init__(
        self, pid: int, popen: subprocess.Popen | None = None, server: ForkServer | None = None
    ):
        self.pid, self._popen, self._server = pid, popen, server
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            if self._popen is not None:
                self.returncode = self._popen.poll()
            else:
                try:
                    self.returncode = self._server.exit_status(timeout=0)
                except RuntimeError:
                    # The server died; its child got SIGTERM from the parent-death signal.
                    self.returncode = -signal.SIGTERM
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                return None
            time.sleep(0.1)
        return self.returncode

    def signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


def spawn(command: list[str], env: dict[str, str], cwd: str, log: Path) -> Child:
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
    return Child(popen.pid, popen=popen)


class ForkServer:
    """The agent's handle on its fork server; one trial at a time."""

    def __init__(self, interpreter: str, env: dict[str, str], cwd: str):
        self.proc = subprocess.Popen(
            [interpreter, "-m", "sweeper.forkserver"],
            env=env,
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            preexec_fn=die_with_parent,
        )
        self._buffer = b""
        self.ready = False

    def wait_ready(self, timeout: float = 300) -> None:
        """Wait for the server's imports (seconds); a trial's start waits for it anyway."""
        if self.ready:
            return
        reply = self._read(timeout)
        if not reply or not reply.get("ready"):
            raise RuntimeError("the fork server did not start (see the agent's log)")
        self.ready = True

    def _read(self, timeout: float | None) -> dict | None:
        fd = self.proc.stdout.fileno()
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError("the fork server exited")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def start(self, argv: list[str], env: dict[str, str], cwd: str, log: Path) -> Child:
        self.wait_ready()
        request = {"argv": argv, "env": env, "cwd": cwd, "log": str(log)}
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()
        reply = self._read(timeout=60)
        if not reply or "pid" not in reply:
            raise RuntimeError("the fork server did not start the trial")
        return Child(reply["pid"], server=self)

    def exit_status(self, timeout: float) -> int | None:
        reply = self._read(timeout)
        return None if reply is None else reply["exit"]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.poll() is None and not self.ready:
            # Still importing, no trial to wait for: waiting for the imports to end would
            # delay a stop by seconds.
            self.proc.kill()
            self.proc.wait()
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


if __name__ == "__main__":
    serve()
