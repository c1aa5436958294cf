"""The local agent: claim a trial, run the sweep's command for it as ``wandb agent`` would, record
how it ended; repeat until the sweep's budget is spent (or ``--count`` trials ran).

A trial's process gets what ``wandb agent`` gives a run: the command with its macros
rendered as wandb renders them, ``WANDB_RUN_ID``,
``WANDB_SWEEP_PARAM_PATH`` (``key: {value: v}``, merged into ``run.config`` by
``wandb.init``), plus ``WANDB_RUN_GROUP`` = the sweep id (never ``WANDB_SWEEP_ID``: W&B refuses
a run that names a sweep it does not have), and ``WANDB_MODE=offline`` unless the
user chose a mode.

The agent reads the trial's metric from ``<output_dir>/runs/<run_id>/progress.jsonl`` (one
JSON object per finished epoch, ``epoch`` counting from 1), where ``output_dir`` is the sweep's
``output_dir`` value or the trainer's default, relative to the agent's folder. Any command
that writes that file can be swept. With ``early_terminate: hyperband`` each new epoch is
reported to the pruner; a pruned trial gets SIGTERM (then SIGKILL after
``WANDB_AGENT_KILL_DELAY`` seconds, 30 by default), as W&B stops runs.

Exit statuses of the trial: 0 = COMPLETE (or PRUNED when the agent's stop cut it short: a
trainer whose exit record says it trained every epoch is COMPLETE); 3 = FAIL,
diverged; 2 = FAIL, config error; 75 = preempted: given back and retried (up to the sweep's
``max_retries``); anything else = FAIL, crashed (out-of-memory named when the log says so).
None of them stops the agent.

Preemption. SIGUSR1 (a scheduler's warning, passed on by ``run_agent.sh`` or the batch
script) goes on to the running trial, which checkpoints and exits 75; the agent gives the
trial back as preempted and exits without claiming another. A preemption the agent passed
on is the scheduler's doing and costs the slot no retry; an exit 75 nobody announced still
counts toward ``max_retries``. The trial is retried under the same run id and resumes from
its checkpoint, on whichever agent claims it next.

Stopping. SIGTERM or SIGINT stops the agent at any moment: waiting for the claim lock, waiting
between trials or for the fork server's imports, the wait is cut short; a running trial gets
SIGTERM (a second Ctrl-C: SIGKILL at once), then SIGKILL after the kill delay if it is still
there. More SIGTERMs change nothing: a scheduler's cancel reaches the agent several times (its
own copy, run_agent.sh's, the batch script's), however late, and escalates itself. Either way
its trial is given back at once, for the next agent. A trial that another agent took over (its
heartbeats looked dead from another host) is stopped the same way when its owner notices, at
its next heartbeat or report; the owner says so in one line and goes on.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from contract import metrics, runs
from contract.config import DEFAULTS
from contract.errors import EXIT_DIVERGED, EXIT_PREEMPTED, USER_ERROR_EXIT, UserError
from sweeper import startup
from sweeper import store as st
from sweeper.forkserver import Child, ForkServer, spawn
from sweeper.validate import is_trainer_command

POLL_SECONDS = 0.5
IDLE_SECONDS = 2.0  # between checks while other agents finish the last trials
KILL_DELAY = 30.0  # seconds from SIGTERM to SIGKILL, as wandb agent's WANDB_AGENT_KILL_DELAY
SAME_SIGNAL_SECONDS = 1.0  # a Ctrl-C this close to the first stop signal is the same one
REASONS = {EXIT_DIVERGED: "diverged", USER_ERROR_EXIT: "config error"}


class Stopped(BaseException):
    """Raised by the stop signal out of a wait that may be cut short."""


def kill_delay() -> float:
    raw = os.environ.get("WANDB_AGENT_KILL_DELAY")
    if raw is None:
        return KILL_DELAY
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise UserError(f"WANDB_AGENT_KILL_DELAY={raw!r}: must be a number of seconds >= 0")
    return value


def best(values: list[float], goal: str) -> float | None:
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return None
    return max(finite) if goal == "maximize" else min(finite)


ENVVAR_MACRO = re.compile(r"\$\{envvar\:([A-Z0-9_]*)\}")
DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]


def sweep_vars(values: dict[str, Any]) -> dict[str, list[str]]:
    """The argument macros, rendered as wandb 0.31's ``create_sweep_command_args`` renders them
    (a test holds the two equal); done here so agents need not import wandb's launch package."""
    out: dict[str, list[str]] = {
        k: []
        for k in (
            "args",
            "args_no_equals",
            "args_no_hyphens",
            "args_no_boolean_flags",
            "args_append_hydra",
            "args_override_hydra",
        )
    }
    for key, value in values.items():
        flag = f"{key}={value}"
        out["args"].append(f"--{flag}")
        out["args_no_hyphens"].append(flag)
        out["args_no_equals"] += [f"--{key}", str(value)]
        out["args_append_hydra"].append(f"+{flag}")
        out["args_override_hydra"].append(f"++{flag}")
        if not isinstance(value, bool):
            out["args_no_boolean_flags"].append(f"--{flag}")
        elif value:
            out["args_no_boolean_flags"].append(f"--{key}")
    out["args_json"] = [json.dumps(values)]
    return out


