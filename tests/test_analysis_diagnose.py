"""The diagnosis on crafted curves: each verdict, and the edge cases (pure functions, no I/O)."""

from __future__ import annotations

import json
import math
import random

import pytest
from analysis_helpers import epoch_losses
from conftest import REPO

from analysis import judge
from analysis.diagnose import (
    BY_SWEEP,
    BY_USER,
    VERDICTS,
    Curves,
    References,
    Stop,
    SweepContext,
    Thresholds,
    diagnose,
    epoch_curves,
    kl_share,
    remedies,
    slow_epochs,
)
from analysis.records import (
    CRASHED,
    END_STEP,
    FAILED,
    FINISHED,
    PREEMPTED,
    RUNNING,
    RunRecord,
    merge,
)
from contract import metrics as M
from contract.errors import ConfigError
from contract.trends import generalisation_loss, trend

TH = Thresholds()


def rows(
    train: list[float], val: list[float], steps: int = 10, first_epoch: int = 1, noise: float = 0.0
):
    """Per-step train rows and per-epoch val rows as a run logs them (steps continue)."""
    rng = random.Random(0)
    train_rows, val_rows = [], []
    for e in range(first_epoch, len(val) + 1):
        for i in range(steps):
            step = (e - 1) * steps + i + 1
            value = train[e - 1] * (1 + 0.05 * (steps / 2 - i) / steps + rng.gauss(0, noise))
            train_rows.append({M.TRAIN_STEP: step, M.TRAIN_RECON: value})
        val_rows.append(
            {M.EPOCH: e, M.VAL_RECON: val[e - 1], M.TIME_PER_EPOCH: 1.0, END_STEP: e * steps}
        )
    return train_rows, val_rows


def judge_shape(shape: str, epochs: int = 12, context: SweepContext | None = None, seed: int = 0):
    train, val = epoch_losses(shape, epochs, seed)
    return diagnose(epoch_curves(*rows(train, val)), FINISHED, TH, context or SweepContext())


GOOD_CONTEXT = SweepContext(best=0.12, median=0.2, runs=5)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [("good", "good"), ("overfitting", "overfitting"), ("underfitting", "underfitting")],
)
def test_each_curve_shape_gets_its_verdict(shape, expected):
    verdict = judge_shape(shape, context=GOOD_CONTEXT)
    assert verdict.verdict == expected, verdict.reasons
    assert verdict.reasons and all(isinstance(r, str) and r for r in verdict.reasons)


def test_overfitting_reason_quotes_prechelt_gl():
    v = judge_shape("overfitting", epochs=20, context=GOOD_CONTEXT)
    assert v.verdict == "overfitting"
    assert v.numbers["gl"] >= TH.gl_max
    assert any("GL" in r and f"{v.numbers['gl']:.1f}%" in r for r in v.reasons)


def test_val_stagnating_while_train_falls_is_overfitting():
    train = [1.0 * 0.9**e for e in range(12)]
    val = [0.5] * 12
    assert diagnose(epoch_curves(*rows(train, val)), FINISHED, TH).verdict == "overfitting"


def test_underfitting_needs_a_high_loss_relative_to_the_sweep():
    # The same plateau is fine when it is the sweep's best, underfitting when others do far better.
    alone = judge_shape("underfitting", context=SweepContext(best=0.62, median=0.62, runs=1))
    assert alone.verdict == "good"
    assert judge_shape("underfitting", context=GOOD_CONTEXT).verdict == "underfitting"
    with_baseline = Thresholds(baseline=0.1)
    train, val = epoch_losses("underfitting", 12)
    v = diagnose(
        epoch_curves(*rows(train, val)), FINISHED, with_baseline, SweepContext(best=0.62, runs=1)
    )
    assert v.verdict == "underfitting" and any("baseline" in r for r in v.reasons)


def test_flat_curves_are_underfitting_only_when_high():
    assert judge_shape("flat", context=SweepContext(best=0.3, median=0.3, runs=3)).verdict == "good"
    assert (
        judge_shape("flat", context=SweepContext(best=0.1, median=0.31, runs=3)).verdict
        == "underfitting"
    )


@pytest.mark.parametrize("seed", range(5))
def test_noisy_but_healthy_curves_stay_good(seed):
    train, val = epoch_losses("noisy", 20, seed)
    v = diagnose(epoch_curves(*rows(train, val, noise=0.05)), FINISHED, TH, GOOD_CONTEXT)
    assert v.verdict == "good", v.reasons


def test_nan_in_train_steps_is_diverged_even_when_the_run_failed():
    train, val = epoch_losses("good", 6)
    t_rows, v_rows = rows(train, val)
    t_rows[25][M.TRAIN_RECON] = math.nan
    v = diagnose(epoch_curves(t_rows, v_rows), FAILED, TH, exit_code=3)
    assert v.verdict == "diverged"
    assert any("step 26" in r for r in v.reasons)


