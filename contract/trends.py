"""The statistics of a learning curve, and the metrics guide's overfitting test on it.

Torch-free and free of I/O, below the trainer and the analysis: the trainer judges its own
curve as it trains (``early_stop``) with exactly the rules the analysis judges finished runs
by, and neither keeps a copy of them. ``analysis.diagnose`` documents the verdicts and their
prior art; what lives here is:

- ``trend``: least squares on the log-loss, with a standard error from the residuals that
  allows for their lag-1 autocorrelation (an effective sample size, as for Newey-West), and a
  Student-t critical value for few epochs. Under 4 epochs nothing is called a trend.
- ``generalisation_loss``: Prechelt's GL, on levels (``rolling_median`` of ``strip`` epochs, so
  one noisy epoch is no level).
- ``read``: which epochs are the tail, which training curve the gap is read on, the trends,
  the levels and GL of one curve.
- ``overfitting``: the training loss falls while validation rises or stagnates, or the
  curves part; ``overfit_test`` reads a curve and applies it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# Epochs a trend needs: a line through 4 points leaves 2 degrees of freedom for its noise.
MIN_TREND = 4
# Lag-1 autocorrelation of the residuals is estimated from this many epochs on, and capped:
# beyond the cap a handful of epochs would decide the effective sample size alone.
MIN_AUTOCORR, MAX_AUTOCORR = 8, 0.8
# ``early_stop`` never acts on fewer epochs in a row than this: one or two noisy epochs of a
# short curve can pass the test.
MIN_PATIENCE = 3


class Rules(Protocol):
    """The thresholds the overfitting test reads (``analysis.diagnose.Thresholds`` has them)."""

    tail: float
    trend_z: float
    strip: int
    gl_max: float
    train_fall_min: float
    val_share: float
    gap_growth: float


@dataclass(frozen=True)
class Defaults:
    """The overfitting test's default thresholds: the analysis's defaults are these."""

    tail: float = 0.5
    trend_z: float = 2.0
    strip: int = 5
    gl_max: float = 5.0
    train_fall_min: float = 0.1
    val_share: float = 0.25
    gap_growth: float = 1.25


DEFAULTS = Defaults()


@dataclass(frozen=True)
class Trend:
    """A curve's trend over epochs ``first``..``last``: a least-squares line on its log."""

    first: int
    last: int
    points: int
    change: float  # relative change over the span: fitted end / fitted start - 1
    log_change: float
    log_se: float  # standard error of log_change (inf: too few epochs to tell)
    critical: float  # standard errors beyond which a change is real (Student-t, trend_z)
    noise: float  # residual spread around the line, per epoch, relative (one sigma)

    @property
    def fall(self) -> float:
        return -self.change

    @property
    def margin(self) -> float:
        """Half-width of the change's interval, in log units."""
        return self.critical * self.log_se

    @property
    def real(self) -> bool:
        return abs(self.log_change) > self.margin

    def falls(self) -> bool:
        return self.real and self.change < 0

    def rises(self) -> bool:
        return self.real and self.change > 0

    def fall_at_most(self) -> float:
        """The largest fall the epochs allow (upper end of the interval)."""
        return -math.expm1(self.log_change - self.margin)

    def words(self, up: str = "rose", down: str = "fell") -> str:
        moved = down if self.change < 0 else up
        said = f"{moved} {pct(abs(self.change))} over epochs {self.first}-{self.last}"
        if not math.isfinite(self.log_se):
            return f"{said} (too few epochs to tell)"
        real = "real" if self.real else "within the noise"
        low, high = (
            math.expm1(self.log_change - self.margin),
            math.expm1(self.log_change + self.margin),
        )
        return f"{said} ({signed(low)} to {signed(high)} over {self.points} epochs: {real})"


def critical(z: float, dof: float) -> float:
    """Student-t critical value matching the normal's ``z`` (Cornish-Fisher in 1/dof)."""
    z2 = z * z
    return z * (
        1
        + (z2 + 1) / (4 * dof)
        + (5 * z2 * z2 + 16 * z2 + 3) / (96 * dof**2)
        + (3 * z2**3 + 19 * z2 * z2 + 17 * z2 - 15) / (384 * dof**3)
    )


