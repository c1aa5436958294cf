"""A corpus of real training runs whose regime is known by construction, and its loader.

Run as a script, it trains every run of one corpus with the real trainer (``python -m trainer``,
W&B offline) and a small local sweep with Hyperband (``python -m sweeper``), checks on each
run's raw per-epoch curves (the trainer's own ``progress.jsonl``) that the regime its
construction promises really happened, and writes the runs, read back by W&B's reader, as
compact run records to ``tests/data/corpus/<corpus>.json``::

    python tests/corpus.py tuning            # the corpus the rules may be tuned on
    python tests/corpus.py heldout           # other seeds, sizes and values: never tuned on
    python tests/corpus.py families          # kinds of run users have, judged family by family
    python tests/corpus.py unseen            # built once the rules were frozen, judged as built

The families corpus groups runs by the kind of run users have (2D/3D, 16-64 px, synthetic,
MNI152 and a folder of NIfTI slices it writes, L1/L2, augment, the adversarial term, short and
long runs, batch-1 noise, capacity-limited models beside a wider sibling, low lr, a dominating
KL term, early and late overfitting, runs still improving, a Hyperband sweep like the smoke
sweep); ``bench/verdict_families.py`` judges it leave-one-family-out. Its runs also log
``train/eval_recon_loss``, and its checks read the gap on it. A construction whose raw curves
do not meet its regime's check is changed or left out, never relabelled by the analysis.

A run whose check fails is reported and nothing is written (exit 1): its construction, not the
check, has to change. Imported, the module only loads a written corpus (``load``), for the
tests; it needs neither torch nor a trainer then.

Regimes and why each construction gives it:

- ``overfitting``: very few training images, a deep model that squeezes each image into a
  handful of latent numbers, no KL pressure, no augmentation, many epochs. The decoder can
  only memorise the few training images: train keeps falling long after val has stopped
  improving, so val's best comes early and the val/train gap grows.
- ``underfitting`` (learning rate): lr around 1e-6, a thousand times MONAI's recipe. Adam moves
  each weight by about lr per step, so a few hundred steps barely change the untrained model:
  val ends close to its value before training (the run's ``init_val_recon_loss``).
- ``underfitting`` (KL): kl_weight of 0.5 to 1 instead of ~1e-6. The summed KL outweighs the
  per-pixel reconstruction term, so the encoder gives up on the input (posterior collapse) and
  the decoder learns the average image: reconstruction plateaus at the loss of the mean
  training image (the run's ``trivial_val_recon_loss``).
- ``good``: plenty of images for a small model, a sensible lr, MONAI's kl_weight: train and val
  both fall far below both references and stay close together. Some run long enough to plateau.
- ``good`` (still improving): too few epochs for the loss to level off: val's best is in the
  last two epochs and both curves fell 10% or more over the second half.
- ``underfitting`` (capacity): a model with one channel a level plateaus (val moves 10% or less
  over the last third) at 1.5x or more the best val of a wide sibling on the same data.
- ``overfitting`` (levels): val's level (medians of 5 epochs) ends 5% or more above its best,
  10 or more epochs before the end, while train's level fell 20% or more since then.
- ``pruned``: the trials of a local sweep that Hyperband stopped (the engine's PRUNED trials),
  whatever their curve. The sweep's space only holds good configurations, so its COMPLETE
  trials are checked, and expected, as ``good``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from conftest import offline_env  # noqa: E402

from analysis.records import END_STEP, RunRecord  # noqa: E402
from contract import metrics as M  # noqa: E402

DATA = REPO / "tests" / "data" / "corpus"
# The development set the rules were first written on: per-epoch curves of real runs.
DEV = REPO / "tests" / "data" / "verdicts" / "real_runs.json"
CORPORA = ("tuning", "heldout", "families", "unseen")
REGIMES = ("good", "overfitting", "underfitting", "pruned")
TRAIN_COLUMNS = (M.TRAIN_STEP, M.TRAIN_RECON, M.TRAIN_KL, M.TRAIN_LOSS)
VAL_COLUMNS = (
    M.EPOCH,
    M.VAL_RECON,
    M.TRAIN_EVAL_RECON,
    M.VAL_KL,
    M.VAL_BEST_RECON,
    M.TIME_PER_EPOCH,
    M.TRAIN_TIME_PER_EPOCH,
    END_STEP,
)
# Summary keys that describe this machine, not the run.
MACHINE_KEYS = (M.SUMMARY_RUN_DIR,)
# Every run: no mid-block attention (slow on a CPU for nothing here), no triplet images.
COMMON = {"nonlocal_attn": False, "max_val_triplets": 0}

# --- what the checks need -------------------------------------------------------------------


@dataclass
class Raw:
    """One run's raw per-epoch curves (the trainer's progress.jsonl) and references."""

    train: list[float]
    val: list[float]
    init: float
    trivial: float
    kl_share_first_epoch: float  # kl_weight x KL / total loss over epoch 1's steps
    # The training images' loss measured as validation's (empty for runs logged without it).
    train_eval: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.val)

    @property
    def best_epoch(self) -> int:
        return self.val.index(min(self.val)) + 1

    @property
    def gap_train(self) -> list[float]:
        """The training loss to measure the gap against: the training images scored as
        validation is where the run logged them, else the per-step means."""
        return self.train_eval if len(self.train_eval) == self.n else self.train

    def ratio(self, epoch: int) -> float:
        """val / train at an epoch (1-based): the generalisation gap."""
        return self.val[epoch - 1] / self.gap_train[epoch - 1]


class CheckFailed(Exception):
    pass


def need(ok: bool, text: str) -> str:
    if not ok:
        raise CheckFailed(text)
    return text


def _median(values: list[float]) -> float:
    return statistics.median(values)


def check_overfitting(r: Raw) -> list[str]:
    h, best = r.n // 2, min(r.val)
    # Medians of 5 epochs: one step per epoch makes a single epoch's train loss noisy.
    train_h, train_end = _median(r.train[h - 3 : h + 2]), _median(r.train[-5:])
    val_h, val_end = _median(r.val[h - 3 : h + 2]), _median(r.val[-5:])
    train_fall = 1 - train_end / train_h
    val_fall = 1 - min(r.val[h:]) / min(r.val[:h])
    gap_h, gap_end = val_h / train_h, val_end / train_end
    return [
        need(
            best <= 0.8 * r.trivial,
            f"val's best {best:.4g} is {best / r.trivial:.2f}x the mean-image loss {r.trivial:.4g}"
            " (<= 0.8x): the model learnt what generalises before it memorised",
        ),
        need(
            train_fall >= 0.4,
            f"over the second half (epochs {h + 1}-{r.n}) train fell {100 * train_fall:.0f}%"
            " (>= 40%, medians of 5 epochs)",
        ),
        need(
            val_fall <= train_fall / 3,
            f"val's best improved {100 * val_fall:.0f}% over the same epochs"
            f" (<= a third of train's fall): val stagnates or rises",
        ),
        need(
            gap_end >= 1.5 * gap_h,
            f"the val/train gap grew from {gap_h:.2f} to {gap_end:.2f} (>= 1.5x):"
            " the curves are no longer parallel",
        ),
    ]


def check_underfitting_lr(r: Raw) -> list[str]:
    progress = (r.init - min(r.val)) / r.init
    return [
        need(
            progress <= 0.1,
            f"val's best {min(r.val):.4g} is only {100 * progress:.1f}% below its value before"
            f" training {r.init:.4g} (<= 10%)",
        ),
        need(
            min(r.val) >= 2 * r.trivial,
            f"val's best is {min(r.val) / r.trivial:.2f}x the mean-image loss {r.trivial:.4g} (>= 2x)",
        ),
    ]


def check_underfitting_kl(r: Raw) -> list[str]:
    t = r.n - r.n // 3  # the last third starts after epoch t
    third, end = _median(r.val[t - 3 : t + 2]), _median(r.val[-5:])
    change = abs(third - end) / end
    return [
        need(
            r.kl_share_first_epoch >= 0.5,
            f"the KL term is {100 * r.kl_share_first_epoch:.0f}% of the total loss in epoch 1 (>= 50%)",
        ),
        need(
            0.8 <= r.val[-1] / r.trivial <= 1.2,
            f"val ends at {r.val[-1]:.4g}, {r.val[-1] / r.trivial:.2f}x the mean-image loss"
            f" {r.trivial:.4g} (0.8x-1.2x)",
        ),
        need(
            change <= 0.05,
            f"val moved {100 * change:.1f}% over the last third of the run (<= 5%, medians of 5"
            " epochs): a plateau",
        ),
    ]


def check_good(r: Raw) -> list[str]:
    b, third = r.best_epoch, max(1, math.ceil(r.n / 3))
    return [
        need(
            min(r.val) <= 0.5 * r.init and min(r.val) <= 0.9 * r.trivial,
            f"val's best {min(r.val):.4g} is {min(r.val) / r.init:.2f}x its value before training"
            f" (<= 0.5x) and {min(r.val) / r.trivial:.2f}x the mean-image loss (<= 0.9x)",
        ),
        need(
            b >= 0.8 * r.n and r.val[-1] <= 1.1 * min(r.val),
            f"val's best is at epoch {b} of {r.n} (>= 0.8 x {r.n}) and val ends"
            f" {100 * (r.val[-1] / min(r.val) - 1):.1f}% above it (<= 10%)",
        ),
        need(
            r.train[-1] < r.train[third - 1],
            f"train fell from {r.train[third - 1]:.4g} (epoch {third}) to {r.train[-1]:.4g}",
        ),
        need(
            0.8 <= r.ratio(r.n) / r.ratio(third) <= 1.25,
            f"val/train gap {r.ratio(third):.2f} at epoch {third}, {r.ratio(r.n):.2f} at the end"
            " (0.8x-1.25x: parallel)",
        ),
    ]


def _medians(values: list[float], k: int = 5) -> list[float]:
    """Centred medians of ``k`` epochs (shorter at the ends): a level through one epoch's noise."""
    h = k // 2
    return [_median(values[max(0, i - h) : i + h + 1]) for i in range(len(values))]


