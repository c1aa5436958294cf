"""A corpus of real training runs whose regime is known by construction, and its loader.

Run as a script, it trains every run of one corpus with the real trainer (``python -m trainer``,
W&B offline) and a small local sweep with Hyperband (``python -m sweeper``), checks on each
run's raw per-epoch curves (the trainer's own ``progress.jsonl``) that the regime its
construction promises really happened, and writes the runs, read back by W&B's reader, as
compact run records to ``tests/data/corpus/<corpus>.json``::

    python tests/corpus.py tuning            # the corpus the rules may be tuned on
    python tests/corpus.py heldout           # other seeds, sizes and values: never tuned on

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from conftest import offline_env  # noqa: E402

from analysis.records import END_STEP, RunRecord  # noqa: E402
from contract import metrics as M  # noqa: E402

DATA = REPO / "tests" / "data" / "corpus"
CORPORA = ("tuning", "heldout")
REGIMES = ("good", "overfitting", "underfitting", "pruned")
TRAIN_COLUMNS = (M.TRAIN_STEP, M.TRAIN_RECON, M.TRAIN_KL, M.TRAIN_LOSS)
VAL_COLUMNS = (
    M.EPOCH,
    M.VAL_RECON,
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

    @property
    def n(self) -> int:
        return len(self.val)

    @property
    def best_epoch(self) -> int:
        return self.val.index(min(self.val)) + 1

    def ratio(self, epoch: int) -> float:
        """val / train at an epoch (1-based): the generalisation gap."""
        return self.val[epoch - 1] / self.train[epoch - 1]


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


CHECKS: dict[str, Callable[[Raw], list[str]]] = {
    "overfitting": check_overfitting,
    "underfitting-lr": check_underfitting_lr,
    "underfitting-kl": check_underfitting_kl,
    "good": check_good,
}

# --- the corpora ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    name: str
    kind: str  # a key of CHECKS
    reason: str
    config: dict[str, Any]


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


def spec(name: str, kind: str, **config: Any) -> Spec:
    cfg = {**COMMON, **config}
    levels, n, e = len(cfg["channels"]), cfg["n_train"], cfg["max_epochs"]
    size = cfg.get("image_size", 16)
    words = {
        "good": REASON_GOOD.format(n=n, p=levels, ch=cfg["channels"], lr=cfg["lr"], e=e),
        "overfitting": REASON_OVER.format(
            n=n,
            p=levels,
            s=size,
            z=(size // 2 ** (levels - 1)) ** 2 * cfg["latent_channels"],
            e=e,
        ),
        "underfitting-lr": REASON_LR.format(lr=cfg["lr"], e=e, k=-(-n // cfg.get("batch_size", 8))),
        "underfitting-kl": REASON_KL.format(kl=cfg.get("kl_weight", 1e-6)),
    }
    return Spec(name, kind, words[kind], cfg)


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

BY_NAME = {c.name: c for c in (TUNING, HELDOUT)}

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
    args = [f"--{k}={v!r}" if isinstance(v, str) else f"--{k}={v}" for k, v in s.config.items()]
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
    kl_weight = float(rec.config["kl_weight"])
    first = [r for r in rec.train if r[M.TRAIN_STEP] <= rec.val[0][END_STEP]] if rec.val else []
    kl = sum(kl_weight * r[M.TRAIN_KL] for r in first)
    total = sum(r[M.TRAIN_LOSS] for r in first)
    return Raw(
        train=[r[M.TRAIN_RECON] for r in rows],
        val=[r[M.VAL_RECON] for r in rows],
        init=rec.init_val_recon if rec.init_val_recon is not None else math.nan,
        trivial=rec.trivial_val_recon if rec.trivial_val_recon is not None else math.nan,
        kl_share_first_epoch=kl / total if total else math.nan,
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
        out.append((s.name, s.kind, s.reason, rec, folder, None))
    for rec, trial in read_sweep(sweep_folder, storage):
        kind = "pruned" if rec.engine_state == "PRUNED" else "good"
        name = f"{corpus.sweep.name}-{trial['trial']}"
        out.append((name, kind, corpus.sweep.reason, rec, sweep_folder, trial))
    written, failures = [], []
    for name, kind, reason, rec, folder, trial in out:
        raw = raw_curves(rec, folder)
        try:
            if kind == "pruned":
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
                "source": rec.config["data_source"],
                "reason": reason,
                "checks": checks,
                "engine": trial,
                "record": compact(rec),
            }
        )
    return written, failures


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
            )
        )
    return out


if __name__ == "__main__":
    sys.exit(main())
