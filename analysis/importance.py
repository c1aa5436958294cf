"""Hyperparameter importance with Optuna's fANOVA, from the finished runs of a sweep."""

from __future__ import annotations

import json
import math
from typing import Any

from analysis.judge import on_best_data
from contract import metrics as M

MIN_RUNS = 3


def _distribution(values: list[Any]):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if all(isinstance(v, bool) for v in values):
        return CategoricalDistribution(sorted({json.dumps(v) for v in values})), json.dumps
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return IntDistribution(min(values), max(values)), int
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        low, high = float(min(values)), float(max(values))
        # Spans of more than a decade (lr, kl_weight) are read on a log scale.
        log = low > 0 and high / low > 10
        return FloatDistribution(low, high, log=log), float
    # Lists (channels) and anything else: categories, encoded as JSON strings (Optuna keeps
    # list choices only with a warning and breaks on tuples after a storage round trip).
    return CategoricalDistribution(sorted({json.dumps(v, sort_keys=True) for v in values})), (
        lambda v: json.dumps(v, sort_keys=True)
    )


def importance(
    rows: list[dict[str, Any]], params: list[str]
) -> tuple[dict[str, float] | None, str]:
    """fANOVA importances of ``params`` for the best val loss; or None and why not. Only the
    runs on the best run's data count: losses on other data do not compare."""
    rows, left_out = on_best_data(rows)
    done = [
        r
        for r in rows
        if r["state"] == "finished"
        and r["best_val_recon_loss"] is not None
        and all(p in r["config"] for p in params)
    ]
    varying = [
        p for p in params if len({json.dumps(r["config"][p], sort_keys=True) for r in done}) > 1
    ]
    if len(done) < MIN_RUNS or not varying:
        return None, (
            f"needs at least {MIN_RUNS} finished runs whose hyperparameters differ"
            f" ({len(done)} finished with a validation loss, {len(varying)} varying hyperparameters)"
        )
    if len({r["best_val_recon_loss"] for r in done}) == 1:
        return None, (
            f"every one of the {len(done)} finished runs reached the same best {M.VAL_RECON}"
            f" ({done[0]['best_val_recon_loss']:.6g}): no hyperparameter changed it, so fANOVA has"
            " no variance to share out (a swept value without effect, or every run collapsed to"
            " the same output)"
        )
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    try:  # Optuna's fANOVA fits scikit-learn's random forests
        import sklearn  # noqa: F401
    except ImportError:
        return None, "fANOVA needs scikit-learn (pip install scikit-learn)"

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    dists = {p: _distribution([r["config"][p] for r in done]) for p in varying}
    study = optuna.create_study(direction="minimize")
    study.add_trials(
        [
            optuna.trial.create_trial(
                params={p: enc(r["config"][p]) for p, (_, enc) in dists.items()},
                distributions={p: d for p, (d, _) in dists.items()},
                value=r["best_val_recon_loss"],
            )
            for r in done
        ]
    )
    try:
        result = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))
    except RuntimeError as exc:  # "Encountered zero total variance in all trees."
        if "variance" not in str(exc):
            raise
        return None, (
            f"fANOVA found no variance to share out over {len(done)} finished runs ({exc}):"
            f" their best {M.VAL_RECON} barely differs"
        )
    return {k: float(v) for k, v in result.items() if math.isfinite(v)}, (
        f"fANOVA (Optuna, seed 0) over {len(done)} finished runs, target: best {M.VAL_RECON}"
        + "".join(f"; {n}" for n in left_out)
    )