def check_good_improving(r: Raw) -> list[str]:
    """Still improving fast at the end: whatever its level, it wants more epochs."""
    h = r.n // 2
    val_fall = 1 - min(r.val[-2:]) / r.val[h - 1]
    train_fall = 1 - r.train[-1] / r.train[h - 1]
    return [
        need(
            r.best_epoch >= r.n - 1,
            f"val's best is at epoch {r.best_epoch} of {r.n} (one of the last two)",
        ),
        need(
            val_fall >= 0.1 and train_fall >= 0.1,
            f"over the second half (from epoch {h}) val fell {100 * val_fall:.0f}% and train"
            f" {100 * train_fall:.0f}% (both >= 10%): still falling fast",
        ),
    ]


def check_good_noisy(r: Raw) -> list[str]:
    """A noisy run that converged: levels are medians of 5 epochs, not single epochs."""
    val, third = _medians(r.val), max(1, math.ceil(r.n / 3))
    train = _medians(r.gap_train)
    return [
        need(
            min(val) <= 0.5 * r.init and min(val) <= 0.9 * r.trivial,
            f"val's best level {min(val):.4g} is {min(val) / r.init:.2f}x its value before"
            f" training (<= 0.5x) and {min(val) / r.trivial:.2f}x the mean-image loss (<= 0.9x)",
        ),
        need(
            val[-1] <= 1.05 * min(val),
            f"val's level ends {100 * (val[-1] / min(val) - 1):.1f}% above its best level (<= 5%)",
        ),
        need(
            0.8 <= (val[-1] / train[-1]) / (val[third - 1] / train[third - 1]) <= 1.25,
            f"val/train level ratio {val[third - 1] / train[third - 1]:.2f} at epoch {third},"
            f" {val[-1] / train[-1]:.2f} at the end (0.8x-1.25x: parallel)",
        ),
    ]


def check_overfitting_gl(r: Raw) -> list[str]:
    """Val rose well above its best while train kept falling: early or late, noisy or not."""
    val, train = _medians(r.val), _medians(r.gap_train)
    b = val.index(min(val))
    rise = val[-1] / min(val) - 1
    fall = 1 - train[-1] / train[b]
    return [
        need(
            b <= r.n - 10,
            f"val's best level is at epoch {b + 1} of {r.n} (10 or more before the end)",
        ),
        need(
            rise >= 0.05,
            f"val's level ends {100 * rise:.0f}% above its best (>= 5%, medians of 5 epochs)",
        ),
        need(
            fall >= 0.2,
            f"train's level fell {100 * fall:.0f}% from epoch {b + 1} to the end (>= 20%)",
        ),
    ]


