"""What logging costs the trainer: steps/s of ``python -m trainer`` against a bare loop.

Compared, on the same machine in one run, with the demo/default config (channels
(32, 64, 64), batch 8, 64x64 synthetic images, 8 steps per epoch):

- **full trainer**: the real ``python -m trainer`` in a subprocess, W&B offline, every metric
  of the contract logged (per-step losses, train triplet each epoch, validation triplets),
  checkpoints every epoch. Its training-phase speed is read from ``train_time_per_epoch``
  in the run's ``progress.jsonl`` (steps and their logging; validation excluded), and its
  whole-epoch speed from ``time_per_epoch`` (validation, triplets and checkpoints included).
- **bare loop**: the same model, data, batches, loss function and Adam steps in this
  process, with nothing else: no logging, no validation, no checkpoints. Run before and
  after the trainer; the mean of the two is the reference. After each of its epochs it also
  times, apart, what the trainer adds at every epoch's end besides validation: the loss of the
  fixed training subset measured as validation is (``train/eval_recon_loss``), reported as a
  share of the epoch's steps.

Epoch 1 of each is a warm-up and not counted. Targets on a CPU: the ratio trainer/bare of
the training phase >= 0.98, of the whole epoch (validation, the train-eval loss and
checkpoints included) >= 0.9. The trainer's own end-of-epoch share (``1 - train_time_per_epoch
/ time_per_epoch``, one process) is printed too: unlike the ratios it compares nothing across
processes, so the load moves it less.

Wall-clock ratios are only as steady as the machine: on a shared CPU the bare loop alone can
vary by 2x between its two runs (both are printed). So the script also times the logging
itself, which is what the trainer adds to a step: the same calls (per-step rows and one
train triplet per epoch; every validation triplet per epoch apart) into a real offline W&B
run, with no model.
``bare step / (bare step + logging per step)`` bounds the ratio from that side and does not
depend on the load. Takes a couple of minutes on two idle CPU cores.
Usage: ``python bench/trainer_overhead.py [--epochs N] [--threads T]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def bare_loop(epochs: int) -> tuple[float, float, int]:
    """(steps per second of the bare loop over epochs 2..N, seconds of the train-eval
    measurement per epoch, images in its subset)."""
    import torch

    from contract.config import build
    from trainer import data
    from trainer.model import build_model, forward, losses, recon_loss
    from trainer.train import TRAIN_EVAL_SHARE

    cfg = build({"max_epochs": epochs})
    torch.manual_seed(cfg.seed)
    splits = data.load(cfg)
    train_x = splits.train
    subset = data.spread_subset(
        train_x, min(len(splits.val), max(1, len(train_x) // TRAIN_EVAL_SHARE))
    )
    model = build_model(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    model.train()
    steps, seconds, eval_seconds = 0, 0.0, 0.0
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        n = 0
        for x in data.train_batches(train_x, cfg, epoch):
            recon, z_mu, z_sigma = forward(model, x, sample=True)
            out = losses(x, recon, z_mu, z_sigma, cfg, None)
            optimizer.zero_grad(set_to_none=True)
            out["total"].backward()
            optimizer.step()
            n += 1
        ended = time.perf_counter()
        model.eval()  # the trainer's train-eval pass: eval mode, z_mu decoded, one host sync
        with torch.no_grad():
            total = torch.zeros(())
            for _, x in data.val_batches(subset, cfg.batch_size, torch.device("cpu")):
                total += recon_loss(x, forward(model, x, sample=False)[0], cfg) * len(x)
            total.item()
        model.train()
        if epoch > 1:
            seconds += ended - started
            eval_seconds += time.perf_counter() - ended
            steps += n
    return steps / seconds, eval_seconds / (epochs - 1), len(subset)


def full_trainer(epochs: int, workdir: Path) -> tuple[float, float, float]:
    """(training-phase steps/s, whole-epoch steps/s, process wall seconds) over epochs 2..N.
    Their ratio is the trainer's own share of the epoch spent in steps."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_DIR=str(workdir),
        WANDB_CONFIG_DIR=str(workdir / ".config"),
        WANDB_CACHE_DIR=str(workdir / ".cache"),
        PYTHONPATH=str(REPO),
    )
    cmd = [sys.executable, "-m", "trainer", f"--max_epochs={epochs}", f"--output_dir={workdir}"]
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    (progress,) = workdir.glob("runs/*/progress.jsonl")
    rows = [json.loads(line) for line in progress.read_text().splitlines()][1:]
    steps = 8 * len(rows)  # n_train 64 / batch 8
    train_s = sum(r["train_time_per_epoch"] for r in rows)
    epoch_s = sum(r["time_per_epoch"] for r in rows)
    return steps / train_s, steps / epoch_s, wall


