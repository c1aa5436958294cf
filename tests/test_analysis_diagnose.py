"""The diagnosis on crafted curves: each verdict, and the edge cases (pure functions, no I/O)."""

from __future__ import annotations

import math
import random

import pytest
from analysis_helpers import epoch_losses

from analysis.diagnose import (
    Curves,
    SweepContext,
    Thresholds,
    diagnose,
    epoch_curves,
    generalisation_loss,
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
    v = judge_shape("overfitting", context=GOOD_CONTEXT)
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
    lenient = Thresholds(gl_max=50.0, val_stall=-1.0)
    assert diagnose(curves, FINISHED, TH, GOOD_CONTEXT).verdict == "overfitting"
    assert diagnose(curves, FINISHED, lenient, GOOD_CONTEXT).verdict != "overfitting"
    assert diagnose(curves, FINISHED, Thresholds(min_epochs=20)).verdict == "insufficient"


def test_curves_type_is_plain_data():
    c = Curves([1], [0.5], [0.6], [1.0], [])
    assert diagnose(c, FINISHED, TH).verdict == "insufficient"


def test_runs_stopped_early_say_so():
    train, val = epoch_losses("good", 2)
    v = diagnose(epoch_curves(*rows(train, val)), FINISHED, TH, stopped_early=True)
    assert v.verdict == "insufficient" and "stopped early after 2 epochs" in v.reasons[0]
    train, val = epoch_losses("good", 8)
    v = diagnose(epoch_curves(*rows(train, val)), FINISHED, TH, GOOD_CONTEXT, stopped_early=True)
    assert v.verdict == "good" and v.reasons[0].startswith("stopped early after 8 epochs")
