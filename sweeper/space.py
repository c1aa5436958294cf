"""A W&B sweep file, read for the local engine: search space, sampler, pruner, budget.

The same YAML that ``wandb sweep`` takes drives Optuna. Each mapping is faithful or refused:
what has no Optuna equivalent (``normal``, ``beta``, weighted categories, ...) is reported as a
problem, never approximated, so a local sweep searches the space its file says.

List- or dict-valued choices (``channels: [[16, 32], [32, 64]]``) become JSON strings inside
Optuna: tuples break after a storage round trip and importance evaluators reject lists, while
strings survive both. ``Space.values`` turns a trial's parameters back into the sweep's values.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial

from contract import metrics

METHODS = ("grid", "random", "bayes")
# W&B distributions the local engine maps one-to-one onto Optuna's.
SUPPORTED = ("constant", "categorical", "uniform", "int_uniform", "log_uniform_values", "q_uniform")
HYPERBAND_DEFAULT_ETA = 3
# Bands beyond this many epochs are never reached (W&B's list stops after 100 bands).
HYPERBAND_MAX_EPOCH = 10**9
OPTUNA_SCALARS = (type(None), bool, int, float, str)
# Discrete spaces up to this many points are enumerated to find an untaken configuration.
MAX_POINTS = 100_000
# bayes: a Gaussian process up to this budget (run_cap), TPE beyond; its first trials random.
GP_MAX_TRIALS = 200
GP_STARTUP_TRIALS = 5
# A continuous proposal equal to a taken one is drawn again this many times at most.
RESAMPLES = 3


def distribution_of(spec: dict[str, Any]) -> str:
    """The W&B distribution a parameter block means, inferred the way W&B infers it."""
    if "distribution" in spec:
        return str(spec["distribution"])
    if "value" in spec:
        return "constant"
    if "values" in spec:
        return "categorical_w_probabilities" if "probabilities" in spec else "categorical"
    if "min" in spec and "max" in spec:
        ints = all(
            isinstance(spec[k], int) and not isinstance(spec[k], bool) for k in ("min", "max")
        )
        return "int_uniform" if ints else "uniform"
    return "unknown"


def encode_choice(value: Any) -> Any:
    return json.dumps(value)


@dataclass
class Space:
    """Fixed values, Optuna distributions and the parameters whose choices are JSON strings."""

    fixed: dict[str, Any] = field(default_factory=dict)
    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    json_params: set[str] = field(default_factory=set)

    def values(self, params: dict[str, Any]) -> dict[str, Any]:
        """A trial's Optuna parameters -> the sweep's values for every key (fixed ones too)."""
        out = dict(self.fixed)
        for key, value in params.items():
            out[key] = json.loads(value) if key in self.json_params else value
        return out

    @functools.cached_property
    def points(self) -> list[dict[str, Any]] | None:
        """Every point of a discrete space of at most ``MAX_POINTS``; None otherwise."""
        size = 1
        for dist in self.distributions.values():
            if isinstance(dist, CategoricalDistribution):
                size *= len(dist.choices)
            elif isinstance(dist, IntDistribution) or dist.step is not None:
                size *= round((dist.high - dist.low) / (dist.step or 1)) + 1
            else:
                return None
        return self.grid() if size <= MAX_POINTS else None

    def grid(self) -> list[dict[str, Any]]:
        """Every grid point as Optuna parameters, in the file's order (W&B's order too)."""
        axes = []
        for dist in self.distributions.values():
            if isinstance(dist, CategoricalDistribution):
                axes.append(list(dist.choices))
            else:
                step = dist.step or 1
                count = round((dist.high - dist.low) / step) + 1
                axes.append([type(dist.low)(dist.low + i * step) for i in range(count)])
        names = list(self.distributions)
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes)]


def build_space(params: dict[str, Any], source: str) -> tuple[Space, list[str]]:
    """Map ``parameters`` onto Optuna; returns the space and one problem line per refusal."""
    space, problems = Space(), []
    for key, spec in params.items():
        where = f"{source}: parameters.{key}"
        if not isinstance(spec, dict):
            problems.append(
                f"{where}: must be a mapping such as {{value: ...}} or {{values: [...]}}"
            )
            continue
        if "parameters" in spec:
            problems.append(
                f"{where}: nested parameters blocks are not supported by the local engine "
                "(the trainer's config is flat: sweep each key at the top level)"
            )
            continue
        kind = distribution_of(spec)
        if kind == "constant":
            space.fixed[key] = spec["value"]
        elif kind == "categorical":
            choices = list(spec["values"])
            if any(not isinstance(c, OPTUNA_SCALARS) for c in choices):
                space.json_params.add(key)
                choices = [encode_choice(c) for c in choices]
            space.distributions[key] = CategoricalDistribution(choices)
        elif kind in ("uniform", "int_uniform", "log_uniform_values", "q_uniform"):
            problem = _range_problem(spec, kind)
            if problem:
                problems.append(f"{where}: {problem}")
                continue
            low, high = spec["min"], spec["max"]
            if kind == "int_uniform":
                space.distributions[key] = IntDistribution(int(low), int(high))
            elif kind == "log_uniform_values":
                space.distributions[key] = FloatDistribution(float(low), float(high), log=True)
            elif kind == "q_uniform":
                space.distributions[key] = FloatDistribution(
                    float(low), float(high), step=float(spec.get("q", 1.0))
                )
            else:
                space.distributions[key] = FloatDistribution(float(low), float(high))
        else:
            problems.append(
                f"{where}: distribution {kind} has no faithful Optuna equivalent; the local engine "
                f"supports {', '.join(SUPPORTED)} (the file still works with wandb sweep)"
            )
    return space, problems


def _range_problem(spec: dict[str, Any], kind: str) -> str | None:
    low, high = spec.get("min"), spec.get("max")
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
    if not numbers:
        return f"{kind} needs numeric min and max, got min={low!r}, max={high!r}"
    if not low <= high:
        return f"min <= max must hold, but got (min={low}, max={high})"
    if kind == "log_uniform_values" and low <= 0:
        return f"log_uniform_values needs min > 0, got min={low}"
    if kind == "q_uniform":
        q = spec.get("q", 1.0)
        # W&B rounds to multiples of q; Optuna steps from min: the same set only when both
        # bounds are multiples of q.
        if not all(math.isclose(v / q, round(v / q), abs_tol=1e-9) for v in (low, high)):
            return (
                f"q_uniform needs min and max that are multiples of q={q} (Optuna steps from min)"
            )
    return None


def sampler_for(
    cfg: dict[str, Any],
    space: Space,
    seed: int | None = None,
    counts: Callable[[FrozenTrial], bool] = lambda _t: True,
) -> optuna.samplers.BaseSampler:
    """The sampler of a sweep's ``method``, never proposing a configuration already taken.

    grid points are enqueued at creation (they pass through unchanged), random is
    ``RandomSampler`` and bayes is :func:`bayes_sampler`.
    """
    if cfg.get("method") == "bayes":
        return Distinct(bayes_sampler(cfg, space, seed), space, seed, nearest=True, counts=counts)
    return Distinct(
        optuna.samplers.RandomSampler(seed=seed), space, seed, nearest=False, counts=counts
    )


def bayes_sampler(
    cfg: dict[str, Any], space: Space, seed: int | None
) -> optuna.samplers.BaseSampler:
    """A Gaussian process for the budgets sweeps usually have, TPE beyond ``GP_MAX_TRIALS``.

    Chosen by ``bench/search_quality.py`` (figures in the README). The process models the
    metric as noise-free, as W&B's own bayes engine does (a 1e-7 nugget): a seeded trainer
    gives the same loss for the same configuration, and a noise term only blurs what the few
    runs of a sweep tell apart. Its cost grows with the cube of the trials, hence TPE for large
    budgets.
    """
    if int(cfg.get("run_cap") or 0) <= GP_MAX_TRIALS:
        # The process runs on torch, which its first proposal would import while holding the
        # claim lock that every other agent waits on: import it now.
        import torch  # noqa: F401

        with warnings.catch_warnings():
            # deterministic_objective is marked experimental; we rely on it on purpose.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.GPSampler(
                n_startup_trials=GP_STARTUP_TRIALS, deterministic_objective=True, seed=seed
            )
    return optuna.samplers.TPESampler(seed=seed)


def params_key(params: dict[str, Any]) -> tuple:
    return tuple(sorted(params.items()))


def config_of(t: FrozenTrial) -> dict[str, Any]:
    """The configuration a trial runs: its parameters, and for a queued trial (a grid point or
    a retry) the ones it was enqueued with, fixed from the start, before it writes them."""
    return {**(t.system_attrs.get("fixed_params") or {}), **t.params}


class Distinct(optuna.samplers.BaseSampler):
    """Wraps a sampler so that no trial runs a configuration another trial has taken.

    Taken = the parameters of every trial ``counts`` keeps (finished, pruned, failed, running,
    and waiting ones, whose parameters are still only fixed). The wrapped sampler proposes the
    whole configuration at once; when it is taken, the trial gets an untaken point of a discrete
    space instead: the nearest one (fewest differing values, then the smallest steps) for a
    model-based sampler, which wanted that region, or a uniform draw for ``random``, which is
    then sampling without replacement. Only once every point is taken (a budget larger than the
    space) may a configuration repeat. Continuous values almost never collide; there the
    proposal is drawn again a few times.

    The check sees every trial created before this one, so it holds when trials are asked one at
    a time: the local engine serialises claims on SQLite, and on servers a later duplicate is
    voided after the fact (``sweeper.store.claim``). Running trials also inform the wrapped
    sampler itself (TPE's constant liar, the Gaussian process's batch acquisition).
    """

    def __init__(
        self,
        base: optuna.samplers.BaseSampler,
        space: Space,
        seed: int | None,
        nearest: bool,
        counts: Callable[[FrozenTrial], bool] = lambda _t: True,
    ):
        self.base, self.space, self.nearest, self.counts = base, space, nearest, counts
        self._rng = random.Random(seed)
        self._points = space.points

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
        self._rng = random.Random()

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self.base.after_trial(study, trial, state, values)

    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        return dict(self.space.distributions)

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        if trial.system_attrs.get("fixed_params") is not None:
            return {}  # an enqueued grid point or retry runs exactly as it was given
        taken = self.taken(study, trial)
        proposal = self._propose(study, trial)
        if params_key(proposal) not in taken:
            return proposal
        if self._points is None:  # continuous, or too many points to list: draw again
            for _ in range(RESAMPLES):
                proposal = self._propose(study, trial)
                if params_key(proposal) not in taken:
                    break
            return proposal
        free = [p for p in self._points if params_key(p) not in taken]
        if not free:
            return proposal
        if not self.nearest:
            return self._rng.choice(free)
        distances = [self._distance(proposal, p) for p in free]
        closest = min(distances)
        return self._rng.choice([p for p, d in zip(free, distances, strict=True) if d == closest])

    def sample_independent(self, study, trial, param_name, param_distribution) -> Any:
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def taken(self, study: optuna.Study, trial: FrozenTrial) -> set[tuple]:
        out = set()
        for t in study.get_trials(deepcopy=False):
            if t.number == trial.number or not self.counts(t):
                continue
            params = config_of(t)
            if params:  # a trial being asked right now has none yet
                out.add(params_key(params))
        return out

    def _propose(self, study, trial) -> dict[str, Any]:
        inner = self.base.infer_relative_search_space(study, trial)
        params = dict(self.base.sample_relative(study, trial, inner)) if inner else {}
        for name, dist in self.space.distributions.items():
            if name not in params:
                params[name] = self.base.sample_independent(study, trial, name, dist)
        return params

    def _distance(self, a: dict[str, Any], b: dict[str, Any]) -> tuple[int, float]:
        differ, steps = 0, 0.0
        for name, dist in self.space.distributions.items():
            if a[name] == b[name]:
                continue
            differ += 1
            if not isinstance(dist, CategoricalDistribution):
                span = (dist.high - dist.low) or 1
                steps += abs(a[name] - b[name]) / span
        return differ, steps


def pruner_for(
    cfg: dict[str, Any], counts: Callable[[FrozenTrial], bool] = lambda _t: True
) -> optuna.pruners.BasePruner:
    """``early_terminate: hyperband`` as W&B's engine applies it; no pruning otherwise."""
    et = cfg.get("early_terminate") or {}
    if et.get("type") != "hyperband":
        return optuna.pruners.NopPruner()
    return WandbHyperband(
        hyperband_bands(et),
        float(et.get("eta", HYPERBAND_DEFAULT_ETA)),
        bool(et.get("strict", True)),  # W&B's schema default
        counts,
    )


