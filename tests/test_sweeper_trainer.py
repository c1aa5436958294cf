"""The local engine with the real trainer (tiny models): run_agent.sh end to end, and Hyperband
stopping a clearly bad run through SIGTERM with its checkpoint and run intact."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from optuna.trial import TrialState
from sweep_helpers import RUN_AGENT, create, env, sweeper, trials, write_sweep
from trainer_helpers import offline_runs

from contract import metrics as m

TRAINER_COMMAND = ["${env}", "${interpreter}", "-m", "trainer", "${args}"]
TINY = {
    "channels": {"value": [8, 8]},
    "norm_num_groups": {"value": 4},
    "latent_channels": {"value": 2},
    "nonlocal_attn": {"value": False},
    "image_size": {"value": 16},
    "n_train": {"value": 8},
    "n_val": {"value": 4},
    "batch_size": {"value": 4},
}


def tiny_sweep(tmp_path: Path, **cfg) -> Path:
    base = {
        "name": "tiny",
        "command": TRAINER_COMMAND,
        "metric": {"name": m.SWEEP_METRIC, "goal": m.SWEEP_GOAL},
    }
    return write_sweep(tmp_path / "tiny.yaml", {**base, **cfg})


@pytest.mark.slow
def test_run_agent_local_two_agents_end_to_end(tmp_path):
    file = tiny_sweep(
        tmp_path,
        method="random",
        run_cap=3,
        parameters={**TINY, "lr": {"values": [1.0e-3, 3.0e-3]}, "max_epochs": {"value": 2}},
    )
    done = subprocess.run(
        [str(RUN_AGENT), "--local", str(file), "--agents", "2", "--stagger", "1"],
        cwd=tmp_path,
        env=env(tmp_path),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    sweep_id = next(line.split()[-1] for line in done.stdout.splitlines() if "local sweep" in line)
    ended = trials(tmp_path, sweep_id)
    assert len(ended) == 3
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in ended)
    for trial in ended:
        (run,) = offline_runs(tmp_path, trial.user_attrs["run_id"])
        assert run.sweep_id == sweep_id
        assert run.config["lr"] == trial.params["lr"], "the sweep's values reach run.config"
        assert run.exit_code == 0
    logs = sorted((tmp_path / "logs").glob(f"agent-{sweep_id}-*.log"))
    assert len(logs) == 2
    best = min((t for t in ended if t.state == TrialState.COMPLETE), key=lambda t: t.values[0])
    assert any(
        f"best: trial {best.number} run {best.user_attrs['run_id']}" in log.read_text()
        for log in logs
    )
    assert f"best: trial {best.number}" in done.stdout, "run_agent.sh ends with the sweep's status"
    status = sweeper(tmp_path, "status", sweep_id)
    assert "finished" in status.stdout and f"best: trial {best.number}" in status.stdout


@pytest.mark.slow
def test_hyperband_stops_a_bad_trial_with_sigterm_and_keeps_its_run(tmp_path):
    # Grid order: a good learning rate first, then one that barely moves the weights. At the
    # first rung (epoch 1) the bad trial trails the good one and is stopped: with two runs and
    # eta 3, W&B's threshold is the best value at the band.
    max_epochs = 8
    file = tiny_sweep(
        tmp_path,
        method="grid",
        parameters={
            **TINY,
            "lr": {"values": [3.0e-3, 1.0e-9]},
            "max_epochs": {"value": max_epochs},
        },
        early_terminate={"type": "hyperband", "min_iter": 1, "eta": 3, "strict": True},
    )
    sweep_id = create(tmp_path, file)
    done = sweeper(tmp_path, "agent", sweep_id, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    good, bad = sorted(trials(tmp_path, sweep_id), key=lambda t: t.number)
    assert good.state == TrialState.COMPLETE and good.params["lr"] == 3.0e-3
    assert bad.state == TrialState.PRUNED and bad.params["lr"] == 1.0e-9
    assert bad.intermediate_values[1] > good.intermediate_values[1]
    assert "pruned at epoch 1, stopping it (SIGTERM)" in done.stdout

    run_dir = tmp_path / "outputs" / "runs" / bad.user_attrs["run_id"]
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "progress.jsonl").open()]
    assert 1 <= len(epochs) < max_epochs, "stopped early"
    assert (run_dir / "checkpoint.pt").exists(), "SIGTERM leaves a checkpoint"
    assert bad.user_attrs["exit_code"] == 0, "the trainer exits cleanly on SIGTERM"
    (run,) = offline_runs(tmp_path, bad.user_attrs["run_id"])
    assert run.exit_code == 0 and run.sweep_id == sweep_id
    assert run.summary[m.SUMMARY_STATUS] == "stopped"