def trend(epochs: Sequence[int], values: Sequence[float], z: float) -> Trend | None:
    """Trend of ``values`` (all of them: pass the tail): None under 3 positive values.

    The slope of log(value) by least squares; its standard error from the residuals, inflated
    by ``sqrt((1 + r) / (1 - r))`` for their lag-1 autocorrelation r (the effective sample size
    of a smooth, correlated curve is smaller than its number of epochs). The change over the
    span and its standard error grow with the span, the error shrinks with the epochs: a
    steady trend becomes real once enough epochs show it. Under ``MIN_TREND`` points the
    error is unknown (infinite): nothing is real.
    """
    pts = [(e, math.log(v)) for e, v in zip(epochs, values, strict=True) if 0 < v < math.inf]
    m = len(pts)
    if m < 3:
        return None
    mx = sum(e for e, _ in pts) / m
    my = sum(y for _, y in pts) / m
    sxx = sum((e - mx) ** 2 for e, _ in pts)
    slope = sum((e - mx) * (y - my) for e, y in pts) / sxx
    span = pts[-1][0] - pts[0][0]
    res = [y - my - slope * (e - mx) for e, y in pts]
    ss = sum(r * r for r in res)
    sigma = math.sqrt(ss / (m - 2))
    if m < MIN_TREND:
        se, crit = math.inf, math.inf
    else:
        rho = 0.0
        if m >= MIN_AUTOCORR and ss > 0:
            rho = sum(a * b for a, b in zip(res, res[1:], strict=False)) / ss
            rho = min(MAX_AUTOCORR, max(0.0, rho))
        se = sigma / math.sqrt(sxx) * math.sqrt((1 + rho) / (1 - rho)) * span
        crit = critical(z, max(2.0, m * (1 - rho) / (1 + rho) - 2))
    log_change = slope * span
    return Trend(
        pts[0][0],
        pts[-1][0],
        m,
        math.expm1(log_change),
        log_change,
        se,
        crit,
        math.expm1(sigma),
    )


def rolling_median(values: list[float], width: int) -> list[float]:
    """Trailing median over the finite values (nan where none)."""
    out = []
    for i in range(len(values)):
        window = [v for v in values[max(0, i - width + 1) : i + 1] if math.isfinite(v)]
        out.append(statistics.median(window) if window else math.nan)
    return out


def generalisation_loss(val: list[float]) -> float:
    """Prechelt's GL at the last epoch against the best over the whole run, in percent."""
    finite = [v for v in val if math.isfinite(v)]
    if not finite or not math.isfinite(val[-1]) or min(finite) <= 0:
        return math.nan
    return 100.0 * (val[-1] / min(finite) - 1.0)


