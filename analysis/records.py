"""The neutral run record: what every source (offline files, the W&B API) is turned into.

Everything after the adapters (diagnosis, report, next sweep) works on ``RunRecord`` only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from contract import metrics as M
from contract.config import DEFAULTS

# Run states, W&B's words where W&B has one.
FINISHED = "finished"
RUNNING = "running"
CRASHED = "crashed"
FAILED = "failed"
PREEMPTED = "preempted"
# Key of a val row holding the last TRAIN_STEP logged before it (not a logged metric).
END_STEP = "end_step"


@dataclass
class RunRecord:
    run_id: str
    name: str = ""
    sweep_id: str | None = None
    state: str = CRASHED
    exit_code: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    # One dict per optimizer step: TRAIN_STEP, TRAIN_RECON and any other train/* scalar.
    train: list[dict[str, float]] = field(default_factory=list)
    # One dict per finished epoch: EPOCH, VAL_RECON, TIME_PER_EPOCH, ... plus END_STEP, the
    # last TRAIN_STEP logged before this epoch's row (maps steps to epochs exactly).
    val: list[dict[str, float]] = field(default_factory=list)
    # epoch -> image references for the triplets (local paths offline, media paths via the API).
    val_triplets: dict[int, list[str]] = field(default_factory=dict)
    train_triplets: dict[int, str] = field(default_factory=dict)
    # Where the run came from: the offline folders, or the W&B run path.
    sources: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # What the local engine recorded for the run's latest trial; None for runs it did not start.
    # engine_state: COMPLETE, PRUNED (stopped by the sweep's early termination), FAIL, RUNNING or
    # WAITING; engine_reason: why it failed or was lost ("out of memory", "config error", ...).
    engine_state: str | None = None
    engine_reason: str | None = None

    @property
    def epochs(self) -> int:
        return len(self.val)

    # The run's own references, written once per run by the trainer as summary keys; None for
    # runs logged before the trainer wrote them (or a value that is not a finite number).
    @property
    def init_val_recon(self) -> float | None:
        """Validation reconstruction loss before the first optimizer step."""
        return _reference(self.summary.get(M.SUMMARY_INIT_VAL_RECON))

    @property
    def trivial_val_recon(self) -> float | None:
        """Validation reconstruction loss of the mean training image, whatever the input."""
        return _reference(self.summary.get(M.SUMMARY_TRIVIAL_VAL_RECON))


def _reference(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass
class Unreadable:
    """A run that could not be read: where it is and why. The other runs are still reported."""

    source: str
    reason: str


def merge(parts: list[RunRecord]) -> RunRecord:
    """One record from the pieces of a run resumed after preemption (same run id).

    Pieces are taken in the order given (oldest first). A step or an epoch logged twice
    (steps redone after restoring the last checkpoint) keeps its latest value.
    """
    if len(parts) == 1:
        return parts[0]
    last = parts[-1]
    out = RunRecord(run_id=last.run_id, name=last.name, sweep_id=last.sweep_id)
    steps: dict[float, dict[str, float]] = {}
    epochs: dict[float, dict[str, float]] = {}
    for part in parts:
        out.config.update(part.config)
        out.summary.update(part.summary)
        out.sweep_id = part.sweep_id or out.sweep_id
        out.name = part.name or out.name
        for row in part.train:
            steps[row[M.TRAIN_STEP]] = row
        for row in part.val:
            epochs[row[M.EPOCH]] = row
        out.val_triplets.update(part.val_triplets)
        out.train_triplets.update(part.train_triplets)
        out.sources.extend(part.sources)
        out.notes.extend(part.notes)
    out.train = [steps[k] for k in sorted(steps)]
    out.val = [epochs[k] for k in sorted(epochs)]
    out.state, out.exit_code = last.state, last.exit_code
    out.notes.append(f"resumed: read from {len(parts)} pieces of the same run")
    return out


# What makes two validation losses comparable: the same loss on the same validation images,
# prepared the same way. Keys every source shares, then the keys that choose a source's
# validation images: synthetic blobs draw the training images and then the validation ones
# from one stream seeded by ``seed``; MNI152 spreads ``n_train + n_val`` slices through the
# brain and takes every k-th for validation; a folder or a datalist is split by
# ``val_fraction`` (unless it has its own train/ and val/ or a validation list), and its
# images are scaled by ``intensity`` and fitted by ``fit``.
DATA_COMMON = ("data_source", "spatial_dims", "in_channels", "image_size", "recon_loss")
DATA_BY_SOURCE = {
    "synthetic": ("seed", "n_train", "n_val"),
    "mni152": ("n_train", "n_val", "fit"),
    "folder": ("data_dir", "val_fraction", "intensity", "fit"),
    "datalist": ("datalist", "val_fraction", "intensity", "fit"),
}
# Every key that can decide the data of a run, whatever its source: never a hyperparameter.
DATA_KEYS = tuple(dict.fromkeys(DATA_COMMON + sum(DATA_BY_SOURCE.values(), ())))


def data_keys(config: dict[str, Any]) -> tuple[str, ...]:
    source = config.get("data_source", DEFAULTS["data_source"])
    return DATA_COMMON + DATA_BY_SOURCE.get(source, DATA_KEYS)


def data_group(config: dict[str, Any]) -> str:
    """One string per "same data": runs compare their losses only when these are equal. A key
    the run's config lacks (an older trainer) is the trainer's default."""
    return json.dumps(
        {k: config.get(k, DEFAULTS.get(k)) for k in data_keys(config)}, sort_keys=True
    )


def data_words(config: dict[str, Any]) -> str:
    """The data of a run in words: ``data_source=folder, data_dir="tiles", intensity="minmax"``."""
    return ", ".join(f"{k}={json.dumps(config.get(k, DEFAULTS.get(k)))}" for k in data_keys(config))
