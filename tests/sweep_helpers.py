"""Helpers for the sweeper tests: a trivial swept program, sweep files, storage inspection."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, offline_env

# A program the local engine can sweep like the trainer: it reads --key=value arguments,
# appends one line per start to a ledger, writes progress.jsonl under
# <output_dir>/runs/$WANDB_RUN_ID/ once per "epoch", and exits with --exit_code. Each process
# holds a lock named by its run id for its whole life: a second process alive at once for the
# same run id finds it taken and says so in its ledger line ("overlap"). --hold=PATH: wait
# before exiting while PATH exists; --ignore_term=True: ignore SIGTERM; --run_lock=True: hold
# the run folder's lock as the trainer does.
TRIVIAL = r"""
import fcntl, json, os, signal, sys, time
args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
if args.get("ignore_term") == "True":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
run_id = os.environ["WANDB_RUN_ID"]
out = os.path.join(args.get("output_dir", "outputs"), "runs", run_id)
os.makedirs(out, exist_ok=True)
if args.get("run_lock") == "True":
    from pathlib import Path
    from contract.runs import take_lock
    run_lock = take_lock(Path(out))
guard = open(args["ledger"] + "." + run_id + ".lock", "w")
try:
    fcntl.flock(guard, fcntl.LOCK_EX | fcntl.LOCK_NB)
    overlap = False
except BlockingIOError:
    overlap = True
with open(args["ledger"], "a") as f:
    f.write(json.dumps({
        "run_id": run_id,
        "sweep_id": os.environ.get("WANDB_SWEEP_ID"),
        "group": os.environ.get("WANDB_RUN_GROUP"),
        "mode": os.environ.get("WANDB_MODE"),
        "param_path": os.environ["WANDB_SWEEP_PARAM_PATH"],
        "params": open(os.environ["WANDB_SWEEP_PARAM_PATH"]).read(),
        "x": float(args["x"]),
        "pid": os.getpid(),
        "overlap": overlap,
    }) + "\n")
x = float(args["x"])
for epoch in range(1, int(args.get("epochs", 3)) + 1):
    time.sleep(float(args.get("sleep", 0.1)))
    with open(os.path.join(out, "progress.jsonl"), "a") as f:
        f.write(json.dumps({"epoch": epoch, "val/recon_loss": x / epoch}) + "\n")
while os.path.exists(args.get("hold", "")):
    time.sleep(0.05)