def test_inf_in_val_and_exploding_loss_are_diverged():
    train, val = epoch_losses("good", 6)
    val[4] = math.inf
    assert diagnose(epoch_curves(*rows(train, val)), FINISHED, TH).verdict == "diverged"
    train, val = epoch_losses("good", 6)
    val[-1] = val[0] * 20
    v = diagnose(epoch_curves(*rows(train, val)), FINISHED, TH)
    assert v.verdict == "diverged" and any("exploded" in r for r in v.reasons)


def test_a_run_that_says_it_diverged_is_diverged():
    train, val = epoch_losses("good", 6)
    v = diagnose(epoch_curves(*rows(train, val)), FAILED, TH, flagged_diverged=True)
    assert v.verdict == "diverged"


def test_single_epoch_is_insufficient():
    train, val = epoch_losses("good", 1)
    v = diagnose(epoch_curves(*rows(train, val)), FINISHED, TH)
    assert v.verdict == "insufficient" and "1 validated epoch" in v.reasons[0]


def test_no_history_at_all():
    assert diagnose(epoch_curves([], []), FINISHED, TH).verdict == "insufficient"
    assert diagnose(epoch_curves([], []), CRASHED, TH).verdict == "crashed"


@pytest.mark.parametrize(
    ("state", "exit_code", "verdict", "words"),
    [
        (CRASHED, None, "crashed", "without an exit record"),
        (FAILED, 1, "crashed", "status 1"),
        (PREEMPTED, 75, "crashed", "preempted"),
        (RUNNING, None, "insufficient", "still being written"),
    ],
)
def test_unfinished_runs(state, exit_code, verdict, words):
    train, val = epoch_losses("good", 8)
    v = diagnose(epoch_curves(*rows(train, val)), state, TH, exit_code=exit_code)
    assert v.verdict == verdict and words in v.reasons[0]


def test_train_loss_is_averaged_per_epoch_using_end_steps():
    t_rows = [{M.TRAIN_STEP: s, M.TRAIN_RECON: float(s)} for s in range(1, 8)]
    # Epoch 1 ended after step 3, epoch 2 after step 7 (a shorter last batch count is fine).
    v_rows = [
        {M.EPOCH: 1, M.VAL_RECON: 1.0, END_STEP: 3},
        {M.EPOCH: 2, M.VAL_RECON: 1.0, END_STEP: 7},
    ]
    assert epoch_curves(t_rows, v_rows).train == [2.0, 5.5]
    # Without end steps the steps are split evenly over the epochs.
    for r in v_rows:
        del r[END_STEP]
    t_rows = t_rows[:6]
    assert epoch_curves(t_rows, v_rows).train == [2.0, 5.0]


def test_resumed_run_merges_duplicated_steps_and_epochs():
    train, val = epoch_losses("good", 10)
    t1, v1 = rows(train[:5], val[:5])
    # Preempted mid-epoch 6: steps 51-55 logged, then redone after resuming from epoch 5.
    t1 += [{M.TRAIN_STEP: s, M.TRAIN_RECON: 99.0} for s in range(51, 56)]
    t2, v2 = rows(train, val, first_epoch=6)
    first = RunRecord("abc", state=PREEMPTED, exit_code=75, train=t1, val=v1, sources=["a"])
    second = RunRecord("abc", state=FINISHED, exit_code=0, train=t2, val=v2, sources=["b"])
    run = merge([first, second])
    assert run.state == FINISHED and run.epochs == 10
    assert [r[M.TRAIN_STEP] for r in run.train] == list(range(1, 101))
    assert all(r[M.TRAIN_RECON] != 99.0 for r in run.train)
    curves = epoch_curves(run.train, run.val)
    assert curves.epochs == list(range(1, 11))
    assert diagnose(curves, run.state, TH, GOOD_CONTEXT).verdict == "good"


def test_generalisation_loss_is_prechelts():
    assert generalisation_loss([1.0, 0.5, 0.55]) == pytest.approx(10.0)
    assert generalisation_loss([1.0, 0.5]) == 0.0


def test_slow_epochs_flags_jumps_above_the_median():
    times = [1.0, 1.1, 0.9, 3.5, 1.0]
    flagged = slow_epochs([1, 2, 3, 4, 5], times, TH)
    assert [s["epoch"] for s in flagged] == [4]
    assert flagged[0]["x_median"] == pytest.approx(3.5)
    assert slow_epochs([1, 2], [1.0, 9.0], TH) == []


def test_remedies_state_the_runs_actual_values():
    over = remedies("overfitting", {"kl_weight": 1e-6, "augment": False}, {})
    assert over == [
        "raise kl_weight from 1e-06 to 1e-05 (more regularisation)",
        "turn augment on (it is off)",
    ]
    under = remedies("underfitting", {"channels": [8, 16], "num_res_blocks": 1}, {})
    assert under == [
        "widen channels from [8, 16] to [16, 32] (more capacity)",
        "raise num_res_blocks from 1 to 2",
    ]
    assert "lower lr from 0.01 to 0.001" in remedies("diverged", {"lr": 0.01}, {})


