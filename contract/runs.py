"""The run folder ``<output_dir>/runs/<run id>/``: what each process may find and write there.

- ``run.lock``: held (``flock``, exclusive) by the one process training the run, for its whole
  life. The kernel drops it when that process dies, however it dies, so "is someone training
  this run?" needs neither ``/proc`` nor a heartbeat, and it holds across hosts on a shared
  filesystem as far as ``flock`` does there (NFS emulates it with byte-range locks). The file
  also says who took it (pid, host, start time) for people and for the agent; only the lock
  says whether that process is alive.
- ``checkpoint.pt``: the latest training state (every epoch, and mid-epoch on SIGTERM/SIGUSR1);
  ``best.pt``: the state of the best validation epoch. Both are written atomically by the trainer.
- ``progress.jsonl``: one JSON object per finished epoch, keyed by ``epoch`` (counting from 1),
  with every per-epoch value (``metrics.PROGRESS_KEYS``, the sweep metric included). A row is
  final: it is appended after the checkpoint of its epoch, so its epoch is never trained again,
  and where a kill lands between the two, the next start appends it from the checkpoint. If an
  epoch still appears twice, the first row counts. The local engine tails the file to optimise
  and prune.
- ``exit.json``: how the last process that trained the run ended (status, exit code, reason),
  written atomically by the trainer as it exits. Taking the lock removes the previous one, so
  a free lock with no exit record means the trainer was killed (SIGKILL, out of memory).
- ``trial.log``: the trial's stdout and stderr, written by the local engine.

Nothing here imports torch or wandb: the agent and the analysis read the folder cheaply.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import secrets
import socket
import string
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from contract import metrics as m
from contract.errors import UserError

LOCK = "run.lock"
LATEST = "checkpoint.pt"
BEST = "best.pt"
PROGRESS = "progress.jsonl"
EXIT = "exit.json"
TRIAL_LOG = "trial.log"

# Exit-record statuses besides the run's own (metrics.STATUS_*): a user error (exit 2), Ctrl-C
# (exit 130, no checkpoint of the unfinished epoch) and a bug (a traceback in the log).
STATUS_ERROR, STATUS_INTERRUPTED, STATUS_CRASHED = "error", "interrupted", "crashed"
EXIT_STATUSES = (
    m.STATUS_FINISHED,
    m.STATUS_STOPPED,
    m.STATUS_EARLY_STOPPED,
    m.STATUS_PREEMPTED,
    m.STATUS_DIVERGED,
    STATUS_ERROR,
    STATUS_INTERRUPTED,
    STATUS_CRASHED,
)

# W&B's rule for run ids (wandb 0.31 Settings.validate_run_id; a test holds the two equal), plus
# what a folder name cannot be: the id names the run folder.
RUN_ID_RESERVED = ":;,#?/'"
# An agent only probing the lock holds it shared for microseconds: how often a trainer that
# met such a probe (and no other trainer) tries again before calling the run busy.
PROBE_RETRIES, PROBE_RETRY_SECONDS = 200, 0.005


def check_run_id(run_id: str) -> None:
    """Raise UserError naming the rule when W&B would refuse ``run_id`` or it is no folder name."""
    rule = None
    if not run_id.strip():
        rule = "must not be empty or only whitespace"
    elif run_id != run_id.strip():
        rule = "must not start or end with whitespace"
    elif any(c in RUN_ID_RESERVED for c in run_id):
        rule = f"must not contain any of the characters {RUN_ID_RESERVED} (W&B's rule)"
    elif run_id in (".", "..") or "\0" in run_id or "\\" in run_id:
        rule = "must be a folder name: not '.' or '..', no NUL or backslash"
    if rule:
        raise UserError(f"WANDB_RUN_ID={run_id!r}: a run id {rule}")


def new_run_id() -> str:
    """A fresh id in W&B's own form (8 characters, lowercase letters and digits)."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def run_dir(output_dir: str | Path, run_id: str) -> Path:
    return Path(output_dir) / "runs" / run_id


