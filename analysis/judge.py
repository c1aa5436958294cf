"""Apply the diagnosis to every run of a sweep: one result row per run, ranked."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from typing import Any

from analysis.diagnose import (
    BY_SWEEP,
    BY_USER,
    Curves,
    References,
    Stop,
    SweepContext,
    Thresholds,
    diagnose,
    epoch_curves,
    remedies,
    slow_epochs,
)
from analysis.records import FINISHED, RunRecord, data_group, data_words
from contract import metrics as M

# Config keys that say where things are, not how the model learns: never "swept".
NOT_HYPERPARAMETERS = {"output_dir", "data_dir", "perceptual_weights_path", "num_workers"}
# The local engine's state of a trial its pruner stopped.
ENGINE_PRUNED = "PRUNED"
# Verdicts of a run that ran its course and can be trusted as "the best run". Crashed, diverged,
# pruned or too short runs never are, whatever their loss.
HEALTHY = ("good", "overfitting", "underfitting")


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


def contexts(runs: list[RunRecord], curves: list[Curves]) -> dict[str, SweepContext]:
    """The sweep's best and median best val for each data setting (losses compare only there)."""
    bests: dict[str, list[float]] = {}
    for run, c in zip(runs, curves, strict=True):
        b = _best(c)
        if b is not None:
            bests.setdefault(data_group(run.config), []).append(b)
    return {
        k: SweepContext(best=min(v), median=statistics.median(v), runs=len(v))
        for k, v in bests.items()
    }


def _number(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def references(run: RunRecord) -> References:
    """The run's own references (summary keys the trainer writes once per run) and kl_weight."""
    return References(
        init_val=run.init_val_recon,
        trivial_val=run.trivial_val_recon,
        kl_weight=_number(run.config.get("kl_weight")),
    )


def stop_of(run: RunRecord, epochs: int) -> Stop | None:
    """Who stopped the run before its last epoch, as far as its record tells."""
    max_epochs = run.config.get("max_epochs")
    of = f" of {max_epochs}" if isinstance(max_epochs, int) else ""
    if run.engine_state == ENGINE_PRUNED:
        return Stop(
            BY_SWEEP,
            f"pruned by the local engine's early termination after {epochs}{of} epochs"
            " (trial state PRUNED)",
        )
    if run.summary.get(M.SUMMARY_STATUS) != M.STATUS_STOPPED:
        return None
    if isinstance(max_epochs, int) and epochs >= max_epochs:
        return None  # stopped after its last epoch: nothing was cut short
    said = f"stopped by SIGTERM after {epochs}{of} epochs ({M.SUMMARY_STATUS}={M.STATUS_STOPPED})"
    if run.engine_state is not None:
        return Stop(BY_USER, f"{said}; the local engine did not prune it: stopped by a user")
    if run.sweep_id:
        return Stop(
            BY_SWEEP,
            f"{said} in sweep {run.sweep_id}: the sweep's early termination"
            " (a user stopping it from the W&B UI reads the same)",
        )
    return Stop(BY_USER, f"{said}, in no sweep: stopped by a user")


def stopped_early(run: RunRecord) -> str | None:
    """Where the run stopped itself (``early_stop``), in words; None if it did not. It finished:
    its verdict is its curve's (overfitting, by the same test), never pruned or crashed."""
    if run.summary.get(M.SUMMARY_STATUS) != M.STATUS_EARLY_STOPPED:
        return None
    epoch = run.summary.get(M.SUMMARY_EARLY_STOP_EPOCH)
    best = run.summary.get(M.SUMMARY_BEST_EPOCH)
    why = run.summary.get(M.SUMMARY_EARLY_STOP_WHY)
    return (
        f"overfitting: stopped early at epoch {epoch} (best epoch {best}; best.pt kept) by"
        f" early_stop, the trainer's own overfitting test" + (f": {why}" if why else "")
    )


def judge(runs: list[RunRecord], th: Thresholds) -> list[Judged]:
    """Verdicts for all runs, best first (runs without a validation loss last)."""
    curves = [epoch_curves(r.train, r.val) for r in runs]
    by_data = contexts(runs, curves)
    out = []
    for run, c in zip(runs, curves, strict=True):
        flagged = (
            run.summary.get(M.SUMMARY_DIVERGED) is True
            or run.summary.get(M.SUMMARY_STATUS) == M.STATUS_DIVERGED
        )
        context = by_data.get(data_group(run.config), SweepContext())
        stop = stop_of(run, len(c.epochs))
        v = diagnose(c, run.state, th, context, flagged, run.exit_code, stop, references(run))
        early = stopped_early(run)
        if early:
            v.numbers["stopped_early"] = True
            v.reasons.insert(0, early)
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


def is_candidate(row: dict[str, Any]) -> bool:
    """A run that may be called the best: finished, with a healthy verdict and a loss."""
    return (
        row["state"] == FINISHED
        and row["verdict"] in HEALTHY
        and row.get("engine_state") in (None, "COMPLETE")
        and row["best_val_recon_loss"] is not None
    )


def best_run(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The lowest best validation loss among the candidates (rows come best first)."""
    return next((r for r in rows if is_candidate(r)), None)


def on_best_data(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The runs on the data of the sweep's best run (losses compare only there), and a line
    saying which runs on other data were left out."""
    ranked = sorted(
        rows, key=lambda r: (r["best_val_recon_loss"] is None, r["best_val_recon_loss"] or 0.0)
    )
    anchor = best_run(ranked) or (ranked[0] if ranked else None)
    if anchor is None:
        return rows, []
    group = data_group(anchor["config"])
    kept = [r for r in rows if data_group(r["config"]) == group]
    others = {data_group(r["config"]) for r in rows} - {group}
    if not others:
        return kept, []
    return kept, [
        f"built from the {len(kept)} runs on the best run's data ({data_words(anchor['config'])});"
        f" {len(rows) - len(kept)} runs on {len(others)} other data left out: losses compare"
        " only on the same data"
    ]