def test_thresholds_change_the_verdict():
    train, val = epoch_losses("overfitting", 12)
    curves = epoch_curves(*rows(train, val))
    lenient = Thresholds(train_fall_min=0.9)
    assert diagnose(curves, FINISHED, TH, GOOD_CONTEXT).verdict == "overfitting"
    assert diagnose(curves, FINISHED, lenient, GOOD_CONTEXT).verdict != "overfitting"
    assert diagnose(curves, FINISHED, Thresholds(min_epochs=20)).verdict == "insufficient"


def test_curves_type_is_plain_data():
    c = Curves([1], [0.5], [0.6], [1.0], [])
    assert diagnose(c, FINISHED, TH).verdict == "insufficient"


# --- whole-curve rules, per-run references, KL-aware remedies, pruned (per-epoch curves) -------


def wiggle(n: int, amplitude: float, seed: int = 0) -> list[float]:
    """Multiplicative epoch-to-epoch noise, 1 +- amplitude (reproducible)."""
    rng = random.Random(seed)
    return [1 + rng.uniform(-amplitude, amplitude) for _ in range(n)]


def curves_of(train, val, kl=None, total=None) -> Curves:
    n = len(val)
    return Curves(
        list(range(1, n + 1)), list(train), list(val), [1.0] * n, [], kl or [], total or []
    )


def plateau(n: int, level: float, start: float, tau: float = 3.0) -> list[float]:
    return [level + (start - level) * math.exp(-e / tau) for e in range(1, n + 1)]


def test_trend_compares_the_change_with_its_own_uncertainty():
    flat = [0.5 * w for w in wiggle(40, 0.03)]
    t = trend(list(range(40)), flat, 2.0)
    assert not t.real and abs(t.change) < 0.05

    # The same 10% fall under the same +-8% epoch noise: too few epochs to tell over 8, real
    # over 100 (the change's uncertainty shrinks as epochs accumulate; one epoch's noise does not).
    def drift(n: int) -> list[float]:
        return [0.5 * (1 - 0.1 * e / (n - 1)) * w for e, w in enumerate(wiggle(n, 0.08, 7))]

    short, long = trend(list(range(8)), drift(8), 2.0), trend(list(range(100)), drift(100), 2.0)
    assert not short.real and long.real and long.falls()
    assert long.change == pytest.approx(-0.1, abs=0.03)
    assert "within the noise" in short.words() and ": real)" in long.words()
    # An exact exponential decay: the change is exact, its uncertainty zero.
    exact = trend(list(range(10, 16)), [0.9**e for e in range(10, 16)], 2.0)
    assert exact.change == pytest.approx(0.9**5 - 1) and exact.log_se == pytest.approx(0.0)
    assert exact.real and exact.fall_at_most() == pytest.approx(exact.fall)
    # Under 4 points no error can be estimated: nothing is real.
    few = trend([1, 2, 3], [1.0, 0.5, 0.25], 2.0)
    assert few.change == pytest.approx(-0.75) and not few.real
    assert "too few epochs to tell" in few.words()
    assert trend([1, 2], [1.0, 0.5], 2.0) is None


def test_autocorrelated_residuals_widen_the_uncertainty():
    # A slow wave around a slight fall: its residuals are correlated from epoch to epoch, so 40
    # epochs carry far less evidence than 40 independent ones.
    n = 40
    wave = [0.5 * (1 - 0.002 * e) * (1 + 0.03 * math.sin(e / 4)) for e in range(n)]
    t = trend(list(range(n)), wave, 2.0)
    res_sd = math.log1p(t.noise)
    iid_se = res_sd / math.sqrt(sum((e - (n - 1) / 2) ** 2 for e in range(n))) * (n - 1)
    assert t.log_se > 2 * iid_se and not t.real


def test_val_flat_for_the_second_half_while_train_halves_is_overfitting():
    # Val flat from epoch 50 to 100 but wiggling down 4% over its last 5 epochs; train halves.
    n = 100
    train = [0.3 * math.exp(-e / 40) + 0.05 for e in range(1, n + 1)]
    val = [v * w for v, w in zip(plateau(n, 0.2, 0.5, 10), wiggle(n, 0.02), strict=True)]
    val[-5:] = [val[-6] * (1 - 0.01 * i) for i in range(1, 6)]
    v = diagnose(curves_of(train, val), FINISHED, TH)
    assert v.verdict == "overfitting", v.reasons
    assert v.numbers["gap_growth"] >= TH.gap_growth and v.numbers["tail_from"] == 50
    assert any("val stagnates" in r for r in v.reasons)
    # Read over a 5-epoch tail, the same run looked good: val still fell there.
    assert diagnose(curves_of(train, val), FINISHED, Thresholds(tail=0.05)).verdict != "overfitting"


