"""Judge one run's learning curves by the metrics guide's rules. Pure functions: no I/O.

The guide's definitions are the skeleton:
- ``good``: both losses decrease steadily and the curves stay parallel;
- ``overfitting``: the training loss decreases while the validation loss rises or stagnates;
- ``underfitting``: both decrease very slowly, or plateau early, and at a high level. A run whose
  curves still fall fast is never underfitting, however high it still is: it is ``good`` and
  "still improving: train longer".

Prior art the rules follow:
- Prechelt (1998), "Early stopping -- but when?": the generalisation loss
  ``GL(t) = 100 * (E_val(t) / min_{t' <= t} E_val(t') - 1)`` in percent, against validation's
  best over the whole run (levels are medians of ``strip`` epochs, so one noisy epoch is no
  level).
- Google's Deep Learning Tuning Playbook, "Examining the training curves": overfitting is a
  validation loss that starts rising; runs still improving at the end want more epochs.
- Trends are least squares on the log-loss, with a standard error from the residuals that
  allows for their lag-1 autocorrelation (an effective sample size, as for Newey-West), and a
  Student-t critical value for few epochs. The change over n epochs is compared with the
  uncertainty of that change, which shrinks as epochs accumulate; one epoch's noise is not the
  yardstick. Under 4 epochs (2 degrees of freedom) nothing is called a trend.
- nanoGPT's ``estimate_loss``: the train/val gap is read on ``train/eval_recon_loss`` (training
  images scored exactly as validation) where the run logged it; otherwise on the per-epoch
  means of the per-step training loss, and the reasons say so.
- "High" is evidence from every reference there is, none of them a verdict on its own (high is
  only underfitting where validation also falls very slowly): the run's own (its validation
  loss before training, the loss of the mean training image), the sweep's runs on the same
  data, and a ``baseline``.

Trends are read over the run's ``tail`` (its second half by default, at least 4 epochs).

Verdicts are checked in this order; the first that applies wins:
1. ``diverged``: the run says so (summary ``diverged``/``status``, exit status 3), a loss is
   NaN/inf, or a loss ends ``explode_factor`` times above its minimum.
2. ``pruned``: the sweep's early termination stopped it (a PRUNED trial of the local engine, or a
   sweep run stopped by SIGTERM before ``max_epochs``). Its reasons still read its curve.
3. ``crashed``: the run did not finish (no exit record and not written to any more, a non-zero
   exit, preempted and never resumed). A run still being written is ``insufficient``.
4. ``insufficient``: fewer than ``min_epochs`` validated epochs. A run a user stopped is judged
   like any other; its reasons say who stopped it.
5. ``overfitting``, unless validation ends at (or within its noise of) its best and not above
   the training loss: validation's level ends ``gl_max`` % or more above its best over the whole
   run, rising since that best while training kept falling (both real trends); or training
   really falls by ``train_fall_min`` over the tail while validation stagnates (falls by less
   than ``val_share`` of that) or the curves really part (the gap grows ``gap_growth`` times).
6. ``underfitting``: the latent collapsed (``train/kl_loss`` ends at ``kl_collapse`` nats or
   less, with ``kl_weight`` > 0) and validation does not still fall fast, or validation falls very slowly (by less than ``slow_drop``
   over the tail, at the upper end of its uncertainty; a training loss falling on without it
   is for rule 5) and the best validation
   loss is high against some reference: ``near_trivial`` x the mean image's loss, less than
   ``min_progress`` below its loss before training, ``high_vs_best`` x the sweep's best on the
   same data or the ``baseline``, or (runs without references) ``high_vs_median`` x the sweep's
   median.
7. ``good``: otherwise; "still improving" when validation still falls fast at the end.
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
from contract.trends import DEFAULTS, Trend, overfitting, read
from contract.trends import pct as _pct

VERDICTS = (
    "good",
    "overfitting",
    "underfitting",
    "pruned",
    "diverged",
    "crashed",
    "insufficient",
)
# Who stopped a run before its last epoch (Stop.by).
BY_SWEEP, BY_USER = "sweep", "user"
# Why a run underfits (numbers["cause"]): what its remedy changes.
CAUSE_KL, CAUSE_SLOW, CAUSE_CAPACITY = "kl", "slow", "capacity"


def _t(default: float | None, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Thresholds:
    """Every number the verdicts use. Each is a ``--<name>`` option of ``analysis report``."""

    min_epochs: int = _t(3, "fewer validated epochs than this -> insufficient")
    tail: float = _t(
        DEFAULTS.tail, "share of the run, at its end, over which trends are read (>= 4 epochs)"
    )
    trend_z: float = _t(
        DEFAULTS.trend_z,
        "a change is real beyond this many standard errors of it (Student-t for few epochs)",
    )
    strip: int = _t(DEFAULTS.strip, "epochs whose median is a level (Prechelt's GL, 'at its best')")
    gl_max: float = _t(
        DEFAULTS.gl_max, "val's level this many percent above its best over the run = rose"
    )
    train_fall_min: float = _t(
        DEFAULTS.train_fall_min, "train falling by this share over the tail = still falls"
    )
    val_share: float = _t(
        DEFAULTS.val_share,
        "val falling by less than this share of train's fall over the tail = stagnates",
    )
    gap_growth: float = _t(
        DEFAULTS.gap_growth,
        "the val/train gap growing this many times over the tail = no longer parallel",
    )
    slow_drop: float = _t(
        0.1, "a curve falling by less than this share over the tail = very slowly; by more = fast"
    )
    near_trivial: float = _t(
        0.9, "best val this many times the trivial reconstruction's (mean image) = high"
    )
    min_progress: float = _t(
        0.5, "best val less than this share below the run's start (before training) = high"
    )
    kl_share_max: float = _t(
        0.2, "kl_weight x KL this share of train/loss or more, on average = KL dominates"
    )
    kl_collapse: float = _t(
        1.0, "train/kl_loss ending at or under this many nats an image = posterior collapse"
    )
    high_vs_best: float = _t(
        1.5, "best val this many times the sweep's best on the same data (or baseline) = high"
    )
    high_vs_median: float = _t(
        1.2, "no references: best val this many times the sweep's median = high (>= 3 runs)"
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
            if f.name in ("min_epochs", "strip"):
                ok, rule = value >= 1, "must be >= 1"
            elif f.name in ("tail", "near_trivial", "min_progress", "kl_share_max"):
                ok, rule = 0 < value <= 1, "must be in (0, 1]"
            elif f.name in ("trend_z", "train_fall_min", "val_share", "slow_drop", "kl_collapse"):
                ok, rule = value >= 0, "must be >= 0"
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
    # Per-epoch means of the per-step train/kl_loss (unweighted) and train/loss (the total).
    kl: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    # train/eval_recon_loss: the training images scored as validation is (nan: not logged).
    train_eval: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Verdict:
    verdict: str
    reasons: list[str]
    numbers: dict[str, Any]


@dataclass(frozen=True)
class SweepContext:
    """The sweep's other runs on the same data: references for runs that carry none."""

    best: float | None = None
    median: float | None = None
    runs: int = 0


