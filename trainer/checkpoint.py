"""Checkpoints in the run folder (``contract.runs``): written atomically, read with weights_only."""

from __future__ import annotations

import os
from dataclasses import dataclass
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
)


@dataclass
class Position:
    """Where training stands; everything a resume needs besides the tensors."""

    epoch: int = 0  # finished epochs
    batch: int = 0  # batches done in epoch + 1 (non-zero only for a mid-epoch save)
    step: int = 0  # optimizer steps so far = last train/step value
    best_val: float = float("inf")
    best_epoch: int = 0
    epoch_seconds: float = 0.0  # time already spent in the unfinished epoch
    epoch_recon_sum: float = 0.0  # sum of train/recon_loss over the unfinished epoch's steps
    # The run's references (summary keys), measured once before the first step and kept here so
    # that every resumed segment writes them again; nan until measured.
    init_val_recon: float = float("nan")
    trivial_val_recon: float = float("nan")


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
) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "position": dict(vars(position)),
        "config": config,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda f: torch.save(state, f))


def load(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    config: dict[str, Any],
) -> Position:
    state = torch.load(path, map_location="cpu", weights_only=True)
    changed = [k for k in ARCHITECTURE_KEYS if state["config"].get(k) != config.get(k)]
    if changed:
        saved = ", ".join(f"{k}={state['config'].get(k)!r}" for k in changed)
        raise UserError(f"{path}: checkpoint was written with {saved}; resume with the same values")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng_cpu"])
    if state["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    return Position(**state["position"])