def check_underfitting_capacity(r: Raw, wide: Raw) -> list[str]:
    """A plateau far above what a wider model reaches on the same data."""
    t = r.n - r.n // 3
    third, end = _median(r.val[t - 3 : t + 2]), _median(r.val[-5:])
    return [
        need(
            abs(third - end) / end <= 0.1,
            f"val moved {100 * abs(third - end) / end:.1f}% over the last third (<= 10%, medians"
            " of 5 epochs): a plateau",
        ),
        need(
            min(r.val) >= 1.5 * min(wide.val),
            f"val's best {min(r.val):.4g} is {min(r.val) / min(wide.val):.2f}x the wide model's"
            f" {min(wide.val):.4g} on the same data (>= 1.5x)",
        ),
    ]


CHECKS: dict[str, Callable[[Raw], list[str]]] = {
    "overfitting": check_overfitting,
    "underfitting-lr": check_underfitting_lr,
    "underfitting-kl": check_underfitting_kl,
    "good": check_good,
    "good-improving": check_good_improving,
    "good-noisy": check_good_noisy,
    "overfitting-gl": check_overfitting_gl,
}
# Kinds checked against another run of the corpus (Spec.sibling), on the same data.
SIBLING_CHECKS: dict[str, Callable[[Raw, Raw], list[str]]] = {
    "underfitting-capacity": check_underfitting_capacity,
}

# --- the corpora ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    name: str
    kind: str  # a key of CHECKS or SIBLING_CHECKS
    reason: str
    config: dict[str, Any]
    family: str = ""  # the kind of run users have that it stands for (families corpus)
    sibling: str | None = None  # the run a SIBLING_CHECKS kind is checked against


@dataclass(frozen=True)
class SweepSpec:
    """A local sweep with Hyperband over good configurations only."""

    name: str
    reason: str
    sweep: dict[str, Any]  # the sweep file's content


@dataclass(frozen=True)
class Corpus:
    name: str
    description: str
    runs: list[Spec]
    sweep: SweepSpec
    jobs: int = 2


SMALL = {"channels": [8, 16], "norm_num_groups": 8, "latent_channels": 2}
DEEP = {"channels": [16, 32, 64], "norm_num_groups": 8, "latent_channels": 1}
DEEPER = {"channels": [16, 32, 64, 64], "norm_num_groups": 8, "latent_channels": 1}

REASON_GOOD = (
    "{n} training images for a {p}-level model with channels {ch}, lr {lr:g}, kl_weight 1e-6"
    " (MONAI's recipe), {e} epochs: enough data and a sensible step size, so train and val both"
    " fall well below the untrained and mean-image losses and stay parallel"
)
REASON_OVER = (
    "{n} training images, a {p}-level model squeezing each {s}x{s} image into {z} latent"
    " numbers, kl_weight 0, no augmentation, {e} epochs: the decoder memorises the training"
    " images, train falls on after val stops improving and the gap grows"
)
REASON_LR = (
    "lr {lr:g} for {e} epochs of {k} steps: Adam moves each weight by about lr a step, so the"
    " model stays close to its initialisation and val close to its value before training"
)
REASON_KL = (
    "kl_weight {kl:g} (MONAI's recipe is 1e-6): the summed KL outweighs the per-pixel"
    " reconstruction, the latent carries no information and the decoder outputs the average"
    " image: reconstruction plateaus at the mean-image loss"
)


