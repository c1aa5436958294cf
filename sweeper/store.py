"""Where local sweeps live, and how agents share one without losing or double-counting a trial.

Design. One sweep = one Optuna study, named by the sweep id, that stores the sweep file's text,
so an agent needs only the id. Three storages, each for one way of sharing it:

* ``sqlite:///outputs/sweeps.db`` (the default): agents on one machine. Not on NFS: SQLite's
  locks are not reliable there.
* ``journal:PATH``: agents on several machines that share a folder (NFS, Lustre, GPFS), with no
  database server. Optuna's ``JournalStorage(JournalFileBackend(PATH))``: an append-only log
  of operations that every process replays in the same order. Appends are serialised by
  ``JournalFileOpenLock``: an exclusive create (``O_CREAT | O_EXCL``) of ``PATH.lock``,
  atomic on NFSv3 and later, on local disks and on cluster filesystems, where ``flock`` and
  SQLite's locks are not to be trusted.
* ``postgresql://...`` or ``mysql+pymysql://...``: agents anywhere that reach a server.

Heartbeats are the engine's own, the same on every storage (Optuna keeps them only in its
RDB storages). The owner of a RUNNING trial writes the time into the trial's system attribute
``heartbeat`` every ``heartbeat`` seconds. Another agent judges it by its own clock: a value
it has seen unchanged for ``grace`` seconds is a silent owner, so the hosts' clocks need not
agree, and an agent that starts gives each trial the whole grace period before it judges.

How a claim stays exact. A claim reaps dead trials, creates retries, asks for the next trial
and records its owner.

* SQLite has no row locks: two agents could pop the same WAITING trial, or fail the same stale
  trial twice (two retries). Every claim therefore runs under an exclusive ``fcntl.flock`` on
  ``<db>.lock``. The kernel drops that lock when its holder dies, even by ``kill -9``, so a
  dead agent can never block the others. "database is locked" under many writers: a 60 s
  busy timeout and WAL journaling.
* PostgreSQL and MySQL pop a WAITING trial under a row lock (``SELECT ... FOR UPDATE``) and
  end a trial in one transaction that checks its state, so each WAITING trial goes to one
  agent and a trial ends once.
* The journal: one order of operations, the same in every process. The first record that
  moves a WAITING trial to RUNNING wins in every replay, and a later one is dropped, so its
  writer learns it lost and takes the next; the first record that ends a trial wins, and a
  later update of it is refused. No lock spans a claim: the journal's own lock only orders
  appends, and a lock file that outlives a stopped process can only be taken over after a
  timeout, which is no basis for a claim that may take a minute (the first Gaussian process).

Without a claim lock (servers and the journal), two agents may ask at the same moment. The
order then decides, and every agent reads the same order: an original beyond the budget, a
configuration an earlier trial holds while an untaken one remains, and a second retry of one
trial are voided (``void`` attr, FAIL), never run and never counted; each agent checks its own
claim before it runs it, once the earlier trials' configurations are written (a trial exists
before its parameters do), and a reaper voids such a trial whose claimer died first.

Dead agents. Each RUNNING trial records its owner (``host:pid:start-time``) and its heartbeat.
On the owner's host, liveness is the process itself: an owner whose pid still runs with the
same start time (the start time guards against PID reuse) keeps its trial whatever its
heartbeat says, so an agent that was only paused (Ctrl-Z, SIGSTOP, a saturated disk) is never
robbed while its trial's process still trains. The start time comes from ``/proc``, or from
``ps`` where there is no ``/proc``; where neither answers, heartbeats decide. Agents on other
hosts see only the heartbeat: silent for ``grace`` seconds, the trial is taken over, unless
its run folder (where this host sees it) shows the run lock held. Its owner, if it was alive
after all, notices at its next heartbeat or report and stops its trial's process; the retry
waits for the run lock. A trial found dead is *lost*: marked FAIL without an ``exit_code``,
then re-enqueued once with the same parameters (``retry_of`` = its number) and the same run
id, so the trainer resumes from its checkpoint.

Bounded faults. A slot is retried after at most ``max_retries`` faults (lost or preempted
trials; a trial given back by an agent that was told to stop, or preempted after its agent
announced it, is not a fault of the trial). The next fault ends the slot: FAIL, counted,
with a ``reason`` that says so. ``heartbeat``, ``grace`` and ``max_retries`` belong to the
sweep (set by ``create``), so every agent agrees.

Accounting, the same on every storage. The budget (``run_cap``, or the grid's points) counts
*slots*: the original trials. A lost trial hands its slot to its retry, so each slot ends in
exactly one counted trial (COMPLETE, PRUNED, or FAIL with an exit code). The order of writes
makes every step safe to interrupt: the owner is recorded right after ``ask``; a trial is
marked lost before its retry exists, and a lost trial without a retry is given one by the
next reaper.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import socket
import sqlite3
import string
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from contract import runs
from contract.errors import UserError
from sweeper import space as space_mod

DEFAULT_STORAGE = "sqlite:///outputs/sweeps.db"
# Each sweep's engine settings, fixed when it is created (``python -m sweeper create``).
HEARTBEAT_INTERVAL = 10.0  # seconds between an agent's heartbeats for its running trial
GRACE_PERIOD = 60.0  # seen from another host, a heartbeat silent this long means a dead agent
MAX_RETRIES = 3  # retries of one slot after a lost or preempted trial; the next fault ends it
POLL_SECONDS = 0.1  # while a claim waits for an earlier claim's configuration
ID_ALPHABET = string.ascii_lowercase + string.digits
ID_LENGTH = 8  # like W&B's sweep and run ids

# Trial user attributes.
OWNER = "agent"
RUN_ID = "run_id"
RETRY_OF = "retry_of"
GRID = "grid"
EXIT_CODE = "exit_code"
REASON = "reason"
LOST = "lost"
VOID = "void"
FAULTS = "faults"  # faults (lost or preempted trials) of the slot before this trial
GIVEN_BACK = "given_back"  # lost because its agent was stopped: not a fault of the trial
PREEMPTED = "preempted"  # given back after a preemption its agent announced: not a fault
GAVE_UP = "gave_up"  # the slot's last fault, after max_retries retries: counted as FAIL
RUN_FOLDER = "run_folder"  # absolute path of the trial's run folder, seen from its owner
ENGINE = "engine"  # study attr: the sweep's heartbeat, grace and max_retries
HEARTBEAT = "heartbeat"  # trial system attr: the owner's clock at its latest beat

optuna.logging.set_verbosity(optuna.logging.WARNING)
# GPSampler's deterministic_objective is "experimental": chosen on purpose (space.py).
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def new_id() -> str:
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))


# --- storage ----------------------------------------------------------------------------------
@dataclass
class Store:
    url: str
    storage: optuna.storages.BaseStorage
    lock_path: Path | None  # set for SQLite, where claims need a file lock
    # Wraps the wait for the claim lock: an agent's stop signal may cut it short.
    wait: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    # What this process saw of each RUNNING trial's heartbeat: (value, when first seen, by
    # this process's clock).
    seen: dict[int, tuple[Any, float]] = field(default_factory=dict)

    @contextlib.contextmanager
    def claim_lock(self) -> Iterator[None]:
        if self.lock_path is None:
            yield
            return
        with open(self.lock_path, "a") as fh:
            with self.wait():
                fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite:"):
        return None
    path = url.split(":///", 1)[1] if ":///" in url else ""
    if not path or path == ":memory:":
        raise UserError(f"storage {url!r}: an in-memory database cannot be shared by agents")
    return Path(path)


JOURNAL = "journal:"
JournalOperation = optuna.storages.journal._storage.JournalOperation
# Records this Optuna replays. DISCARD_TRIALS (written by Rustuna) is skipped by Optuna's
# replay, which would bring discarded trials back: refused like an unknown record.
REPLAYED = {int(op) for op in JournalOperation} - {int(JournalOperation.DISCARD_TRIALS)}


def journal_path(url: str) -> Path | None:
    """The file of a ``journal:PATH`` storage; a relative PATH is relative to the working
    directory."""
    if not url.startswith(JOURNAL):
        return None
    path = url[len(JOURNAL) :]
    if not path:
        raise UserError(f"storage {url!r}: name its file, e.g. journal:/shared/sweeps.journal")
    return Path(path).absolute()


class IncompatibleJournal(UserError):
    """A journal record this Optuna cannot replay: written by another (newer) version."""

    def __init__(self, path: str, detail: str):
        self.detail = detail
        super().__init__(f"journal {path}: {detail}")


class JournalFile(optuna.storages.journal.JournalFileBackend):
    """Optuna's journal file, refusing records this Optuna would replay wrongly or not at all."""

    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        for number, log in enumerate(super().read_logs(log_number_from), log_number_from + 1):
            if not isinstance(log, dict) or log.get("op_code") not in REPLAYED:
                op = log.get("op_code") if isinstance(log, dict) else log
                raise IncompatibleJournal(
                    self._file_path,
                    f"record {number} (op_code {op!r}) was written by an Optuna incompatible "
                    f"with this one ({optuna.__version__})",
                )
            yield log


