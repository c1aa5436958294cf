"""A next sweep from what this one taught: ranges narrowed around the best runs, shifted by the
guide's remedies when many runs over- or underfit. A plain W&B sweep config (``wandb sweep``).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from typing import Any

from analysis.diagnose import CAUSE_CAPACITY, CAUSE_KL, CAUSE_SLOW
from analysis.judge import best_run, on_best_data
from analysis.records import DATA_KEYS
from contract import metrics as M
from contract.config import DEFAULTS, FIELDS

# Numbers become explicit value lists when the sweep tried at most this many distinct values
# (and some of them repeat).
MAX_CATEGORIES = 6
# A remedy is applied when at least this share of the finished runs shows the problem.
REMEDY_SHARE = 0.3
NOT_CARRIED = {"output_dir"}
# What the data is (and the seed) is kept from the best run, never searched: losses on other
# data do not compare, and a lucky seed is no setting to tune.
NEVER_SEARCHED = {*DATA_KEYS, "seed", *NOT_CARRIED}
# Verdicts that judge a run's values bad: no value only such runs had is offered again.
BAD = ("overfitting", "underfitting", "diverged")
# The remedy of a run still improving (analysis.diagnose.remedies).
MORE_EPOCHS = re.compile(r"still improving: raise max_epochs from \d+ to (\d+)")
# Positive values spread over this factor or more (lr, kl_weight) are searched on a log scale.
LOG_SPAN = 4


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _round(x: float) -> float:
    """Three significant digits: a range bound, not a measurement."""
    return float(f"{x:.3g}")


def _range(top: list[Any], everything: list[Any], bad: list[Any]) -> dict[str, Any]:
    """Values or a range from the good runs ``top``; ``bad`` holds values only runs judged
    bad had, never offered: a list leaves them out, a range stops halfway to them."""
    distinct = {json.dumps(v, sort_keys=True): v for v in everything}
    # A few values that repeat came from a list; values that never repeat were sampled.
    from_list = len(distinct) <= MAX_CATEGORIES and len(distinct) < len(everything)
    if from_list or not all(_is_number(v) for v in everything):
        kept = list({json.dumps(v, sort_keys=True): v for v in top}.values())
        return {"values": kept} if len(kept) > 1 else {"value": kept[0]}
    lo, hi = min(top), max(top)
    below = max((v for v in bad if v < lo), default=None)
    above = min((v for v in bad if v > hi), default=None)
    if all(isinstance(v, int) for v in everything):
        low = lo if below is None else max(lo, below + 1)
        high = max(hi, lo + 1) if above is None else max(lo, min(max(hi, lo + 1), above - 1))
        if high == low:
            return {"value": int(lo)}
        return {"distribution": "int_uniform", "min": int(low), "max": int(high)}
    span = max(everything) / min(everything) if min(everything) > 0 else 0
    if span >= LOG_SPAN:
        low, high = lo / 1.5, hi * 1.5
        if below is not None:
            low = max(low, math.sqrt(below * lo))
        if above is not None:
            high = min(high, math.sqrt(above * hi))
        return {"distribution": "log_uniform_values", "min": _round(low), "max": _round(high)}
    pad = 0.1 * ((hi - lo) or abs(hi) or 1.0)
    low = lo - pad if lo - pad >= 0 or min(everything) < 0 else 0.0  # weights stay >= 0
    high = hi + pad
    if below is not None:
        low = max(low, (below + lo) / 2)
    if above is not None:
        high = min(high, (above + hi) / 2)
    if _round(low) == _round(high):
        return {"value": lo}
    return {"distribution": "uniform", "min": _round(low), "max": _round(high)}


def _epochs_remedy(best: dict[str, Any] | None) -> int | None:
    """The max_epochs the best run's own remedy asks for ("raise max_epochs from 8 to 16")."""
    for remedy in (best or {}).get("remedies", []):
        found = MORE_EPOCHS.search(remedy)
        if found:
            return int(found.group(1))
    return None