def hyperband_bands(et: dict[str, Any]) -> list[int]:
    """The epochs at which runs are judged, computed as ``sweeps.hyperband_stop_runs`` does:
    ``min_iter * eta**k``, or ``max_iter / eta**k`` for k = 1..s (stopping below 1)."""
    eta = et.get("eta", HYPERBAND_DEFAULT_ETA)
    if "min_iter" in et:
        # W&B lists 100 bands; every epoch a run can reach is below the first few.
        bands, band = [], et["min_iter"]
        for _ in range(100):
            bands.append(int(band))
            band *= eta
            if band > HYPERBAND_MAX_EPOCH:
                break
        return bands
    band, bands = et["max_iter"], []
    for _ in range(int(et.get("s", 0))):
        band /= eta
        if band < 1:
            break
        bands.append(int(band))
    return sorted(bands)


class WandbHyperband(optuna.pruners.BasePruner):
    """W&B's Hyperband stopping rule (``sweeps.hyperband_stop_runs``), one trial at a time.

    A trial's history is its reported values in epoch order (non-finite ones dropped, as W&B
    drops them). At each band ``b``, the threshold is the value at index ``int(n / eta)`` of the
    sorted ``history[b - 1]`` of the ``n`` trials of the sweep that reached ``b`` (this one
    included, whatever their state, except those ``counts`` leaves out). A running trial is judged at the last band it reached: it
    stops when its value there (``strict``) or its best value so far (not strict) is worse than
    that threshold. Because thresholds move as other trials report, a trial is judged again at
    every epoch it reports, as W&B's controller judges running runs at every check.
    """

    def __init__(
        self, bands: list[int], eta: float, strict: bool, counts: Callable[[FrozenTrial], bool]
    ):
        self.bands, self.eta, self.strict, self.counts = bands, eta, strict, counts

    @staticmethod
    def history(trial: FrozenTrial, sign: float) -> list[float]:
        values = (trial.intermediate_values[k] for k in sorted(trial.intermediate_values))
        return [sign * v for v in values if math.isfinite(v)]

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
        mine = self.history(trial, sign)
        reached = [b for b in self.bands if b <= len(mine)]
        if not reached:
            return False
        band = reached[-1]
        others = [
            self.history(t, sign)
            for t in study.get_trials(deepcopy=False)
            if t._trial_id != trial._trial_id and self.counts(t)
        ]
        at_band = sorted([h[band - 1] for h in others if len(h) >= band] + [mine[band - 1]])
        threshold = at_band[int(1.0 / self.eta * len(at_band))]  # W&B's own arithmetic
        value = mine[band - 1] if self.strict else min(mine)
        return value > threshold


