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

Dead agents. Each RUNNING trial records its owner (``host:pid:start-time``) and a heartbeat.
An agent on the same host sees at once that the owner process is gone (the start time guards
against PID reuse); agents elsewhere see the heartbeat go stale after ``GRACE_PERIOD``. A
trial found dead is *lost*: marked FAIL without an ``exit_code``, then re-enqueued once with
the same parameters (``retry_of`` = its number) and the same run id, so the trainer resumes
from its checkpoint.

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
import socket
import sqlite3
import string
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from contract.errors import UserError
from sweeper import space as space_mod

DEFAULT_STORAGE = "sqlite:///outputs/sweeps.db"
HEARTBEAT_INTERVAL = 10  # seconds between an agent's heartbeats for its running trial
GRACE_PERIOD = 60  # a trial whose heartbeat is older than this belongs to a dead agent
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

    @contextlib.contextmanager
    def claim_lock(self) -> Iterator[None]:
        if self.lock_path is None:
            yield
            return
        with open(self.lock_path, "a") as fh:
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
    try:
        storage = optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=HEARTBEAT_INTERVAL,
            grace_period=GRACE_PERIOD,
        )
    except ImportError as exc:
        extra = "postgres" if "postgres" in url else "mysql" if "mysql" in url else None
        hint = f": pip install 'vae-sweeps[{extra}]'" if extra else ""
        raise UserError(f"storage {url!r}: missing database driver ({exc.name}){hint}") from None
    except Exception as exc:  # sqlalchemy raises ArgumentError, OperationalError, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"storage {url!r}: cannot open it ({first})") from None
    lock = Path(f"{db}.lock") if db is not None else None
    return Store(url, storage, lock)


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


def create_sweep(
    store: Store, text: str, cfg: dict[str, Any], source: str, name: str | None
) -> str:
    """A new sweep, or the existing one called ``name`` if its file is the same."""
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
        sampler=space_mod.sampler_for(cfg),
        # Hyperband's thresholds ignore trials that never ran as themselves (a lost trial's
        # epochs come back in its retry).
        pruner=space_mod.pruner_for(cfg, counts=lambda t: not is_lost(t) and not is_void(t)),
    )
    return Sweep(sweep_id, study, cfg, built)


# --- owners -------------------------------------------------------------------------------------
def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot; None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def my_owner_tag() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid()) or 0}"


def owner_is_dead(tag: str) -> bool | None:
    """True/False for an owner on this host; None when it runs elsewhere (use heartbeats)."""
    host, pid, started = tag.rsplit(":", 2)
    if host != socket.gethostname():
        return None
    return _start_time(int(pid)) != started


# --- accounting -----------------------------------------------------------------------------------
def is_void(t: FrozenTrial) -> bool:
    return bool(t.user_attrs.get(VOID))


def is_lost(t: FrozenTrial) -> bool:
    """Ended without the agent recording how: its agent died or gave the trial back."""
    return t.state == TrialState.FAIL and EXIT_CODE not in t.user_attrs and not is_void(t)


def is_counted(t: FrozenTrial) -> bool:
    if is_void(t):
        return False
    return t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        t.state == TrialState.FAIL and EXIT_CODE in t.user_attrs
    )


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


def _fail_with(sweep: Sweep, trial_id: int, attr: str, reason: str) -> None:
    """Mark a trial FAIL with ``attr`` (LOST or VOID) saying why."""
    storage = sweep.study._storage
    try:
        storage.set_trial_user_attr(trial_id, attr, reason)
        storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass  # someone else finished or failed it first


def mark_lost(sweep: Sweep, trial_id: int, reason: str) -> None:
    _fail_with(sweep, trial_id, LOST, reason)


def void(sweep: Sweep, trial_id: int, reason: str) -> None:
    _fail_with(sweep, trial_id, VOID, reason)


def reap(sweep: Sweep, store: Store) -> None:
    """Find trials of dead agents, mark them lost and give each lost trial one retry."""
    optuna.storages.fail_stale_trials(sweep.study)  # heartbeats: agents on other hosts
    now = time.time()
    serialised = store.lock_path is not None
    for t in tally(sweep).by_state(TrialState.RUNNING):
        owner = t.user_attrs.get(OWNER)
        if owner is None:
            # Owners are recorded right after ask, under the claim lock: without the lock an
            # ownerless trial may still be in its first seconds.
            started = t.datetime_start.timestamp() if t.datetime_start else now
            if serialised or now - started > GRACE_PERIOD:
                mark_lost(sweep, t._trial_id, "agent died while claiming it")
        elif owner_is_dead(owner):
            mark_lost(sweep, t._trial_id, f"agent {owner} is gone")
    t = tally(sweep)
    for lost in t.unretried:
        # The same run id, as W&B requeues a run: the trainer resumes from its checkpoint and
        # the analysis joins the two pieces into one run.
        retry_attrs = {RETRY_OF: lost.number}
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


def claim(sweep: Sweep, store: Store) -> optuna.Trial | None:
    """The next trial for this agent (a retry or grid point first), or None if none is due."""
    with store.claim_lock():
        reap(sweep, store)
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
    return trial
