"""Judge one run's learning curves by the metrics guide's rules. Pure functions: no I/O.

Prior art the rules follow:
- Prechelt (1998), "Early stopping -- but when?": the generalisation loss
  ``GL(t) = 100 * (E_val(t) / min_{t' <= t} E_val(t') - 1)`` in percent, the training progress
  over a strip of k epochs ``P_k = 1000 * (mean of the strip's train losses / their min - 1)``,
  and their quotient ``PQ = GL / P_k``.
- Google's Deep Learning Tuning Playbook, "Examining the training curves": overfitting is a
  validation loss that starts rising; runs still improving at the end want more epochs; a run is
  scored by the best value it reached.
- "High" (underfitting) cannot be judged against the sweep's other runs alone: in a sweep where
  every run underfits they are no reference. Each run carries its own: its validation loss before
  training and the loss of a trivial reconstruction (the mean training image). Runs without them
  fall back to the sweep's runs on the same data.

Trends are read over the run's ``tail`` (its second half by default, where the first fast fall
is over), never a fixed handful of epochs: a robust slope of the log-loss (the median of the
slopes between epochs half the tail apart) gives the relative change over the tail, and a change
is real only when it exceeds ``trend_z`` times the curve's own epoch-to-epoch noise (from the
median absolute deviation of its second differences; unknown under 5 epochs, when no change
counts as real).

Verdicts are checked in this order; the first that applies wins:
1. ``diverged``: the run says so (summary ``diverged``/``status``, exit status 3), a loss is
   NaN/inf, or a loss ends ``explode_factor`` times above its minimum.
2. ``pruned``: the sweep's early termination stopped it (a PRUNED trial of the local engine, or a
   sweep run stopped by SIGTERM before ``max_epochs``). Its reasons still read its curve.
3. ``crashed``: the run did not finish (no exit record and not written to any more, a non-zero
   exit, preempted and never resumed). A run still being written is ``insufficient``.
4. ``insufficient``: fewer than ``min_epochs`` validated epochs. A run a user stopped is judged
   like any other; its reasons say who stopped it.
5. ``overfitting``: train really falls over the tail, by ``train_fall_min`` or more, the curves
   really part (the val/train gap grows beyond both curves' noise), and validation rises
   (GL >= ``gl_max`` or PQ >= ``pq_max``), stagnates (no real fall, and less than ``val_share``
   of train's fall), or the gap grows ``gap_growth`` times over the tail.
6. ``underfitting``: the latent collapsed (``train/kl_loss`` ends at ``kl_collapse`` nats or
   less, with ``kl_weight`` > 0: the decoder cannot see its input), or the best validation loss
   is high against the run's own references (at least ``near_trivial`` x the trivial
   reconstruction's loss, or less than ``min_progress`` below its loss before training) or the
   ``baseline``; for runs without references, high against the sweep's runs on the same data
   (``high_vs_best`` x the best, ``high_vs_median`` x the median) while validation falls less
   than ``slow_drop`` over the tail.
7. ``good``: otherwise.
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
# Robust standard deviation from a median absolute deviation (normal noise).
MAD_TO_SIGMA = 1.4826
# Second differences needed to estimate a curve's noise (a tail of 5 epochs gives 3).
MIN_BENDS = 3


def _t(default: float | None, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Thresholds:
    """Every number the verdicts use. Each is a ``--<name>`` option of ``analysis report``."""

    min_epochs: int = _t(3, "fewer validated epochs than this -> insufficient")
    tail: float = _t(0.5, "share of the run, at its end, over which trends are read (>= 5 epochs)")
    trend_z: float = _t(3.0, "a change over the tail is real from this many times the noise")
    strip: int = _t(5, "Prechelt's strip: epochs whose median is a level (GL) and train's P_k")
    gl_max: float = _t(5.0, "generalisation loss GL (percent above the best val) -> val rises")
    pq_max: float = _t(2.0, "Prechelt's PQ = GL / P_k (val rise per train progress) -> val rises")
    train_fall_min: float = _t(0.1, "train falling by this share over the tail = still falls")
    val_share: float = _t(
        0.25, "val falling (within its noise) by less than this share of train's fall = stagnates"
    )
    gap_growth: float = _t(
        1.25, "the val/train gap growing this many times over the tail = no longer parallel"
    )
    slow_drop: float = _t(0.1, "val falling by less than this share over the tail = slow")
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
        1.5, "no references: best val this many times the sweep's best (or baseline) = high"
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


@dataclass(frozen=True)
class Trend:
    """A curve's robust trend over epochs ``first``..``last``."""

    first: int
    last: int
    change: float  # relative change over the tail: fitted end / fitted start - 1
    noise: float  # relative epoch-to-epoch noise around the fitted line (one sigma)
    log_change: float  # the change and the noise in log units: what is compared
    log_noise: float
    z: float

    @property
    def fall(self) -> float:
        return -self.change

    @property
    def real(self) -> bool:
        return abs(self.log_change) > self.z * self.log_noise

    def falls(self) -> bool:
        return self.real and self.change < 0

    def words(self) -> str:
        moved = "fell" if self.change < 0 else "rose"
        if not math.isfinite(self.noise):
            return f"{moved} {_pct(abs(self.change))} over epochs {self.first}-{self.last} (too few epochs to measure its noise)"
        real = "real" if self.real else "within the noise"
        return (
            f"{moved} {_pct(abs(self.change))} over epochs {self.first}-{self.last}"
            f" (noise ±{_pct(self.noise)} per epoch: {real})"
        )


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
    ends = [r.get(END_STEP) for r in rows]
    if not epochs:
        return Curves(epochs, [], val, times, nonfinite)
    if not all(_finite(e) for e in ends):
        last = max((r[M.TRAIN_STEP] for r in train_rows if _finite(r.get(M.TRAIN_STEP))), default=0)
        ends = [last / len(epochs) * (i + 1) for i in range(len(epochs))]
    train, kl, total, bad_step = _per_epoch_means(train_rows, ends)
    if bad_step is not None:
        nonfinite.append(f"{M.TRAIN_RECON} is NaN/inf from step {int(bad_step)}")
    return Curves(epochs, train, val, times, nonfinite, kl, total)


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