def logging_cost(epochs: int, workdir: Path) -> tuple[float, float]:
    """(seconds of logging per training step, seconds of validation triplets per epoch),
    timed on the trainer's own logging calls into a real offline W&B run, without a model."""
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=str(workdir))
    import torch
    import wandb

    from contract import metrics as m
    from contract.config import build
    from trainer import logger

    cfg = build({})
    steps_per_epoch = cfg.n_train // cfg.batch_size
    image = torch.rand(1, cfg.image_size, cfg.image_size)
    run = wandb.init(project="bench", config=cfg.to_dict())
    logger.define_metrics(run)
    rows = logger.StepRows(run, log_from_step=0, stopping=lambda: False)
    losses = {k: torch.rand(()) for k in ("recon", "kl", "total")}
    train_s = val_s = 0.0
    step = 0
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        for i in range(steps_per_epoch):
            step += 1
            rows.add(step, losses, (image, image) if i == 0 else None)
            if len(rows) >= cfg.log_every or i == steps_per_epoch - 1:
                rows.flush()
        train_s += time.perf_counter() - started
        started = time.perf_counter()
        triplets = {
            m.val_triplet_key(i): logger.triplet_image(image, image, "b") for i in range(cfg.n_val)
        }
        run.log({m.EPOCH: epoch, m.VAL_RECON: 0.1, **triplets})
        val_s += time.perf_counter() - started
    run.finish()
    return train_s / step, val_s / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per measurement (>= 2)")
    parser.add_argument("--threads", type=int, help="torch threads for both (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the trainer subprocess inherits it
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU only", flush=True)
    before, eval_before, subset = bare_loop(args.epochs)
    with tempfile.TemporaryDirectory() as tmp:
        train_rate, epoch_rate, wall = full_trainer(args.epochs, Path(tmp))
    after, eval_after, _ = bare_loop(args.epochs)
    with tempfile.TemporaryDirectory() as tmp:
        per_step, val_triplets = logging_cost(20, Path(tmp))
    bare = (before + after) / 2
    counted = 8 * (args.epochs - 1)
    print(
        f"bare loop           {before:.3f} / {after:.3f} steps/s (before / after), mean {bare:.3f}"
    )
    print(
        f"trainer, training   {train_rate:.3f} steps/s  ratio {train_rate / bare:.3f}  (target >= 0.98)"
    )
    print(
        f"trainer, whole epoch {epoch_rate:.3f} steps/s  ratio {epoch_rate / bare:.3f}  "
        f"(target >= 0.9; end of epoch {1 - epoch_rate / train_rate:.1%} of the trainer's epoch)"
    )
    eval_s = (eval_before + eval_after) / 2
    print(
        f"train-eval loss      {eval_s * 1e3:.0f} ms per epoch ({subset} training images) = "
        f"{eval_s * bare / 8:.1%} of a bare epoch's steps"
    )
    print(f"trainer process wall {wall:.1f} s for {args.epochs} epochs ({counted} steps counted)")
    fastest = max(before, after)
    bound = (1 / fastest) / (1 / fastest + per_step)
    print(
        f"logging alone        {per_step * 1e3:.2f} ms per step (rows + train triplet); bare step "
        f"{1e3 / fastest:.0f} ms -> training ratio bound {bound:.4f}; validation triplets "
        f"{val_triplets * 1e3:.0f} ms per epoch"
    )


if __name__ == "__main__":
    main()