def _not_a_journal(path: Path) -> bool:
    """The file's first record is not an Optuna journal record (an empty file is a new journal)."""
    with open(path, "rb") as fh:
        first = fh.readline(1 << 20)
    if not first:
        return False
    try:
        record = json.loads(first)
    except ValueError:  # not JSON, not even UTF-8 (a SQLite file, say)
        return True
    return not (isinstance(record, dict) and "op_code" in record and "worker_id" in record)


def open_journal(
    url: str, path: Path, write: bool = True, name: str | None = None
) -> optuna.storages.JournalStorage:
    """Optuna's journal storage in the file ``path``; ``write=False`` creates nothing (the file
    must exist). Bad folders and files are one-line user errors, starting with ``name``."""
    name = name or f"storage {url!r}"
    folder = path.parent
    if not folder.is_dir():
        raise UserError(f"{name}: no folder {folder}")
    if path.is_dir():
        raise UserError(f"{name}: {path} is a folder, not a journal file")
    if write:
        try:
            # The lock file is created beside the journal at every write: the folder, not
            # only the file, must be writable.
            fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.probe-")
            os.close(fd)
            os.unlink(probe)
            with open(path, "ab"):
                pass
        except OSError as exc:
            raise UserError(f"{name}: cannot write in {folder} ({exc.strerror})") from None
    elif not path.is_file():
        raise UserError(f"{name}: no such journal file")
    try:
        if _not_a_journal(path):
            raise UserError(f"{name}: {path} is not an Optuna journal file")
        lock = optuna.storages.journal.JournalFileOpenLock(str(path))
        return optuna.storages.JournalStorage(JournalFile(str(path), lock_obj=lock))
    except IncompatibleJournal as exc:
        raise UserError(f"{name}: {exc.detail}") from None
    except OSError as exc:
        raise UserError(f"{name}: cannot read {path} ({exc.strerror})") from None
    except (KeyError, ValueError, TypeError, AssertionError) as exc:
        # Optuna's replay fails on records of a format it does not know.
        raise UserError(
            f"{name}: cannot replay it; written by an Optuna incompatible with this "
            f"one ({optuna.__version__})? ({type(exc).__name__}: {exc})"
        ) from None