def trend(epochs: Sequence[int], values: Sequence[float], z: float) -> Trend | None:
    """Robust trend of ``values`` (all of them: pass the tail): None under 3 positive values.

    The slope of log(value) is the median of the slopes between points half the series apart
    (a Theil-Sen estimate in linear time). The noise is the epoch-to-epoch noise: from the
    second differences, which a smooth curve's slope and bend do not inflate (for white noise
    of spread s they spread s x sqrt(6)), via their median absolute deviation.
    """
    pts = [(e, math.log(v)) for e, v in zip(epochs, values, strict=True) if v > 0 and v < math.inf]
    m = len(pts)
    if m < 3:
        return None
    h = m // 2
    slope = statistics.median(
        (pts[i + h][1] - pts[i][1]) / (pts[i + h][0] - pts[i][0]) for i in range(m - h)
    )
    bends = [pts[i + 1][1] - 2 * pts[i][1] + pts[i - 1][1] for i in range(1, m - 1)]
    if len(bends) < MIN_BENDS:
        noise = math.inf  # unknown: no change can be told from it
    else:
        centre = statistics.median(bends)
        noise = MAD_TO_SIGMA * statistics.median(abs(b - centre) for b in bends) / math.sqrt(6)
    log_change = slope * (pts[-1][0] - pts[0][0])
    return Trend(
        pts[0][0], pts[-1][0], math.expm1(log_change), math.expm1(noise), log_change, noise, z
    )


def _rolling_median(values: list[float], width: int) -> list[float]:
    """Trailing median over the finite values (nan where none)."""
    out = []
    for i in range(len(values)):
        window = [v for v in values[max(0, i - width + 1) : i + 1] if math.isfinite(v)]
        out.append(statistics.median(window) if window else math.nan)
    return out


def generalisation_loss(val: list[float]) -> float:
    """Prechelt's GL at the last epoch, in percent."""
    finite = [v for v in val if math.isfinite(v)]
    if not finite or not math.isfinite(val[-1]) or min(finite) <= 0:
        return math.nan
    return 100.0 * (val[-1] / min(finite) - 1.0)