def local_problems(cfg: dict[str, Any], source: str) -> list[str]:
    """What keeps a valid W&B sweep file from running faithfully on the local engine."""
    problems = []
    method = cfg.get("method")
    if method not in METHODS:
        problems.append(f"{source}: method: {method!r} is not one of {', '.join(METHODS)}")
    metric = (cfg.get("metric") or {}).get("name")
    if not metric:
        problems.append(f"{source}: metric: the local engine needs a metric to record each trial")
    elif metric not in metrics.LOCAL_SWEEP_METRICS:
        problems.append(
            f"{source}: metric.name: the local engine reads each epoch's "
            f"{', '.join(metrics.LOCAL_SWEEP_METRICS)} from progress.jsonl, not {metric!r}"
        )
    problems += _unhonoured(cfg, source)
    if method in ("random", "bayes") and not cfg.get("run_cap"):
        problems.append(
            f"{source}: run_cap: the local engine needs a budget for {method} search (e.g. run_cap: 20)"
        )
    space, space_problems = build_space(cfg.get("parameters") or {}, source)
    problems += space_problems
    et = cfg.get("early_terminate")
    if et and et.get("type") != "hyperband":
        problems.append(f"{source}: early_terminate.type: only hyperband is supported")
    elif et and "min_iter" not in et and "max_iter" not in et:
        problems.append(f"{source}: early_terminate: hyperband needs min_iter or max_iter")
    if method == "grid" and not space_problems:
        cap = cfg.get("run_cap")
        if not cap and len(space.grid()) > 100_000:
            problems.append(f"{source}: parameters: grid has over 100000 points; set run_cap")
    return problems


# Sweep options W&B's server acts on that the local engine does not: refused, never ignored.
UNHONOURED = {
    ("metric", "target"): "ending the sweep when a run reaches a target",
    ("metric", "impute"): "imputed values for failed runs",
    ("metric", "impute_while_running"): "imputed values for running runs",
    ("metrics", None): "multi-objective search",
    ("scheduler", None): "W&B Launch schedulers",
    ("job", None): "W&B Launch jobs",
    ("image_uri", None): "W&B Launch images",
}
# Values that mean what the local engine does anyway (W&B's defaults).
HONOURED_VALUES = {("metric", "impute"): "worst", ("metric", "impute_while_running"): "false"}


def _unhonoured(cfg: dict[str, Any], source: str) -> list[str]:
    problems = []
    for (key, sub), what in UNHONOURED.items():
        block = cfg.get(key)
        if sub is None:
            present, where, value = key in cfg, key, block
        else:
            present = isinstance(block, dict) and sub in block
            where, value = f"{key}.{sub}", block.get(sub) if present else None
        if present and HONOURED_VALUES.get((key, sub), object()) != value:
            problems.append(
                f"{source}: {where}: the local engine does not do {what} "
                "(remove it, or run the file on W&B)"
            )
    return problems