# The database drivers SQLAlchemy loads for each URL scheme, and the package that provides each.
DRIVER_PACKAGES = {
    "psycopg": "psycopg[binary]",
    "psycopg2": "psycopg2-binary",
    "pymysql": "pymysql",
    "mysqldb": "mysqlclient",
}
EXTRAS = {"psycopg": "postgres", "pymysql": "mysql"}  # drivers this project's extras install
OTHER_SCHEMES = {
    "psycopg": ("postgresql+psycopg2://", "psycopg2"),
    "psycopg2": ("postgresql://", "psycopg 3"),
    "mysqldb": ("mysql+pymysql://", "pymysql"),
}
CONNECT_TIMEOUT = 10  # seconds to reach a database server before giving up with one line


def shown_url(url: str) -> str:
    """The URL with its password hidden, for messages."""
    import sqlalchemy.engine

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not even a URL: shown as given, there is no password to find in it
        return url


def driver_problem(url: str) -> str | None:
    """One line naming the driver a URL needs and how to install it, when it is missing."""
    import sqlalchemy.engine
    import sqlalchemy.exc

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return (
            "not a storage URL (expected e.g. sqlite:///outputs/sweeps.db, "
            "journal:/shared/sweeps.journal or postgresql://USER:PASS@HOST/DB)"
        )
    try:
        dialect = parsed.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError:
        return f"unknown database scheme {parsed.drivername!r} (use sqlite:///, postgresql:// or mysql+pymysql://)"
    try:
        dialect.import_dbapi()
    except ImportError:
        driver = dialect.driver
        package = DRIVER_PACKAGES.get(driver, driver)
        fix = f"pip install '{package}'"
        extra = EXTRAS.get(driver)
        if extra:
            fix += f" (in this project: pip install -e '.[{extra}]')"
        other = OTHER_SCHEMES.get(driver)
        also = f"; with {other[1]} installed instead, write {other[0]}..." if other else ""
        return f"{parsed.drivername}:// needs the {driver} driver, not installed: {fix}{also}"
    return None