def spec(
    name: str,
    kind: str,
    family: str = "",
    reason: str | None = None,
    sibling: str | None = None,
    **config: Any,
) -> Spec:
    cfg = {**COMMON, **config}
    if reason is not None:
        return Spec(name, kind, reason, cfg, family, sibling)
    levels, n, e = len(cfg["channels"]), cfg.get("n_train", "the folder's"), cfg["max_epochs"]
    size = cfg.get("image_size", 16)
    words = {
        "good": REASON_GOOD.format(n=n, p=levels, ch=cfg["channels"], lr=cfg["lr"], e=e),
        "good-noisy": REASON_GOOD.format(n=n, p=levels, ch=cfg["channels"], lr=cfg["lr"], e=e),
        "overfitting": REASON_OVER.format(
            n=n,
            p=levels,
            s=size,
            z=(size // 2 ** (levels - 1)) ** 2 * cfg["latent_channels"],
            e=e,
        ),
        "underfitting-lr": REASON_LR.format(
            lr=cfg["lr"], e=e, k=-(-cfg.get("n_train", 0) // cfg.get("batch_size", 8))
        ),
        "underfitting-kl": REASON_KL.format(kl=cfg.get("kl_weight", 1e-6)),
    }
    return Spec(name, kind, words[kind], cfg, family, sibling)


def hyperband_sweep(name: str, data: dict[str, Any], min_iter: int, eta: int, cap: int, lr):
    return SweepSpec(
        name,
        f"a local random sweep of {cap} runs over lr {lr[0]:g}-{lr[1]:g} (good configurations"
        f" only) with Hyperband (min_iter {min_iter}, eta {eta}): the trials it stopped are"
        " pruned, the others ran to max_epochs and are good",
        {
            "name": name,
            "command": ["${env}", "${interpreter}", "-m", "trainer", "${args}"],
            "method": "random",
            "metric": {"name": M.SWEEP_METRIC, "goal": M.SWEEP_GOAL},
            "run_cap": cap,
            "early_terminate": {
                "type": "hyperband",
                "min_iter": min_iter,
                "eta": eta,
                "strict": True,
            },
            "parameters": {
                "lr": {"distribution": "log_uniform_values", "min": lr[0], "max": lr[1]},
                **{k: {"value": v} for k, v in {**COMMON, **data}.items()},
            },
        },
    )


TUNING = Corpus(
    "tuning",
    "synthetic blobs and MNI152 slices at 16x16, seed 0; the corpus the rules may be tuned on",
    [
        spec("syn-good", "good", n_train=128, n_val=16, batch_size=16, lr=2e-3, max_epochs=30, image_size=16, **SMALL),
        spec("syn-good-plateau", "good", n_train=128, n_val=16, batch_size=16, lr=1e-3, max_epochs=80, image_size=16, **SMALL),
        spec("syn-over", "overfitting", n_train=16, n_val=16, batch_size=4, lr=1e-3, kl_weight=0.0, max_epochs=120, image_size=16, **DEEP),
        spec("syn-under-lr", "underfitting-lr", n_train=64, n_val=16, batch_size=8, lr=1e-6, max_epochs=20, image_size=16, **SMALL),
        spec("syn-under-kl", "underfitting-kl", n_train=64, n_val=16, batch_size=8, lr=1e-3, kl_weight=1.0, max_epochs=60, image_size=16, **SMALL),
        spec("mni-good", "good", data_source="mni152", n_train=96, n_val=16, batch_size=16, lr=2e-3, max_epochs=30, image_size=16, **SMALL),
        spec("mni-over", "overfitting", data_source="mni152", n_train=4, n_val=16, batch_size=4, lr=2e-3, kl_weight=0.0, max_epochs=300, image_size=16, **DEEPER),
        spec("mni-under-lr", "underfitting-lr", data_source="mni152", n_train=64, n_val=16, batch_size=8, lr=1e-6, max_epochs=20, image_size=16, **SMALL),
        spec("mni-under-kl", "underfitting-kl", data_source="mni152", n_train=64, n_val=16, batch_size=8, lr=1e-3, kl_weight=1.0, max_epochs=60, image_size=16, **SMALL),
    ],
    hyperband_sweep(
        "corpus-tuning-hyperband",
        {"n_train": 64, "n_val": 16, "batch_size": 8, "max_epochs": 12, "image_size": 16, **SMALL},
        min_iter=2, eta=3, cap=8, lr=(5e-4, 3e-3),
    ),
)  # fmt: skip

HELDOUT = Corpus(
    "heldout",
    "other seeds, sizes (16x16 and 32x32), losses and values than the tuning corpus",
    [
        spec("syn-good-l2", "good", seed=7, recon_loss="l2", n_train=96, n_val=24, batch_size=12, lr=3e-3, max_epochs=25, image_size=16, **SMALL),
        spec("syn-good-32", "good", seed=7, n_train=64, n_val=16, batch_size=16, lr=2e-3, max_epochs=40, image_size=32, channels=[8, 16, 16], norm_num_groups=8, latent_channels=3),
        spec("syn-over", "overfitting", seed=7, n_train=12, n_val=24, batch_size=4, lr=2e-3, kl_weight=0.0, max_epochs=150, image_size=16, **DEEP),
        spec("syn-under-lr", "underfitting-lr", seed=7, n_train=48, n_val=24, batch_size=8, lr=3e-6, max_epochs=15, image_size=16, **SMALL),
        spec("syn-under-kl", "underfitting-kl", seed=7, n_train=48, n_val=24, batch_size=8, lr=2e-3, kl_weight=0.5, max_epochs=50, image_size=16, **SMALL),
        spec("mni-good-plateau", "good", seed=3, data_source="mni152", n_train=112, n_val=24, batch_size=16, lr=1e-3, max_epochs=70, image_size=16, **SMALL),
        spec("mni-over", "overfitting", seed=3, data_source="mni152", n_train=3, n_val=24, batch_size=3, lr=2e-3, kl_weight=0.0, max_epochs=250, image_size=16, **DEEPER),
        spec("mni-under-lr", "underfitting-lr", seed=3, data_source="mni152", n_train=48, n_val=24, batch_size=8, lr=2e-6, max_epochs=15, image_size=32, channels=[8, 16, 16], norm_num_groups=8, latent_channels=3),
        spec("mni-under-kl", "underfitting-kl", seed=3, data_source="mni152", n_train=48, n_val=24, batch_size=8, lr=2e-3, kl_weight=0.8, max_epochs=80, image_size=16, **SMALL),
    ],
    hyperband_sweep(
        "corpus-heldout-hyperband",
        {"data_source": "mni152", "seed": 3, "n_train": 64, "n_val": 16, "batch_size": 8, "max_epochs": 20, "image_size": 16, **SMALL},
        min_iter=3, eta=3, cap=8, lr=(1e-3, 4e-3),
    ),
)  # fmt: skip


# Reasons of the families' own constructions.
REASON_IMPROVING = (
    "lr {lr:g} for only {e} epochs: the loss is still falling fast when training stops, so"
    " the run wants more epochs, however high it still is"
)
REASON_CAPACITY = (
    "channels {ch} and {z} latent channel(s): too few features to represent the images, so"
    " val plateaus far above what a wider model reaches on the same data ({sib})"
)
REASON_NOISY = (
    "batch_size 1: every step sees one image, so the epoch means are noisy; {n} training images"
    " for a small model, lr {lr:g}, {e} epochs: it converges, noisily"
)
REASON_OVER_GL = (
    "{n} training images for a {p}-level model, kl_weight 0, {e} epochs: val reaches its best,"
    " then rises well above it while train keeps falling ({when})"
)
REASON_KL_IMPROVING = (
    "kl_weight 1 on NIfTI slices for 30 epochs: the KL term dominates the loss, yet val is still"
    " falling fast at the end (built as a KL plateau, its raw curve says otherwise): a run"
    " still improving, whatever its level, is good and wants more epochs"
)
TINY2 = {"channels": [1, 1, 1], "norm_num_groups": 1, "latent_channels": 1}
WIDE = {"channels": [16, 32, 32], "norm_num_groups": 8, "latent_channels": 4}
# Folders of NIfTI slices (data_source=folder) the corpus writes before training: files, side.
NIFTI = {"nifti-80": (80, 32), "nifti-10": (10, 32)}


def improving(name: str, family: str, **config: Any) -> Spec:
    why = REASON_IMPROVING.format(lr=config["lr"], e=config["max_epochs"])
    return spec(name, "good-improving", family, why, **config)


def capacity(name: str, family: str, sibling: str, **config: Any) -> Spec:
    why = REASON_CAPACITY.format(ch=config["channels"], z=config["latent_channels"], sib=sibling)
    return spec(name, "underfitting-capacity", family, why, sibling, **config)


def noisy_good(name: str, family: str, **config: Any) -> Spec:
    why = REASON_NOISY.format(n=config["n_train"], lr=config["lr"], e=config["max_epochs"])
    return spec(name, "good-noisy", family, why, **config)


def over_gl(name: str, family: str, when: str, **config: Any) -> Spec:
    n = config.get("n_train", "few")
    why = REASON_OVER_GL.format(n=n, p=len(config["channels"]), e=config["max_epochs"], when=when)
    return spec(name, "overfitting-gl", family, why, **config)


S16 = {"image_size": 16, "n_val": 16, "seed": 11}
M16 = {"data_source": "mni152", "image_size": 16, "n_val": 16, "seed": 11}
S32, M32 = {**S16, "image_size": 32}, {**M16, "image_size": 32}
S64, M64 = {**S16, "image_size": 64}, {**M16, "image_size": 64}
FAMILIES = Corpus(
    "families",
    "families of runs users have: 2D/3D, 16-64 px, synthetic/MNI152/NIfTI folder, L1/L2,"
    " augment, the adversarial term, short and long, batch-1 noise, capacity-limited, low lr,"
    " dominating KL, early and late overfitting, still improving, Hyperband-pruned; seed 11",
    [
        # short runs, like the smoke sweep's
        improving("short-good-8", "short", **{**S32, "n_val": 8}, n_train=64, batch_size=8, lr=1e-3, max_epochs=8, **SMALL),
        improving("short-good-5", "short", **S16, n_train=96, batch_size=16, lr=3e-3, max_epochs=5, **SMALL),
        spec("short-under-lr", "underfitting-lr", "short", **S16, n_train=32, batch_size=8, lr=1e-6, max_epochs=6, **SMALL),
        spec("short-under-kl", "underfitting-kl", "short", **S16, n_train=64, batch_size=8, lr=2e-3, kl_weight=1.0, max_epochs=10, **SMALL),
        # long runs
        spec("long-good", "good", "long", **S16, n_train=128, batch_size=32, lr=1e-3, max_epochs=150, **SMALL),
        spec("long-mni-good", "good-noisy", "long", **M16, n_train=96, batch_size=32, lr=1e-3, max_epochs=100, **SMALL),
        over_gl("long-over-late", "long", "late", **S16, n_train=32, batch_size=8, lr=1e-3, kl_weight=0.0, max_epochs=150, **DEEP),
        # batch-1 noise
        noisy_good("noisy-good", "noisy", **S16, n_train=64, batch_size=1, lr=3e-4, max_epochs=40, **SMALL),
        over_gl("noisy-over", "noisy", "batch 1", **S16, n_train=8, batch_size=1, lr=2e-3, kl_weight=0.0, max_epochs=150, **DEEP),
        # capacity-limited, with a wide sibling on the same data
        spec("cap-wide-syn", "good", "capacity", **S32, n_train=64, batch_size=16, lr=2e-3, max_epochs=40, **WIDE),
        capacity("cap-narrow-syn", "capacity", "cap-wide-syn", **S32, n_train=64, batch_size=16, lr=5e-3, max_epochs=120, **TINY2),
        spec("cap-wide-mni", "good-noisy", "capacity", **M32, n_train=64, batch_size=16, lr=1e-3, max_epochs=40, **WIDE),
        capacity("cap-narrow-mni", "capacity", "cap-wide-mni", **M32, n_train=64, batch_size=16, lr=5e-3, max_epochs=120, **TINY2),
        # low learning rates
        spec("lowlr-l2", "underfitting-lr", "low-lr", **S16, recon_loss="l2", n_train=48, batch_size=8, lr=1e-6, max_epochs=20, **SMALL),
        spec("lowlr-aug-mni", "underfitting-lr", "low-lr", **M16, augment=True, n_train=48, batch_size=8, lr=2e-6, max_epochs=15, **SMALL),
        # a dominating KL term
        spec("kl-mni-32", "underfitting-kl", "kl", **M32, n_train=64, batch_size=16, lr=2e-3, kl_weight=0.5, max_epochs=80, channels=[8, 16, 16], norm_num_groups=8, latent_channels=2),
        spec("kl-l2", "underfitting-kl", "kl", **S16, recon_loss="l2", n_train=64, batch_size=8, lr=2e-3, kl_weight=2.0, max_epochs=40, **SMALL),
        # early and late overfitting
        over_gl("over-early", "overfit-early-late", "early", **S16, n_train=8, batch_size=2, lr=2e-3, kl_weight=0.0, max_epochs=150, **DEEP),
        over_gl("nifti-over", "nifti", "5 NIfTI slices", data_source="folder", data_dir="@nifti-10", val_fraction=0.5, image_size=32, seed=11, batch_size=1, lr=2e-3, kl_weight=0.0, max_epochs=300, channels=[8, 16, 32], norm_num_groups=8, latent_channels=1),
        over_gl("adv-over", "adversarial", "adversarial term from epoch 20", **S16, adv_weight=0.05, adv_warmup_epochs=20, disc_channels=8, disc_layers=2, n_train=4, batch_size=2, lr=2e-3, kl_weight=0.0, max_epochs=200, **DEEP),
        # still improving at the end
        improving("improving-mni", "improving", **M16, n_train=96, batch_size=16, lr=5e-4, max_epochs=12, **SMALL),
        improving("improving-syn-32", "improving", **S32, n_train=64, batch_size=16, lr=3e-4, max_epochs=15, channels=[8, 16, 16], norm_num_groups=8, latent_channels=2),
        # 64x64 images
        spec("size64-good", "good", "size64", **S64, n_train=48, batch_size=16, lr=2e-3, max_epochs=20, channels=[8, 16, 16], norm_num_groups=8, latent_channels=2),
        spec("size64-under-kl", "underfitting-kl", "size64", **S64, n_train=48, batch_size=16, lr=2e-3, kl_weight=1.0, max_epochs=50, channels=[8, 16, 16], norm_num_groups=8, latent_channels=2),
        # 3D volumes
        improving("3d-good", "3d", **S16, spatial_dims=3, n_train=48, batch_size=8, lr=2e-3, max_epochs=25, **SMALL),
        spec("3d-under-lr", "underfitting-lr", "3d", **S16, spatial_dims=3, n_train=32, batch_size=8, lr=1e-6, max_epochs=10, **SMALL),
        over_gl("3d-over", "3d", "3D volumes", **S16, spatial_dims=3, n_train=3, batch_size=3, lr=2e-3, kl_weight=0.0, max_epochs=200, channels=[8, 16, 32], norm_num_groups=8, latent_channels=1),
        # a folder of NIfTI slices
        improving("nifti-good", "nifti", data_source="folder", data_dir="@nifti-80", val_fraction=0.2, image_size=32, seed=11, batch_size=16, lr=2e-3, max_epochs=30, **SMALL),
        spec("nifti-kl-improving", "good-improving", "nifti", REASON_KL_IMPROVING, data_source="folder", data_dir="@nifti-80", val_fraction=0.2, image_size=32, seed=11, batch_size=16, lr=2e-3, kl_weight=1.0, max_epochs=30, **SMALL),
        # L2
        over_gl("l2-over", "l2", "L2 loss", **S16, recon_loss="l2", n_train=8, batch_size=4, lr=2e-3, kl_weight=0.0, max_epochs=150, **DEEP),
        spec("l2-mni-good", "good", "l2", **M16, recon_loss="l2", n_train=96, batch_size=16, lr=2e-3, max_epochs=30, **SMALL),
        # augment on
        spec("aug-good", "good", "augment", **S16, augment=True, n_train=96, batch_size=16, lr=2e-3, max_epochs=30, **SMALL),
        spec("aug-mni-good", "good", "augment", **M16, augment=True, n_train=96, batch_size=16, lr=2e-3, max_epochs=30, **SMALL),
        # the adversarial term, on after its warm-up
        spec("adv-good", "good-noisy", "adversarial", **S16, adv_weight=0.01, adv_warmup_epochs=5, disc_channels=8, disc_layers=2, n_train=64, batch_size=16, lr=2e-3, max_epochs=30, **SMALL),
    ],
    hyperband_sweep(
        "corpus-families-hyperband",
        {"seed": 11, "image_size": 32, "n_train": 64, "n_val": 8, "batch_size": 8, "max_epochs": 8, **SMALL},
        min_iter=3, eta=2, cap=10, lr=(3e-4, 3e-3),
    ),
)  # fmt: skip


# Built once the rules were frozen, with a seed, an image size (24x24) and values no other corpus
# has: judged as built, never used to choose a rule or a threshold.
U16 = {"image_size": 16, "n_val": 12, "seed": 23}
U24 = {**U16, "image_size": 24}
UM16, UM24 = {**U16, "data_source": "mni152"}, {**U24, "data_source": "mni152"}
UNSEEN = Corpus(
    "unseen",
    "built after the rules were frozen, judged as built: seed 23, 16x16 and 24x24, synthetic"
    " and MNI152, L1/L2, 2D/3D, late and MNI152 overfitting, a capacity pair, batch-1 noise,"
    " the adversarial term, a Hyperband sweep",
    [
        spec("u-syn-good-24", "good", "", **U24, n_train=112, batch_size=16, lr=1.5e-3, max_epochs=40, **SMALL),
        spec("u-mni-good-l2", "good", "", **UM24, recon_loss="l2", n_train=96, batch_size=16, lr=2e-3, max_epochs=40, **SMALL),
        spec("u-mni-over", "overfitting", "", **UM16, n_train=5, batch_size=5, lr=1.5e-3, kl_weight=0.0, max_epochs=400, **DEEPER),
        over_gl("u-syn-over-late", "", "late", **U16, n_train=24, batch_size=8, lr=1e-3, kl_weight=0.0, max_epochs=180, **DEEP),
        spec("u-syn-under-lr", "underfitting-lr", "", **U24, n_train=40, batch_size=8, lr=2e-6, max_epochs=12, **SMALL),
        spec("u-mni-under-lr", "underfitting-lr", "", **UM16, n_train=40, batch_size=8, lr=5e-7, max_epochs=12, **SMALL),
        spec("u-mni-under-kl", "underfitting-kl", "", **UM24, n_train=64, batch_size=8, lr=2e-3, kl_weight=0.7, max_epochs=60, **SMALL),
        spec("u-3d-under-kl", "underfitting-kl", "", **U16, spatial_dims=3, n_train=24, batch_size=8, lr=2e-3, kl_weight=1.0, max_epochs=25, **SMALL),
        spec("u-cap-wide-mni", "good-noisy", "", **UM16, n_train=80, batch_size=16, lr=1e-3, max_epochs=40, **WIDE),
        capacity("u-cap-narrow-mni", "", "u-cap-wide-mni", **UM16, n_train=80, batch_size=16, lr=5e-3, max_epochs=100, **TINY2),
        noisy_good("u-syn-noisy", "", **U16, n_train=48, batch_size=1, lr=5e-4, max_epochs=30, **SMALL),
        improving("u-mni-improving", "", **UM24, n_train=96, batch_size=16, lr=4e-4, max_epochs=10, **SMALL),
        spec("u-adv-good", "good-noisy", "", **U16, adv_weight=0.02, adv_warmup_epochs=8, disc_channels=8, disc_layers=2, n_train=64, batch_size=16, lr=2e-3, max_epochs=30, **SMALL),
    ],
    hyperband_sweep(
        "corpus-unseen-hyperband",
        {"data_source": "mni152", "seed": 23, "image_size": 24, "n_train": 64, "n_val": 12, "batch_size": 8, "max_epochs": 9, **SMALL},
        min_iter=3, eta=3, cap=9, lr=(4e-4, 4e-3),
    ),
)  # fmt: skip


BY_NAME = {c.name: c for c in (TUNING, HELDOUT, FAMILIES, UNSEEN)}

# --- training and reading back ------------------------------------------------------------------


# A folder being trained into; renamed when its run (or sweep) has ended well.
PART = ".part"


def _fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    return folder


def train_one(s: Spec, work: Path, corpus: str) -> Path:
    """Train one run in its own folder; returns that folder (wandb/ and outputs/ under it)."""
    folder = _fresh(work / f"{s.name}{PART}")
    config = {k: _in_work(v, work) for k, v in s.config.items()}
    args = [f"--{k}={v!r}" if isinstance(v, str) else f"--{k}={v}" for k, v in config.items()]
    run_id = f"{corpus[:3]}-{s.name}"
    proc = subprocess.run(
        [sys.executable, "-m", "trainer", f"--output_dir={folder / 'outputs'}", *args],
        env=offline_env(folder, WANDB_RUN_ID=run_id),
        capture_output=True,
        text=True,
        cwd=folder,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{s.name}: trainer exit {proc.returncode}: {proc.stderr[-2000:]}")
    return folder.rename(work / s.name)


def _in_work(value: Any, work: Path) -> Any:
    """``@name`` names a folder of NIfTI files the corpus wrote under ``work``."""
    return work / value[1:] if isinstance(value, str) and value.startswith("@") else value


def write_nifti(folder: Path, files: int, side: int, seed: int = 11) -> None:
    """2D NIfTI slices of one registered anatomy: a fixed ellipse with a brighter core, each
    slice with its own blobs, contrast and noise, in scanner-like units (0-1000)."""
    import nibabel as nib
    import numpy as np

    if folder.exists():
        return
    part = _fresh(folder.with_name(folder.name + PART))
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / (side - 1) - 0.5
    head = ((x / 0.42) ** 2 + (y / 0.48) ** 2 <= 1).astype(np.float32)
    core = ((x / 0.25) ** 2 + (y / 0.3) ** 2 <= 1).astype(np.float32)
    for i in range(files):
        image = head * rng.uniform(0.4, 0.6) + core * rng.uniform(0.1, 0.3)
        for _ in range(rng.integers(2, 5)):
            cx, cy, r = rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3), rng.uniform(0.04, 0.12)
            image += head * rng.uniform(-0.3, 0.4) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / r**2)
        image += rng.normal(0, 0.02, image.shape)
        volume = (1000 * np.clip(image, 0, None)).astype(np.float32)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), part / f"slice{i:03d}.nii.gz")
    part.rename(folder)


