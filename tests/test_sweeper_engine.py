"""The local engine with a trivial swept program: what each trial gets, how trials end, and
accounting under kill -9 and 8 concurrent agents (real SQLite and journal storages, real
processes)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import yaml
from optuna.trial import TrialState
from sweep_helpers import (
    assert_accounted,
    assert_no_traceback,
    assert_one_process_per_run,
    create,
    read_ledger,
    start_agent,
    storage_url,
    sweeper,
    trials,
    trivial_sweep,
    wait_for,
    write_sweep,
)

from sweeper import store


def test_trials_get_what_wandb_agent_gives_and_the_best_is_recorded(tmp_path):
    sweep_id = create(tmp_path, trivial_sweep(tmp_path, run_cap=3, sleep=0.01))
    assert len(sweep_id) == 8 and sweep_id.isalnum() and sweep_id.islower()
    done = sweeper(tmp_path, "agent", sweep_id)
    assert done.returncode == 0, done.stdout + done.stderr
    ledger = read_ledger(tmp_path)
    assert len(ledger) == 3
    finished = trials(tmp_path, sweep_id)
    assert [t.state for t in finished] == [TrialState.COMPLETE] * 3
    for row, trial in zip(ledger, finished, strict=True):
        # No W&B sweep named (W&B would refuse the run); the group carries the local sweep.
        assert row["sweep_id"] is None and row["group"] == sweep_id
        assert row["mode"] == "offline"
        assert row["run_id"] == trial.user_attrs["run_id"] and len(row["run_id"]) == 8
        # The parameter file is what wandb.init merges: key: {value: v}.
        assert yaml.safe_load(row["params"])["x"] == {"value": row["x"]}
        assert not os.path.exists(row["param_path"]), "parameter files are cleaned up"
        # Value = the best of the run's epochs (x/epoch, 3 epochs).
        assert trial.values[0] == pytest.approx(row["x"] / 3)
    best = min(finished, key=lambda t: t.values[0])
    assert f"best: trial {best.number} run {best.user_attrs['run_id']}" in done.stdout
    status = sweeper(tmp_path, "status", sweep_id)
    assert status.returncode == 0
    assert "COMPLETE 3" in status.stdout and "finished" in status.stdout


def test_failures_end_the_trial_not_the_agent(tmp_path):
    file = trivial_sweep(tmp_path, run_cap=3, sleep=0.01)
    cfg = yaml.safe_load(file.read_text())
    cfg["method"] = "grid"
    cfg["parameters"]["x"] = {"value": 0.5}
    cfg["parameters"]["exit_code"] = {"values": [3, 2, 1]}
    sweep_id = create(tmp_path, write_sweep(file, cfg))
    done = sweeper(tmp_path, "agent", sweep_id)
    assert done.returncode == 0, done.stdout + done.stderr
    ended = {t.params["exit_code"]: t for t in trials(tmp_path, sweep_id)}
    assert {k: t.state for k, t in ended.items()} == {c: TrialState.FAIL for c in (3, 2, 1)}
    assert ended[3].user_attrs["reason"] == "diverged"
    assert ended[2].user_attrs["reason"] == "config error"
    assert ended[1].user_attrs["reason"] == "crashed (exit 1)"


def test_grid_ends_when_the_grid_is_spent(tmp_path):
    file = trivial_sweep(tmp_path, run_cap=10, sleep=0.01)
    cfg = yaml.safe_load(file.read_text())
    cfg["method"] = "grid"
    cfg["parameters"]["x"] = {"values": [0.1, 0.2]}
    cfg["parameters"]["epochs"] = {"values": [1, 2]}
    sweep_id = create(tmp_path, write_sweep(file, cfg))
    assert sweeper(tmp_path, "agent", sweep_id).returncode == 0
    points = sorted((t.params["x"], t.params["epochs"]) for t in trials(tmp_path, sweep_id))
    assert points == [(0.1, 1), (0.1, 2), (0.2, 1), (0.2, 2)]


def test_kill_9_mid_trial_then_restart_retries_that_trial_once(tmp_path):
    sweep_id = create(tmp_path, trivial_sweep(tmp_path, run_cap=3, sleep=0.5))
    agent = start_agent(tmp_path, sweep_id, tmp_path / "agent1.log")
    try:
        wait_for(lambda: len(read_ledger(tmp_path)) >= 2, 60, "the second trial to start")
    finally:
        agent.kill()  # SIGKILL: no handler runs, no tell, the lock dies with it
        agent.wait(timeout=30)
    killed = read_ledger(tmp_path)[-1]
    # The orphaned trial process dies with its agent (parent-death signal).
    wait_for(lambda: not _alive(killed["pid"]), 10, "the orphaned trial to stop")
    agent = start_agent(tmp_path, sweep_id, tmp_path / "agent2.log")
    assert agent.wait(timeout=90) == 0, (tmp_path / "agent2.log").read_text()

    all_trials = trials(tmp_path, sweep_id)
    assert_accounted(all_trials, budget=3)
    lost = [t for t in all_trials if store.is_lost(t)]
    assert [t.user_attrs["run_id"] for t in lost] == [killed["run_id"]]
    retry = next(t for t in all_trials if t.user_attrs.get("retry_of") == lost[0].number)
    assert retry.state == TrialState.COMPLETE and retry.params == lost[0].params
    assert retry.user_attrs["run_id"] == killed["run_id"], "a retry resumes the same run"
    assert len([t for t in all_trials if store.is_counted(t)]) == 3


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_eight_agents_killed_at_random_account_for_every_trial_once(tmp_path, kind):
    budget = 16
    url = storage_url(tmp_path, kind)
    sweep_id = create(tmp_path, trivial_sweep(tmp_path, run_cap=budget, sleep=0.3), storage=url)
    logs = [tmp_path / f"agent{i}.log" for i in range(8)]
    agents = [start_agent(tmp_path, sweep_id, log, storage=url) for log in logs]
    rng = random.Random(0)
    victims = rng.sample(agents, 3)
    try:
        wait_for(lambda: len(read_ledger(tmp_path)) >= 8, 120, "trials to start")
        for victim in victims:
            time.sleep(rng.uniform(0.2, 1.5))
            victim.kill()
        for agent in agents:
            code = agent.wait(timeout=240)
            assert code == (-signal.SIGKILL if agent in victims else 0)
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
    all_trials = trials(tmp_path, sweep_id, url)
    assert_accounted(all_trials, budget)
    ledger_runs = {row["run_id"] for row in read_ledger(tmp_path)}
    counted_runs = [t.user_attrs["run_id"] for t in all_trials if store.is_counted(t)]
    assert len(set(counted_runs)) == budget and set(counted_runs) <= ledger_runs
    assert_one_process_per_run(tmp_path)
    assert_no_traceback(*logs)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): look at its state.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_macros_render_exactly_as_wandb_agent_renders_them(tmp_path, monkeypatch):
    from wandb.sdk.launch.sweeps import utils as wandb_sweep_utils

    from sweeper.agent import render, sweep_vars

    values = {"channels": [32, 64], "augment": True, "compile": False, "lr": 1e-5, "x": None}
    theirs = wandb_sweep_utils.create_sweep_command_args(
        {"args": {k: {"value": v} for k, v in values.items()}}
    )
    ours = sweep_vars(values)
    assert ours == {k: v for k, v in theirs.items() if k != "args_dict"}
    monkeypatch.setenv("DATA_ROOT", "/data")
    json_file = tmp_path / "args.json"
    cfg = {
        "program": "train.py",
        "command": [
            "${env}",
            "${interpreter}",
            "${program}",
            "--root=${envvar:DATA_ROOT}",
            "${args_no_hyphens}",
            "${args_json_file}",
        ],
    }
    assert render(cfg, {"lr": 0.1}, json_file) == [
        "/usr/bin/env",
        "python",
        "train.py",
        "--root=/data",
        "lr=0.1",
        str(json_file),
    ]
    assert json_file.read_text() == '{"lr": 0.1}'
    assert render({"program": "t.py"}, {"a": 1}, json_file) == [
        "/usr/bin/env",
        "python",
        "t.py",
        "--a=1",
    ]


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_grid_point_whose_agent_died_while_asking_goes_back_in_the_queue(tmp_path, kind):
    """Nothing else would ever ask for a grid point again: voided unrun, it is queued anew and
    the grid still runs every point."""
    file = trivial_sweep(tmp_path, run_cap=10, sleep=0.01)
    cfg = yaml.safe_load(file.read_text())
    cfg["method"] = "grid"
    cfg["parameters"]["x"] = {"values": [0.1, 0.2]}
    cfg["parameters"]["epochs"] = {"values": [1, 2]}
    storage = storage_url(tmp_path, kind)
    sweep_id = create(tmp_path, write_sweep(file, cfg), storage=storage)
    # An agent that popped a grid point and died before its parameters were written.
    sweep = store.load_sweep(store.open_store(storage), sweep_id)
    asked = sweep.study.ask()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    me = store.my_owner_tag()
    asked.set_user_attr(store.OWNER, f"{me.split(':')[0]}:{gone.pid}:{me.rsplit(':', 1)[1]}")
    assert not asked.params

    done = sweeper(tmp_path, "agent", sweep_id, storage=storage)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "back in the queue" in done.stdout + done.stderr
    ran = trials(tmp_path, sweep_id, storage)
    points = sorted((t.params["x"], t.params["epochs"]) for t in ran if store.is_counted(t))
    assert points == [(0.1, 1), (0.1, 2), (0.2, 1), (0.2, 2)]
    assert sum(store.is_void(t) for t in ran) == 1