def render(cfg: dict[str, Any], values: dict[str, Any], json_file: Path) -> list[str]:
    """The command line ``wandb agent`` would run for these values."""
    macros = sweep_vars(values)
    macros.update(
        env=["/usr/bin/env"],
        interpreter=["python"],  # wandb agent's literal: the python found on PATH
        program=[str(cfg["program"])] if cfg.get("program") else [],
        args_json_file=[str(json_file)],
    )
    out: list[str] = []
    for chunk in map(str, cfg.get("command") or DEFAULT_COMMAND):
        chunk = ENVVAR_MACRO.sub(lambda m: os.environ.get(m.group(1), m.group(1)), chunk)
        if chunk == "${args_json_file}":
            json_file.write_text(macros["args_json"][0])
        if chunk.startswith("${") and chunk.endswith("}"):
            out += macros.get(chunk[2:-1]) or []
        else:
            out.append(chunk)
    return out


def wrap(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: {"value": v} for k, v in values.items()}


def trial_env(sweep_id: str, run_id: str, param_path: Path) -> dict[str, str]:
    # No WANDB_SWEEP_ID: W&B refuses a run that names a sweep it does not have, so a local
    # trial's offline run would never upload (`wandb sync` says "sweep X not found"). The run
    # group carries the local sweep's id instead; the analysis reads it from there.
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SWEEP_ID"}
    env.setdefault("WANDB_MODE", "offline")
    env.update(
        WANDB_RUN_ID=run_id,
        WANDB_SWEEP_PARAM_PATH=str(param_path),
        WANDB_RUN_GROUP=sweep_id,
    )
    return env


def trainer_argv(command: list[str]) -> tuple[str, list[str]] | None:
    """``(interpreter, args)`` when the command is ``[/usr/bin/env] python -m trainer ARGS``."""
    rest = command[1:] if command and command[0].endswith("/env") else command
    if len(rest) >= 3 and rest[1:3] == ["-m", "trainer"]:
        interpreter = shutil.which(rest[0])
        return (interpreter, rest[3:]) if interpreter else None
    return None