def open_store(url: str | None) -> Store:
    """Open (creating if needed) the storage at ``url``; bad URLs are one-line user errors."""
    url = url or os.environ.get("SWEEPER_STORAGE") or DEFAULT_STORAGE
    journal = journal_path(url)
    if journal is not None:
        return Store(url, open_journal(url, journal), None)
    engine_kwargs: dict[str, Any] = {}
    db = sqlite_path(url)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        try:
            # WAL lets readers and one writer proceed together; it persists in the file.
            with contextlib.closing(sqlite3.connect(db, timeout=60)) as con:
                con.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as exc:
            raise UserError(f"storage {url!r}: cannot open the SQLite file ({exc})") from None
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        problem = driver_problem(url)
        if problem:
            raise UserError(f"storage {shown_url(url)!r}: {problem}")
        if url.startswith(("postgresql", "mysql")):
            engine_kwargs = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT}}
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as exc:  # sqlalchemy raises ArgumentError, OperationalError, ...
        first = _first_line(exc)
        raise UserError(f"storage {shown_url(url)!r}: cannot open it ({first})") from None
    lock = Path(f"{db}.lock") if db is not None else None
    return Store(url, storage, lock)


def _first_line(exc: BaseException) -> str:
    """The driver's own message, without SQLAlchemy's wrapping and background links."""
    inner = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(inner).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(inner).__name__


# --- sweeps -------------------------------------------------------------------------------------
@dataclass
class Sweep:
    """A local sweep: its study plus what its file says."""

    id: str
    study: optuna.Study
    cfg: dict[str, Any]
    space: space_mod.Space

    @property
    def name(self) -> str:
        return str(self.study.user_attrs.get("name") or self.cfg.get("name") or self.id)

    @property
    def metric(self) -> str:
        return self.cfg["metric"]["name"]

    @property
    def goal(self) -> str:
        return self.cfg["metric"].get("goal", "minimize")

    @property
    def grid(self) -> bool:
        return self.cfg.get("method") == "grid"

    @property
    def budget(self) -> int:
        if self.grid:
            return int(self.study.user_attrs.get("grid_points", 0))
        return int(self.cfg["run_cap"])

    @property
    def settings(self) -> Settings:
        return Settings(**self.study.user_attrs.get(ENGINE, {}))


@dataclass(frozen=True)
class Settings:
    """How the agents of one sweep watch each other; every agent reads them from the sweep."""

    heartbeat: float = HEARTBEAT_INTERVAL
    grace: float = GRACE_PERIOD
    max_retries: int = MAX_RETRIES

    def check(self) -> Settings:
        if not self.heartbeat > 0:
            raise UserError(f"--heartbeat={self.heartbeat}: must be > 0 seconds")
        if not self.grace >= 2 * self.heartbeat:
            raise UserError(
                f"--grace={self.grace}: must be at least twice the heartbeat "
                f"({self.heartbeat} s), or live agents look dead to other hosts"
            )
        if self.max_retries < 0:
            raise UserError(f"--max-retries={self.max_retries}: must be >= 0")
        return self


