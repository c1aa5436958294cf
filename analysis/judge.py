"""Apply the diagnosis to every run of a sweep: one result row per run, ranked."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from typing import Any

from analysis.diagnose import (
    Curves,
    SweepContext,
    Thresholds,
    diagnose,
    epoch_curves,
    remedies,
    slow_epochs,
)
from analysis.records import RunRecord
from contract import metrics as M

# Config keys that say where things are, not how the model learns: never "swept".
NOT_HYPERPARAMETERS = {"output_dir", "data_dir", "perceptual_weights_path", "num_workers"}


@dataclass
class Judged:
    run: RunRecord
    curves: Curves
    row: dict[str, Any]


def _clean(x: Any) -> Any:
    """JSON-safe numbers: NaN/inf become None."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


def _best(curves: Curves) -> float | None:
    finite = [v for v in curves.val if math.isfinite(v)]
    return min(finite) if finite else None


def judge(runs: list[RunRecord], th: Thresholds) -> list[Judged]:
    """Verdicts for all runs, best first (runs without a validation loss last)."""
    curves = [epoch_curves(r.train, r.val) for r in runs]
    bests = [b for b in map(_best, curves) if b is not None]
    context = SweepContext(
        best=min(bests) if bests else None,
        median=statistics.median(bests) if bests else None,
        runs=len(bests),
    )
    out = []
    for run, c in zip(runs, curves, strict=True):
        flagged = (
            run.summary.get(M.SUMMARY_DIVERGED) is True
            or run.summary.get(M.SUMMARY_STATUS) == M.STATUS_DIVERGED
        )
        stopped = run.summary.get(M.SUMMARY_STATUS) == M.STATUS_STOPPED
        v = diagnose(c, run.state, th, context, flagged, run.exit_code, stopped_early=stopped)
        final_train = next((t for t in reversed(c.train) if math.isfinite(t)), None)
        row = {
            "run_id": run.run_id,
            "name": run.name,
            "sweep_id": run.sweep_id,
            "state": run.state,
            "exit_code": run.exit_code,
            "engine_state": run.engine_state,
            "engine_reason": run.engine_reason,
            "verdict": v.verdict,
            "reasons": v.reasons + run.notes,
            "remedies": remedies(v.verdict, run.config, v.numbers),
            "config": run.config,
            "best_val_recon_loss": _best(c),
            "final_val_recon_loss": c.val[-1] if c.val else None,
            "final_train_recon_loss": final_train,
            "epochs": len(c.epochs),
            "slow_epochs": slow_epochs(c.epochs, c.times, th),
            "numbers": v.numbers,
            "sources": run.sources,
        }
        out.append(Judged(run, c, _clean(row)))
    out.sort(
        key=lambda j: (j.row["best_val_recon_loss"] is None, j.row["best_val_recon_loss"] or 0.0)
    )
    for rank, j in enumerate(out, 1):
        j.row["rank"] = rank
    return out


def swept_params(rows: list[dict[str, Any]]) -> list[str]:
    """Config keys whose value differs between runs: what the sweep searched over."""
    values: dict[str, set[str]] = {}
    for row in rows:
        for key, value in row["config"].items():
            if not key.startswith("_") and key not in NOT_HYPERPARAMETERS:
                values.setdefault(key, set()).add(json.dumps(value, sort_keys=True))
    return sorted(k for k, v in values.items() if len(v) > 1)