class Agent:
    def __init__(self, store: st.Store, sweep: st.Sweep, count: int | None, fork: bool = True):
        self.store, self.sweep, self.count = store, sweep, count
        self.fork = fork and is_trainer_command(sweep.cfg)
        self.settings = sweep.settings
        self.kill_delay = kill_delay()
        self.server: ForkServer | None = None
        self.child: Child | None = None
        self.stopping, self.stop_signal = False, 0
        self.preempting = False
        self._signal_at = 0.0
        self.cwd = os.getcwd()
        self._interruptible = False
        self._term_at: float | None = None  # when the running trial got SIGTERM
        self._lost: str | None = None  # why the running trial was taken over by another agent
        self._noted: set[str] = set()
        store.wait = self.waiting

    # --- signals: stop the current trial cleanly, give it back, exit -------------------------
    def _on_signal(self, signum: int, _frame: Any) -> None:
        # Only a person's second Ctrl-C kills the trial at once. A scheduler's cancel signals
        # every process of the job at once, so SIGTERM also comes again from run_agent.sh (and a
        # Ctrl-C's SIGINT with it), as late as a loaded machine makes it: never a second signal.
        now = time.monotonic()
        again = (
            self.stopping
            and signum == signal.SIGINT
            and now - self._signal_at > SAME_SIGNAL_SECONDS
        )
        if not self.stopping:
            self._signal_at = now
        if signum == signal.SIGUSR1:
            if self.stopping:
                return  # already preempting (or stopping): the trial has its signal
            self.preempting = True
        self.stopping, self.stop_signal = True, signum
        if self.child is not None:
            if signum == signal.SIGUSR1:
                self._stop_child(signal.SIGUSR1)
            else:
                self._stop_child(signal.SIGKILL if again else signal.SIGTERM)
        if self._interruptible:
            self._interruptible = False
            raise Stopped

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """A wait that the stop signal cuts short (by raising Stopped out of it)."""
        if self.stopping:
            raise Stopped
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False

    def _stop_child(self, sig: int) -> None:
        child = self.child
        if child is None:
            return
        if self._term_at is None:
            self._term_at = time.monotonic()
        child.signal(sig)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            signal.signal(sig, self._on_signal)
        if startup.preempted:  # warned while it started: it claims nothing
            self._on_signal(signal.SIGUSR1, None)
        ran = 0
        try:
            while not self.stopping and (self.count is None or ran < self.count):
                trial = st.claim(self.sweep, self.store, self._note)
                if trial is None:
                    if st.sweep_done(self.sweep):
                        break
                    with self.waiting():
                        time.sleep(IDLE_SECONDS)  # others are finishing; theirs may need a retry
                    continue
                self.run_trial(trial)
                ran += 1
        except Stopped:
            pass
        finally:
            if self.server is not None:
                self.server.close()
        self.say(f"agent done: {ran} trial(s) run here")
        print_best(self.sweep)
        return 128 + self.stop_signal if self.stopping else 0

    def say(self, text: str) -> None:
        print(f"[sweeper {self.sweep.id}] {text}", flush=True)

    def _note(self, text: str) -> None:
        """What the reaper saw, each line once (it looks again before every claim)."""
        if text not in self._noted:
            self._noted.add(text)
            self.say(text)

    def _give_back(self, trial: optuna.Trial, run_id: str) -> None:
        st.mark_lost(self.sweep, trial._trial_id, "its agent was stopped", fault=False)
        self.say(f"trial {trial.number} run {run_id}: given back (agent stopped)")

    # --- one trial ----------------------------------------------------------------------------
    def run_trial(self, trial: optuna.Trial) -> None:
        sweep = self.sweep
        frozen = sweep.study._storage.get_trial(trial._trial_id)
        run_id = frozen.user_attrs.get(st.RUN_ID) or st.new_id()  # a retry resumes its run
        if self.stopping:  # the signal came while claiming
            self._give_back(trial, run_id)
            return
        values = sweep.space.values(frozen.params)
        output_dir = Path(self.cwd, str(values.get("output_dir", DEFAULTS["output_dir"])))
        run_dir = runs.run_dir(output_dir, run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        self._term_at, self._lost = None, None
        try:
            trial.set_user_attr(st.RUN_ID, run_id)
            trial.set_user_attr(st.RUN_FOLDER, str(run_dir))
        except optuna.exceptions.UpdateFinishedTrialError:
            self.say(f"trial {trial.number}: taken over by another agent before it started")
            return
        log = run_dir / runs.TRIAL_LOG
        retry = frozen.user_attrs.get(st.RETRY_OF)
        note = f" (retry of trial {retry})" if retry is not None else ""
        self.say(f"trial {trial.number} run {run_id}{note}: {json.dumps(values)}")

        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"sweep-{sweep.id}-") as tmp:
            param_path = Path(tmp, f"config-{run_id}.yaml")
            # wandb agent also writes a `wandb_version: 1` line; wandb.init reads either form.
            param_path.write_text(yaml.safe_dump(wrap(values), sort_keys=False))
            env = trial_env(sweep.id, run_id, param_path)
            command = render(sweep.cfg, values, Path(tmp, f"config-{run_id}.json"))
            beat = threading.Event()
            heart = threading.Thread(
                target=self._heartbeat, args=(trial._trial_id, beat), daemon=True
            )
            heart.start()
            try:
                self._wait_for_run(trial, run_id, run_dir)
                if self._lost is not None:
                    self.say(f"trial {trial.number} run {run_id}: taken over by another agent")
                    return
                self.child = self._start(command, env, log)
                if self.stopping or self._lost is not None:  # while it started
                    self._stop_child(signal.SIGUSR1 if self.preempting else signal.SIGTERM)
                code, pruned, reported = self._watch(trial, run_dir)
            except Stopped:
                self._give_back(trial, run_id)
                raise
            finally:
                beat.set()
                heart.join()
                self.child = None
        self._finish(trial, run_id, code, pruned, reported, log, time.monotonic() - started)

    def _wait_for_run(self, trial: optuna.Trial, run_id: str, run_dir: Path) -> None:
        """Wait while another process still trains this run (its run lock is held): the owner
        this trial was taken over from, not stopped yet, or its process finishing. Starting now
        would train one run in two processes."""
        holder = runs.holder(run_dir)
        if holder is None:
            return
        self.say(
            f"trial {trial.number} run {run_id}: still being trained by {holder}; "
            "waiting for it to end"
        )
        with self.waiting():
            while self._lost is None and runs.holder(run_dir) is not None:
                time.sleep(POLL_SECONDS)

    def _start(self, command: list[str], env: dict[str, str], log: Path) -> Child:
        target = trainer_argv(command) if self.fork else None
        if target is not None:
            interpreter, argv = target
            try:
                if self.server is None or not self.server.alive():
                    self.server = ForkServer(interpreter, dict(os.environ), self.cwd)
                with self.waiting():
                    self.server.wait_ready()
                return self.server.start(argv, env, self.cwd, log)
            except (RuntimeError, OSError) as exc:
                self.say(f"fork server unavailable ({exc}); starting trials as cold processes")
                self.fork, self.server = False, None
        return spawn(command, env, self.cwd, log)

    def _heartbeat(self, trial_id: int, done: threading.Event) -> None:
        """Beat while the trial is ours; once another agent has taken it over, stop its child."""
        storage = self.sweep.study._storage
        while not done.wait(self.settings.heartbeat):
            try:
                frozen = storage.get_trial(trial_id)
                if frozen.state != TrialState.RUNNING:
                    self._taken_over(frozen)
                    return
                st.beat(storage, trial_id)
            except Exception:  # the database did not answer: the next beat tries again
                continue

    def _taken_over(self, frozen: optuna.trial.FrozenTrial) -> None:
        if self._lost is None:
            self._lost = str(
                frozen.user_attrs.get(st.LOST) or frozen.user_attrs.get(st.GAVE_UP) or "ended"
            )
            self._stop_child(signal.SIGTERM)

    def _watch(self, trial: optuna.Trial, run_dir: Path) -> tuple[int, bool, list[float]]:
        """Feed the pruner each new epoch until the process ends; SIGTERM it when pruned."""
        sweep, child = self.sweep, self.child
        reported: dict[int, float] = {}
        pruned, killed, announced = False, False, False
        while True:
            code = child.wait(timeout=POLL_SECONDS)
            if self.stopping and not announced:
                announced = True
                sent = "SIGUSR1 (preemption)" if self.preempting else "SIGTERM"
                self.say(
                    f"trial {trial.number}: stopping (signal {self.stop_signal}): {sent} sent, "
                    f"SIGKILL after {self.kill_delay:g} s or at a second Ctrl-C"
                )
            for epoch, value in runs.epoch_values(run_dir, sweep.metric, sweep.goal):
                if epoch in reported:
                    continue
                reported[epoch] = value
                if self.stopping or self._lost is not None:
                    continue
                # Epochs finished after the SIGTERM are still recorded, so a pruned trial's
                # value is its best, as W&B's summary of the stopped run would show.
                try:
                    trial.report(value, step=epoch)
                    prune = not pruned and trial.should_prune()
                except optuna.exceptions.UpdateFinishedTrialError:
                    self._taken_over(sweep.study._storage.get_trial(trial._trial_id))
                    continue
                if prune:
                    pruned = True
                    self.say(
                        f"trial {trial.number}: pruned at epoch {epoch}, stopping it (SIGTERM)"
                    )
                    self._stop_child(signal.SIGTERM)
            if code is not None:
                return code, pruned, list(reported.values())
            if self.preempting and not killed:
                # Again at every poll: a trainer from the fork server ignores SIGUSR1 until its
                # handler is installed, and one warning that landed before would be lost.
                child.signal(signal.SIGUSR1)
            overdue = (
                self._term_at is not None and time.monotonic() - self._term_at > self.kill_delay
            )
            if overdue and not killed:
                killed = True
                self.say(
                    f"trial {trial.number}: still running {self.kill_delay:g} s after SIGTERM, "
                    "killing it (SIGKILL)"
                )
                child.signal(signal.SIGKILL)

    def _finish(self, trial, run_id, code, pruned, reported, log, seconds) -> None:
        sweep = self.sweep
        value = best(reported, sweep.goal)
        state, reason = TrialState.COMPLETE, None
        if self._lost is not None:
            self.say(
                f"trial {trial.number} run {run_id}: taken over by another agent "
                f"({self._lost}); stopped its process (exit {code}), going on"
            )
            return
        # A trainer that trained every epoch and exited 0 finished, whatever stop came after.
        complete = code == 0 and trained_every_epoch(log.parent)
        if self.preempting and code == EXIT_PREEMPTED and not pruned:
            st.mark_preempted(sweep, trial._trial_id)
            self.say(
                f"trial {trial.number} run {run_id}: preempted (exit {code}, announced), "
                "given back; it resumes from its checkpoint"
            )
            return
        if self.stopping and not pruned and not complete:
            # Interrupted by the user: give the trial back, the next agent runs it again.
            self._give_back(trial, run_id)
            return
        if code == EXIT_PREEMPTED and not pruned:  # a preemption nobody announced: a fault
            st.mark_lost(sweep, trial._trial_id, "preempted (exit 75)")
            ended = sweep.study._storage.get_trial(trial._trial_id)
            if st.is_gave_up(ended):
                self.say(f"trial {trial.number} run {run_id}: FAIL, {ended.user_attrs[st.REASON]}")
            else:
                self.say(f"trial {trial.number} run {run_id}: preempted, it will be retried")
            return
        if complete and (pruned or self.stopping):
            # The stop came after the trainer's last epoch: it cut nothing short.
            self.say(f"trial {trial.number}: had trained every epoch before its stop: COMPLETE")
            pruned = False
        if pruned:
            state = TrialState.PRUNED
        elif code != 0:
            state, reason = TrialState.FAIL, REASONS.get(code) or crash_reason(code, log)
        elif value is None:
            state, reason = TrialState.FAIL, f"no {sweep.metric} in progress.jsonl"
        try:
            trial.set_user_attr(st.EXIT_CODE, code)
            if reason:
                trial.set_user_attr(st.REASON, reason)
            if state == TrialState.COMPLETE:
                sweep.study.tell(trial, value)
            else:
                sweep.study.tell(trial, state=state)
        except optuna.exceptions.UpdateFinishedTrialError:
            self.say(f"trial {trial.number}: another agent declared it lost; its retry counts")
            return
        shown = f"{sweep.metric}={value:.6g}" if value is not None else "no value"
        why = f", {reason}" if reason else ""
        self.say(
            f"trial {trial.number} run {run_id}: {state.name} {shown} (exit {code}{why}, "
            f"{seconds:.1f} s; log {log})"
        )


