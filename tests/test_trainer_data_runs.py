"""The data cache, streaming and datalists through real trainer processes and a real local
sweep: what a user sees in the run summary, on stderr and in the exit status."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from sweep_helpers import create, sweeper, trials, write_sweep
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

TINY_3D = {
    "spatial_dims": 3,
    "channels": [4, 4],
    "norm_num_groups": 4,
    "latent_channels": 2,
    "nonlocal_attn": False,
    "image_size": 16,
    "batch_size": 8,
    "max_epochs": 1,
}


def write_volumes(folder: Path, n: int, side: int) -> list[Path]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"v{i:03d}.nii.gz"
        volume = rng.uniform(0, 1000, (side, side, side)).astype(np.float32)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
        paths.append(path)
    return paths


@pytest.mark.slow
def test_a_sweep_decodes_its_folder_once_and_a_corrupt_file_stops_the_next_run(
    tmp_path: Path,
) -> None:
    paths = write_volumes(tmp_path / "vols", 48, side=48)
    fixed = {**TINY_3D, "data_source": "folder", "data_dir": str(tmp_path / "vols")}
    file = write_sweep(
        tmp_path / "folder.yaml",
        {
            "name": "folder",
            "command": ["${env}", "${interpreter}", "-m", "trainer", "${args}"],
            "method": "grid",
            "metric": {"name": m.SWEEP_METRIC, "goal": m.SWEEP_GOAL},
            "parameters": {
                **{k: {"value": v} for k, v in fixed.items()},
                "lr": {"values": [1.0e-3, 2.0e-3]},
            },
        },
    )
    sweep_id = create(tmp_path, file)
    done = sweeper(tmp_path, "agent", sweep_id, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    first, second = (
        offline_runs(tmp_path, t.user_attrs["run_id"])[0]
        for t in sorted(trials(tmp_path, sweep_id), key=lambda t: t.number)
    )
    assert first.exit_code == 0 and second.exit_code == 0
    assert first.summary[m.SUMMARY_DATA_CACHE_HIT] is False
    assert second.summary[m.SUMMARY_DATA_CACHE_HIT] is True
    assert first.summary[m.SUMMARY_DATA_STREAMED] is False
    ratio = second.summary[m.SUMMARY_DATA_SECONDS] / first.summary[m.SUMMARY_DATA_SECONDS]
    seconds = [run.summary[m.SUMMARY_DATA_SECONDS] for run in (first, second)]
    print(f"data_seconds: first trial {seconds[0]:.3f} s, second {seconds[1]:.4f} s ({ratio:.3f}x)")
    assert ratio <= 0.1

    paths[7].write_bytes(b"\x1f\x8b not really gzip")  # replaced afterwards by a corrupt file
    proc = run_trainer(tmp_path, *(f"--{k}={v}" for k, v in fixed.items()))
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert f"{paths[7]}: cannot read image" in line


def losses(runs) -> tuple[list, list]:
    steps = [row[m.TRAIN_RECON] for run in runs for row in run.rows_with(m.TRAIN_RECON)]
    epochs = [row[m.VAL_RECON] for run in runs for row in run.rows_with(m.VAL_RECON)]
    return steps, epochs


@pytest.mark.slow
def test_streamed_training_resumes_exactly_after_preemption(tmp_path: Path) -> None:
    # 64 images of 16x16 (66 kB with val) over a 10 kB limit: streamed, 16 steps an epoch.
    args = [*TINY_2D, "--n_train=64", "--max_epochs=3", "--stream_above_gb=1e-5"]
    args.append("--num_workers=1")
    whole = run_trainer(tmp_path, *args, WANDB_RUN_ID="whole1")
    assert whole.returncode == 0, whole.stderr
    assert "streamed from" in whole.stdout
    (reference,) = offline_runs(tmp_path, "whole1")
    assert reference.summary[m.SUMMARY_DATA_STREAMED] is True

    folder = tmp_path / "out" / "runs" / "split1"
    proc = start_trainer(tmp_path, *args, WANDB_RUN_ID="split1", **hold_env("step:24"))
    wait_for_hold(proc, folder)  # mid epoch 2
    code, _, err = signal_and_wait(proc, signal.SIGUSR1)
    assert code == 75, err
    again = run_trainer(tmp_path, *args, WANDB_RUN_ID="split1")
    assert again.returncode == 0, again.stderr
    assert "resumed at epoch 2 step 24" in again.stdout
    pieces = offline_runs(tmp_path, "split1")
    assert len(pieces) == 2
    # The same batches in the same order, model and random state restored: the same numbers.
    assert losses(pieces) == losses([reference])
    assert len(losses(pieces)[0]) == 48


@pytest.mark.slow
def test_datalist_with_percentile_scaling_and_crop_trains(tmp_path: Path) -> None:
    write_volumes(tmp_path / "task" / "imagesTr", 6, side=20)
    listing = tmp_path / "task" / "dataset.json"
    names = [f"./imagesTr/v{i:03d}.nii.gz" for i in range(6)]
    listing.write_text(
        json.dumps(
            {
                "name": "tiny",
                "training": [{"image": n} for n in names[:4]],
                "validation": [{"image": n} for n in names[4:]],
            }
        )
    )
    settings = {**TINY_3D, "data_source": "datalist", "datalist": str(listing)}
    settings.update(intensity="percentile", fit="crop", batch_size=2)
    proc = run_trainer(tmp_path, *(f"--{k}={v}" for k, v in settings.items()))
    assert proc.returncode == 0, proc.stderr
    assert "training and validation lists: 4 train, 2 val" in proc.stdout
    (run,) = offline_runs(tmp_path)
    assert run.summary[m.SUMMARY_STATUS] == m.STATUS_FINISHED
    assert run.config["intensity"] == "percentile" and run.config["fit"] == "crop"
    assert len(run.rows_with(m.TRAIN_RECON)) == 2 and len(run.rows_with(m.VAL_RECON)) == 1