@dataclass(frozen=True)
class References:
    """What a run knows about itself, so that "high" needs no sibling run."""

    init_val: float | None = None  # val/recon_loss before the first optimizer step
    trivial_val: float | None = None  # val loss of the mean training image
    kl_weight: float | None = None  # the run's config value


@dataclass(frozen=True)
class Stop:
    """A run stopped (SIGTERM) before its last epoch: by the sweep's early termination or a user."""

    by: str  # BY_SWEEP or BY_USER
    why: str  # in words, with what the record says


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
    train_eval = [_value(r.get(M.TRAIN_EVAL_RECON)) for r in rows]
    times = [_value(r.get(M.TIME_PER_EPOCH)) for r in rows]
    nonfinite: list[str] = []
    bad_val = [e for e, r in zip(epochs, rows, strict=True) if _is_nonfinite(r.get(M.VAL_RECON))]
    if bad_val:
        nonfinite.append(f"{M.VAL_RECON} is NaN/inf at epoch {min(bad_val)}")
    ends = [r.get(END_STEP) for r in rows]
    if not epochs:
        return Curves(epochs, [], val, times, nonfinite)
    if not all(_finite(e) for e in ends):
        last = max((r[M.TRAIN_STEP] for r in train_rows if _finite(r.get(M.TRAIN_STEP))), default=0)
        ends = [last / len(epochs) * (i + 1) for i in range(len(epochs))]
    train, kl, total, bad_step = _per_epoch_means(train_rows, ends)
    if bad_step is not None:
        nonfinite.append(f"{M.TRAIN_RECON} is NaN/inf from step {int(bad_step)}")
    return Curves(epochs, train, val, times, nonfinite, kl, total, train_eval)


