"""Check a sweep file before anything is launched: one line per problem, ``FILE: key: what``.

In order: YAML; W&B's own schema; the semantic check W&B's engine only does once the sweep
runs (``sweeps.next_run`` raising, e.g. bayes without a metric); numbers YAML reads as
strings (``1e-5``); the command; the metric; then, for sweeps of the trainer, every parameter
name and value against the trainer's typed config and every configuration the file can
produce built with ``contract.config.build``.

Configurations: categorical and grid values are enumerated, continuous and integer ranges
contribute both bounds. Up to ``MAX_COMBINATIONS`` the product is checked exhaustively;
beyond that every value of every parameter is checked once against the first value of the
others, plus ``MAX_COMBINATIONS`` combinations drawn with a fixed seed, so a large space is
still checked in well under a second and the same way every time.

What only the local engine cannot run (``normal``, weighted categories, nested blocks...)
is a separate class: ``sweeper.space.local_problems``. Such a file is valid for W&B, so
``validate`` reports it as a warning and ``create`` refuses it.
"""

from __future__ import annotations

import itertools
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import yaml

from contract import metrics
from contract.config import FIELDS, build, coerce, unknown_key
from contract.errors import ConfigError
from sweeper.space import distribution_of

MAX_COMBINATIONS = 10_000
MAX_COMBINATION_PROBLEMS = 5
# PyYAML 1.1 reads 1e-5 (no dot) as a string; any such string where a number belongs is a trap.
_STRING_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
# Scalars the trainer logs: what a sweep's metric.name may be.
TRAINER_METRICS = (
    metrics.TRAIN_RECON,
    metrics.TRAIN_KL,
    metrics.TRAIN_PERCEPTUAL,
    metrics.TRAIN_LOSS,
    metrics.VAL_RECON,
    metrics.VAL_KL,
    metrics.VAL_BEST_RECON,
    metrics.VAL_SSIM,
    metrics.VAL_PSNR,
    metrics.VAL_MS_SSIM,
    metrics.VAL_BEST_SSIM,
    metrics.TIME_PER_EPOCH,
)