def run_sweep(sw: SweepSpec, work: Path) -> Path:
    """Create the local sweep (storage: its folder's sweeps.db) and run it with one agent."""
    import yaml

    folder = _fresh(work / f"{sw.name}{PART}")
    (folder / "sweep.yaml").write_text(yaml.safe_dump(sw.sweep, sort_keys=False))
    storage = f"sqlite:///{folder / 'sweeps.db'}"
    env = offline_env(folder)
    created = subprocess.run(
        [sys.executable, "-m", "sweeper", "create", "sweep.yaml", "--storage", storage],
        env=env, capture_output=True, text=True, cwd=folder, check=True,
    )  # fmt: skip
    sweep_id = created.stdout.strip().splitlines()[-1].split()[-1]
    agent = subprocess.run(
        [sys.executable, "-m", "sweeper", "agent", sweep_id, "--storage", storage],
        env=env, capture_output=True, text=True, cwd=folder,
    )  # fmt: skip
    if agent.returncode != 0:
        raise RuntimeError(f"{sw.name}: agent exit {agent.returncode}: {agent.stderr[-2000:]}")
    return folder.rename(work / sw.name)


def read_sweep(folder: Path, storage: str) -> list[tuple[RunRecord, dict[str, Any]]]:
    """The sweep's runs as the report reads them (engine states attached), trial order."""
    from analysis import engine
    from analysis.offline import read_folder

    runs = read_folder(folder / "wandb")[0]
    sweeps, _ = engine.read_sweeps(storage, {r.sweep_id for r in runs if r.sweep_id}, True)
    engine.attach(runs, sweeps)
    trials = {run_id: t for sw in sweeps for run_id, t in sw.latest_by_run().items()}
    out = []
    for rec in sorted(runs, key=lambda r: trials[r.run_id].number):
        t = trials[rec.run_id]
        out.append((rec, {"trial": t.number, "state": t.state, "value": t.value}))
    return out