def test_train_wiggling_on_a_high_plateau_with_a_dominant_kl_is_underfitting():
    # kl_weight = 1: both curves plateau near the trivial reconstruction, train wiggles by 2%.
    n = 40
    train = [t * w for t, w in zip(plateau(n, 0.16, 0.4), wiggle(n, 0.01, 1), strict=True)]
    train[-3:] = [x * 0.98 for x in train[-3:]]
    val = [t * w for t, w in zip(plateau(n, 0.155, 0.25), wiggle(n, 0.01, 2), strict=True)]
    kl = [0.5 * math.exp(-e / 8) for e in range(1, n + 1)]
    total = [t + k for t, k in zip(train, kl, strict=True)]
    refs = References(init_val=0.6, trivial_val=0.166, kl_weight=1.0)
    v = diagnose(curves_of(train, val, kl, total), FINISHED, TH, refs=refs)
    assert v.verdict == "underfitting", v.reasons
    assert v.numbers["cause"] == "kl" and v.numbers["kl_share"] >= TH.kl_share_max
    assert any("trivial reconstruction" in r for r in v.reasons)
    fix = remedies(v.verdict, {"kl_weight": 1.0, "channels": [8, 16]}, v.numbers)
    assert fix == [
        f"lower kl_weight from 1 to 0.01: the KL term is {100 * v.numbers['kl_share']:.1f}% of the"
        " loss on average and keeps the latent nearly empty"
    ]


@pytest.mark.parametrize(("kl_end", "verdict"), [(0.9, "underfitting"), (1.1, "good")])
def test_a_collapsed_latent_is_underfitting_even_without_references(kl_end, verdict):
    # kl_weight 0.01: a small share of the loss, but the KL term squeezed the latent to under a
    # nat an image, so the decoder cannot see its input. No references, no siblings.
    n = 40
    val = [v * w for v, w in zip(plateau(n, 0.15, 0.3), wiggle(n, 0.01, 3), strict=True)]
    train = [v * w for v, w in zip(plateau(n, 0.155, 0.35), wiggle(n, 0.01, 4), strict=True)]
    kl = [kl_end + 9 * math.exp(-e / 4) for e in range(1, n + 1)]
    total = [t + 0.01 * k for t, k in zip(train, kl, strict=True)]
    v = diagnose(curves_of(train, val, kl, total), FINISHED, TH, refs=References(kl_weight=0.01))
    assert v.verdict == verdict, v.reasons
    assert v.numbers["kl_share"] < TH.kl_share_max
    if verdict == "underfitting":
        assert v.numbers["cause"] == "kl" and any("posterior collapse" in r for r in v.reasons)
        assert remedies(verdict, {"kl_weight": 0.01}, v.numbers)[0].startswith(
            "lower kl_weight from 0.01 to 0.0001"
        )


def test_kl_share_and_the_per_epoch_kl_and_total():
    t_rows = [
        {M.TRAIN_STEP: s, M.TRAIN_RECON: 0.1, M.TRAIN_KL: 2.0 * s, M.TRAIN_LOSS: 0.2}
        for s in range(1, 5)
    ]
    v_rows = [
        {M.EPOCH: 1, M.VAL_RECON: 0.1, END_STEP: 2},
        {M.EPOCH: 2, M.VAL_RECON: 0.1, END_STEP: 4},
    ]
    c = epoch_curves(t_rows, v_rows)
    assert c.kl == [3.0, 7.0] and c.total == [0.2, 0.2]
    assert kl_share(c, 0.01) == pytest.approx((0.03 / 0.2 + 0.07 / 0.2) / 2)
    assert math.isnan(kl_share(c, None))
    # Rows without the KL keys (an older trainer): no share, nothing breaks.
    bare = epoch_curves([{M.TRAIN_STEP: 1, M.TRAIN_RECON: 0.1}], v_rows[:1])
    assert math.isnan(kl_share(bare, 1.0))


@pytest.mark.parametrize(("best", "verdict"), [(0.88 * 0.2, "good"), (0.92 * 0.2, "underfitting")])
def test_near_the_trivial_reconstruction_is_underfitting_even_alone(best, verdict):
    # A single run, no sibling: its plateau is judged against its own trivial reconstruction.
    n = 30
    val = [v * w for v, w in zip(plateau(n, best, 0.5), wiggle(n, 0.005), strict=True)]
    train = [0.97 * v for v in plateau(n, best, 0.5)]
    refs = References(init_val=0.6, trivial_val=0.2, kl_weight=1e-6)
    v = diagnose(curves_of(train, val), FINISHED, TH, refs=refs)
    assert v.verdict == verdict, v.reasons
    assert v.numbers["vs_trivial"] == pytest.approx(min(val) / 0.2)
    if verdict == "underfitting":
        assert v.numbers["cause"] == "capacity"
        assert remedies(verdict, {"channels": [8, 16], "num_res_blocks": 1, "kl_weight": 1e-6},
                        v.numbers) == ["widen channels from [8, 16] to [16, 32] (more capacity)",
                                       "raise num_res_blocks from 1 to 2"]  # fmt: skip


@pytest.mark.parametrize(("progress", "verdict"), [(0.3, "underfitting"), (0.55, "good")])
def test_little_progress_from_the_start_is_underfitting(progress, verdict):
    # A low-lr run: val falls fast at first, then crawls (under 10% over its second half).
    n = 30
    init = 0.7
    end = init * (1 - progress)
    val = plateau(n, end, init, 4.0)
    train = [0.95 * v for v in val]
    v = diagnose(curves_of(train, val), FINISHED, TH, refs=References(init_val=init))
    assert v.verdict == verdict, v.reasons
    if verdict == "underfitting":
        assert v.numbers["cause"] == "slow" and any("falls very slowly" in r for r in v.reasons)
        fix = remedies(verdict, {"lr": 1e-6, "kl_weight": 1e-6, "max_epochs": 30}, v.numbers)
        assert fix == ["raise lr from 1e-06 to 1e-05 (the loss falls too slowly)",
                       "or raise max_epochs from 30 to 60"]  # fmt: skip