def level(values: list[float], last: int) -> float:
    """The median of the last ``last`` finite values: where a curve ends, one epoch's noise aside."""
    finite = [v for v in values[-last:] if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


@dataclass(frozen=True)
class Reading:
    """What the rules read off one curve: its tail, the trends over it, its levels and GL."""

    epochs: list[int]  # the tail's epochs
    train: list[float]  # the whole training curve the gap is read on (train_eval or train)
    true_gap: bool  # train is train_eval: training images scored as validation is
    val_t: Trend | None
    train_t: Trend | None
    strip: int  # epochs in a level
    levels: list[float]  # rolling medians of val over ``strip`` epochs
    gl: float  # GL of the last level against the best level


def read(
    epochs: list[int],
    val: list[float],
    train: list[float],
    train_eval: list[float],
    th: Rules,
) -> Reading:
    """Read a curve of at least one epoch (``train_eval`` may be empty: not logged)."""
    n = len(epochs)
    # The tail includes the epoch it starts from: a run's second half is read from its middle.
    size = min(n, max(MIN_TREND, math.floor(th.tail * n) + 1))
    tail = epochs[-size:]
    evals = train_eval[-size:] if len(train_eval) == n else []
    true_gap = sum(math.isfinite(x) for x in evals) >= min(size, MIN_TREND)
    gap_train = train_eval if true_gap else train
    k = max(1, min(th.strip, n // 3))
    levels = rolling_median(val, k)
    return Reading(
        tail,
        gap_train,
        true_gap,
        trend(tail, val[-size:], th.trend_z),
        trend(tail, gap_train[-size:], th.trend_z),
        k,
        levels,
        generalisation_loss(levels),
    )


def overfitting(
    all_epochs: list[int],
    val: list[float],
    r: Reading,
    th: Rules,
    numbers: dict[str, Any],
) -> tuple[bool, list[str]]:
    """(is it overfitting, reasons): train falls while val rises or stagnates.

    ``r`` is ``read`` of the curve, with both trends. Its reasons say why not where a run came
    close. ``numbers`` gets ``val_at_best``, ``val_below_train`` and ``gap_growth``.
    """
    train, epochs, val_t, train_t = r.train, r.epochs, r.val_t, r.train_t
    levels, k, gl = r.levels, r.strip, r.gl
    n = len(val)
    best = min(v for v in val if math.isfinite(v))
    last = max(2, k)
    # "At its best": the last epochs reach the best, within the line's spread per epoch.
    sigma = math.log1p(val_t.noise) if math.isfinite(val_t.noise) else 0.0
    recent = [v for v in val[-last:] if math.isfinite(v)]
    at_best = bool(recent) and min(recent) <= best * math.exp(th.trend_z * sigma)
    val_end, train_end = level(val, last), level(train, last)
    below = math.isfinite(train_end) and val_end <= train_end
    numbers["val_at_best"], numbers["val_below_train"] = at_best, below
    if at_best and below:
        return False, [
            f"val is at its best in its last {last} epochs (within"
            f" {pct(math.expm1(th.trend_z * sigma))}) and its level {val_end:.4g} is not above"
            f" train's {train_end:.4g}: not overfitting"
        ]
    ratios = [
        v / t if math.isfinite(v) and math.isfinite(t) and t > 0 else math.nan
        for v, t in zip(val[-len(epochs) :], train[-len(epochs) :], strict=True)
    ]
    gap_t = trend(epochs, ratios, th.trend_z)
    growth = math.exp(gap_t.log_change) if gap_t else math.nan
    numbers["gap_growth"] = growth
    why: list[str] = []
    if gap_t is not None:
        why.append(f"val/train gap {gap_words(ratios, epochs)}: it {gap_t.words('grew', 'shrank')}")
    # 1. val rose above its best over the whole run, and train kept falling since that best.
    finite = [(v, i) for i, v in enumerate(levels) if math.isfinite(v)]
    b = max(0, min(finite)[1] - (k - 1) // 2)  # the middle of the best level's window
    since = all_epochs[b:]
    since_val = trend(since, val[b:], th.trend_z) if n - b >= MIN_TREND else None
    since_train = trend(since, train[b:], th.trend_z) if n - b >= MIN_TREND else None
    if math.isfinite(gl) and gl >= th.gl_max:
        rose = (
            f"val's level (median of {k} epochs) ends {gl:.1f}% above its best of the run, at"
            f" epoch {all_epochs[b]} (Prechelt's GL, from {th.gl_max:g}%)"
        )
        if since_val is None or since_train is None:
            why.append(f"{rose}, but too few epochs since that best to tell a trend")
        elif since_val.rises() and since_train.falls():
            return True, [
                *why,
                rose,
                f"since then val {since_val.words()} while train {since_train.words()}",
            ]
        else:
            why.append(
                f"{rose}, but since then val {since_val.words()} and train {since_train.words()}"
            )
    # 2. train still falls while val stagnates, or the curves part.
    if not (train_t.falls() and train_t.fall >= th.train_fall_min):
        return False, why
    if gap_t is None or not gap_t.rises():
        return False, why
    if val_t.fall < th.val_share * train_t.fall:
        return True, [
            *why,
            f"val stagnates while train still falls (val falls by less than {pct(th.val_share)}"
            f" of train's {pct(train_t.fall)} fall, and the gap really grows)",
        ]
    if growth >= th.gap_growth:
        return True, [
            *why,
            f"the curves are no longer parallel: the gap grew {growth:.2f}x"
            f" (from {th.gap_growth:g}x)",
        ]
    return False, why


def overfit_test(
    epochs: list[int],
    val: list[float],
    train: list[float],
    train_eval: list[float],
    th: Rules,
) -> tuple[bool, list[str], dict[str, Any]]:
    """The overfitting test on a whole curve so far, as the analysis applies it to a run that
    finished: (is it overfitting, reasons, numbers). Not without both trends."""
    numbers: dict[str, Any] = {}
    if not epochs:
        return False, ["no epoch yet"], numbers
    r = read(epochs, val, train, train_eval, th)
    if r.val_t is None or r.train_t is None:
        return False, ["fewer than 3 positive losses: no trend"], numbers
    over, why = overfitting(epochs, val, r, th, numbers)
    return over, why, numbers


def patience(share: float, epochs: int) -> int:
    """Epochs in a row the overfitting test must hold before ``early_stop`` stops a run of
    ``epochs`` epochs so far: ``share`` of them, at least ``MIN_PATIENCE``. A share, not a
    count: a long run's best still creeps down for longer after the test first holds
    (``bench/early_stop_replay.py`` measures the trade-off)."""
    return max(MIN_PATIENCE, math.ceil(share * epochs))


def should_stop(held: Sequence[bool], share: float) -> bool:
    """``early_stop``: ``held[i]`` says whether the overfitting test held on the curve up to
    its epoch i + 1; stop when it held at each of the last ``patience`` epochs. It reads only
    the curve so far, so replaying a finished run epoch by epoch gives its stop exactly."""
    p = patience(share, len(held))
    return len(held) >= p and all(held[-p:])


def gap_words(ratios: list[float], epochs: list[int]) -> str:
    """``1.02x at epoch 20 -> 1.71x at epoch 40``: val / train where both are known."""
    pairs = [(e, r) for e, r in zip(epochs, ratios, strict=True) if math.isfinite(r)]
    if not pairs:
        return "unknown"
    (e0, g0), (e1, g1) = pairs[0], pairs[-1]
    return f"{g0:.2f}x at epoch {e0} -> {g1:.2f}x at epoch {e1}"


def signed(x: float) -> str:
    return f"{100 * x:+.1f}%" if math.isfinite(x) else "n/a"


def pct(x: float | None) -> str:
    return f"{100 * x:.1f}%" if x is not None and math.isfinite(x) else "n/a"
