"""A next sweep from what this one taught: ranges narrowed around the best runs, shifted by the
guide's remedies when many runs over- or underfit. A plain W&B sweep config (``wandb sweep``).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from analysis.diagnose import CAUSE_CAPACITY, CAUSE_KL, CAUSE_SLOW
from contract import metrics as M
from contract.config import DEFAULTS, FIELDS

# Numbers become explicit value lists when the sweep tried at most this many distinct values
# (and some of them repeat).
MAX_CATEGORIES = 6
# A remedy is applied when at least this share of the finished runs shows the problem.
REMEDY_SHARE = 0.3
NOT_CARRIED = {"output_dir"}
# Positive values spread over this factor or more (lr, kl_weight) are searched on a log scale.
LOG_SPAN = 4


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _round(x: float) -> float:
    """Three significant digits: a range bound, not a measurement."""
    return float(f"{x:.3g}")


def _range(key: str, top: list[Any], everything: list[Any]) -> dict[str, Any]:
    distinct = {json.dumps(v, sort_keys=True): v for v in everything}
    # A few values that repeat came from a list; values that never repeat were sampled.
    from_list = len(distinct) <= MAX_CATEGORIES and len(distinct) < len(everything)
    if from_list or not all(_is_number(v) for v in everything):
        kept = {json.dumps(v, sort_keys=True): v for v in top}
        # Keep a choice to make: add the next value the ranking liked.
        for k, v in distinct.items():
            if len(kept) >= 2:
                break
            kept.setdefault(k, v)
        return {"values": list(kept.values())}
    lo, hi = min(top), max(top)
    if all(isinstance(v, int) for v in everything):
        return {"distribution": "int_uniform", "min": int(lo), "max": int(max(hi, lo + 1))}
    span = max(everything) / min(everything) if min(everything) > 0 else 0
    if span >= LOG_SPAN:
        return {
            "distribution": "log_uniform_values",
            "min": _round(lo / 1.5),
            "max": _round(hi * 1.5),
        }
    pad = 0.1 * ((hi - lo) or abs(hi) or 1.0)
    low = lo - pad if lo - pad >= 0 or min(everything) < 0 else 0.0  # weights stay >= 0
    return {"distribution": "uniform", "min": _round(low), "max": _round(hi + pad)}


def next_sweep(
    rows: list[dict[str, Any]], params: list[str], name: str
) -> tuple[dict[str, Any], list[str]]:
    """The sweep config and the list of what changed and why (sentences)."""
    # A pruned run ended on its own terms (state finished) but never ran its course.
    finished = [
        r
        for r in rows
        if r["state"] == "finished"
        and r["verdict"] != "pruned"
        and r["best_val_recon_loss"] is not None
    ]
    ranked = sorted(finished, key=lambda r: r["best_val_recon_loss"])
    if ranked:
        pool, top = finished, ranked[: max(3, len(ranked) // 4)]
        notes = [f"ranges narrowed around the best {len(top)} of {len(finished)} finished runs"]
    else:  # nothing to learn from yet: keep what the sweep explored
        pool = top = rows
        notes = ["no finished run with a validation loss yet: ranges kept as explored"]
    best = (ranked or rows)[0]["config"] if rows else {}
    parameters: dict[str, Any] = {}
    for key in params:
        if key not in FIELDS:
            continue
        everything = [r["config"][key] for r in pool if key in r["config"]]
        picked = [r["config"][key] for r in top if key in r["config"]]
        if picked:
            parameters[key] = _range(key, picked, everything)
    for key, value in best.items():
        if (
            key in FIELDS
            and key not in parameters
            and key not in NOT_CARRIED
            and value != DEFAULTS[key]
        ):
            parameters[key] = {"value": value}

    counts = Counter(r["verdict"] for r in finished)
    share = {v: c / len(finished) for v, c in counts.items()} if finished else {}
    if share.get("overfitting", 0) >= REMEDY_SHARE:
        notes += _against_overfitting(parameters, best, counts["overfitting"], len(finished))
    if share.get("underfitting", 0) >= REMEDY_SHARE:
        under = [r for r in finished if r["verdict"] == "underfitting"]
        notes += _against_underfitting(parameters, best, under, len(finished))

    config = {
        "name": name,
        "description": "; ".join(notes),
        "method": "bayes",
        "metric": {"name": M.SWEEP_METRIC, "goal": M.SWEEP_GOAL},
        "run_cap": max(10, len(rows)),
        "parameters": parameters,
        "command": ["${env}", "${interpreter}", "-m", "trainer", "${args}"],
    }
    return config, notes


def _against_overfitting(
    parameters: dict[str, Any], best: dict[str, Any], n: int, total: int
) -> list[str]:
    notes = []
    kl = best.get("kl_weight", DEFAULTS["kl_weight"])
    low = kl * 10 if kl > 0 else 1e-6
    parameters["kl_weight"] = {
        "distribution": "log_uniform_values",
        "min": _round(low),
        "max": _round(low * 100),
    }
    notes.append(
        f"{n} of {total} runs overfit: kl_weight shifted up to [{low:g}, {low * 100:g}] (guide)"
    )
    if not best.get("augment", DEFAULTS["augment"]):
        parameters["augment"] = {"values": [True, False]}
        notes.append("augment added to the search (it was off in the best run)")
    return notes


def _against_underfitting(
    parameters: dict[str, Any], best: dict[str, Any], under: list[dict[str, Any]], total: int
) -> list[str]:
    """Each cause the underfitting runs share gets its own remedy: a dominant KL term lowers
    kl_weight (never raised here), slow training raises lr, the rest adds capacity."""
    causes = Counter((r.get("numbers") or {}).get("cause", CAUSE_CAPACITY) for r in under)
    n, notes = len(under), []
    if causes[CAUSE_KL] >= REMEDY_SHARE * n:
        kl = best.get("kl_weight", DEFAULTS["kl_weight"])
        high = kl / 10 if kl > 0 else 1e-6
        parameters["kl_weight"] = {
            "distribution": "log_uniform_values",
            "min": _round(high / 100),
            "max": _round(high),
        }
        notes.append(
            f"{causes[CAUSE_KL]} of {total} runs underfit with the KL term dominating: kl_weight "
            f"shifted down to [{high / 100:g}, {high:g}]"
        )
    if causes[CAUSE_SLOW] >= REMEDY_SHARE * n:
        lr = best.get("lr", DEFAULTS["lr"])
        parameters["lr"] = {
            "distribution": "log_uniform_values",
            "min": _round(lr * 2),
            "max": _round(lr * 20),
        }
        notes.append(
            f"{causes[CAUSE_SLOW]} of {total} runs underfit by training too slowly: lr shifted "
            f"up to [{lr * 2:g}, {lr * 20:g}]"
        )
    if causes[CAUSE_CAPACITY] >= REMEDY_SHARE * n:
        channels = list(best.get("channels", DEFAULTS["channels"]))
        wider = [2 * c for c in channels]
        choices = parameters.get("channels", {}).get("values") or [channels]
        parameters["channels"] = {"values": [*[c for c in choices if c != wider], wider]}
        notes.append(
            f"{causes[CAUSE_CAPACITY]} of {total} runs underfit: channels {wider} added "
            "(guide: more capacity)"
        )
        blocks = best.get("num_res_blocks", DEFAULTS["num_res_blocks"])
        if isinstance(blocks, int):
            parameters["num_res_blocks"] = {"values": sorted({blocks, blocks + 1})}
            notes.append(f"num_res_blocks {blocks + 1} added")
    return notes