def test_a_high_run_still_falling_fast_is_good_and_wants_more_epochs():
    # The same little progress, but the curves still fall steadily (linear from the start:
    # about 29% over the second half): not "very slowly", so not underfitting.
    n, init = 30, 0.7
    val = [init - 0.315 * e / n for e in range(1, n + 1)]
    train = [0.95 * v for v in val]
    refs = References(init_val=init, trivial_val=0.2)
    v = diagnose(curves_of(train, val), FINISHED, TH, refs=refs)
    assert v.verdict == "good", v.reasons
    assert v.numbers["high"] and v.numbers["still_improving"]
    assert any("still falling fast" in r and "train longer" in r for r in v.reasons)
    fix = remedies("good", {"lr": 1e-5, "kl_weight": 1e-6, "max_epochs": 30}, v.numbers)
    assert fix == ["still improving: raise max_epochs from 30 to 60",
                   "it is still high, 45.0% below its start: or raise lr from 1e-05 to 0.0001"]  # fmt: skip


def test_runs_without_references_fall_back_to_the_sweep_and_say_so():
    train, val = epoch_losses("underfitting", 12)
    v = diagnose(epoch_curves(*rows(train, val)), FINISHED, TH, GOOD_CONTEXT)
    assert v.verdict == "underfitting" and not v.numbers["own_references"]
    assert any("judged against the sweep's runs" in r for r in v.reasons)
    # With its own references the sweep's better runs are still evidence of "high".
    refs = References(init_val=2.0, trivial_val=1.0)
    v = diagnose(epoch_curves(*rows(train, val)), FINISHED, TH, GOOD_CONTEXT, refs=refs)
    assert v.verdict == "underfitting" and v.numbers["vs_sweep_best"] > TH.high_vs_best
    assert any("the sweep's best on the same data" in r for r in v.reasons)
    # Alone, its references do not call its plateau high.
    alone = diagnose(epoch_curves(*rows(train, val)), FINISHED, TH, refs=refs)
    assert alone.verdict == "good", alone.reasons


@pytest.mark.parametrize(("fall", "verdict"), [(0.08, "good"), (0.12, "overfitting")])
def test_train_must_fall_by_train_fall_min_for_overfitting(fall, verdict):
    # Val flat (stagnates) while train falls over the second half: by how much decides.
    n = 40
    train = [0.2 * (1 - fall * max(0, e - 20) / 20) for e in range(1, n + 1)]
    val = [0.21] * n
    v = diagnose(curves_of(train, val), FINISHED, Thresholds(gap_growth=10.0))
    assert v.verdict == verdict, v.reasons


@pytest.mark.parametrize(("growth_limit", "verdict"), [(1.25, "overfitting"), (3.0, "good")])
def test_curves_no_longer_parallel_is_overfitting(growth_limit, verdict):
    # Val still falls, at half train's pace, but the gap grows from 1.0x to about 1.7x.
    n = 40
    train = [0.2 * math.exp(-0.05 * e) for e in range(n)]
    val = [0.2 * math.exp(-0.025 * e) for e in range(n)]
    v = diagnose(curves_of(train, val), FINISHED, Thresholds(gap_growth=growth_limit))
    assert v.verdict == verdict, v.reasons
    assert v.numbers["gap_growth"] == pytest.approx(math.exp(0.025 * 20), rel=1e-6)


def test_pruned_runs_are_pruned_and_their_reasons_read_the_curve():
    stop = Stop(BY_SWEEP, "pruned by the local engine's early termination after 8 of 50 epochs")
    train, val = epoch_losses("good", 8)
    v = diagnose(epoch_curves(*rows(train, val)), FINISHED, TH, GOOD_CONTEXT, stop=stop)
    assert v.verdict == "pruned" and v.reasons[0] == stop.why
    assert (
        v.reasons[1] == "its curve so far reads as good" and v.numbers["curve_reads_as"] == "good"
    )
    config = {"max_epochs": 50, "kl_weight": 1e-6, "lr": 1e-3}
    assert not any("max_epochs" in r for r in remedies("pruned", config, v.numbers))
    # Pruned after 2 epochs, or killed after the SIGTERM (no exit record): still pruned.
    short = diagnose(epoch_curves(*rows(train[:2], val[:2])), FINISHED, TH, stop=stop)
    assert short.verdict == "pruned" and "too few to read a trend" in short.reasons[1]
    assert diagnose(epoch_curves(*rows(train, val)), CRASHED, TH, stop=stop).verdict == "pruned"
    assert "pruned" in VERDICTS


