"""A warm start: the finished trials of an old sweep that fit a new sweep's space seed it.

Each old COMPLETE trial whose every value lies inside the new space (searched keys inside
their ranges or choices, fixed keys equal, keys neither sweep names left at the trainer's
default) becomes a COMPLETE trial of the new study with its value and its per-epoch values,
so ``bayes`` starts from what the old sweep learned and the duplicate check sees every
configuration already run. A seeded trial has no run of its own in the new sweep: its user
attribute ``seeded_from`` names the old sweep, trial and run.

Seeded trials count toward ``run_cap``, as W&B counts a sweep's prior runs (its scheduler
counts every valid run of the sweep, warm-start runs included).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from contract.config import DEFAULTS
from contract.errors import UserError
from sweeper import space as space_mod
from sweeper import store as st

SEEDED_FROM = "seeded_from"  # trial user attr: {"sweep", "trial", "run_id"} it was copied from
MISSING = object()


def same(a: Any, b: Any) -> bool:
    """Equal values, a bool never equal to a number (``True == 1`` in Python)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if _number(a) and _number(b):
        return a == b
    return type(a) is type(b) and a == b


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def fit(space: space_mod.Space, values: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The new space's Optuna parameters for a configuration, or None and the first key (with
    its value) that falls outside."""
    params: dict[str, Any] = {}
    for key, dist in space.distributions.items():
        value = values.get(key, DEFAULTS.get(key, MISSING))
        shown = "unset" if value is MISSING else json.dumps(value)
        if isinstance(dist, CategoricalDistribution):
            decoded = [json.loads(c) if key in space.json_params else c for c in dist.choices]
            match = [c for c, d in zip(dist.choices, decoded, strict=True) if same(d, value)]
            if not match:
                return None, f"{key}={shown}"
            params[key] = match[0]
            continue
        if not _number(value) or not math.isfinite(value):
            return None, f"{key}={shown}"
        if isinstance(dist, IntDistribution) and float(value) != int(value):
            return None, f"{key}={shown}"
        if not dist.low <= value <= dist.high:
            return None, f"{key}={shown}"
        step = getattr(dist, "step", None)
        if step and not math.isclose((value - dist.low) / step, round((value - dist.low) / step)):
            return None, f"{key}={shown}"
        params[key] = int(value) if isinstance(dist, IntDistribution) else float(value)
    for key, want in space.fixed.items():
        value = values.get(key, DEFAULTS.get(key, MISSING))
        if value is MISSING or not same(value, want):
            return None, f"{key}={'unset' if value is MISSING else json.dumps(value)}"
    for key, value in values.items():
        if key in space.distributions or key in space.fixed:
            continue
        default = DEFAULTS.get(key, MISSING)
        if default is MISSING or not same(value, default):
            return None, f"{key}={json.dumps(value)}"
    return params, ""


def plan(cfg: dict[str, Any], space: space_mod.Space, old: st.Sweep, new_id: str):
    """The trials of the old sweep that seed a new sweep of file ``cfg``, and the one line
    saying how many and why the others do not."""
    metric = cfg["metric"]["name"]
    goal = cfg["metric"].get("goal", "minimize")
    if old.metric != metric or old.goal != goal:
        raise UserError(
            f"--from {old.id}: it optimises {old.metric} ({old.goal}), the new sweep "
            f"{metric} ({goal}): its values cannot seed it"
        )
    if cfg.get("method") == "grid":
        raise UserError(
            f"--from {old.id}: a grid sweep runs every point; a warm start is for random and bayes"
        )
    budget = int(cfg["run_cap"])
    left: Counter[str] = Counter()
    outside: dict[str, list[str]] = {}
    seeded, taken = [], set()
    for t in sorted(old.study.get_trials(deepcopy=False), key=lambda x: x.number):
        if not st.holds_its_config(t):
            continue  # void, or lost: its retry holds its configuration
        if t.state != TrialState.COMPLETE or not t.values or not math.isfinite(t.values[0]):
            left[f"not finished ({t.state.name})"] += 1
            continue
        params, why = fit(space, old.space.values(t.params))
        if params is None:
            key, value = why.split("=", 1)
            outside.setdefault(key, []).append(value)
            continue
        key = space_mod.params_key(params)
        if key in taken:
            left["the same configuration as a trial already seeded"] += 1
            continue
        taken.add(key)
        seeded.append(_copy(t, params, space, old))
    if seeded and len(seeded) >= budget:
        raise UserError(
            f"--from {old.id}: {len(seeded)} trials would be seeded and they count toward "
            f"run_cap ({budget}), as W&B counts prior runs: set run_cap to "
            f"{len(seeded)} + the number of new trials wanted"
        )
    for key, values in outside.items():
        shown = ", ".join(sorted(set(values)))
        left[f"outside the new space ({key}: {shown})"] = len(values)
    why = "; ".join(f"{n} {reason}" for reason, n in sorted(left.items()))
    line = (
        f"seeded {len(seeded)} of sweep {old.id}'s trials into {new_id}"
        + (f"; not seeded: {why}" if why else "")
        + f"; {budget - len(seeded)} new trials left in run_cap {budget}"
    )
    return seeded, line


def _copy(t: FrozenTrial, params: dict[str, Any], space: space_mod.Space, old: st.Sweep):
    dists = {k: space.distributions[k] for k in params}
    return optuna.trial.create_trial(
        params=params,
        distributions=dists,
        value=t.values[0],
        intermediate_values=dict(t.intermediate_values),
        user_attrs={
            SEEDED_FROM: {
                "sweep": old.id,
                "trial": t.number,
                "run_id": t.user_attrs.get(st.RUN_ID),
            }
        },
    )


def describe(t: FrozenTrial) -> str | None:
    """``seeded from sweep X trial N (run R)``, for a seeded trial; None otherwise."""
    origin = t.user_attrs.get(SEEDED_FROM)
    if not origin:
        return None
    run = f" (run {origin['run_id']})" if origin.get("run_id") else ""
    return f"seeded from sweep {origin['sweep']} trial {origin['trial']}{run}"
