"""Crafted learning curves logged by the real wandb library, with the metrics contract's keys.

Used by the analysis tests and by ``bench/analysis_scale.py``. Run as a script it logs the runs
described by a JSON list (argv[1]) one after the other in this process:
``{"shape": "good", "epochs": 12, "steps": 10, "config": {...}, "seed": 0, "crash": false,
"run_id": null, "first_epoch": 1, "images": true}``. A run with ``"crash": true`` raises after
its last epoch, so the process exits non-zero and W&B records a failed run.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contract import metrics as M  # noqa: E402

SHAPES = ("good", "overfitting", "underfitting", "diverged", "flat", "noisy")


def epoch_losses(shape: str, epochs: int, seed: int = 0) -> tuple[list[float], list[float]]:
    """Per-epoch (train, val) of a run of the given shape; epoch 1 first."""
    rng = random.Random(seed)
    train, val = [], []
    for e in range(1, epochs + 1):
        if shape in ("good", "noisy", "diverged"):
            t = 0.05 + 0.5 * math.exp(-e / 6)
            v = 1.08 * t
            if shape == "noisy":
                t *= 1 + rng.gauss(0, 0.01)
                v *= 1 + rng.gauss(0, 0.02)
        elif shape == "overfitting":
            t = 0.02 + 0.5 * math.exp(-e / 5)
            v = 0.12 + 0.4 * math.exp(-e / 3) + 0.01 * max(0, e - 6)
        elif shape == "underfitting":
            t = 0.60 + 0.3 * math.exp(-e)
            v = 0.62 + 0.3 * math.exp(-e)
        elif shape == "flat":
            t, v = 0.3, 0.31
        else:
            raise ValueError(shape)
        train.append(t)
        val.append(v)
    return train, val


def log_run(spec: dict) -> None:
    import numpy as np
    import wandb

    shape, epochs, steps = spec["shape"], spec["epochs"], spec["steps"]
    seed = spec.get("seed", 0)
    first = spec.get("first_epoch", 1)
    train, val = epoch_losses(shape, epochs, seed)
    rng = random.Random(seed + 1)
    if spec.get("run_id"):
        # Under a sweep wandb takes the run id from WANDB_RUN_ID only, as `wandb agent` sets it.
        os.environ["WANDB_RUN_ID"] = spec["run_id"]
    else:
        os.environ.pop("WANDB_RUN_ID", None)
    run = wandb.init(
        project="crafted",
        id=spec.get("run_id"),
        resume="allow" if spec.get("run_id") else None,
        config=spec.get("config", {}),
        name=spec.get("name"),
    )
    run.define_metric(M.TRAIN_RECON, step_metric=M.TRAIN_STEP)
    run.define_metric(M.VAL_RECON, step_metric=M.EPOCH)
    best = math.inf
    image = np.linspace(0, 1, 8 * 24, dtype=np.float32).reshape(8, 24)
    for e in range(first, epochs + 1):
        for i in range(steps):
            step = (e - 1) * steps + i + 1
            # Within an epoch the loss falls a little and is noisy, around the epoch's mean.
            value = train[e - 1] * (1 + 0.02 * (steps / 2 - i) / steps + rng.gauss(0, 0.01))
            if shape == "diverged" and e >= epochs // 2 and i == steps // 2:
                value = float("nan")
            row = {M.TRAIN_STEP: step, M.TRAIN_RECON: value}
            if i == 0 and spec.get("images"):
                row[M.TRAIN_TRIPLETS] = wandb.Image(image)
            run.log(row)
            if math.isnan(value):
                run.summary[M.SUMMARY_DIVERGED] = True
                run.summary[M.SUMMARY_STATUS] = "diverged"
                run.finish(exit_code=3)
                return
        best = min(best, val[e - 1])
        row = {
            M.EPOCH: e,
            M.VAL_RECON: val[e - 1],
            M.VAL_BEST_RECON: best,
            M.TIME_PER_EPOCH: spec.get("times", {}).get(str(e), 1.0 + 0.01 * rng.random()),
        }
        if spec.get("images"):
            row[M.val_triplet_key(0)] = wandb.Image(image * (e / epochs))
        run.log(row)
    if spec.get("crash"):
        raise RuntimeError("crafted crash")
    code = spec.get("exit_code", 0)
    run.summary[M.SUMMARY_STATUS] = "preempted" if code == 75 else "finished"
    run.finish(exit_code=code)


if __name__ == "__main__":
    for one in json.loads(sys.argv[1]):
        log_run(one)


def record(
    name: str,
    shape: str = "good",
    epochs: int = 12,
    steps: int = 4,
    config: dict | None = None,
    state: str = "finished",
    seed: int = 0,
    eval_train: bool = False,
    triplets: dict[int, str] | None = None,
):
    """A run record as the readers build it, with the same curves ``log_run`` logs (no wandb):
    for the report's own tests, which need many shapes of sweep quickly."""
    from analysis.records import END_STEP, RunRecord

    train, val = epoch_losses(shape, epochs, seed)
    rec = RunRecord(run_id=f"id-{name}"[:40], name=name, sweep_id="swp00001", state=state,
                    exit_code=0 if state == "finished" else 1, config=dict(config or {}),
                    summary={M.SUMMARY_STATUS: "finished"})  # fmt: skip
    for e in range(1, epochs + 1):
        for i in range(steps):
            rec.train.append(
                {M.TRAIN_STEP: float((e - 1) * steps + i + 1), M.TRAIN_RECON: train[e - 1]}
            )
        row = {M.EPOCH: float(e), M.VAL_RECON: val[e - 1], M.TIME_PER_EPOCH: 1.0 + 0.01 * e,
               END_STEP: float(e * steps)}  # fmt: skip
        if eval_train:
            row[M.TRAIN_EVAL_RECON] = 0.97 * val[e - 1]
        rec.val.append(row)
    rec.val_triplets = {e: [p] for e, p in (triplets or {}).items()}
    return rec
