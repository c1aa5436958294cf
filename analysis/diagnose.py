"""Judge one run's learning curves by the metrics guide's rules. Pure functions: no I/O.

Prior art the rules follow:
- Prechelt (1998), "Early stopping -- but when?": the generalisation loss
  ``GL(t) = 100 * (E_val(t) / min_{t' <= t} E_val(t') - 1)``, in percent.
- Google's Deep Learning Tuning Playbook, "Examining the training curves": overfitting is a
  validation loss that starts rising; runs still improving at the end want more epochs; a run is
  scored by the best value it reached.
- "High" (underfitting) is relative: judged against the sweep's best and median runs.

Verdicts are checked in this order; the first that applies wins:
1. ``diverged``: the run says so (summary ``diverged``/``status``, exit status 3), a loss is
   NaN/inf, or a loss ends ``explode_factor`` times above its minimum.
2. ``crashed``: the run did not finish (no exit record and not written to any more, a non-zero
   exit, preempted and never resumed). A run still being written is ``insufficient``.
3. ``insufficient``: fewer than ``min_epochs`` validated epochs.
4. ``overfitting``: the per-epoch train loss still falls (by ``train_drop_min`` over the last
   ``window`` epochs) while validation rises or stagnates (GL >= ``gl_max`` percent, or validation
   fell by less than ``val_stall`` over the same epochs).
5. ``underfitting``: both losses fell by less than ``slow_drop`` over the last ``window`` epochs
   (slow or an early plateau) AND the best validation loss is high: ``high_vs_best`` times the
   sweep's best (or the ``baseline``), or ``high_vs_median`` times the sweep's median.
6. ``good``: otherwise (both decrease, or settled at a level close to the sweep's best).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from analysis.records import END_STEP, FINISHED, PREEMPTED, RUNNING
from contract import metrics as M
from contract.errors import EXIT_DIVERGED, ConfigError

VERDICTS = ("good", "overfitting", "underfitting", "diverged", "crashed", "insufficient")


def _t(default: float | None, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Thresholds:
    """Every number the verdicts use. Each is a ``--<name>`` option of ``analysis report``."""

    min_epochs: int = _t(3, "fewer validated epochs than this -> insufficient")
    window: int = _t(5, "epochs at the end of a run over which trends are measured")
    smooth: int = _t(3, "moving-average width (epochs) before trends are measured; noise guard")
    gl_max: float = _t(
        5.0, "Prechelt generalisation loss (percent above the best val) -> overfitting"
    )
    train_drop_min: float = _t(0.02, "train loss still falling by this fraction over the window")
    val_stall: float = _t(
        0.005, "val loss falling by less than this fraction over the window = stalled"
    )
    slow_drop: float = _t(
        0.05, "both losses falling by less than this over the window = slow/plateau"
    )
    high_vs_best: float = _t(1.5, "best val this many times the sweep's best = high")
    high_vs_median: float = _t(
        1.2, "best val this many times the sweep's median = high (>= 3 runs)"
    )
    baseline: float | None = _t(
        None, "a val loss you consider reachable; 'high' is judged against it too"
    )
    explode_factor: float = _t(10.0, "a loss ending this many times above its minimum -> diverged")
    slow_factor: float = _t(
        2.0, "time_per_epoch above this many times the run's median -> slowdown"
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name in ("min_epochs", "window", "smooth"):
                ok, rule = value >= 1, "must be >= 1"
            elif f.name in ("train_drop_min", "val_stall", "slow_drop", "gl_max"):
                ok, rule = True, "must be a finite number"  # a negative one turns a rule off
            else:
                ok, rule = value > 0, "must be > 0"
            if not (ok and math.isfinite(value)):
                raise ConfigError(f.name, value, rule)


THRESHOLD_FIELDS = {f.name: f for f in fields(Thresholds)}


@dataclass(frozen=True)
class Curves:
    """Per-epoch curves of one run, aligned on ``epochs``."""

    epochs: list[int]
    train: list[float]  # mean of the per-step train/recon_loss of each epoch (nan: no steps)
    val: list[float]
    times: list[float]
    nonfinite: list[str]  # where a NaN/inf was seen, in words


@dataclass(frozen=True)
class Verdict:
    verdict: str
    reasons: list[str]
    numbers: dict[str, float | int | None]


@dataclass(frozen=True)
class SweepContext:
    """What "high" is judged against: the sweep's other runs."""

    best: float | None = None
    median: float | None = None
    runs: int = 0


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def epoch_curves(
    train_rows: Sequence[Mapping[str, float | None]], val_rows: Sequence[Mapping[str, float | None]]
) -> Curves:
    """Per-epoch curves from per-step train rows and per-epoch val rows.

    A step belongs to the epoch whose row follows it (``end_step``, the last step logged before
    the epoch's row). Without that, steps are split evenly over the epochs.
    """
    rows = sorted((r for r in val_rows if _finite(r.get(M.EPOCH))), key=lambda r: r[M.EPOCH])
    epochs = [int(r[M.EPOCH]) for r in rows]
    val = [_value(r.get(M.VAL_RECON)) for r in rows]
    times = [_value(r.get(M.TIME_PER_EPOCH)) for r in rows]
    nonfinite: list[str] = []
    bad_val = [e for e, r in zip(epochs, rows, strict=True) if _is_nonfinite(r.get(M.VAL_RECON))]
    if bad_val:
        nonfinite.append(f"{M.VAL_RECON} is NaN/inf at epoch {min(bad_val)}")
    steps = [
        (r[M.TRAIN_STEP], r.get(M.TRAIN_RECON)) for r in train_rows if _finite(r.get(M.TRAIN_STEP))
    ]
    steps = [(s, v) for s, v in steps if v is not None]
    bad_steps = [s for s, v in steps if not math.isfinite(v)]
    if bad_steps:
        nonfinite.append(f"{M.TRAIN_RECON} is NaN/inf from step {int(min(bad_steps))}")
    ends = [r.get(END_STEP) for r in rows]
    if not all(_finite(e) for e in ends) and epochs and steps:
        per_epoch = max(s for s, _ in steps) / len(epochs)
        ends = [per_epoch * (i + 1) for i in range(len(epochs))]
    train = _per_epoch_means(steps, ends) if epochs else []
    return Curves(epochs, train, val, times, nonfinite)


