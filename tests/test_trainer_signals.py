"""Stopping, preemption, resume and divergence of real trainer processes."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from trainer_helpers import (
    TINY_2D,
    hold_env,
    offline_runs,
    run_trainer,
    signal_and_wait,
    start_trainer,
    wait_for_hold,
)

from contract import metrics as m
from contract import runs as run_folder

# 32 steps per epoch, 3 epochs. The trainer holds after step 40 (epoch 2, batch 8) until the
# signal arrives, so the signal lands there however fast or loaded the machine is.
LONGER = [*TINY_2D, "--n_train=128", "--max_epochs=3"]
STEPS_PER_EPOCH, EPOCHS = 32, 3
TOTAL_STEPS = STEPS_PER_EPOCH * EPOCHS
MID_EPOCH_2 = 40


def all_steps(runs) -> list[int]:
    return [row[m.TRAIN_STEP] for run in runs for row in run.rows_with(m.TRAIN_RECON)]


def all_epochs(runs) -> list[int]:
    return [row[m.EPOCH] for run in runs for row in run.rows_with(m.VAL_RECON)]


def progress_epochs(folder: Path) -> list[int]:
    lines = (folder / "progress.jsonl").read_text().splitlines()
    return [json.loads(line)[m.EPOCH] for line in lines]


@pytest.mark.slow
def test_preempted_run_resumes_without_logging_twice(tmp_path: Path) -> None:
    env = {"WANDB_RUN_ID": "preempt1"}
    folder = tmp_path / "out" / "runs" / "preempt1"
    proc = start_trainer(tmp_path, *LONGER, **env, **hold_env(f"step:{MID_EPOCH_2}"))
    assert wait_for_hold(proc, folder) == f"step {MID_EPOCH_2}"
    code, _, err = signal_and_wait(proc, signal.SIGUSR1)
    assert code == 75, err
    assert (folder / "checkpoint.pt").exists()

    again = run_trainer(tmp_path, *LONGER, **env)
    assert again.returncode == 0, again.stderr
    assert f"resumed at epoch 2 step {MID_EPOCH_2}" in again.stdout

    first, second = offline_runs(tmp_path, "preempt1")
    assert first.preempting and first.exit_code == 75
    assert first.summary[m.SUMMARY_STATUS] == "preempted"
    assert second.exit_code == 0 and second.summary[m.SUMMARY_STATUS] == "finished"
    # The references measured before the first step come back with the resumed segment.
    for key in (m.SUMMARY_INIT_VAL_RECON, m.SUMMARY_TRIVIAL_VAL_RECON):
        assert second.summary[key] == first.summary[key], key
    assert second.summary[m.SUMMARY_EPOCHS] == EPOCHS
    # Together: every step exactly once, in order, train/step continuing across the restart.
    assert all_steps([first, second]) == list(range(1, TOTAL_STEPS + 1))
    assert all_steps([second])[0] == all_steps([first])[-1] + 1
    assert all_epochs([first, second]) == list(range(1, EPOCHS + 1))
    triplets = [
        row[m.TRAIN_STEP]
        for run in (first, second)
        for row in run.rows_with(f"{m.TRAIN_TRIPLETS}._type")
    ]
    assert triplets == [1 + e * STEPS_PER_EPOCH for e in range(EPOCHS)]
    assert progress_epochs(folder) == list(range(1, EPOCHS + 1))
    assert second.config == first.config


ADVERSARIAL = [
    *LONGER,
    "--adv_weight=0.01",
    "--adv_warmup_epochs=0",  # the discriminator has trained before the signal lands
    "--disc_layers=2",
    "--disc_channels=8",
]
ADV_KEYS = (m.TRAIN_RECON, m.TRAIN_LOSS, m.TRAIN_GEN_LOSS, m.TRAIN_DISC_LOSS)


def step_losses(runs) -> list[tuple]:
    return [
        (row[m.TRAIN_STEP], *(row[k] for k in ADV_KEYS))
        for run in runs
        for row in run.rows_with(m.TRAIN_RECON)
    ]


@pytest.mark.slow
def test_adversarial_run_resumes_exactly_after_sigusr1(tmp_path: Path) -> None:
    import torch

    straight = tmp_path / "straight"
    straight.mkdir()
    done = run_trainer(straight, *ADVERSARIAL, WANDB_RUN_ID="advref")
    assert done.returncode == 0, done.stderr

    folder = tmp_path / "out" / "runs" / "adv1"
    proc = start_trainer(
        tmp_path, *ADVERSARIAL, WANDB_RUN_ID="adv1", **hold_env(f"step:{MID_EPOCH_2}")
    )
    wait_for_hold(proc, folder)
    code, _, err = signal_and_wait(proc, signal.SIGUSR1)
    assert code == 75, err
    again = run_trainer(tmp_path, *ADVERSARIAL, WANDB_RUN_ID="adv1")
    assert again.returncode == 0, again.stderr
    assert f"resumed at epoch 2 step {MID_EPOCH_2}" in again.stdout

    # Every step's VAE, generator and discriminator losses, bit for bit, as without the stop.
    resumed = step_losses(offline_runs(tmp_path, "adv1"))
    assert resumed == step_losses(offline_runs(straight, "advref"))
    assert [row[0] for row in resumed] == list(range(1, TOTAL_STEPS + 1))
    ours = torch.load(folder / run_folder.LATEST, weights_only=True)
    reference = torch.load(
        straight / "out" / "runs" / "advref" / run_folder.LATEST, weights_only=True
    )
    for part in ("model", "discriminator"):
        for key, value in reference[part].items():
            assert torch.equal(ours[part][key], value), (part, key)
    for key, value in reference["disc_optimizer"]["state"][0].items():
        assert torch.equal(ours["disc_optimizer"]["state"][0][key], value), key


@pytest.mark.slow
def test_hard_kill_restarts_from_the_last_epoch_checkpoint(tmp_path: Path) -> None:
    env = {"WANDB_RUN_ID": "killed1"}
    folder = tmp_path / "out" / "runs" / "killed1"
    proc = start_trainer(tmp_path, *LONGER, **env, **hold_env(f"step:{MID_EPOCH_2}"))
    wait_for_hold(proc, folder)  # in epoch 2, its checkpoint not written yet
    code, _, _ = signal_and_wait(proc, signal.SIGKILL)
    assert code == -signal.SIGKILL

    again = run_trainer(tmp_path, *LONGER, **env)
    assert again.returncode == 0, again.stderr
    assert "resumed at epoch 2 step 32" in again.stdout
    last = offline_runs(tmp_path, "killed1")[-1]
    # Epoch 2 is trained again from its beginning; train/step still counts from the checkpoint.
    assert all_steps([last]) == list(range(STEPS_PER_EPOCH + 1, TOTAL_STEPS + 1))
    assert all_epochs([last]) == [2, 3]
    assert progress_epochs(folder) == list(range(1, EPOCHS + 1))


@pytest.mark.slow
def test_sigterm_stops_gracefully(tmp_path: Path) -> None:
    folder = tmp_path / "out" / "runs" / "stop1"
    proc = start_trainer(tmp_path, *LONGER, WANDB_RUN_ID="stop1", **hold_env(f"step:{MID_EPOCH_2}"))
    wait_for_hold(proc, folder)
    code, out, err = signal_and_wait(proc, signal.SIGTERM)
    assert code == 0, err
    assert (folder / "checkpoint.pt").exists()
    (run,) = offline_runs(tmp_path)
    assert run.exit_code == 0
    assert run.summary[m.SUMMARY_STATUS] == "stopped"
    assert run.summary[m.SUMMARY_EPOCHS] == 1
    assert all_steps([run]) == list(range(1, MID_EPOCH_2 + 1))
    assert "stopped" in out
    assert run_folder.read_exit(folder).status == m.STATUS_STOPPED
    assert not (folder / "held").exists()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
@pytest.mark.parametrize("point", ["epoch", "end"])
def test_a_signal_after_the_last_epoch_cuts_nothing_short(
    tmp_path: Path, signum: int, point: str
) -> None:
    # What an agent's late stop decision (or a late preemption) does: the run trained every
    # epoch, so it finished, exit 0, and nothing asks for it to be stopped or retried. The
    # signal lands after the last epoch's checkpoint, or after the loop, before the summary.
    folder = tmp_path / "out" / "runs" / "late1"
    proc = start_trainer(tmp_path, *TINY_2D, WANDB_RUN_ID="late1", **hold_env(f"{point}:2"))
    assert wait_for_hold(proc, folder) == f"{point} 2"  # TINY_2D's last epoch
    code, out, err = signal_and_wait(proc, signum)
    assert code == 0, err
    (run,) = offline_runs(tmp_path)
    assert run.exit_code == 0 and not run.preempting
    assert run.summary[m.SUMMARY_STATUS] == "finished"
    assert run.summary[m.SUMMARY_EPOCHS] == 2
    record = run_folder.read_exit(folder)
    assert (record.status, record.exit_code, record.reason) == (m.STATUS_FINISHED, 0, None)
    assert "finished after 2 epochs" in out


@pytest.mark.slow
def test_divergence_stops_with_exit_3(tmp_path: Path) -> None:
    proc = run_trainer(tmp_path, *TINY_2D, "--lr=1e10", "--max_epochs=5")
    assert proc.returncode == 3, proc.stderr
    (run,) = offline_runs(tmp_path)
    assert run.exit_code == 3
    assert run.summary[m.SUMMARY_DIVERGED] is True
    assert run.summary[m.SUMMARY_STATUS] == "diverged"
    last = run.rows_with(m.TRAIN_RECON)[-1]
    losses = (last[m.TRAIN_RECON], last[m.TRAIN_KL], last[m.TRAIN_LOSS])
    assert any(v in ("NaN", "Infinity", "-Infinity") for v in losses)  # the curve shows it
    assert run.summary[m.SUMMARY_EPOCHS] < 5