# --- the lock ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Owner:
    """Who took a run's lock: for messages and for same-host checks. ``started``: Unix time."""

    pid: int
    host: str
    started: float

    def __str__(self) -> str:
        when = datetime.fromtimestamp(self.started, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"pid {self.pid} on {self.host} since {when}"

    @classmethod
    def me(cls) -> Owner:
        return cls(os.getpid(), socket.gethostname(), time.time())

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        try:
            data = json.loads(text)
            return cls(int(data["pid"]), str(data["host"]), float(data["started"]))
        except (ValueError, KeyError, TypeError):
            return None  # being written, or not ours


class RunBusy(UserError):
    """Another live process holds the run's lock."""

    def __init__(self, folder: Path, owner: Owner | None):
        self.folder, self.owner = folder, owner
        who = f" by {owner}" if owner else ""
        super().__init__(f"run {folder.name} is already being trained{who} (lock {folder / LOCK})")


class RunLock:
    """The exclusive lock of one run folder, held until ``release()`` or the process's death.

    The descriptor is not inherited by ``exec``-ed children (Python's default), but a plain
    ``fork`` child (a ``fork`` DataLoader worker) shares it until it exits too.
    """

    def __init__(self, folder: Path, fd: int, owner: Owner):
        self.folder, self.owner, self._fd = folder, owner, fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _unusable(folder: Path, exc: OSError) -> UserError:
    output_dir = str(folder.parent.parent)
    return UserError(
        f"output_dir={output_dir!r}: cannot create or write the run folder {folder} "
        f"({exc.strerror or exc})"
    )


def take_lock(folder: Path) -> RunLock:
    """Create the run folder if needed and take its lock, or raise at once.

    RunBusy when another process trains the run (nothing in the folder is changed then);
    UserError when the folder cannot be created or written. On success the lock file holds
    this process's Owner and the previous run's exit record is removed.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise _unusable(folder, exc) from None
    try:
        for _ in range(PROBE_RETRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pass
            try:  # a shared lock is granted only while no trainer holds the exclusive one
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunBusy(folder, _read_owner(fd)) from None
            fcntl.flock(fd, fcntl.LOCK_UN)
            time.sleep(PROBE_RETRY_SECONDS)
        else:
            raise RunBusy(folder, None)
        owner = Owner.me()
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(owner)).encode() + b"\n", 0)
        with contextlib.suppress(FileNotFoundError):
            (folder / EXIT).unlink()
    except OSError as exc:
        os.close(fd)
        raise _unusable(folder, exc) from None
    except BaseException:
        os.close(fd)
        raise
    return RunLock(folder, fd, owner)


def _read_owner(fd: int) -> Owner | None:
    with contextlib.suppress(OSError):
        return Owner.parse(os.pread(fd, 4096, 0).decode(errors="replace"))
    return None


def holder(folder: Path) -> Owner | None:
    """The live process training this run, or None. Safe to call at any time: the probe is a
    shared lock held for microseconds, which a starting trainer waits out.

    Where a process holds the lock but has not written its name yet, the Owner has pid 0.
    """
    try:
        fd = os.open(folder / LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_owner(fd) or Owner(0, "", 0.0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


# --- progress.jsonl ------------------------------------------------------------------------------
def append_progress(folder: Path, row: dict[str, Any]) -> None:
    """Append one finished epoch's row (``row[metrics.EPOCH]`` names it)."""
    with open(folder / PROGRESS, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()


def read_progress(folder: Path) -> list[dict[str, Any]]:
    """One row per finished epoch, in epoch order, the first row of an epoch winning.

    A line still being written ends the file. Rows written before ``epoch`` was in every row
    are numbered by their position.
    """
    try:
        lines = (folder / PROGRESS).read_text().splitlines()
    except OSError:
        return []
    rows: dict[int, dict[str, Any]] = {}
    for n, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        if not isinstance(row, dict):
            break
        epoch = row.get(m.EPOCH, n)
        if isinstance(epoch, (int, float)) and not isinstance(epoch, bool):
            rows.setdefault(int(epoch), {**row, m.EPOCH: int(epoch)})
    return [rows[e] for e in sorted(rows)]


def restore_progress(folder: Path, rows: list[dict[str, Any]]) -> list[int]:
    """Append those of ``rows`` (a checkpoint's) whose epoch the file lacks; the epochs added.

    A kill between the checkpoint of an epoch and its row leaves the row only in the checkpoint.
    """
    have = {r[m.EPOCH] for r in read_progress(folder)}
    added = []
    for row in sorted(rows, key=lambda r: r[m.EPOCH]):
        if int(row[m.EPOCH]) not in have:
            append_progress(folder, row)
            added.append(int(row[m.EPOCH]))
    return added


def epoch_values(folder: Path, metric: str, goal: str = "minimize") -> list[tuple[int, float]]:
    """``(epoch, value of metric)`` for each finished epoch, from the rows themselves.

    Rows written before ``val/best_recon_loss`` was a column get it as the running best of
    ``val/recon_loss`` (``goal`` says which way is better). Non-finite values are left out.
    """
    out: list[tuple[int, float]] = []
    running: float | None = None
    for row in read_progress(folder):
        value = row.get(metric)
        recon = row.get(m.VAL_RECON)
        if _finite(recon):
            better = running is None or (recon > running if goal == "maximize" else recon < running)
            running = recon if better else running
        if value is None and metric == m.VAL_BEST_RECON:
            value = running
        if _finite(value):
            out.append((row[m.EPOCH], float(value)))
    return out


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --- exit.json -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExitRecord:
    """How a trainer process ended. ``epochs``: finished epochs; ``reason``: one line or None.
    ``pid``, ``host`` and ``started`` are its lock's Owner: they tell its attempt from others."""

    status: str
    exit_code: int
    reason: str | None
    epochs: int
    pid: int
    host: str
    started: float
    ended: float


def write_exit(lock: RunLock, status: str, exit_code: int, reason: str | None = None) -> ExitRecord:
    """Write ``exit.json`` atomically, as the holder of ``lock``; ``reason``'s first line only.
    ``epochs`` counts the rows of progress.jsonl."""
    if status not in EXIT_STATUSES:
        raise ValueError(f"unknown exit status {status!r}")
    if reason is not None:
        reason = (reason.strip().splitlines() or [""])[0]
    record = ExitRecord(
        status,
        exit_code,
        reason,
        len(read_progress(lock.folder)),
        lock.owner.pid,
        lock.owner.host,
        lock.owner.started,
        time.time(),
    )
    path = lock.folder / EXIT
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(record)) + "\n")
    os.replace(tmp, path)
    return record


def read_exit(folder: Path) -> ExitRecord | None:
    """The last exit record, or None (never written, or removed by a trainer starting again)."""
    try:
        data = json.loads((folder / EXIT).read_text())
        return ExitRecord(**data)
    except (OSError, ValueError, TypeError):
        return None