def _valid_architectures(parameters: dict[str, Any], notes: list[str]) -> None:
    """Channel choices every norm_num_groups choice divides, and image_size divisible by
    2**(levels-1) for each: combinations the trainer would refuse are never offered."""

    def choices(key: str) -> list[Any]:
        spec = parameters.get(key, {})
        return spec["values"] if "values" in spec else [spec.get("value", DEFAULTS[key])]

    groups, sizes = choices("norm_num_groups"), choices("image_size")
    if not all(isinstance(v, int) for v in groups + sizes):
        return
    channels = choices("channels")
    ok = [
        ch
        for ch in channels
        if isinstance(ch, list)
        and all(c % g == 0 for c in ch for g in groups)
        and all(s % 2 ** (len(ch) - 1) == 0 for s in sizes)
    ]
    if ok and len(ok) < len(channels):
        dropped = [ch for ch in channels if ch not in ok]
        parameters["channels"] = {"values": ok} if len(ok) > 1 else {"value": ok[0]}
        notes.append(
            f"channels {dropped} left out: not divisible by norm_num_groups {groups}"
            f" or image_size {sizes} not divisible by 2**(levels-1)"
        )


def next_sweep(
    rows: list[dict[str, Any]], params: list[str], name: str
) -> tuple[dict[str, Any], list[str]]:
    """The sweep config and the list of what changed and why (sentences).

    Only the runs on the best run's data count (a line says which were left out). The next
    sweep searches what this one searched, never a data key or ``seed``, with the values and
    ranges of its good runs only; every other key keeps the best run's value; the remedies
    (the best run's own more epochs, and the guide's against a share of over- or underfitting
    runs) move it from there.
    """
    rows, notes = on_best_data(rows)
    # A pruned run ended on its own terms (state finished) but never ran its course.
    finished = [
        r
        for r in rows
        if r["state"] == "finished"
        and r["verdict"] != "pruned"
        and r["best_val_recon_loss"] is not None
    ]
    ranked = sorted(finished, key=lambda r: r["best_val_recon_loss"])
    good = [r for r in ranked if r["verdict"] == "good"]
    best_row = best_run(ranked)
    if good:
        pool, top = finished, good[: max(3, len(good) // 4)]
        notes.append(
            f"ranges narrowed around the best {len(top)} of {len(good)} good runs"
            f" ({len(finished)} finished)"
        )
    elif best_row is not None:
        pool, top = finished, [best_row]
        notes.append(
            f"no run judged good among {len(finished)} finished: the best run's values kept,"
            " the remedies move them"
        )
    else:  # nothing to learn from yet: keep what the sweep explored
        pool = top = rows
        notes.append("no finished run with a validation loss yet: ranges kept as explored")
    best = (best_row or (ranked or rows)[0])["config"] if rows else {}
    bad_rows = [r for r in rows if r["verdict"] in BAD]
    parameters: dict[str, Any] = {}
    for key in params:
        if key not in FIELDS or key in NEVER_SEARCHED:
            continue
        everything = [r["config"][key] for r in pool if key in r["config"]]
        picked = [r["config"][key] for r in top if key in r["config"]]
        offered = {json.dumps(r["config"][key], sort_keys=True) for r in good if key in r["config"]}
        bad = [
            r["config"][key]
            for r in bad_rows
            if key in r["config"] and json.dumps(r["config"][key], sort_keys=True) not in offered
        ]
        if picked:
            parameters[key] = _range(picked, everything, bad)
    for key, value in best.items():
        if (
            key in FIELDS
            and key not in parameters
            and key not in NOT_CARRIED
            and value != DEFAULTS[key]
        ):
            parameters[key] = {"value": value}

    epochs = _epochs_remedy(best_row)
    if epochs is not None and "values" not in parameters.get("max_epochs", {}):
        parameters["max_epochs"] = {"value": epochs}
        notes.append(f"max_epochs raised to {epochs}: the best run was still improving")

    counts = Counter(r["verdict"] for r in finished)
    share = {v: c / len(finished) for v, c in counts.items()} if finished else {}
    if share.get("overfitting", 0) >= REMEDY_SHARE:
        notes += _against_overfitting(parameters, best, counts["overfitting"], len(finished))
    if share.get("underfitting", 0) >= REMEDY_SHARE:
        under = [r for r in finished if r["verdict"] == "underfitting"]
        notes += _against_underfitting(parameters, best, under, len(finished))
    _valid_architectures(parameters, notes)

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