def trained_every_epoch(run_dir: Path) -> bool:
    """The trainer's exit record says the run finished: every epoch trained, a stop signal
    after the last one notwithstanding (a stop that cut it short says ``stopped``). A run that
    stopped itself (``early_stop``) is finished too: its pruning came after it ended."""
    record = runs.read_exit(run_dir)
    return record is not None and record.status in (
        metrics.STATUS_FINISHED,
        metrics.STATUS_EARLY_STOPPED,
    )


def crash_reason(code: int, log: Path) -> str:
    try:
        with open(log, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 20_000))
            tail = fh.read().decode(errors="replace")
    except OSError:
        tail = ""
    if "out of memory" in tail.lower():
        return "out of memory"
    if code < 0:
        return f"killed by signal {-code}"
    return f"crashed (exit {code})"


def print_best(sweep: st.Sweep) -> None:
    done = [t for t in st.tally(sweep).trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in st.tally(sweep).trials if t.state == TrialState.PRUNED and t.values]
    pool = done or pruned
    if not pool:
        print(f"[sweeper {sweep.id}] no finished trial yet", flush=True)
        return
    pick = max if sweep.goal == "maximize" else min
    top = pick(pool, key=lambda t: t.values[0])
    params = sweep.space.values(top.params)
    origin = top.user_attrs.get("seeded_from")  # sweeper.warm.SEEDED_FROM: no run of its own
    run = f"run {top.user_attrs.get(st.RUN_ID)}"
    if origin:
        run = f"seeded from sweep {origin['sweep']} trial {origin['trial']} run {origin['run_id']}"
    print(
        f"[sweeper {sweep.id}] best: trial {top.number} {run} "
        f"{sweep.metric}={top.values[0]:.6g} {json.dumps(params)}",
        file=sys.stdout,
        flush=True,
    )