def test_runs_a_user_stopped_are_judged_by_their_curve():
    stop = Stop(BY_USER, "stopped by SIGTERM after 8 of 50 epochs, in no sweep: stopped by a user")
    train, val = epoch_losses("good", 8)
    v = diagnose(epoch_curves(*rows(train, val)), FINISHED, TH, GOOD_CONTEXT, stop=stop)
    assert v.verdict == "good" and v.reasons[0] == stop.why and v.numbers["still_improving"]
    assert remedies("good", {"max_epochs": 50}, v.numbers) == []
    short = diagnose(epoch_curves(*rows(train[:2], val[:2])), FINISHED, TH, stop=stop)
    assert short.verdict == "insufficient" and short.reasons[0] == stop.why
    assert remedies("insufficient", {"max_epochs": 2}, short.numbers) == []


@pytest.mark.parametrize("kl_dominates", [True, False])
@pytest.mark.parametrize("cause", ["kl", "slow", "capacity"])
def test_no_remedy_pushes_kl_weight_the_wrong_way(kl_dominates, cause):
    config = {"kl_weight": 0.5, "lr": 1e-3, "channels": [8], "num_res_blocks": 1, "augment": True}
    numbers = {"kl_dominates": kl_dominates, "kl_share": 0.6, "cause": cause}
    under = " ".join(remedies("underfitting", config, numbers))
    over = " ".join(remedies("overfitting", config, numbers))
    assert "raise kl_weight" not in under and "lower kl_weight" not in over
    assert ("lower kl_weight from 0.5 to 0.005" in under) == (cause == "kl")


def test_thresholds_are_checked():
    with pytest.raises(ConfigError):
        Thresholds(tail=0.0)
    with pytest.raises(ConfigError):
        Thresholds(near_trivial=1.5)
    with pytest.raises(ConfigError):
        Thresholds(trend_z=-1.0)


# --- judge: who stopped a run, references from the summary, siblings on the same data ----------


def finished_run(run_id: str, shape: str, **kw) -> RunRecord:
    train, val = epoch_losses(shape, 12)
    t_rows, v_rows = rows(train, val)
    config = {"max_epochs": 12, "kl_weight": 1e-6, **kw.pop("config", {})}
    return RunRecord(run_id, state=FINISHED, exit_code=0, train=t_rows, val=v_rows,
                     config=config, **kw)  # fmt: skip


def stopped(**kw) -> dict:
    return {M.SUMMARY_STATUS: M.STATUS_STOPPED, **kw}


@pytest.mark.parametrize(
    ("fields", "by"),
    [
        ({"engine_state": "PRUNED"}, BY_SWEEP),
        ({"engine_state": "PRUNED", "summary": {}}, BY_SWEEP),
        ({"summary": stopped(), "sweep_id": "abcd1234"}, BY_SWEEP),
        ({"summary": stopped(), "sweep_id": "abcd1234", "engine_state": "COMPLETE"}, BY_USER),
        ({"summary": stopped()}, BY_USER),
        ({"summary": {M.SUMMARY_STATUS: M.STATUS_FINISHED}, "sweep_id": "abcd1234"}, None),
    ],
)
def test_who_stopped_a_run(fields, by):
    run = RunRecord("r1", config={"max_epochs": 50}, **fields)
    stop = judge.stop_of(run, 6)
    assert (stop.by if stop else None) == by
    if stop:
        assert "after 6 of 50 epochs" in stop.why
    # Stopped after its last epoch: nothing was cut short.
    assert judge.stop_of(RunRecord("r2", config={"max_epochs": 6}, summary=stopped(),
                                   sweep_id="abcd1234"), 6) is None  # fmt: skip


def test_judge_counts_pruned_runs_apart_and_reads_references_from_the_summary():
    refs = {M.SUMMARY_INIT_VAL_RECON: 0.7, M.SUMMARY_TRIVIAL_VAL_RECON: 0.5}
    runs = [
        finished_run("good", "good", summary=dict(refs)),
        finished_run("pruned", "good", engine_state="PRUNED", summary=stopped(**refs)),
        # Alone in a sweep of one, its plateau is still high against its own references.
        finished_run("under", "underfitting", summary=dict(refs)),
    ]
    rows_by_id = {j.row["run_id"]: j.row for j in judge.judge(runs, TH)}
    assert {k: r["verdict"] for k, r in rows_by_id.items()} == {
        "good": "good", "pruned": "pruned", "under": "underfitting"}  # fmt: skip
    assert rows_by_id["under"]["numbers"]["vs_trivial"] == pytest.approx(0.62 / 0.5, rel=1e-3)
    only = judge.judge([finished_run("under", "underfitting", summary=dict(refs))], TH)
    assert only[0].row["verdict"] == "underfitting"


def test_siblings_count_only_on_the_same_data():
    # Without references, a run is high only against runs on the same data and loss.
    mni = {"data_source": "mni152"}
    runs = [
        finished_run("a", "underfitting"),
        finished_run("b", "good", config=mni),
        finished_run("c", "good", config=mni),
    ]
    verdicts = {j.row["run_id"]: j.row["verdict"] for j in judge.judge(runs, TH)}
    assert verdicts == {"a": "good", "b": "good", "c": "good"}
    runs.append(finished_run("d", "good"))
    verdicts = {j.row["run_id"]: j.row["verdict"] for j in judge.judge(runs, TH)}
    assert verdicts["a"] == "underfitting"


