"""The local engine with the real trainer (tiny models): run_agent.sh end to end, and Hyperband
stopping a clearly bad run through SIGTERM with its checkpoint and run intact.

The Hyperband tests hold every trial at a chosen epoch end (``trainer.hold``) and let the first
one go on, so the second is still running when the agent decides, however loaded the machine."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState
from sweep_helpers import (
    RUN_AGENT,
    create,
    env,
    start_agent,
    sweeper,
    trials,
    wait_for,
    write_sweep,
)
from trainer_helpers import hold_env, offline_runs

from contract import metrics as m
from contract import runs
from trainer import hold

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
        # The local sweep is the run's group; it names no W&B sweep (W&B would refuse it).
        assert run.group == sweep_id and run.sweep_id is None
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


def hyperband_sweep(tmp_path: Path, max_epochs: int, min_iter: int) -> Path:
    """Grid order: a good learning rate first, then one that barely moves the weights. With two
    runs and eta 3, W&B's threshold at a band is the best value there: the bad trial trails."""
    return tiny_sweep(
        tmp_path,
        method="grid",
        parameters={
            **TINY,
            "lr": {"values": [3.0e-3, 1.0e-9]},
            "max_epochs": {"value": max_epochs},
        },
        early_terminate={"type": "hyperband", "min_iter": min_iter, "eta": 3, "strict": True},
    )


def agent_holding_trials(tmp_path: Path, sweep_id: str, epoch: int) -> str:
    """One agent whose trials each hold at the end of ``epoch``: the first to get there is
    released, the others stay held until the agent's SIGTERM (which may reach them as they
    arrive: they pass the hold at once). Returns the agent's output."""
    log = tmp_path / "agent.log"
    proc = start_agent(tmp_path, sweep_id, log, **hold_env(f"epoch:{epoch}"))
    seen: list[str] = []
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None:
            assert time.monotonic() < deadline, "agent still running after 300 s"
            for held in (tmp_path / "outputs" / "runs").glob(f"*/{hold.HELD}"):
                if held.parent.name not in seen:
                    seen.append(held.parent.name)
                    if len(seen) == 1:
                        (held.parent / hold.RELEASE).touch()
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text()
    assert proc.returncode == 0, output
    # A stop decided from the epoch's row can land before the test sees ``held``: the trial
    # still passed the hold, as its own output says.
    reached = sorted(
        folder.name
        for folder in (tmp_path / "outputs" / "runs").iterdir()
        if f"{hold.MARK}epoch {epoch}" in (folder / runs.TRIAL_LOG).read_text()
    )
    assert len(reached) == 2, f"trials that reached the hold: {reached}\n{output}"
    return output


@pytest.mark.slow
def test_hyperband_stops_a_bad_trial_with_sigterm_and_keeps_its_run(tmp_path):
    # The bad trial holds after epoch 1 (the first band) until the agent stops it.
    max_epochs = 4
    sweep_id = create(tmp_path, hyperband_sweep(tmp_path, max_epochs, min_iter=1))
    output = agent_holding_trials(tmp_path, sweep_id, epoch=1)
    good, bad = sorted(trials(tmp_path, sweep_id), key=lambda t: t.number)
    assert good.state == TrialState.COMPLETE and good.params["lr"] == 3.0e-3
    assert bad.state == TrialState.PRUNED and bad.params["lr"] == 1.0e-9
    assert bad.intermediate_values[1] > good.intermediate_values[1]
    assert "pruned at epoch 1, stopping it (SIGTERM)" in output

    run_dir = tmp_path / "outputs" / "runs" / bad.user_attrs["run_id"]
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "progress.jsonl").open()]
    assert epochs == [1], "stopped where it was held"
    assert (run_dir / "checkpoint.pt").exists(), "SIGTERM leaves a checkpoint"
    assert bad.user_attrs["exit_code"] == 0, "the trainer exits cleanly on SIGTERM"
    assert runs.read_exit(run_dir).status == m.STATUS_STOPPED
    (run,) = offline_runs(tmp_path, bad.user_attrs["run_id"])
    assert run.exit_code == 0 and run.group == sweep_id and run.sweep_id is None
    assert run.summary[m.SUMMARY_STATUS] == "stopped"


@pytest.mark.slow
def test_a_stop_decided_after_the_last_epoch_leaves_the_trial_complete(tmp_path):
    # The only band is epoch 2, the last: the pruner can decide on the bad trial only once it
    # has trained every epoch. It is held there, so the SIGTERM still finds it running.
    max_epochs = 2
    sweep_id = create(tmp_path, hyperband_sweep(tmp_path, max_epochs, min_iter=max_epochs))
    output = agent_holding_trials(tmp_path, sweep_id, epoch=max_epochs)
    good, bad = sorted(trials(tmp_path, sweep_id), key=lambda t: t.number)
    assert "pruned at epoch 2, stopping it (SIGTERM)" in output, "the stop was decided"
    assert good.state == TrialState.COMPLETE
    assert bad.state == TrialState.COMPLETE, output
    assert bad.values[0] == min(bad.intermediate_values.values())
    assert f"trial {bad.number}: had trained every epoch before its stop: COMPLETE" in output

    run_dir = tmp_path / "outputs" / "runs" / bad.user_attrs["run_id"]
    assert [row[m.EPOCH] for row in runs.read_progress(run_dir)] == [1, 2]
    assert runs.read_exit(run_dir).status == m.STATUS_FINISHED
    (run,) = offline_runs(tmp_path, bad.user_attrs["run_id"])
    assert run.exit_code == 0 and run.summary[m.SUMMARY_STATUS] == "finished"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["stop", "preempt"])
def test_an_agent_stopped_after_its_trials_last_epoch_records_it_complete(tmp_path, sig):
    # The trial is held after its last epoch, so the agent's signal finds it still running:
    # it cut nothing short, so the trial is COMPLETE, not given back to be run again.
    sweep_id = create(
        tmp_path,
        tiny_sweep(
            tmp_path, method="random", run_cap=1, parameters={**TINY, "max_epochs": {"value": 2}}
        ),
    )
    log = tmp_path / "agent.log"
    proc = start_agent(tmp_path, sweep_id, log, **hold_env("epoch:2"))
    try:
        wait_for(lambda: any((tmp_path / "outputs" / "runs").glob(f"*/{hold.HELD}")), 300, "hold")
        proc.send_signal(sig)
        assert proc.wait(timeout=120) == 128 + sig, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text()
    (trial,) = trials(tmp_path, sweep_id)
    assert trial.state == TrialState.COMPLETE, output
    assert f"trial {trial.number}: had trained every epoch before its stop: COMPLETE" in output
    run_dir = tmp_path / "outputs" / "runs" / trial.user_attrs["run_id"]
    assert runs.read_exit(run_dir).status == m.STATUS_FINISHED
