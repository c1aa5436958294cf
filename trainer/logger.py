"""What the run sends to W&B: the metrics contract of SPEC section 2, in one place.

Per-step losses stay on the device (no sync per step) and are flushed every ``log_every``
steps as one row per step, each carrying its own ``train/step``. Triplets are uint8 images
on a fixed [0, 1] scale, so they compare across epochs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import wandb

from contract import metrics as m

STEP_KEYS = {
    "recon": m.TRAIN_RECON,
    "kl": m.TRAIN_KL,
    "perceptual": m.TRAIN_PERCEPTUAL,
    "total": m.TRAIN_LOSS,
    "gen": m.TRAIN_GEN_LOSS,
    "disc": m.TRAIN_DISC_LOSS,
}
SCALE_NOTE = "fixed scale: black 0, white 1 (values clipped to [0, 1])"


def define_metrics(run: wandb.Run) -> None:
    """x-axes only: ``summary=`` would turn the summary value into a dict in wandb 0.31."""
    run.define_metric(m.TRAIN_STEP)
    run.define_metric(m.EPOCH)
    for key in (*STEP_KEYS.values(), m.TRAIN_TRIPLETS):
        run.define_metric(key, step_metric=m.TRAIN_STEP)
    run.define_metric("val/*", step_metric=m.EPOCH)
    for key in (m.TRAIN_EVAL_RECON, m.TIME_PER_EPOCH, m.TRAIN_TIME_PER_EPOCH):
        run.define_metric(key, step_metric=m.EPOCH)


# --- triplets -------------------------------------------------------------------------------------
def _panels(image: np.ndarray) -> list[np.ndarray]:
    """2D: the image; 3D: its three orthogonal central slices. Channel 0 (or RGB for 3 channels)."""
    rgb = image.shape[0] == 3
    image = image if rgb else image[:1]
    if image.ndim == 3:
        return [image]
    d, h, w = image.shape[1:]
    return [image[:, d // 2], image[:, :, h // 2], image[:, :, :, w // 2]]


def triplet_array(original: torch.Tensor, reconstruction: torch.Tensor) -> np.ndarray:
    """original | reconstruction | |difference| side by side (3D: one row per central slice)."""
    orig = original.detach().float().cpu().numpy()
    recon = reconstruction.detach().float().cpu().numpy()
    rows = []
    for o, r in zip(_panels(orig), _panels(recon), strict=True):
        rows.append(np.concatenate([o, r, np.abs(o - r)], axis=-1))
    grid = np.concatenate(rows, axis=-2)  # (C, H, W)
    grid = (np.clip(grid, 0.0, 1.0) * 255).round().astype(np.uint8)
    return grid[0] if grid.shape[0] == 1 else grid.transpose(1, 2, 0)


def triplet_image(original: torch.Tensor, reconstruction: torch.Tensor, what: str) -> wandb.Image:
    slices = " (rows: central slices along each axis)" if original.dim() == 4 else ""
    caption = f"{what}: original | reconstruction | |difference|{slices}; {SCALE_NOTE}"
    return wandb.Image(triplet_array(original, reconstruction), caption=caption)


# --- per-step rows --------------------------------------------------------------------------------
class StepRows:
    """Per-step losses (and the epoch's train triplet) kept on the device until ``flush``, so a
    step never waits on the host; one W&B row per step."""

    def __init__(self, run: wandb.Run, log_from_step: int, stopping: Callable[[], bool]):
        self.run = run
        self.log_from_step = log_from_step  # steps up to this one were logged by an earlier process
        self.steps: list[int] = []
        self.values: list[dict[str, torch.Tensor]] = []
        self.triplets: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.last_recon = math.nan
        # True once the trainer got a stop signal: W&B's service may be gone already, since a
        # scheduler's cancel signals every process of the job; the losses still reach the
        # checkpoint the stop saves.
        self.stopping = stopping

    def add(
        self,
        step: int,
        losses: dict[str, torch.Tensor],
        triplet: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """``triplet``: (original, reconstruction) of one image, logged as train/triplets."""
        self.steps.append(step)
        self.values.append({k: v.detach() for k, v in losses.items()})
        if triplet is not None:
            # Copies (on the device, no sync) free the rest of the batch before the flush.
            self.triplets[step] = tuple(t.detach().clone() for t in triplet)

    def __len__(self) -> int:
        return len(self.steps)

    def flush(self) -> tuple[list[float], bool]:
        """Log the buffered rows. Returns (recon losses of those steps, all finite?)."""
        if not self.steps:
            return [], True
        # One device->host copy for the whole buffer; rows may carry different keys.
        flat = torch.stack([v.float() for row in self.values for v in row.values()]).tolist()
        recons, finite, at = [], True, 0
        for step, row in zip(self.steps, self.values, strict=True):
            values = dict(zip(row, flat[at : at + len(row)], strict=True))
            at += len(row)
            recons.append(values["recon"])
            if step > self.log_from_step:
                payload = {m.TRAIN_STEP: step, **{STEP_KEYS[k]: v for k, v in values.items()}}
                if step in self.triplets:
                    original, recon = self.triplets[step]
                    what = f"{m.TRAIN_STEP} {step}"
                    payload[m.TRAIN_TRIPLETS] = triplet_image(original, recon, what)
                self.log(payload)
            if not all(math.isfinite(v) for v in values.values()):
                finite = False
                break  # the diverged step is logged (so the curve shows it), nothing after it
        self.last_recon = recons[-1]
        self.steps, self.values, self.triplets = [], [], {}
        return recons, finite

    def log(self, payload: dict) -> None:
        try:
            self.run.log(payload)
        except ConnectionError:  # what wandb raises once its service is gone
            if not self.stopping():
                raise  # a service lost in the middle of training is a crash