# --- real trainer runs ----------------------------------------------------------------------
# Per-epoch curves of real runs of `python -m trainer` (W&B offline, read back with W&B's
# reader; train/* are the per-epoch means of the per-step rows), each with the construction
# that gives its regime ("why"): too few images for the model (overfitting), lr 1e-6 to 1e-5
# or kl_weight 0.01 to 1 (underfitting), a small model on enough data (good), and the trials
# of a local smoke sweep that Hyperband stopped (pruned, with the engine's PRUNED state).
# Some were logged before the trainer recorded its references: the fallback path.
REAL = json.loads((REPO / "tests" / "data" / "verdicts" / "real_runs.json").read_text())["runs"]


def real_record(r: dict, engine: bool = True) -> RunRecord:
    # One train row per epoch carrying that epoch's means gives epoch_curves the same curves.
    epochs = r["epochs"]
    train = [
        {M.TRAIN_STEP: e, M.TRAIN_RECON: t, M.TRAIN_KL: k, M.TRAIN_LOSS: total}
        for e, t, k, total in zip(epochs, r["train"], r["kl"], r["total"], strict=True)
    ]
    val = [{M.EPOCH: e, M.VAL_RECON: v, END_STEP: e} for e, v in zip(epochs, r["val"], strict=True)]
    return RunRecord(r["run_id"], sweep_id=r["sweep_id"], state=r["state"],
                     exit_code=r["exit_code"], config=r["config"], summary=r["summary"],
                     train=train, val=val, engine_state=r["engine_state"] if engine else None)  # fmt: skip


def verdicts_of(runs: list[RunRecord]) -> dict[str, str]:
    return {j.row["run_id"]: j.row["verdict"] for j in judge.judge(runs, TH)}


def test_real_runs_get_their_regime_together_by_regime_and_alone():
    want = {r["run_id"]: r["regime"] for r in REAL}
    assert set(want.values()) == {"good", "overfitting", "underfitting", "pruned"}
    assert verdicts_of([real_record(r) for r in REAL]) == want
    for regime in set(want.values()):
        only = [real_record(r) for r in REAL if r["regime"] == regime]
        assert verdicts_of(only) == {r.run_id: regime for r in only}
    # Alone, with its own references (or a collapsed latent), every run still gets its regime.
    for r in REAL:
        if r["summary"].get(M.SUMMARY_TRIVIAL_VAL_RECON) or r["regime"] != "underfitting":
            assert verdicts_of([real_record(r)]) == {r["run_id"]: r["regime"]}, r["why"]


def test_real_pruned_runs_without_the_engine_state_are_pruned_by_their_sigterm():
    # As on W&B: a sweep run with summary status=stopped before max_epochs.
    runs = [real_record(r, engine=False) for r in REAL if r["regime"] == "pruned"]
    rows = [j.row for j in judge.judge(runs, TH)]
    assert {r["verdict"] for r in rows} == {"pruned"}
    assert all("SIGTERM" in r["reasons"][0] and not r["remedies"] for r in rows)


def test_real_runs_remedies_push_kl_weight_the_right_way():
    for j in judge.judge([real_record(r) for r in REAL], TH):
        said = " ".join(j.row["remedies"])
        if j.row["verdict"] == "underfitting":
            assert "raise kl_weight" not in said
            assert ("lower kl_weight" in said) == (j.row["config"]["kl_weight"] >= 0.01), said
        if j.row["verdict"] == "overfitting":
            assert "lower kl_weight" not in said
        if j.row["verdict"] == "pruned":
            assert "max_epochs" not in said


# --- the guide's definitions on the kinds of run that were judged wrong -----------------------


def test_a_short_run_whose_val_ends_at_its_best_below_train_is_not_overfitting():
    # The smoke sweep's 8 epochs: val below train every epoch, a one-epoch bump, and its best
    # at the last epoch; over the second half it fell about 24%.
    train = [0.40, 0.25, 0.19, 0.16, 0.145, 0.135, 0.128, 0.122]
    val = [0.30, 0.18, 0.14, 0.122, 0.105, 0.111, 0.098, 0.0932]
    v = diagnose(curves_of(train, val), FINISHED, TH, refs=References(0.6, 0.3, 1e-6))
    assert v.verdict == "good", v.reasons
    assert v.numbers["val_at_best"] and v.numbers["val_below_train"]
    assert v.numbers["val_change"] == pytest.approx(-0.24, abs=0.04)


