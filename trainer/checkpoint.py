"""Checkpoints in the run folder (``contract.runs``): written atomically, read with weights_only."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from contract.errors import UserError

# Keys whose change makes saved weights unusable.
ARCHITECTURE_KEYS = (
    "spatial_dims",
    "in_channels",
    "latent_channels",
    "channels",
    "num_res_blocks",
    "attention_levels",
    "norm_num_groups",
    "nonlocal_attn",
    "disc_channels",
    "disc_layers",
)
# Keys whose change makes the saved position and optimizer state wrong: what a step is (its
# batches: how many per epoch, which images, in which order, how augmented; its loss; Adam's
# learning rate, which restoring the optimizer would silently bring back) and what the
# validation loss, hence best.pt, is measured on. max_epochs may grow (train longer); logging,
# precision, compile, workers, caching and where files are (data_dir, datalist, weights) may
# change: the number of training images, which a moved folder keeps, is checked instead.
STEP_KEYS = (
    "batch_size",
    "n_train",
    "n_val",
    "data_source",
    "val_fraction",
    "image_size",
    "intensity",
    "fit",
    "seed",
    "augment",
    "lr",
    "kl_weight",
    "recon_loss",
    "perceptual_weight",
    "perceptual_network",
    "adv_weight",
    "adv_warmup_epochs",
    "disc_lr",
)
RESUME_KEYS = ARCHITECTURE_KEYS + STEP_KEYS


@dataclass
class Position:
    """Where training stands; everything a resume needs besides the tensors."""

    epoch: int = 0  # finished epochs
    batch: int = 0  # batches done in epoch + 1 (non-zero only for a mid-epoch save)
    step: int = 0  # optimizer steps so far = last train/step value
    best_val: float = float("inf")
    best_epoch: int = 0
    best_ssim: float = float("-inf")  # best val/ssim so far (a checkpoint from before: -inf)
    epoch_seconds: float = 0.0  # time already spent in the unfinished epoch
    epoch_recon_sum: float = 0.0  # sum of train/recon_loss over the unfinished epoch's steps
    # The run's references (summary keys), measured once before the first step and kept here so
    # that every resumed segment writes them again; nan until measured.
    init_val_recon: float = float("nan")
    trivial_val_recon: float = float("nan")
    train_images: int = 0  # size of the training set (0: not recorded)
    # The progress.jsonl row of every finished epoch: a kill between this checkpoint and the
    # row's append loses nothing, the next start appends what the file misses.
    rows: list[dict[str, Any]] = field(default_factory=list)


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    position: Position,
    config: dict[str, Any],
    disc: torch.nn.Module | None = None,
    disc_optimizer: torch.optim.Optimizer | None = None,
) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        # The adversarial term's discriminator (adv_weight > 0, a resume key: never dropped).
        "discriminator": disc.state_dict() if disc is not None else None,
        "disc_optimizer": disc_optimizer.state_dict() if disc_optimizer is not None else None,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "position": dict(vars(position)),
        "config": config,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda f: torch.save(state, f))


def copy(path: Path, to: Path) -> None:
    """Make ``to`` hold what ``path`` holds now, atomically, without serialising the state again:
    a hard link where the filesystem has them (checkpoints are only ever replaced, never written
    in place, so the next save of ``path`` leaves ``to`` as it is), else a copy."""
    tmp = to.with_name(to.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:
        shutil.copyfile(path, tmp)
    os.replace(tmp, to)


def read(path: Path, config: dict[str, Any], train_images: int) -> dict[str, Any]:
    """The saved state, if this config and data may resume it; else UserError, one line."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    saved = state["config"]
    changed = [k for k in RESUME_KEYS if saved.get(k) != config.get(k)]
    if changed:
        was = ", ".join(f"{k}={saved.get(k)!r}" for k in changed)
        now = ", ".join(f"{k}={config.get(k)!r}" for k in changed)
        raise UserError(
            f"{path}: checkpoint was written with {was}, this run has {now}; resume with the "
            "same values, or start a new run (another WANDB_RUN_ID)"
        )
    recorded = state["position"].get("train_images", 0)
    if recorded and recorded != train_images:
        raise UserError(
            f"{path}: checkpoint was trained on {recorded} training images, this run has "
            f"{train_images}; resume with the same data, or start a new run (another WANDB_RUN_ID)"
        )
    return state


def restore(
    state: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    disc: torch.nn.Module | None = None,
    disc_optimizer: torch.optim.Optimizer | None = None,
) -> Position:
    """Put a state from ``read`` back; returns where training stands."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if disc is not None:
        disc.load_state_dict(state["discriminator"])
        disc_optimizer.load_state_dict(state["disc_optimizer"])
    if state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng_cpu"])
    if state["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    return Position(**state["position"])