def create_sweep(
    store: Store,
    text: str,
    cfg: dict[str, Any],
    source: str,
    name: str | None,
    settings: Settings | None = None,
    seeds: Callable[[str], list[FrozenTrial]] | None = None,
) -> str:
    """A new sweep, or the existing one called ``name`` if its file is the same (its settings
    stay those it was created with). ``seeds(sweep_id)`` gives the finished trials of a warm
    start, added before the sweep is ready for agents."""
    if name:
        for summary in store.storage.get_all_studies():
            if summary.user_attrs.get("name") != name:
                continue
            if summary.user_attrs.get("sweep_yaml") != text:
                raise UserError(
                    f"a sweep named {name!r} already exists ({summary.study_name}) with a "
                    "different file; choose another --name"
                )
            return summary.study_name
    sweep_id = new_id()
    direction = "maximize" if cfg["metric"].get("goal") == "maximize" else "minimize"
    study = optuna.create_study(storage=store.storage, study_name=sweep_id, direction=direction)
    study.set_user_attr("name", name or cfg.get("name") or sweep_id)
    study.set_user_attr("source", source)
    study.set_user_attr("created", datetime.now().isoformat(timespec="seconds"))
    study.set_user_attr(ENGINE, asdict(settings or Settings()))
    space, _ = space_mod.build_space(cfg.get("parameters") or {}, source)
    if cfg.get("method") == "grid":
        points = space.grid()[: cfg.get("run_cap") or None]
        for point in points:
            study.enqueue_trial(point, user_attrs={GRID: True}, skip_if_exists=False)
        study.set_user_attr("grid_points", len(points))
    if seeds is not None:
        study.add_trials(seeds(sweep_id))
    # Written last: a sweep without its file is unfinished and agents refuse it.
    study.set_user_attr("sweep_yaml", text)
    return sweep_id


def load_sweep(store: Store, sweep_id: str) -> Sweep:
    try:
        study = optuna.load_study(
            study_name=sweep_id,
            storage=store.storage,
            sampler=None,
        )
    except KeyError:
        raise UserError(f"no local sweep {sweep_id!r} in {store.url}") from None
    text = study.user_attrs.get("sweep_yaml")
    if text is None:
        raise UserError(f"sweep {sweep_id!r} in {store.url} was not fully created; create it again")
    cfg = yaml.safe_load(text)
    built, _ = space_mod.build_space(cfg.get("parameters") or {}, sweep_id)
    # Sampler and pruner come from the file, so every agent of a sweep uses the same ones.
    study = optuna.load_study(
        study_name=sweep_id,
        storage=store.storage,
        sampler=space_mod.sampler_for(cfg, built, counts=holds_its_config),
        # Hyperband's thresholds ignore trials that never ran as themselves (a lost trial's
        # epochs come back in its retry).
        pruner=space_mod.pruner_for(cfg, counts=holds_its_config),
    )
    return Sweep(sweep_id, study, cfg, built)


# --- owners -------------------------------------------------------------------------------------
PROC = Path("/proc")
UNKNOWN = "?"  # a start time no one can read: heartbeats decide


def _start_time(pid: int) -> str | None:
    """A stamp of the process's start (guards against PID reuse); None when no such process
    runs, ``UNKNOWN`` when this system cannot tell."""
    if (PROC / "self" / "stat").exists():
        try:
            stat = (PROC / str(pid) / "stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()
        return None if fields[0] == "Z" else fields[19]  # a zombie has ended
    ps = shutil.which("ps")  # macOS and the BSDs have no /proc
    if ps is None:
        return UNKNOWN
    try:
        done = subprocess.run(
            [ps, "-o", "stat=,lstart=", "-p", str(pid)], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return UNKNOWN
    line = done.stdout.strip()
    if not line or line.startswith("Z"):
        return None
    return "".join(ch for ch in line.split(None, 1)[-1] if ch.isalnum())


def my_owner_tag() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid()) or UNKNOWN}"


def owner_alive(tag: str) -> bool | None:
    """True/False for an owner on this host; None when it runs elsewhere or this host cannot
    tell (then only heartbeats can)."""
    host, pid, started = tag.rsplit(":", 2)
    if host != socket.gethostname() or started == UNKNOWN:
        return None
    now = _start_time(int(pid))
    return None if now == UNKNOWN else now == started


def beat(storage: optuna.storages.BaseStorage, trial_id: int) -> None:
    """The owner's heartbeat: its clock's time, which other agents only watch change."""
    storage.set_trial_system_attr(trial_id, HEARTBEAT, time.time())


def silent_for(store: Store, t: FrozenTrial, now: float) -> float:
    """Seconds that this process has seen the trial's owner and heartbeat unchanged, by its own
    monotonic clock ``now`` (0 at the first sight)."""
    value = (t.user_attrs.get(OWNER), t.system_attrs.get(HEARTBEAT))
    last = store.seen.get(t._trial_id)
    if last is None or last[0] != value:
        store.seen[t._trial_id] = (value, now)
        return 0.0
    return now - last[1]