def raw_curves(rec: RunRecord, folder: Path) -> Raw:
    """The trainer's own per-epoch curves (progress.jsonl) and the run's references."""
    from contract import runs

    rows = runs.read_progress(runs.run_dir(folder / "outputs", rec.run_id))
    kl_weight = float(rec.config.get("kl_weight", 0.0))
    first = [r for r in rec.train if r[M.TRAIN_STEP] <= rec.val[0][END_STEP]] if rec.val else []
    kl = sum(kl_weight * r[M.TRAIN_KL] for r in first)
    total = sum(r[M.TRAIN_LOSS] for r in first)
    return Raw(
        train=[r[M.TRAIN_RECON] for r in rows],
        val=[r[M.VAL_RECON] for r in rows],
        init=rec.init_val_recon if rec.init_val_recon is not None else math.nan,
        trivial=rec.trivial_val_recon if rec.trivial_val_recon is not None else math.nan,
        kl_share_first_epoch=kl / total if total else math.nan,
        train_eval=[r[M.TRAIN_EVAL_RECON] for r in rows if M.TRAIN_EVAL_RECON in r],
    )


def _num(x: Any) -> Any:
    """Seven significant digits: the curves' float32 precision, a third of the JSON."""
    if isinstance(x, float) and math.isfinite(x):
        return float(f"{x:.7g}")
    return x