def training_progress(train: list[float], k: int) -> float:
    """Prechelt's P_k over the last ``k`` epochs, in per mille (nan without train values)."""
    strip = [t for t in train[-k:] if math.isfinite(t)]
    if not strip or min(strip) <= 0:
        return math.nan
    return 1000.0 * (sum(strip) / len(strip) / min(strip) - 1.0)


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
    n = len(curves.epochs)
    size = min(n, max(MIN_BENDS + 2, round(th.tail * n)))
    epochs = curves.epochs[-size:]
    val_t = trend(epochs, curves.val[-size:], th.trend_z)
    train_t = trend(epochs, curves.train[-size:], th.trend_z)
    k = max(1, min(th.strip, n // 3))
    gl = generalisation_loss(_rolling_median(curves.val, k))
    p_k = training_progress(curves.train, k)
    pq = gl / p_k if math.isfinite(gl) and math.isfinite(p_k) and p_k > 0 else math.nan
    share = kl_share(curves, refs.kl_weight)
    kl_final = next((x for x in reversed(curves.kl) if math.isfinite(x)), math.nan)
    # KL (nats an image) bounds what the latent tells the decoder about its input: near 0, the
    # decoder cannot do better than an output that ignores the input.
    collapsed = bool(refs.kl_weight) and math.isfinite(kl_final) and kl_final <= th.kl_collapse
    numbers.update(
        tail_from=epochs[0],
        val_change=val_t.change if val_t else None,
        val_noise=val_t.noise if val_t else None,
        train_change=train_t.change if train_t else None,
        train_noise=train_t.noise if train_t else None,
        gl=gl,
        p_k=p_k,
        pq=pq,
        kl_share=share,
        kl_dominates=math.isfinite(share) and share >= th.kl_share_max,
        kl_final=kl_final,
        kl_collapsed=collapsed,
    )
    high, why_high = _is_high(best, refs, context, th, numbers)
    if val_t is None:
        return Verdict("good", ["fewer than 3 positive validation losses: no trend"], numbers)
    tail = [f"val {val_t.words()}"]
    if train_t is None:
        tail.append(f"no {M.TRAIN_RECON} rows: judged on the validation curve only")
    else:
        tail.append(f"train {train_t.words()}")
        growth = math.exp(val_t.log_change - train_t.log_change)
        numbers["gap_growth"] = growth
        gap = _gap(curves, epochs)
        tail.append(f"val/train gap {gap} ({growth:.2f}x over the tail)")
        over = _overfitting(train_t, val_t, growth, gl, pq, k, th)
        if over:
            return Verdict("overfitting", tail + over, numbers)

    slow = not (val_t.falls() and val_t.fall >= th.slow_drop)
    own = numbers["own_references"]
    if collapsed or (high and (own or slow)):
        cause = _cause(numbers, val_t, th)
        numbers["cause"] = cause
        why = tail + why_high
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
            why.append("the loss still falls, slowly: training is too slow to get far")
        elif cause == CAUSE_CAPACITY and not own:
            why.append(f"val falls less than {_pct(th.slow_drop)} over the tail: plateaued")
        return Verdict("underfitting", why, numbers)

    why = tail + [f"best val {best:.4g} at epoch {numbers['best_epoch']}, GL {gl:.1f}%", *why_high]
    if val_t.falls() and val_t.fall >= th.slow_drop:
        numbers["still_improving"] = True
        why.append("still improving at the end: more epochs would help")
    return Verdict("good", why, numbers)


def _gap(curves: Curves, tail_epochs: list[int]) -> str:
    """``1.02x at epoch 20 -> 1.71x at epoch 40``: val / train where both are known."""
    index = {e: i for i, e in enumerate(curves.epochs)}
    pairs = [
        (e, curves.val[index[e]] / curves.train[index[e]])
        for e in tail_epochs
        if math.isfinite(curves.val[index[e]])
        and math.isfinite(curves.train[index[e]])
        and curves.train[index[e]] > 0
    ]
    if not pairs:
        return "unknown"
    (e0, g0), (e1, g1) = pairs[0], pairs[-1]
    return f"{g0:.2f}x at epoch {e0} -> {g1:.2f}x at epoch {e1}"


def _overfitting(
    train_t: Trend, val_t: Trend, growth: float, gl: float, pq: float, k: int, th: Thresholds
) -> list[str]:
    """Reasons for overfitting (empty when it is not): train falls while val does not follow.

    Both the fall of train and the parting of the curves must be real (beyond their noise).
    """
    if not (train_t.falls() and train_t.fall >= th.train_fall_min):
        return []
    parting = math.log(growth)
    if parting <= th.trend_z * math.hypot(train_t.log_noise, val_t.log_noise):
        return []
    why = []
    if math.isfinite(gl) and gl >= th.gl_max:
        why.append(
            f"val rises: its median of {k} epochs ends {gl:.1f}% above its best"
            f" (Prechelt's GL >= {th.gl_max:g}%)"
        )
    elif math.isfinite(pq) and pq >= th.pq_max:
        why.append(
            f"val rises against train's progress: PQ = GL {gl:.1f}% / P_{k} {gl / pq:.1f}"
            f" = {pq:.2f} (>= {th.pq_max:g})"
        )
    if not val_t.falls() and val_t.fall < th.val_share * train_t.fall:
        why.append(
            f"val stagnates while train still falls (val does not really fall, and by less"
            f" than {_pct(th.val_share)} of train's {_pct(train_t.fall)} fall)"
        )
    if growth >= th.gap_growth:
        why.append(f"the curves are no longer parallel: the gap grew {growth:.2f}x")
    return why


def _cause(numbers: Mapping[str, Any], val_t: Trend, th: Thresholds) -> str:
    """What keeps an underfitting run high: the KL term, slow training, or too little capacity."""
    if numbers.get("kl_dominates") or numbers.get("kl_collapsed"):
        return CAUSE_KL
    progress = numbers.get("progress")
    if progress is None:  # no start to compare with: any real fall says training goes on
        return CAUSE_SLOW if val_t.falls() else CAUSE_CAPACITY
    if progress < th.min_progress or (val_t.falls() and val_t.fall >= th.slow_drop):
        return CAUSE_SLOW
    return CAUSE_CAPACITY


def _is_high(
    best: float, refs: References, context: SweepContext, th: Thresholds, numbers: dict[str, Any]
) -> tuple[bool, list[str]]:
    """Is the run's best val high against its own references, a baseline, or (runs without
    references) the sweep's best and median on the same data?"""
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
        high |= progress < th.min_progress
        why.append(
            f"best val is {_pct(progress)} below the run's start ({refs.init_val:.4g} before"
            f" training; little progress under {_pct(th.min_progress)})"
        )
    numbers["own_references"] = own
    if th.baseline:
        ratio = best / th.baseline
        if ratio >= th.high_vs_best:
            high = True
            why.append(
                f"best val {best:.4g} is {ratio:.2f}x the baseline {th.baseline:g}"
                f" (high from {th.high_vs_best:g}x)"
            )
    if context.best and context.best > 0:
        numbers["vs_sweep_best"] = best / context.best
    if context.median and context.runs >= 3:
        numbers["vs_sweep_median"] = best / context.median
    if own:
        return high, why
    # No per-run references: the sweep's runs on the same data are the only ones left.
    why.append(
        f"the run has no {M.SUMMARY_INIT_VAL_RECON} or {M.SUMMARY_TRIVIAL_VAL_RECON} (logged"
        " before the trainer recorded them): 'high' is judged against the sweep's runs"
    )
    siblings = []
    if context.best and context.best > 0:
        siblings.append((context.best, "the sweep's best", th.high_vs_best))
    if context.median and context.runs >= 3:
        siblings.append((context.median, "the sweep's median", th.high_vs_median))
    for level, what, limit in siblings:
        if best >= limit * level:
            why.append(
                f"best val {best:.4g} is {best / level:.2f}x {what}"
                f" ({level:.4g}; high from {limit:g}x)"
            )
            return True, why
    if siblings:
        level, what, _ = siblings[0]
        why.append(f"best val {best:.4g} is {best / level:.2f}x {what} ({level:.4g})")
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


def _pct(x: float | None) -> str:
    return f"{100 * x:.1f}%" if x is not None and math.isfinite(x) else "n/a"


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
    elif verdict == "good" and numbers.get("still_improving") and me is not None and not stopped:
        out.append(f"still improving: raise max_epochs from {me} to {2 * me}")
    return out