# --- accounting -----------------------------------------------------------------------------------
def is_void(t: FrozenTrial) -> bool:
    return bool(t.user_attrs.get(VOID))


def is_gave_up(t: FrozenTrial) -> bool:
    return t.state == TrialState.FAIL and GAVE_UP in t.user_attrs and not is_void(t)


def is_lost(t: FrozenTrial) -> bool:
    """Ended without the agent recording how: its agent died or gave the trial back."""
    return (
        t.state == TrialState.FAIL
        and EXIT_CODE not in t.user_attrs
        and not is_void(t)
        and not is_gave_up(t)
    )


def is_counted(t: FrozenTrial) -> bool:
    if is_void(t):
        return False
    return (
        t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or (t.state == TrialState.FAIL and EXIT_CODE in t.user_attrs)
        or is_gave_up(t)
    )


def faults_after(t: FrozenTrial) -> int:
    """The slot's faults once this lost trial is counted in."""
    return int(t.user_attrs.get(FAULTS, 0)) + (0 if t.user_attrs.get(GIVEN_BACK) else 1)


def holds_its_config(t: FrozenTrial) -> bool:
    """Its configuration is its own: not void, and not lost (its retry holds it now)."""
    return not is_lost(t) and not is_void(t)


def is_original(t: FrozenTrial) -> bool:
    return RETRY_OF not in t.user_attrs and not is_void(t)


@dataclass
class Tally:
    trials: list[FrozenTrial]

    @property
    def originals(self) -> list[FrozenTrial]:
        return [t for t in self.trials if is_original(t)]

    def by_state(self, state: TrialState) -> list[FrozenTrial]:
        return [t for t in self.trials if t.state == state and not is_void(t)]

    @property
    def unretried(self) -> list[FrozenTrial]:
        retried = {
            t.user_attrs[RETRY_OF]
            for t in self.trials
            if RETRY_OF in t.user_attrs and not is_void(t)
        }
        return [t for t in self.trials if is_lost(t) and t.number not in retried]

    @property
    def counted(self) -> list[FrozenTrial]:
        return [t for t in self.trials if is_counted(t)]


def tally(sweep: Sweep) -> Tally:
    return Tally(sweep.study.get_trials(deepcopy=False))


def sweep_done(sweep: Sweep) -> bool:
    """Every slot of the budget has ended in a counted trial."""
    t = tally(sweep)
    active = t.by_state(TrialState.RUNNING) + t.by_state(TrialState.WAITING)
    return len(t.originals) >= sweep.budget and not active and not t.unretried


def _fail_with(sweep: Sweep, trial_id: int, attrs: dict[str, Any]) -> bool:
    """Mark a trial FAIL with ``attrs`` saying why; False if someone else ended it first."""
    storage = sweep.study._storage
    try:
        for key, value in attrs.items():
            storage.set_trial_user_attr(trial_id, key, value)
        return storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def mark_lost(sweep: Sweep, trial_id: int, reason: str, fault: bool = True) -> bool:
    """The trial ended without a result: retried, unless it was its slot's last allowed fault
    (then it ends the slot as a counted FAIL). ``fault=False``: given back by a stopped agent,
    which costs the slot nothing. False if someone else ended the trial first."""
    trial = sweep.study._storage.get_trial(trial_id)
    faults = int(trial.user_attrs.get(FAULTS, 0)) + (1 if fault else 0)
    limit = sweep.settings.max_retries
    if faults > limit:
        why = f"{reason}; {faults} faults, no retry left (max_retries={limit})"
        return _fail_with(sweep, trial_id, {GAVE_UP: reason, REASON: why})
    attrs: dict[str, Any] = {LOST: reason}
    if not fault:
        attrs[GIVEN_BACK] = True
    return _fail_with(sweep, trial_id, attrs)


def mark_preempted(sweep: Sweep, trial_id: int) -> bool:
    """An announced preemption: the agent got the scheduler's signal and passed it on, so the
    trial's exit 75 is the scheduler's doing and costs the slot no retry (a long run on a
    preemptible partition may be preempted many times). An unannounced exit 75 is a fault."""
    try:
        sweep.study._storage.set_trial_user_attr(trial_id, PREEMPTED, True)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    return mark_lost(sweep, trial_id, "preempted (announced)", fault=False)