def compact(rec: RunRecord) -> dict[str, Any]:
    """The run record as JSON: columns of per-step and per-epoch values, no machine paths."""
    config = dict(rec.config)
    config["output_dir"] = "outputs"
    if config.get("data_dir"):
        config["data_dir"] = Path(config["data_dir"]).name
    return {
        "run_id": rec.run_id,
        "name": rec.name,
        "sweep_id": rec.sweep_id,
        "state": rec.state,
        "exit_code": rec.exit_code,
        "config": config,
        "summary": {k: _num(v) for k, v in sorted(rec.summary.items()) if k not in MACHINE_KEYS},
        "train": {
            "columns": list(TRAIN_COLUMNS),
            "rows": [[_num(r.get(k)) for k in TRAIN_COLUMNS] for r in rec.train],
        },
        "val": {
            "columns": list(VAL_COLUMNS),
            "rows": [[_num(r.get(k)) for k in VAL_COLUMNS] for r in rec.val],
        },
        "notes": rec.notes,
        "engine_state": rec.engine_state,
        "engine_reason": rec.engine_reason,
    }


def build(corpus: Corpus, work: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Train the corpus's runs under ``work`` (runs already there are kept), then check them."""
    from analysis.offline import read_folder

    started = time.monotonic()
    for name, (files, side) in NIFTI.items():
        if any(s.config.get("data_dir") == f"@{name}" for s in corpus.runs):
            write_nifti(work / name, files, side)
    with ThreadPoolExecutor(corpus.jobs) as pool:
        sweep_folder = work / corpus.sweep.name
        sweep_job = None if sweep_folder.exists() else pool.submit(run_sweep, corpus.sweep, work)
        folders = list(
            pool.map(
                lambda s: (
                    work / s.name if (work / s.name).exists() else train_one(s, work, corpus.name)
                ),
                corpus.runs,
            )
        )
        if sweep_job is not None:
            sweep_job.result()
    storage = f"sqlite:///{sweep_folder / 'sweeps.db'}"
    print(f"trained in {time.monotonic() - started:.0f} s, {corpus.jobs} at a time", flush=True)
    out = []
    for s, folder in zip(corpus.runs, folders, strict=True):
        (rec,) = read_folder(folder / "wandb")[0]
        out.append((s, rec, folder, None))
    family = "hyperband" if corpus is FAMILIES else ""
    for rec, trial in read_sweep(sweep_folder, storage):
        kind = "pruned" if rec.engine_state == "PRUNED" else "good"
        name = f"{corpus.sweep.name}-{trial['trial']}"
        out.append((Spec(name, kind, corpus.sweep.reason, {}, family), rec, sweep_folder, trial))
    raws = {s.name: raw_curves(rec, folder) for s, rec, folder, _ in out}
    written, failures = [], []
    for s, rec, _, trial in out:
        name, kind, raw = s.name, s.kind, raws[s.name]
        try:
            if kind in SIBLING_CHECKS:
                checks = SIBLING_CHECKS[kind](raw, raws[s.sibling])
            elif kind == "good" and trial is not None:
                # A short sweep's finished trial: converged, still improving fast, or
                # converged with a last-epoch wobble (levels are medians).
                checks = first_passing(raw, check_good, check_good_improving, check_good_noisy)
            elif kind == "pruned":
                checks = [
                    need(rec.summary.get(M.SUMMARY_STATUS) == M.STATUS_STOPPED,
                         "the trainer stopped on the engine's SIGTERM: summary status=stopped"),
                    need(raw.n < int(rec.config["max_epochs"]),
                         f"{raw.n} of max_epochs {rec.config['max_epochs']} epochs"),
                ]  # fmt: skip
            else:
                checks = CHECKS[kind](raw)
        except CheckFailed as exc:
            failures.append(f"{name} ({kind}): {exc}")
            checks = []
        print(f"{name:32s} {kind:16s} epochs {raw.n:3d}  " + "; ".join(checks), flush=True)
        written.append(
            {
                "name": name,
                "regime": kind.split("-")[0],
                "construction": kind,
                "family": s.family,
                "source": rec.config["data_source"],
                "reason": s.reason,
                "checks": checks,
                "engine": trial,
                "record": compact(rec),
            }
        )
    return written, failures


def first_passing(r: Raw, *checks: Callable[[Raw], list[str]]) -> list[str]:
    """The first check that passes; the last one's failure otherwise."""
    for check in checks[:-1]:
        try:
            return check(r)
        except CheckFailed:
            pass
    return checks[-1](r)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", choices=CORPORA)
    parser.add_argument("--out", type=Path, default=DATA, help="folder of <corpus>.json")
    parser.add_argument("--keep", action="store_true", help="keep the runs' folders")
    parser.add_argument(
        "--work",
        type=Path,
        help="train into this folder and keep it; runs already there are not trained again",
    )
    parser.add_argument(
        "--matrix",
        action="store_true",
        help="train nothing: judge the written corpus and print its confusion matrix",
    )
    args = parser.parse_args(argv)
    if args.matrix:
        from analysis.diagnose import Thresholds
        from analysis.judge import judge

        entries = load(args.corpus, args.out)
        rows = {j.run.run_id: j.row for j in judge([e.record for e in entries], Thresholds())}
        print(matrix(entries, {k: r["verdict"] for k, r in rows.items()}))
        for e in entries:
            row = rows[e.record.run_id]
            if row["verdict"] != e.regime:
                print(
                    f"  {e.name}: {e.regime} judged {row['verdict']}: " + " | ".join(row["reasons"])
                )
        return 0
    corpus = BY_NAME[args.corpus]
    work = args.work or Path(tempfile.mkdtemp(prefix=f"corpus-{corpus.name}-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        runs, failures = build(corpus, work)
    finally:
        if args.keep or args.work:
            print(f"runs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if failures:
        print("regime checks failed, nothing written:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"{corpus.name}.json"
    head = {
        "corpus": corpus.name,
        "description": corpus.description,
        "made_by": f"python tests/corpus.py {corpus.name}",
    }
    # One run a line: small diffs when a run is trained again.
    lines = [json.dumps(run, separators=(",", ":")) for run in runs]
    target.write_text(json.dumps(head)[:-1] + ', "runs": [\n' + ",\n".join(lines) + "\n]}\n")
    print(f"wrote {target.relative_to(REPO) if target.is_relative_to(REPO) else target}")
    return 0


# --- loading a written corpus ------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    name: str
    regime: str
    construction: str  # the regime and, for underfitting, its cause: underfitting-lr, -kl
    source: str
    reason: str
    engine: dict[str, Any] | None
    record: RunRecord
    family: str = ""  # the families corpus's kind of run; empty in the other corpora


def _rows(table: dict[str, Any]) -> list[dict[str, float]]:
    cols = table["columns"]
    return [
        {k: float(v) for k, v in zip(cols, row, strict=True) if v is not None}
        for row in table["rows"]
    ]


def matrix(entries: list[Entry], verdicts: dict[str, str]) -> str:
    """The confusion matrix as text: expected regime (rows) x verdict (columns), by run id."""
    found = Counter((e.regime, verdicts[e.record.run_id]) for e in entries)
    columns = sorted({v for _, v in found} | {e.regime for e in entries})
    lines = ["expected \\ verdict".ljust(20) + "".join(f"{c:>14s}" for c in columns)]
    for regime in REGIMES:
        if any(e.regime == regime for e in entries):
            lines.append(f"{regime:20s}" + "".join(f"{found[(regime, c)]:14d}" for c in columns))
    return "\n".join(lines)


def load(corpus: str, folder: Path = DATA) -> list[Entry]:
    """The runs of a written corpus as run records, with the regime each was built to have."""
    document = json.loads((folder / f"{corpus}.json").read_text())
    out = []
    for run in document["runs"]:
        r = run["record"]
        rec = RunRecord(
            run_id=r["run_id"],
            name=r["name"],
            sweep_id=r["sweep_id"],
            state=r["state"],
            exit_code=r["exit_code"],
            config=r["config"],
            summary=r["summary"],
            train=_rows(r["train"]),
            val=_rows(r["val"]),
            sources=[f"corpus {corpus}: {run['name']}"],
            notes=list(r["notes"]),
            engine_state=r["engine_state"],
            engine_reason=r["engine_reason"],
        )
        out.append(
            Entry(
                run["name"],
                run["regime"],
                run["construction"],
                run["source"],
                run["reason"],
                run["engine"],
                rec,
                run.get("family", ""),
            )
        )
    return out


def dev_record(r: dict[str, Any], engine: bool = True) -> RunRecord:
    """A run of the development set: one train row per epoch carrying that epoch's means gives
    ``epoch_curves`` the same curves."""
    epochs = r["epochs"]
    train = [
        {M.TRAIN_STEP: e, M.TRAIN_RECON: t, M.TRAIN_KL: k, M.TRAIN_LOSS: total}
        for e, t, k, total in zip(epochs, r["train"], r["kl"], r["total"], strict=True)
    ]
    val = [{M.EPOCH: e, M.VAL_RECON: v, END_STEP: e} for e, v in zip(epochs, r["val"], strict=True)]
    return RunRecord(
        r["run_id"],
        sweep_id=r["sweep_id"],
        state=r["state"],
        exit_code=r["exit_code"],
        config=r["config"],
        summary=r["summary"],
        train=train,
        val=val,
        engine_state=r["engine_state"] if engine else None,
    )


def load_dev(path: Path = DEV) -> list[Entry]:
    """The development set as corpus entries (family ``dev``)."""
    out = []
    for r in json.loads(path.read_text())["runs"]:
        engine = {"state": r["engine_state"]} if r["engine_state"] else None
        rec = dev_record(r)
        source = r["config"].get("data_source", "synthetic")
        out.append(
            Entry(r["run_id"], r["regime"], r["regime"], source, r["why"], engine, rec, "dev")
        )
    return out


if __name__ == "__main__":
    sys.exit(main())