def load_file(path: str | Path) -> tuple[dict[str, Any] | None, list[str]]:
    """The parsed sweep file, or None and the reason."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        return None, [
            f"{source}: file: cannot read it ({getattr(exc, 'strerror', None) or exc.__class__.__name__})"
        ]
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return None, [f"{source}: yaml: not valid YAML ({where}{what})"]
    if not isinstance(cfg, dict):
        return None, [
            f"{source}: yaml: expected a mapping (a sweep config), got {type(cfg).__name__}"
        ]
    return cfg, []


def validate_file(path: str | Path) -> list[str]:
    cfg, problems = load_file(path)
    if cfg is None:
        return problems
    return validate_sweep(cfg, str(path))


def validate_sweep(cfg: dict[str, Any], source: str) -> list[str]:
    problems = _string_numbers(cfg, source, "")
    problems += _schema(cfg, source)
    if problems:
        return problems
    params = cfg.get("parameters") or {}
    problems += _mixed_bounds(params, source)
    problems += _command(cfg, source)
    if is_trainer_command(cfg):
        problems += _metric(cfg, source)
        problems += _trainer_values(params, source)
    return problems


def is_trainer_command(cfg: dict[str, Any]) -> bool:
    command = [str(c) for c in cfg.get("command") or []]
    return any(a == "-m" and b == "trainer" for a, b in itertools.pairwise(command))


def _string_numbers(node: Any, source: str, where: str) -> list[str]:
    if isinstance(node, dict):
        return [
            p
            for k, v in node.items()
            for p in _string_numbers(v, source, f"{where}.{k}".lstrip("."))
        ]
    if isinstance(node, list):
        return [p for v in node for p in _string_numbers(v, source, where)]
    if isinstance(node, str) and _STRING_NUMBER.match(node):
        mantissa, _, exponent = node.lower().partition("e")
        fixed = mantissa if "." in mantissa else f"{mantissa}.0"
        return [
            f"{source}: {where}: {node!r} is read by YAML as a string, not a number: "
            f"write {fixed}e{exponent}"
        ]
    return []


def _schema(cfg: dict[str, Any], source: str) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydantic's deprecation noise from inside sweeps
        import sweeps

        violations = sweeps.schema_violations_from_proposed_config(cfg)
        if violations:
            return [f"{source}: schema: {' '.join(v.split())}" for v in violations]
        try:
            sweeps.next_run(cfg, [])
            if cfg.get("early_terminate"):
                sweeps.stop_runs(cfg, [])  # e.g. max_iter and s that leave no band
        except Exception as exc:  # sweeps raises several types for one kind of mistake
            return [f"{source}: sweep: {' '.join(str(exc).split())}"]
    return []


def _mixed_bounds(params: dict[str, Any], source: str) -> list[str]:
    """min: 0, max: 0.5 passes the schema but wandb.sweep() rejects it."""
    problems = []
    for key, spec in params.items():
        if not isinstance(spec, dict) or "min" not in spec or "max" not in spec:
            continue
        kinds = {type(spec["min"]), type(spec["max"])}
        if kinds == {int, float}:
            problems.append(
                f"{source}: parameters.{key}: min={spec['min']!r} and max={spec['max']!r} mix an "
                "integer and a float: write both as floats (e.g. 0.0) or both as integers"
            )
    return problems


def _command(cfg: dict[str, Any], source: str) -> list[str]:
    command = [str(c) for c in cfg.get("command") or ["${env}", "${interpreter}", "${program}"]]
    if is_trainer_command(cfg):
        return []
    if "${program}" in command:
        program = cfg.get("program")
        if not program:
            return [f"{source}: program: the command runs ${{program}} but no program is set"]
        here = Path(source).parent / str(program)
        if not (Path(str(program)).exists() or here.exists()):
            return [f"{source}: program: {program} does not exist"]
        return []
    first = next((c for c in command if not c.startswith("${")), None)
    if first is None or shutil.which(first) is None and not Path(first).exists():
        return [f"{source}: command: runs neither -m trainer nor a program that exists ({first!r})"]
    return []


def _metric(cfg: dict[str, Any], source: str) -> list[str]:
    name = (cfg.get("metric") or {}).get("name")
    if name is None or name in TRAINER_METRICS:
        return []
    return [
        f"{source}: metric.name: the trainer does not log {name!r}; "
        f"use one of {', '.join(TRAINER_METRICS)} ({metrics.SWEEP_METRIC} is the usual choice)"
    ]


def candidates(spec: dict[str, Any]) -> list[Any] | None:
    """Values worth building for one parameter; None where there is nothing to enumerate."""
    kind = distribution_of(spec)
    if kind == "constant":
        return [spec["value"]]
    if kind in ("categorical", "categorical_w_probabilities"):
        return list(spec["values"])
    if "min" in spec and "max" in spec:
        lo, hi = spec["min"], spec["max"]
        step = spec.get("q", 1) if kind in ("int_uniform", "q_uniform") else None
        if all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi, step)) and step > 0:
            # Integer ranges: every value can be drawn, and rules such as divisibility bite
            # between the bounds (image_size 33..63), so check them all, or an even sample.
            values = range(lo, hi + 1, step)
            if len(values) > MAX_RANGE_VALUES:
                stride = len(values) // MAX_RANGE_VALUES + 1
                values = [*values[::stride], hi]
            return sorted(set(values) | {lo, hi})
        return [lo, hi]
    return None


# Distributions that draw floats: wrong for integer and boolean config keys.
FLOAT_DISTRIBUTIONS = (
    "uniform",
    "log_uniform",
    "log_uniform_values",
    "inv_log_uniform",
    "inv_log_uniform_values",
    "normal",
    "log_normal",
    "beta",
)
MAX_RANGE_VALUES = 256


def _trainer_values(params: dict[str, Any], source: str) -> list[str]:
    problems, axes = [], {}
    for key, spec in params.items():
        where = f"{source}: parameters.{key}"
        if not isinstance(spec, dict) or "parameters" in spec:
            problems.append(f"{where}: the trainer's config is flat: no nested parameters blocks")
            continue
        if key not in FIELDS:
            problems.append(f"{where}: {unknown_key(key, None).rule}")
            continue
        kind = FIELDS[key].metadata["kind"]
        if distribution_of(spec) in FLOAT_DISTRIBUTIONS and kind != "float":
            problems.append(
                f"{where}: distribution {distribution_of(spec)} draws floats, but {key} is "
                f"{'an integer' if 'int' in kind else 'not a number'}: use int_uniform or values"
            )
            continue
        values = candidates(spec)
        for value in values or []:
            try:
                coerce(key, value)
            except ConfigError as exc:
                problems.append(f"{where}: value {value!r} {exc.rule}")
        if values is not None:
            axes[key] = values
    if problems:
        return problems
    return _combinations(axes, source)


def _combinations(axes: dict[str, list[Any]], source: str) -> list[str]:
    failures: dict[str, str] = {}
    for combo in _combos(axes):
        try:
            build(combo)
        except ConfigError as exc:
            if str(exc) not in failures:
                shown = ", ".join(f"{k}={v!r}" for k, v in combo.items() if len(axes[k]) > 1)
                failures[str(exc)] = (
                    f"{source}: {exc.key}: the combination ({shown or 'fixed values'}) cannot "
                    f"build: {exc}"
                )
    lines = list(failures.values())
    if len(lines) > MAX_COMBINATION_PROBLEMS:
        extra = len(lines) - MAX_COMBINATION_PROBLEMS
        lines = lines[:MAX_COMBINATION_PROBLEMS]
        lines[-1] += f" (and {extra} more kinds of failing combination)"
    return lines


def _combos(axes: dict[str, list[Any]]):
    names = list(axes)
    total = 1
    for values in axes.values():
        total *= len(values)
    if total <= MAX_COMBINATIONS:
        for combo in itertools.product(*axes.values()):
            yield dict(zip(names, combo, strict=True))
        return
    base = {k: v[0] for k, v in axes.items()}
    for key, values in axes.items():
        for value in values:
            yield {**base, key: value}
    rng = random.Random(0)
    for _ in range(MAX_COMBINATIONS):
        yield {k: rng.choice(v) for k, v in axes.items()}