def void(sweep: Sweep, trial_id: int, reason: str) -> None:
    _fail_with(sweep, trial_id, {VOID: reason})


def queued(t: FrozenTrial) -> bool:
    """Taken from the queue, its configuration fixed: a grid point or a retry."""
    return bool(t.user_attrs.get(GRID)) or RETRY_OF in t.user_attrs


def void_unrun(sweep: Sweep, t: FrozenTrial, reason: str) -> None:
    """Void a trial that never ran. A queued one goes back in the queue as it was: nothing else
    would ever ask for that grid point (or retry) again."""
    if _fail_with(sweep, t._trial_id, {VOID: reason}) and queued(t):
        keep = {k: t.user_attrs[k] for k in (GRID, RETRY_OF, FAULTS, RUN_ID) if k in t.user_attrs}
        sweep.study.enqueue_trial(space_mod.config_of(t), user_attrs=keep, skip_if_exists=False)


def _trainer(folder: str | None) -> runs.Owner | None:
    """Who holds the run lock of this run folder, where this host can see the folder."""
    if not folder:
        return None
    try:
        return runs.holder(Path(folder))
    except OSError:  # another host's path, unreadable here: heartbeats decide
        return None


def reap(sweep: Sweep, store: Store, say: Callable[[str], None] = lambda _: None) -> None:
    """Find trials of dead agents, mark them lost and give each lost trial one retry.

    An owner this host can see alive keeps its trial, however long its heartbeat has been
    silent: the heartbeat only speaks for owners elsewhere (or where this host cannot tell)."""
    now = time.monotonic()
    serialised = store.lock_path is not None
    grace = sweep.settings.grace
    everyone = tally(sweep).trials
    running = [t for t in everyone if t.state == TrialState.RUNNING]
    for ended in set(store.seen) - {t._trial_id for t in running}:
        del store.seen[ended]
    for t in running:
        silent = silent_for(store, t, now) > grace
        owner = t.user_attrs.get(OWNER)
        if owner is None:
            # Owners are recorded right after ask, under the claim lock: without the lock an
            # ownerless trial may still be in its first seconds.
            if serialised or silent:
                _lose(sweep, t, everyone, "agent died while claiming it", serialised, say)
            continue
        trainer = _trainer(t.user_attrs.get(RUN_FOLDER))
        # A run still being trained (its lock is held, seen from here) keeps its trial: a retry
        # could not start before it ends anyway.
        alive = True if trainer is not None else owner_alive(owner)
        if alive is False:
            reason = f"agent {owner} is gone"
        elif alive is None and silent:
            reason = f"no heartbeat from agent {owner} for over {grace:g} s"
        else:
            if alive and silent:
                who = (
                    f"its run is being trained by {trainer}"
                    if trainer
                    else (f"its agent {owner} still runs on this host")
                )
                say(f"trial {t.number}: no heartbeat for over {grace:g} s, but {who}: left to it")
            continue
        _lose(sweep, t, everyone, reason, serialised, say)
    t = tally(sweep)
    for lost in t.unretried:
        # The same run id, as W&B requeues a run: the trainer resumes from its checkpoint and
        # the analysis joins the two pieces into one run.
        retry_attrs = {RETRY_OF: lost.number, FAULTS: faults_after(lost)}
        if lost.user_attrs.get(RUN_ID):
            retry_attrs[RUN_ID] = lost.user_attrs[RUN_ID]
        sweep.study.enqueue_trial(
            space_mod.config_of(lost), user_attrs=retry_attrs, skip_if_exists=False
        )
    # Without a lock two reapers can retry one trial: keep the first retry only.
    seen: set[int] = set()
    for trial in sorted(tally(sweep).trials, key=lambda x: x.number):
        of = trial.user_attrs.get(RETRY_OF)
        if of is None or is_void(trial):
            continue
        if of in seen and trial.state == TrialState.WAITING:
            void(sweep, trial._trial_id, f"second retry of trial {of}")
        seen.add(of)