def _value(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _is_nonfinite(x: float | None) -> bool:
    return x is not None and not math.isfinite(x)


def _per_epoch_means(
    train_rows: Sequence[Mapping[str, float | None]], ends: list[float]
) -> tuple[list[float], list[float], list[float], float | None]:
    """Per-epoch means of train/recon_loss, train/kl_loss and train/loss (each over the steps
    that logged it), and the first step whose recon is NaN/inf.

    One pass over rows in step order (as every source gives them; sorted first otherwise): this
    loop sees every optimizer step of every run, so it stays plain.
    """
    step_key, recon_key, kl_key, total_key = M.TRAIN_STEP, M.TRAIN_RECON, M.TRAIN_KL, M.TRAIN_LOSS
    steps = [r.get(step_key) for r in train_rows]
    if any(
        b < a for a, b in zip(steps, steps[1:], strict=False) if a is not None and b is not None
    ):
        train_rows = sorted(
            (r for r in train_rows if r.get(step_key) is not None), key=lambda r: r[step_key]
        )
    n = len(ends)
    recon_sum, kl_sum, total_sum = [0.0] * n, [0.0] * n, [0.0] * n
    recon_n, kl_n, total_n = [0] * n, [0] * n, [0] * n
    bad: float | None = None
    i, end = 0, ends[0]
    isfinite = math.isfinite
    for r in train_rows:
        step, recon = r.get(step_key), r.get(recon_key)
        if step is None or recon is None or not isfinite(step):
            continue
        if not isfinite(recon) and (bad is None or step < bad):
            bad = step
        while step > end and i < n:
            i += 1
            end = ends[i] if i < n else math.inf
        if i == n:
            continue  # a step of an epoch that never finished: only its NaN/inf counts
        recon_sum[i] += recon
        recon_n[i] += 1
        kl, total = r.get(kl_key), r.get(total_key)
        if kl is not None:
            kl_sum[i] += kl
            kl_n[i] += 1
        if total is not None:
            total_sum[i] += total
            total_n[i] += 1

    def means(sums: list[float], counts: list[int]) -> list[float]:
        return [s / c if c else math.nan for s, c in zip(sums, counts, strict=True)]

    return means(recon_sum, recon_n), means(kl_sum, kl_n), means(total_sum, total_n), bad


def kl_share(curves: Curves, kl_weight: float | None) -> float:
    """Mean over epochs of kl_weight x KL / train/loss: how much of the objective is the KL term."""
    if not isinstance(kl_weight, (int, float)) or not curves.kl or not curves.total:
        return math.nan
    shares = [
        kl_weight * k / t
        for k, t in zip(curves.kl, curves.total, strict=True)
        if math.isfinite(k) and math.isfinite(t) and t > 0
    ]
    return sum(shares) / len(shares) if shares else math.nan


def diagnose(
    curves: Curves,
    state: str,
    th: Thresholds,
    context: SweepContext = SweepContext(),
    flagged_diverged: bool = False,
    exit_code: int | None = None,
    stop: Stop | None = None,
    refs: References = References(),
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
        "stopped_by": stop.by if stop else None,
    }

    diverged = _divergence(curves, th, flagged_diverged or exit_code == EXIT_DIVERGED)
    if diverged:
        return Verdict("diverged", diverged, numbers)

    if stop is not None and stop.by == BY_SWEEP:
        if n < th.min_epochs:
            read = [f"its curve: only {n} validated epoch(s), too few to read a trend"]
        else:
            seen = _read_curve(curves, th, context, refs, numbers, best)
            numbers["curve_reads_as"] = seen.verdict
            read = [f"its curve so far reads as {seen.verdict}", *seen.reasons]
        return Verdict("pruned", [stop.why, *read], numbers)

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
    early = [stop.why] if stop else []
    if n < th.min_epochs:
        why = f"only {n} validated epoch(s); at least {th.min_epochs} are needed to read a trend"
        return Verdict("insufficient", [*early, why], numbers)
    seen = _read_curve(curves, th, context, refs, numbers, best)
    return Verdict(seen.verdict, early + seen.reasons, numbers)


def _read_curve(
    curves: Curves,
    th: Thresholds,
    context: SweepContext,
    refs: References,
    numbers: dict[str, Any],
    best: float,
) -> Verdict:
    """Overfitting, underfitting or good, from a curve of at least ``min_epochs`` epochs."""
    r = read(curves.epochs, curves.val, curves.train, curves.train_eval, th)
    epochs, true_gap, val_t, train_t, gl = r.epochs, r.true_gap, r.val_t, r.train_t, r.gl
    share = kl_share(curves, refs.kl_weight)
    kl_final = next((x for x in reversed(curves.kl) if math.isfinite(x)), math.nan)
    # KL (nats an image) bounds what the latent tells the decoder about its input: near 0, the
    # decoder cannot do better than an output that ignores the input.
    collapsed = bool(refs.kl_weight) and math.isfinite(kl_final) and kl_final <= th.kl_collapse
    numbers.update(
        tail_from=epochs[0],
        true_gap=true_gap,
        val_change=val_t.change if val_t else None,
        val_margin=val_t.margin if val_t else None,
        train_change=train_t.change if train_t else None,
        train_margin=train_t.margin if train_t else None,
        gl=gl,
        kl_share=share,
        kl_dominates=math.isfinite(share) and share >= th.kl_share_max,
        kl_final=kl_final,
        kl_collapsed=collapsed,
    )
    high, why_high = _is_high(best, refs, context, th, numbers)
    if val_t is None:
        return Verdict("good", ["fewer than 3 positive validation losses: no trend"], numbers)
    train_name = M.TRAIN_EVAL_RECON if true_gap else "train"
    tail = [f"val {val_t.words()}"]
    if train_t is None:
        tail.append(f"no {M.TRAIN_RECON} rows: judged on the validation curve only")
    else:
        tail.append(f"{train_name} {train_t.words()}")
        if not true_gap:
            tail.append(
                f"no {M.TRAIN_EVAL_RECON} (logged before the trainer measured it): the gap is"
                f" read on the epoch means of the per-step {M.TRAIN_RECON}, a moving model on"
                " training batches"
            )
        over = overfitting(curves.epochs, curves.val, r, th, numbers)
        if over[0]:
            return Verdict("overfitting", tail + over[1], numbers)
        tail += over[1]

    # The verdict is about validation: it is what falls fast or very slowly. A training loss
    # falling on without it was for the overfitting rules above to judge.
    fast = val_t.falls() and val_t.fall >= th.slow_drop
    slow = val_t.fall_at_most() < th.slow_drop
    numbers["falls_fast"] = fast
    numbers["falls_slowly"] = slow
    if (collapsed and not fast) or (high and slow):
        cause = _cause(numbers, val_t, th)
        numbers["cause"] = cause
        why = tail + why_high
        if slow:
            why.append(
                f"val falls very slowly: by less than {_pct(th.slow_drop)} over epochs"
                f" {epochs[0]}-{epochs[-1]}, even at the upper end of its uncertainty"
            )
        if collapsed:
            why.append(
                f"{M.TRAIN_KL} ends at {kl_final:.3g} nats an image (kl_weight {refs.kl_weight:g}):"
                " the latent tells the decoder almost nothing about its input (posterior"
                f" collapse, from {th.kl_collapse:g} nat)"
            )
        if numbers["kl_dominates"]:
            why.append(
                f"the KL term (kl_weight {refs.kl_weight:g} x {M.TRAIN_KL}) is {_pct(share)} of"
                f" {M.TRAIN_LOSS} on average (dominates from {_pct(th.kl_share_max)})"
            )
        if cause == CAUSE_SLOW:
            why.append("training has barely moved the model from its start: too slow to get far")
        return Verdict("underfitting", why, numbers)

    why = tail + [f"best val {best:.4g} at epoch {numbers['best_epoch']}, GL {gl:.1f}%", *why_high]
    if fast:
        numbers["still_improving"] = True
        why.append(
            f"still falling fast (val fell {_pct(val_t.fall)}; very slowly is under"
            f" {_pct(th.slow_drop)} over epochs {epochs[0]}-{epochs[-1]}): not underfitting,"
            " still improving: train longer"
        )
    elif high:
        why.append(
            "high, but too few epochs to tell whether val has plateaued"
            f" (a fall of {_pct(th.slow_drop)} or more over the tail cannot be ruled out)"
        )
    elif slow and not th.baseline and not (context.best and context.runs >= 2):
        # Converged, or stuck at a capacity limit: alone, nothing tells the two apart.
        numbers["plateau_unjudged"] = True
        why.append(
            "val has plateaued at a level nothing here shows to be high: runs of a larger model"
            " on the same data in the sweep, or --baseline, tell convergence from a capacity limit"
        )
    return Verdict("good", why, numbers)


def _cause(numbers: Mapping[str, Any], val_t: Trend, th: Thresholds) -> str:
    """What keeps an underfitting run high: the KL term, slow training, or too little capacity."""
    if numbers.get("kl_dominates") or numbers.get("kl_collapsed"):
        return CAUSE_KL
    progress = numbers.get("progress")
    if progress is None:  # no start to compare with: any real fall says training goes on
        return CAUSE_SLOW if val_t.falls() else CAUSE_CAPACITY
    if progress < th.min_progress:
        return CAUSE_SLOW
    return CAUSE_CAPACITY


def _is_high(
    best: float, refs: References, context: SweepContext, th: Thresholds, numbers: dict[str, Any]
) -> tuple[bool, list[str]]:
    """Is the run's best val high against any reference it has: its own (the mean image, its
    start), the sweep's best on the same data, a baseline; the sweep's median for runs without
    their own? Each says what it found; none is a verdict alone (the curves must plateau too).
    """
    high, why = False, []
    own = False
    if _finite(refs.trivial_val) and refs.trivial_val > 0:
        own = True
        ratio = best / refs.trivial_val
        numbers["vs_trivial"] = ratio
        high |= ratio >= th.near_trivial
        why.append(
            f"best val {best:.4g} is {ratio:.2f}x the trivial reconstruction's"
            f" {refs.trivial_val:.4g} (the mean training image; high from {th.near_trivial:g}x)"
        )
    if _finite(refs.init_val) and refs.init_val > 0:
        own = True
        progress = 1.0 - best / refs.init_val
        numbers["progress"] = progress
        numbers["little_progress"] = progress < th.min_progress
        high |= progress < th.min_progress
        why.append(
            f"best val is {_pct(progress)} below the run's start ({refs.init_val:.4g} before"
            f" training; little progress under {_pct(th.min_progress)})"
        )
    numbers["own_references"] = own
    if th.baseline:
        ratio = best / th.baseline
        numbers["vs_baseline"] = ratio
        high |= ratio >= th.high_vs_best
        why.append(
            f"best val {best:.4g} is {ratio:.2f}x the baseline {th.baseline:g}"
            f" (high from {th.high_vs_best:g}x)"
        )
    if context.best and context.best > 0 and context.runs >= 2:
        ratio = best / context.best
        numbers["vs_sweep_best"] = ratio
        high |= ratio >= th.high_vs_best
        why.append(
            f"best val {best:.4g} is {ratio:.2f}x the sweep's best on the same data"
            f" ({context.best:.4g} over {context.runs} runs; high from {th.high_vs_best:g}x)"
        )
    if context.median and context.runs >= 3:
        numbers["vs_sweep_median"] = best / context.median
    if not own:
        why.append(
            f"the run has no {M.SUMMARY_INIT_VAL_RECON} or {M.SUMMARY_TRIVIAL_VAL_RECON} (logged"
            " before the trainer recorded them): 'high' is judged against the sweep's runs"
        )
        if context.median and context.runs >= 3:
            ratio = best / context.median
            high |= ratio >= th.high_vs_median
            why.append(
                f"best val {best:.4g} is {ratio:.2f}x the sweep's median ({context.median:.4g};"
                f" high from {th.high_vs_median:g}x)"
            )
    numbers["high"] = high
    return high, why


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
    """The guide's remedy for a verdict, stated for this run's actual values.

    ``kl_weight`` only ever goes up on an overfitting run and down on an underfitting one.
    """
    out: list[str] = []
    kl = config.get("kl_weight")
    kl = kl if isinstance(kl, (int, float)) and not isinstance(kl, bool) else None
    me = config.get("max_epochs")
    me = me if isinstance(me, int) and not isinstance(me, bool) else None
    stopped = numbers.get("stopped_by") is not None
    if verdict == "overfitting":
        if numbers.get("kl_dominates"):
            out.append(
                f"kl_weight ({kl:g}) already makes {_pct(numbers.get('kl_share'))} of the loss:"
                " regularise by augmentation or more training data instead"
            )
        elif kl is not None:
            out.append(
                f"raise kl_weight from {kl:g} to {kl * 10:g} (more regularisation)"
                if kl > 0
                else "set kl_weight above 0 (it is 0): 1e-6 is MONAI's recipe"
            )
        if config.get("augment") is False:
            out.append("turn augment on (it is off)")
        elif config.get("augment") is True:
            out.append("augment is already on: add training data, or stop at the best epoch")
    elif verdict == "underfitting":
        cause = numbers.get("cause")
        if cause == CAUSE_KL and kl is not None:
            out.append(
                f"lower kl_weight from {kl:g} to {kl / 100:g}: the KL term is"
                f" {_pct(numbers.get('kl_share'))} of the loss on average and keeps the latent"
                " nearly empty"
            )
        elif cause == CAUSE_SLOW:
            lr = config.get("lr")
            if isinstance(lr, (int, float)):
                out.append(f"raise lr from {lr:g} to {lr * 10:g} (the loss falls too slowly)")
            if me is not None and not stopped:
                out.append(f"or raise max_epochs from {me} to {2 * me}")
        else:
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
        if me is not None and not stopped and numbers.get("epochs", 0) >= me:
            out.append(f"raise max_epochs from {me} (too few epochs to judge)")
    elif verdict == "crashed":
        out.append("read the run's log; a preempted run resumes from its checkpoint when requeued")
    elif verdict == "good" and numbers.get("still_improving") and not stopped:
        if me is not None:
            out.append(f"still improving: raise max_epochs from {me} to {2 * me}")
        # Still high while it falls: what would get it down faster, by the same causes as
        # underfitting's (never a capacity change: nothing says capacity limits it yet).
        if numbers.get("high") and numbers.get("kl_dominates") and kl:
            out.append(
                f"it is still high and the KL term is {_pct(numbers.get('kl_share'))} of the"
                f" loss: lower kl_weight from {kl:g} to {kl / 10:g}"
            )
        elif numbers.get("high") and numbers.get("little_progress"):
            lr = config.get("lr")
            if isinstance(lr, (int, float)):
                out.append(
                    f"it is still high, {_pct(numbers.get('progress'))} below its start:"
                    f" or raise lr from {lr:g} to {lr * 10:g}"
                )
    return out
