"""Where local sweeps live, and how agents share one without losing or double-counting a trial.

Design. One sweep = one Optuna study in an ``RDBStorage`` (default
``sqlite:///outputs/sweeps.db``; PostgreSQL or MySQL URLs for several machines). The study is
named by the sweep id and stores the sweep file's text, so an agent needs only the id.

Why RDB and not the journal file: only ``RDBStorage`` has heartbeats, which find the trials
of agents that died on *other* machines. Its two weak points on SQLite are covered here:

* SQLite has no row locks, so two agents can pop the same WAITING trial, or fail the same
  stale trial twice (two retries). Every *claim* (reap dead trials, create retries, ask for
  the next trial, record its owner) therefore runs under an exclusive ``fcntl.flock`` on
  ``<db>.lock``. The kernel drops that lock when its holder dies, even by ``kill -9``, so a
  dead agent can never block the others. PostgreSQL and MySQL lock rows themselves
  (``SELECT ... FOR UPDATE``); there the lock is not needed.
* "database is locked" under many writers: a 60 s busy timeout and WAL journaling.

Dead agents. Each RUNNING trial records its owner (``host:pid:start-time``) and a heartbeat
(every ``heartbeat`` seconds). On the owner's host, liveness is the process itself: an owner
whose pid still runs with the same start time (the start time guards against PID reuse) keeps
its trial whatever its heartbeat says, so an agent that was only paused (Ctrl-Z, SIGSTOP, a
saturated disk) is never robbed while its trial's process still trains. The start time comes
from ``/proc``, or from ``ps`` where there is no ``/proc``; where neither answers, heartbeats
decide. Agents on other hosts see only the heartbeat: older than ``grace`` seconds, the trial
is taken over. Its owner, if it was alive after all, notices at its next heartbeat or report
and stops its trial's process. A trial found dead is *lost*: marked FAIL without an
``exit_code``, then re-enqueued once with the same parameters (``retry_of`` = its number) and
the same run id, so the trainer resumes from its checkpoint.

Bounded faults. A slot is retried after at most ``max_retries`` faults (lost or preempted
trials; a trial given back by an agent that was told to stop is not a fault of the trial). The
next fault ends the slot: FAIL, counted, with a ``reason`` that says so. ``heartbeat``,
``grace`` and ``max_retries`` belong to the sweep (set by ``create``), so every agent agrees.

Accounting, the same on every storage. The budget (``run_cap``, or the grid's points) counts
*slots*: the original trials. A lost trial hands its slot to its retry, so each slot ends in
exactly one counted trial (COMPLETE, PRUNED, or FAIL with an exit code). The order of writes
makes every step safe to interrupt: the owner is recorded right after ``ask``; a trial is
marked lost before its retry exists, and a lost trial without a retry is given one by the
next reaper. Where no lock serialises claims (several machines), an original beyond the
budget and a second retry of one trial are voided (``void`` attr, FAIL) and never counted.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import socket
import sqlite3
import string
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
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
GRACE_PERIOD = 60.0  # seen from another host, an older heartbeat means a dead agent
MAX_RETRIES = 3  # retries of one slot after a lost or preempted trial; the next fault ends it
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
GAVE_UP = "gave_up"  # the slot's last fault, after max_retries retries: counted as FAIL
RUN_FOLDER = "run_folder"  # absolute path of the trial's run folder, seen from its owner
ENGINE = "engine"  # study attr: the sweep's heartbeat, grace and max_retries

optuna.logging.set_verbosity(optuna.logging.WARNING)
# Heartbeats are "experimental" and "meant for Study.optimize": we drive them ourselves, on purpose.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")


def new_id() -> str:
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))


# --- storage ----------------------------------------------------------------------------------
@dataclass
class Store:
    url: str
    storage: optuna.storages.RDBStorage
    lock_path: Path | None  # set for SQLite, where claims need a file lock
    # Wraps the wait for the claim lock: an agent's stop signal may cut it short.
    wait: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext

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
        return "not a database URL (expected e.g. sqlite:///outputs/sweeps.db or postgresql://USER:PASS@HOST/DB)"
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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=int(HEARTBEAT_INTERVAL),
                grace_period=int(GRACE_PERIOD),
            )
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
) -> str:
    """A new sweep, or the existing one called ``name`` if its file is the same (its settings
    stay those it was created with)."""
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
    sweep = Sweep(sweep_id, study, cfg, built)
    # The storage finds stale heartbeats with the sweep's own grace period.
    store.storage.heartbeat_interval = sweep.settings.heartbeat
    store.storage.grace_period = sweep.settings.grace
    return sweep


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


def void(sweep: Sweep, trial_id: int, reason: str) -> None:
    _fail_with(sweep, trial_id, {VOID: reason})


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

    An owner this host can see alive keeps its trial, however old its heartbeat: the
    heartbeat only speaks for owners elsewhere (or where this host cannot tell)."""
    storage = sweep.study._storage
    stale = set(storage._get_stale_trial_ids(sweep.study._study_id))
    now = time.time()
    serialised = store.lock_path is not None
    grace = sweep.settings.grace
    for t in tally(sweep).by_state(TrialState.RUNNING):
        owner = t.user_attrs.get(OWNER)
        if owner is None:
            # Owners are recorded right after ask, under the claim lock: without the lock an
            # ownerless trial may still be in its first seconds.
            started = t.datetime_start.timestamp() if t.datetime_start else now
            if serialised or now - started > grace:
                mark_lost(sweep, t._trial_id, "agent died while claiming it")
            continue
        trainer = _trainer(t.user_attrs.get(RUN_FOLDER))
        # A run still being trained (its lock is held, seen from here) keeps its trial: a retry
        # could not start before it ends anyway.
        alive = True if trainer is not None else owner_alive(owner)
        if alive is False:
            reason = f"agent {owner} is gone"
        elif alive is None and t._trial_id in stale:
            reason = f"no heartbeat from agent {owner} for over {grace:g} s"
        else:
            if alive and t._trial_id in stale:
                who = (
                    f"its run is being trained by {trainer}"
                    if trainer
                    else (f"its agent {owner} still runs on this host")
                )
                say(f"trial {t.number}: no heartbeat for over {grace:g} s, but {who}: left to it")
            continue
        if mark_lost(sweep, t._trial_id, reason):
            say(f"trial {t.number} run {t.user_attrs.get(RUN_ID, '-')}: lost ({reason})")
    t = tally(sweep)
    for lost in t.unretried:
        # The same run id, as W&B requeues a run: the trainer resumes from its checkpoint and
        # the analysis joins the two pieces into one run.
        retry_attrs = {RETRY_OF: lost.number, FAULTS: faults_after(lost)}
        if lost.user_attrs.get(RUN_ID):
            retry_attrs[RUN_ID] = lost.user_attrs[RUN_ID]
        sweep.study.enqueue_trial(lost.params, user_attrs=retry_attrs, skip_if_exists=False)
    # Without a lock two reapers can retry one trial: keep the first retry only.
    seen: set[int] = set()
    for trial in sorted(tally(sweep).trials, key=lambda x: x.number):
        of = trial.user_attrs.get(RETRY_OF)
        if of is None or is_void(trial):
            continue
        if of in seen and trial.state == TrialState.WAITING:
            void(sweep, trial._trial_id, f"second retry of trial {of}")
        seen.add(of)


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
        sweep.study._storage.record_heartbeat(trial._trial_id)
    frozen = sweep.study._storage.get_trial(trial._trial_id)
    if is_original(frozen):
        earlier = [o for o in tally(sweep).originals if o.number < trial.number]
        if len(earlier) >= sweep.budget:  # only possible without the lock
            void(sweep, trial._trial_id, "beyond the budget")
            return None
        if _repeats_an_earlier_config(sweep, frozen):  # only possible without the lock
            void(sweep, trial._trial_id, "the configuration of an earlier trial")
            return None
    return trial


def _repeats_an_earlier_config(sweep: Sweep, frozen: FrozenTrial) -> bool:
    """The trial repeats an earlier one's configuration while an untaken one remains."""
    points = sweep.space.points
    if points is None:
        return False
    key = space_mod.params_key(frozen.params)
    configs = {
        space_mod.params_key(space_mod.config_of(t))
        for t in tally(sweep).trials
        if t.number < frozen.number and holds_its_config(t)
    }
    return key in configs and len(configs) < len(points)