def _lose(
    sweep: Sweep,
    t: FrozenTrial,
    everyone: list[FrozenTrial],
    reason: str,
    serialised: bool,
    say: Callable[[str], None],
) -> None:
    """Mark a dead agent's trial lost; without a claim lock, void it instead when its claimer
    died before it could see that the order made the trial a duplicate."""
    duplicate = None if serialised else _duplicate(sweep, t, everyone)
    if duplicate is not None:
        void(sweep, t._trial_id, duplicate)
        say(f"trial {t.number}: void ({duplicate}; {reason})")
    elif is_original(t) and not set(sweep.space.distributions) <= set(t.params):
        # Died while asking: this configuration was never complete, never ran.
        why = "its agent died before its configuration was complete"
        void_unrun(sweep, t, why)
        again = ", back in the queue" if queued(t) else ""
        say(f"trial {t.number}: void ({why}; {reason}){again}")
    elif mark_lost(sweep, t._trial_id, reason):
        say(f"trial {t.number} run {t.user_attrs.get(RUN_ID, '-')}: lost ({reason})")


def claim(
    sweep: Sweep, store: Store, say: Callable[[str], None] = lambda _: None
) -> optuna.Trial | None:
    """The next trial for this agent (a retry or grid point first), or None if none is due."""
    with store.claim_lock():
        reap(sweep, store, say)
        t = tally(sweep)
        waiting = t.by_state(TrialState.WAITING)
        fresh_allowed = not sweep.grid and len(t.originals) < sweep.budget
        if not waiting and not fresh_allowed:
            return None
        trial = sweep.study.ask(fixed_distributions=sweep.space.distributions)
        trial.set_user_attr(OWNER, my_owner_tag())
        beat(sweep.study._storage, trial._trial_id)
    if store.lock_path is None:
        # Agents that asked at the same moment: the storage's order says which one keeps it.
        try:
            duplicate = _settle(sweep, store, trial._trial_id)
        except BaseException:  # stopped while waiting: the trial never ran
            frozen = sweep.study._storage.get_trial(trial._trial_id)
            void_unrun(sweep, frozen, "its agent was stopped while claiming it")
            raise
        if duplicate is not None:
            void(sweep, trial._trial_id, duplicate)
            return None
    return trial


def _settle(sweep: Sweep, store: Store, trial_id: int) -> str | None:
    """Why this new trial is a duplicate, once the earlier trials' configurations are known.

    A trial is created before its parameters are written: an earlier one may still be being
    asked for (a Gaussian process can take a while). Its configuration decides whether ours
    repeats it, so wait for it, as long as the grace period; past that, ours is voided: never
    a configuration run twice."""
    storage = sweep.study._storage
    names = set(sweep.space.distributions)
    deadline = time.monotonic() + sweep.settings.grace
    while True:
        frozen = storage.get_trial(trial_id)
        everyone = tally(sweep).trials
        asking = [
            t
            for t in everyone
            if t.number < frozen.number
            and t.state == TrialState.RUNNING
            and not names <= set(t.params)
        ]
        # A queued trial's configuration was fixed when it was queued: nothing to wait for.
        if not asking or sweep.space.points is None or queued(frozen):
            return _duplicate(sweep, frozen, everyone)
        if time.monotonic() > deadline:
            return f"trial {asking[0].number}, asked for earlier, has no configuration yet"
        with store.wait():
            time.sleep(POLL_SECONDS)


def _duplicate(sweep: Sweep, frozen: FrozenTrial, everyone: list[FrozenTrial]) -> str | None:
    """Why the order of the storage makes this trial a duplicate (only possible without the
    claim lock), or None. Earlier trials are only ever voided or lost, never revived, so a
    trial that was no duplicate when claimed stays none."""
    earlier = [t for t in everyone if t.number < frozen.number and not is_void(t)]
    of = frozen.user_attrs.get(RETRY_OF)
    if of is not None:
        twice = any(t.user_attrs.get(RETRY_OF) == of for t in earlier)
        return f"second retry of trial {of}" if twice else None
    if sum(1 for t in earlier if is_original(t)) >= sweep.budget:
        return "beyond the budget"
    if _repeats_an_earlier_config(sweep, frozen, earlier):
        return "the configuration of an earlier trial"
    return None


def _repeats_an_earlier_config(
    sweep: Sweep, frozen: FrozenTrial, earlier: list[FrozenTrial]
) -> bool:
    """The trial repeats an earlier one's configuration while an untaken one remains."""
    points = sweep.space.points
    if points is None:
        return False
    key = space_mod.params_key(frozen.params)
    configs = {space_mod.params_key(space_mod.config_of(t)) for t in earlier if holds_its_config(t)}
    return key in configs and len(configs) < len(points)