def _value(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _is_nonfinite(x: float | None) -> bool:
    return x is not None and not math.isfinite(x)


def _per_epoch_means(steps: list[tuple[float, float]], ends: list[float | None]) -> list[float]:
    sums = [0.0] * len(ends)
    counts = [0] * len(ends)
    steps.sort()
    i = 0
    for step, value in steps:
        while i < len(ends) and step > ends[i]:
            i += 1
        if i == len(ends):
            break  # steps of an epoch that never finished
        sums[i] += value
        counts[i] += 1
    return [s / c if c else math.nan for s, c in zip(sums, counts, strict=True)]


def _smoothed(values: list[float], width: int) -> list[float]:
    """Trailing moving average over the finite values (nan where none)."""
    out = []
    for i in range(len(values)):
        window = [v for v in values[max(0, i - width + 1) : i + 1] if math.isfinite(v)]
        out.append(sum(window) / len(window) if window else math.nan)
    return out


def _drop(values: list[float], k: int) -> float:
    """Relative fall of ``values`` over its last ``k`` steps (negative when it rose)."""
    if len(values) <= k or not (math.isfinite(values[-1]) and math.isfinite(values[-1 - k])):
        return math.nan
    start = values[-1 - k]
    return (start - values[-1]) / abs(start) if start else math.nan


def generalisation_loss(val: list[float]) -> float:
    """Prechelt's GL at the last epoch, in percent."""
    finite = [v for v in val if math.isfinite(v)]
    if not finite or not math.isfinite(val[-1]) or min(finite) <= 0:
        return math.nan
    return 100.0 * (val[-1] / min(finite) - 1.0)


def diagnose(
    curves: Curves,
    state: str,
    th: Thresholds,
    context: SweepContext = SweepContext(),
    flagged_diverged: bool = False,
    exit_code: int | None = None,
    stopped_early: bool = False,
) -> Verdict:
    """The verdict for one run, with its reasons (sentences with the numbers) and numbers."""
    val_finite = [v for v in curves.val if math.isfinite(v)]
    n = len(val_finite)
    best = min(val_finite) if val_finite else None
    numbers: dict[str, Any] = {
        "epochs": len(curves.epochs),
        "best_val": best,
        "best_epoch": curves.epochs[curves.val.index(best)] if best is not None else None,
        "final_val": curves.val[-1] if curves.val else None,
        "final_train": curves.train[-1] if curves.train else None,
    }

    diverged = _divergence(curves, th, flagged_diverged or exit_code == EXIT_DIVERGED)
    if diverged:
        return Verdict("diverged", diverged, numbers)

    if state == RUNNING:
        return Verdict(
            "insufficient",
            [
                f"the run is still being written ({n} validated epochs so far): judge it when it ends"
            ],
            numbers,
        )
    if state != FINISHED:
        if state == PREEMPTED:
            why = f"the run was preempted after {n} epochs and never resumed"
        elif exit_code is None:
            why = f"the run stopped without an exit record after {n} epochs (killed?)"
        else:
            why = f"the run exited with status {exit_code} after {n} epochs"
        return Verdict("crashed", [why], numbers)
    early = [f"stopped early after {n} epochs (SIGTERM: the sweep's early termination, or a user)"]
    if n < th.min_epochs:
        why = f"only {n} validated epoch(s); at least {th.min_epochs} are needed to read a trend"
        return Verdict("insufficient", early * stopped_early + [why], numbers)

    width = max(1, min(th.smooth, n // 3))
    train = _smoothed(curves.train, width)
    val = _smoothed(curves.val, width)
    k = max(1, min(th.window, len(val) - 1))
    train_drop, val_drop = _drop(train, k), _drop(val, k)
    gl = generalisation_loss(val)
    numbers.update(window=k, train_drop=train_drop, val_drop=val_drop, gl=gl)
    trend = (
        f"over the last {k} epochs train fell {_pct(train_drop)} and val fell {_pct(val_drop)}"
        f" (smoothed over {width})"
    )

    if stopped_early:
        trend = f"{early[0]}; {trend}"
    train_falls = math.isfinite(train_drop) and train_drop >= th.train_drop_min
    val_rises = math.isfinite(gl) and gl >= th.gl_max
    val_stalls = math.isfinite(val_drop) and val_drop < th.val_stall
    if train_falls and (val_rises or val_stalls):
        why = [trend]
        if val_rises:
            why.append(
                f"val is {gl:.1f}% above its best ({best:.4g} at epoch {numbers['best_epoch']}):"
                f" generalisation loss GL >= {th.gl_max:g}%"
            )
        else:
            why.append(
                f"val stagnates (fell less than {_pct(th.val_stall)}) while train still falls"
            )
        return Verdict("overfitting", why, numbers)

    high, why_high = _is_high(best, context, th, numbers)
    both_slow = (
        (not math.isfinite(train_drop) or train_drop < th.slow_drop)
        and math.isfinite(val_drop)
        and val_drop < th.slow_drop
    )
    if both_slow and high:
        return Verdict(
            "underfitting",
            [trend + f": both below {_pct(th.slow_drop)}, slow or plateaued", why_high],
            numbers,
        )

    why = [trend, f"best val {best:.4g} at epoch {numbers['best_epoch']}, GL {gl:.1f}%"]
    if both_slow:
        why.append("the losses have settled" + (f"; {why_high}" if why_high else ""))
    elif math.isfinite(val_drop) and val_drop >= th.slow_drop:
        numbers["still_improving"] = True
        why.append("still improving at the end: more epochs would help")
    if curves.train and all(math.isnan(t) for t in curves.train):
        why.append(f"no {M.TRAIN_RECON} rows: judged on the validation curve only")
    return Verdict("good", why, numbers)


def _divergence(curves: Curves, th: Thresholds, flagged: bool) -> list[str]:
    reasons = list(curves.nonfinite)
    if flagged and not reasons:
        reasons.append("the run reports that it diverged (a loss became NaN or inf)")
    for name, values in (("val", curves.val), ("train", curves.train)):
        finite = [v for v in values if math.isfinite(v)]
        if len(finite) >= 2 and min(finite) > 0 and finite[-1] >= th.explode_factor * min(finite):
            reasons.append(
                f"{name} loss exploded: it ends at {finite[-1]:.4g},"
                f" {finite[-1] / min(finite):.1f}x its minimum {min(finite):.4g}"
                f" (explode_factor {th.explode_factor:g})"
            )
    return reasons


def _is_high(
    best: float | None, context: SweepContext, th: Thresholds, numbers: dict[str, Any]
) -> tuple[bool, str]:
    """Is the run's best val high against the sweep's best, a baseline, or the sweep's median?"""
    if best is None:
        return False, ""
    # (reference level, what it is, factor from which best is high, key in numbers or None)
    references = []
    if context.best and context.best > 0:
        references.append((context.best, "the sweep's best", th.high_vs_best, "vs_sweep_best"))
    if th.baseline:
        references.append((th.baseline, "the baseline", th.high_vs_best, None))
    if context.median and context.runs >= 3:
        references.append(
            (context.median, "the sweep's median", th.high_vs_median, "vs_sweep_median")
        )
    for level, _, _, key in references:
        if key:
            numbers[key] = best / level
    for level, what, limit, _ in references:
        if best >= limit * level:
            ratio = best / level
            return (
                True,
                f"best val {best:.4g} is {ratio:.2f}x {what} ({level:.4g}; high from {limit:g}x)",
            )
    if references:
        level, what = references[0][:2]
        return False, f"best val {best:.4g} is {best / level:.2f}x {what} ({level:.4g})"
    return False, ""


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%" if math.isfinite(x) else "n/a"


def slow_epochs(
    epochs: Sequence[int], times: Sequence[float], th: Thresholds
) -> list[dict[str, float]]:
    """Epochs whose ``time_per_epoch`` is ``slow_factor`` times the run's median or more."""
    finite = [t for t in times if math.isfinite(t)]
    if len(finite) < 3:
        return []
    median = statistics.median(finite)
    return [
        {"epoch": e, "time_per_epoch": t, "x_median": t / median}
        for e, t in zip(epochs, times, strict=True)
        if math.isfinite(t) and median > 0 and t >= th.slow_factor * median
    ]


def remedies(verdict: str, config: Mapping[str, Any], numbers: Mapping[str, Any]) -> list[str]:
    """The guide's remedy for a verdict, stated for this run's actual values."""
    out: list[str] = []
    if verdict == "overfitting":
        kl = config.get("kl_weight")
        if isinstance(kl, (int, float)):
            out.append(
                f"raise kl_weight from {kl:g} to {kl * 10:g} (more regularisation)"
                if kl > 0
                else "set kl_weight above 0 (it is 0): 1e-6 is MONAI's recipe"
            )
        if config.get("augment") is False:
            out.append("turn augment on (it is off)")
        elif config.get("augment") is True:
            out.append("augment is already on: raise kl_weight further, or add training data")
    elif verdict == "underfitting":
        ch = config.get("channels")
        if isinstance(ch, list) and ch:
            out.append(f"widen channels from {ch} to {[2 * c for c in ch]} (more capacity)")
        nrb = config.get("num_res_blocks")
        if isinstance(nrb, int):
            out.append(f"raise num_res_blocks from {nrb} to {nrb + 1}")
        elif isinstance(nrb, list):
            out.append(f"raise num_res_blocks from {nrb} to {[n + 1 for n in nrb]}")
    elif verdict == "diverged":
        lr = config.get("lr")
        if isinstance(lr, (int, float)):
            out.append(f"lower lr from {lr:g} to {lr / 10:g}")
    elif verdict == "insufficient":
        me = config.get("max_epochs")
        if isinstance(me, int) and numbers.get("epochs", 0) >= me:
            out.append(f"raise max_epochs from {me} (too few epochs to judge)")
    elif verdict == "crashed":
        out.append("read the run's log; a preempted run resumes from its checkpoint when requeued")
    elif verdict == "good":
        me = config.get("max_epochs")
        if numbers.get("still_improving") and isinstance(me, int):
            out.append(f"still improving: raise max_epochs from {me} to {2 * me}")
    return out