sys.exit(int(args.get("exit_code", 0)))
"""


def trivial_sweep(tmp_path: Path, run_cap: int, **fixed: Any) -> Path:
    """A random sweep over x in [0, 1] that runs the trivial program; returns the file."""
    program = tmp_path / "trivial.py"
    program.write_text(TRIVIAL)
    params: dict[str, Any] = {"x": {"min": 0.0, "max": 1.0}}
    fixed.setdefault("ledger", str(tmp_path / "ledger.jsonl"))
    params.update({k: {"value": v} for k, v in fixed.items()})
    return write_sweep(
        tmp_path / "trivial.yaml",
        {
            "name": "trivial",
            "program": str(program),
            "method": "random",
            "metric": {"name": "val/best_recon_loss", "goal": "minimize"},
            "run_cap": run_cap,
            "parameters": params,
        },
    )


def write_sweep(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def storage_url(tmp_path: Path, kind: str = "sqlite") -> str:
    """The test's storage of this kind in tmp_path: ``sqlite`` (the default) or ``journal``."""
    return {
        "sqlite": f"sqlite:///{tmp_path / 'sweeps.db'}",
        "journal": f"journal:{tmp_path / 'sweeps.journal'}",
    }[kind]


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Offline W&B under tmp_path, the repo's python first on PATH (${interpreter} = python),
    and the sweeps in ``$SWEEPER_STORAGE`` (SQLite in tmp_path unless ``extra`` says)."""
    out = offline_env(tmp_path, **extra)
    out["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), out.get("PATH", "")))
    out.setdefault("SWEEPER_STORAGE", storage_url(tmp_path))
    return out


def sweeper(tmp_path: Path, *args: str, timeout: float = 120, storage: str | None = None, **kw):
    extra = {"SWEEPER_STORAGE": storage} if storage else {}
    return subprocess.run(
        [sys.executable, "-m", "sweeper", *args],
        cwd=tmp_path,
        env=kw.pop("env", None) or env(tmp_path, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def create(tmp_path: Path, file: Path, *args: str, storage: str | None = None) -> str:
    done = sweeper(tmp_path, "create", str(file), *args, storage=storage)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def start_agent(
    tmp_path: Path,
    sweep_id: str,
    log: Path,
    *args: str,
    host: str | None = None,
    storage: str | None = None,
    **extra: str,
) -> subprocess.Popen:
    """An agent; with ``host``, on a simulated host of that name, so only heartbeats tell the
    other agents whether it is alive."""
    command = [sys.executable, "-m", "sweeper", "agent", sweep_id, *args]
    if host is not None:
        command = on_host(host, command)
    if storage:
        extra["SWEEPER_STORAGE"] = storage
    with open(log, "ab") as out:
        return subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env(tmp_path, **extra),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def on_host(host: str, command: list[str]) -> list[str]:
    """``command`` with its own hostname (a UTS namespace; a user namespace too when not root).
    ``exec`` keeps the pid: signals sent to the process reach the command itself."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare not found (util-linux): cannot simulate a second host")
    namespaces = ["-u"] if os.geteuid() == 0 else ["-r", "-u"]
    return ["unshare", *namespaces, "sh", "-c", f'hostname {host} && exec "$@"', "sh", *command]


def wait_for_line(log: Path, text: str, timeout: float) -> None:
    wait_for(lambda: log.exists() and text in log.read_text(), timeout, f"{text!r} in {log.name}")


def trials(tmp_path: Path, sweep_id: str, storage: str | None = None):
    """The sweep's trials, read back from its storage (SQLite in tmp_path by default)."""
    from sweeper import store

    opened = store.open_store(storage or storage_url(tmp_path))
    return store.load_sweep(opened, sweep_id).study.get_trials(deepcopy=False)


def wait_for(predicate, timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def slot_of(trial, by_number: dict) -> int:
    """The original trial whose budget slot a trial fills (following retries back)."""
    while "retry_of" in trial.user_attrs:
        trial = by_number[trial.user_attrs["retry_of"]]
    return trial.number


def assert_accounted(all_trials, budget: int) -> None:
    """Each of the ``budget`` slots ended in exactly one counted trial; no trial left behind."""
    from optuna.trial import TrialState

    from sweeper import store

    by_number = {t.number: t for t in all_trials}
    assert not [t for t in all_trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    originals = [t for t in all_trials if store.is_original(t)]
    assert len(originals) == budget
    counted = [t for t in all_trials if store.is_counted(t)]
    slots = [slot_of(t, by_number) for t in counted]
    assert sorted(slots) == sorted(t.number for t in originals), "a slot counted twice or never"
    for lost in (t for t in all_trials if store.is_lost(t)):
        retries = [
            t
            for t in all_trials
            if t.user_attrs.get("retry_of") == lost.number and not store.is_void(t)
        ]
        assert len(retries) == 1, f"trial {lost.number} has {len(retries)} retries"
        assert retries[0].params == lost.params


def read_ledger(tmp_path: Path) -> list[dict]:
    import json

    path = tmp_path / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def assert_one_process_per_run(tmp_path: Path) -> None:
    """No trial process ever started while another one of the same run id was alive."""
    twice = [row["run_id"] for row in read_ledger(tmp_path) if row["overlap"]]
    assert not twice, f"run ids alive in two processes at once: {twice}"


def assert_no_traceback(*logs: Path) -> None:
    for log in logs:
        text = log.read_text()
        assert "Traceback" not in text, f"{log.name}:\n{text}"


RUN_AGENT = REPO / "run_agent.sh"