def test_a_long_noisy_run_that_rose_above_its_best_while_train_fell_is_overfitting():
    # Batch 1, 60 epochs: +-7.8% epoch noise. Val's level bottoms out at epoch 25, then rises
    # about 15%; train falls on (16% over the second half). One epoch's noise would hide it.
    rng = random.Random(3)
    n = 60
    level = [0.1 * (1 + 2 * math.exp(-e / 5)) if e <= 25 else 0.1 * (1 + 2 * math.exp(-5))
             * (1 + 0.15 * (e - 25) / 35) for e in range(1, n + 1)]  # fmt: skip
    val = [x * (1 + rng.gauss(0, 0.078)) for x in level]
    train = [0.12 * math.exp(-0.006 * e) * (1 + rng.gauss(0, 0.02)) for e in range(1, n + 1)]
    v = diagnose(curves_of(train, val), FINISHED, TH, refs=References(0.6, 0.3, 0.0))
    assert v.verdict == "overfitting", v.reasons
    assert v.numbers["gl"] >= TH.gl_max
    assert any("best of the run" in r for r in v.reasons)
    assert any("since then val rose" in r for r in v.reasons)


def test_still_falling_fast_near_the_mean_image_is_good_not_underfitting():
    # Registered images: the mean image is a strong reconstruction. Val at 0.93x its loss, but
    # both curves fell about 20% over the second half: it wants more epochs.
    n = 12
    val = [0.2 * math.exp(-0.035 * e) for e in range(1, n + 1)]
    train = [0.22 * math.exp(-0.042 * e) for e in range(1, n + 1)]
    trivial = min(val) / 0.93
    v = diagnose(curves_of(train, val), FINISHED, TH, refs=References(0.5, trivial, 1e-6))
    assert v.verdict == "good", v.reasons
    assert v.numbers["high"] and v.numbers["still_improving"]
    fix = remedies("good", {"lr": 1e-3, "max_epochs": 12, "kl_weight": 1e-6}, v.numbers)
    assert fix == ["still improving: raise max_epochs from 12 to 24"]


def test_a_plateau_far_above_the_sweeps_best_is_underfitting_with_the_capacity_remedy():
    # Both curves flatten (about 6% over the second half of 80 epochs) at 2.6x the best val of
    # a wider model on the same data, while beating the mean image (0.84x) and its start.
    n = 80
    val = plateau(n, 0.26, 0.6, 12.0)
    train = [1.02 * x for x in plateau(n, 0.255, 0.62, 12.0)]
    best = min(val)
    refs = References(init_val=0.7, trivial_val=best / 0.84, kl_weight=1e-6)
    sweep = SweepContext(best=best / 2.6, median=best / 1.3, runs=2)
    config = {"channels": [1, 1, 1], "num_res_blocks": 1, "kl_weight": 1e-6, "lr": 1e-3}
    v = diagnose(curves_of(train, val), FINISHED, TH, sweep, refs=refs)
    assert v.verdict == "underfitting", v.reasons
    assert v.numbers["cause"] == "capacity"
    assert remedies(v.verdict, config, v.numbers) == [
        "widen channels from [1, 1, 1] to [2, 2, 2] (more capacity)",
        "raise num_res_blocks from 1 to 2",
    ]
    # Alone, nothing says its plateau is high; a baseline at the sibling's level does.
    assert diagnose(curves_of(train, val), FINISHED, TH, refs=refs).verdict == "good"
    with_baseline = Thresholds(baseline=best / 2.6)
    assert diagnose(curves_of(train, val), FINISHED, with_baseline, refs=refs).verdict == (
        "underfitting"
    )


def test_the_true_gap_is_read_on_train_eval_where_the_run_logged_it():
    # Per-step train means sit above val (a moving model, augmented batches); the same images
    # scored as validation is fall far below it: the curves part.
    n = 40
    val = plateau(n, 0.2, 0.5, 5.0)
    train = [1.3 * x for x in val]
    evals = [x * math.exp(-0.02 * e) for e, x in enumerate(val)]
    without = curves_of(train, val)
    with_eval = Curves(without.epochs, train, val, without.times, [], train_eval=evals)
    v = diagnose(with_eval, FINISHED, TH, refs=References(0.6, 0.4, 1e-6))
    assert v.verdict == "overfitting" and v.numbers["true_gap"], v.reasons
    assert any(M.TRAIN_EVAL_RECON in r for r in v.reasons)
    fallback = diagnose(without, FINISHED, TH, refs=References(0.6, 0.4, 1e-6))
    assert fallback.verdict == "good" and not fallback.numbers["true_gap"]
    assert any("epoch means" in r for r in fallback.reasons)


def test_a_hyperband_rung_of_three_epochs_is_too_few_to_tell():
    stop = Stop(BY_SWEEP, "pruned by the local engine's early termination after 3 of 8 epochs")
    train, val = [0.4, 0.3, 0.25], [0.35, 0.27, 0.24]
    v = diagnose(curves_of(train, val), FINISHED, TH, stop=stop, refs=References(0.5, 0.2, 1e-6))
    assert v.verdict == "pruned" and v.numbers["curve_reads_as"] == "good"
    assert any("too few epochs to tell" in r for r in v.reasons), v.reasons
    # Finished after 3 epochs, high and with no trend to read: not underfitting on that alone.
    high = diagnose(curves_of(train, val), FINISHED, TH, refs=References(0.4, 0.1, 1e-6))
    assert high.verdict == "good" and high.numbers["high"], high.reasons
    assert any("too few epochs to tell whether val has plateaued" in r for r in high.reasons)
