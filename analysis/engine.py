"""What the local engine knows about a sweep: each trial's state and why it ended, read from the
engine's Optuna storage without writing to it.

The engine keeps one study per local sweep (named by the sweep id, its name in a study user
attribute) and, per trial, the run id it trained and how it ended: COMPLETE, PRUNED (stopped by
the pruner), FAIL with a reason ("out of memory", "config error", ...), or FAIL without an exit
code when its agent died and the trial was handed to a retry with the same run id. A run's
engine state is that of its latest trial.

A SQLite storage is opened read-only (``mode=ro``), so the report can neither create a database
where there was none nor hold a write lock over agents still running. A journal
(``journal:PATH``) is only read: the report never takes its lock.
"""

from __future__ import annotations

import math
import os
import urllib.parse
from dataclasses import dataclass

from analysis.records import RunRecord
from contract.errors import UserError
from sweeper import store as st


@dataclass
class EngineTrial:
    number: int
    state: str  # Optuna's TrialState name: COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    run_id: str | None
    reason: str | None  # the agent's reason for a FAIL, or why the trial was lost or voided
    exit_code: int | None
    value: float | None
    retry_of: int | None
    void: bool  # never ran, or a duplicate retry: not counted by the engine


@dataclass
class EngineSweep:
    sweep_id: str
    name: str
    storage: str
    trials: list[EngineTrial]

    def latest_by_run(self) -> dict[str, EngineTrial]:
        """Each run id's latest counted trial (a retry comes after the trial it retries)."""
        out: dict[str, EngineTrial] = {}
        for t in sorted(self.trials, key=lambda t: t.number):
            if t.run_id and not t.void:
                out[t.run_id] = t
        return out


def storage_url(given: str | None) -> str:
    """The storage the local engine uses when given none: ``$SWEEPER_STORAGE`` or the default."""
    return given or os.environ.get("SWEEPER_STORAGE") or st.DEFAULT_STORAGE


def _read_only(url: str) -> str | None:
    """A read-only URL for a SQLite storage; None when its file does not exist."""
    path = st.sqlite_path(url)
    if path is None:
        return url
    if not path.is_file():
        return None
    quoted = urllib.parse.quote(str(path.resolve()))
    return f"sqlite:///file:{quoted}?mode=ro&uri=true"


def _reason(attrs: dict) -> str | None:
    for key in (st.REASON, st.LOST, st.VOID):
        if attrs.get(key):
            prefix = {st.LOST: "lost: ", st.VOID: "void: "}.get(key, "")
            return f"{prefix}{attrs[key]}"
    return None


def read_sweeps(
    url: str, sweep_ids: set[str], explicit: bool
) -> tuple[list[EngineSweep], list[str]]:
    """The local sweeps among ``sweep_ids`` found in the storage at ``url``, and notes.

    A storage named on the command line (``explicit``) must open, or it is a one-line error;
    the default one is optional: a folder of W&B runs needs no local engine.
    """
    import optuna

    journal = st.journal_path(url)
    if journal is not None:
        if not journal.is_file():
            if explicit:
                raise UserError(f"--storage {url}: no such journal file")
            return [], []
        try:
            storage = st.open_journal(url, journal, write=False, name=f"--storage {url}")
        except UserError as exc:
            if explicit:
                raise
            return [], [f"engine states not shown: {exc}"]
        return _sweeps(storage, url, sweep_ids), []
    ro = _read_only(url)
    if ro is None:
        if explicit:
            raise UserError(f"--storage {url}: no such SQLite file")
        return [], []
    problem = None if st.sqlite_path(url) else st.driver_problem(url)
    if problem:
        raise UserError(f"--storage {st.shown_url(url)}: {problem}")
    try:
        storage = optuna.storages.RDBStorage(ro)
    except Exception as exc:  # sqlalchemy raises OperationalError, ArgumentError, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        if explicit:
            raise UserError(f"--storage {st.shown_url(url)}: cannot read it ({first})") from None
        shown = st.shown_url(url)
        return [], [f"engine states not shown: cannot read the storage {shown} ({first})"]
    return _sweeps(storage, url, sweep_ids), []


def _sweeps(storage, url: str, sweep_ids: set[str]) -> list[EngineSweep]:
    found = []
    for sweep_id in sorted(sweep_ids):
        try:
            study_id = storage.get_study_id_from_name(sweep_id)
        except KeyError:
            continue
        attrs = storage.get_study_user_attrs(study_id)
        trials = []
        for t in storage.get_all_trials(study_id, deepcopy=False):
            value = t.value if t.values and math.isfinite(t.value) else None
            trials.append(
                EngineTrial(
                    number=t.number,
                    state=t.state.name,
                    run_id=t.user_attrs.get(st.RUN_ID),
                    reason=_reason(t.user_attrs),
                    exit_code=t.user_attrs.get(st.EXIT_CODE),
                    value=value,
                    retry_of=t.user_attrs.get(st.RETRY_OF),
                    void=bool(t.user_attrs.get(st.VOID)),
                )
            )
        found.append(EngineSweep(sweep_id, str(attrs.get("name") or sweep_id), url, trials))
    return found


def attach(runs: list[RunRecord], sweeps: list[EngineSweep]) -> None:
    """Give each run of a local sweep its trial's state and reason."""
    latest = {sw.sweep_id: sw.latest_by_run() for sw in sweeps}
    for run in runs:
        trial = latest.get(run.sweep_id or "", {}).get(run.run_id)
        if trial is not None:
            run.engine_state, run.engine_reason = trial.state, trial.reason
