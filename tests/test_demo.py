"""`make demo` tells the truth: the smoke sweep run as the Makefile runs it, then the report, and
every run's verdict checked against its own raw curves (progress.jsonl) by a rule written here,
with its own numbers, independent of the analysis' thresholds."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from sweep_helpers import RUN_AGENT, env

from contract import metrics as m
from contract import runs

# The rule's numbers: what "clearly" means on these curves, not the analysis' thresholds.
CLEARLY_ABOVE = 1.10  # a validation loss this much above the run's best: it rose
STAYED = 2  # epochs after the best, all clearly above it: a rise that lasted, not one bump
STILL_FELL = 0.97  # the training loss at most this share of its value then: it kept falling
FLAT = 0.95  # both losses at least this share of their value half-way: no progress since
HIGH = 1.5  # a best validation loss this many times the sweep's best: a high plateau


def expected_verdicts(rows: list[dict], sweep_best: float) -> tuple[set[str], str]:
    """(verdicts a right judge may give, why) of a run that trained all its epochs, from its
    progress rows alone. Where the curves cannot tell (a rise in the last epoch only), either
    reading is right: a judge that says "too few epochs to tell" is not wrong, nor one that
    calls it."""
    val = [r[m.VAL_RECON] for r in rows]
    train_key = m.TRAIN_EVAL_RECON if all(m.TRAIN_EVAL_RECON in r for r in rows) else m.TRAIN_RECON
    train = [r[train_key] for r in rows]
    best = min(range(len(val)), key=val.__getitem__)
    after = val[best + 1 :]
    rose = bool(after) and val[-1] > CLEARLY_ABOVE * val[best]
    train_fell = train[-1] < STILL_FELL * train[best]
    if rose and train_fell:
        why = f"val ended {val[-1] / val[best]:.2f}x its best (epoch {best + 1}), train fell since"
        lasted = len(after) >= STAYED and all(v > CLEARLY_ABOVE * val[best] for v in after)
        return ({"overfitting"} if lasted else {"overfitting", "good"}), why
    half = len(val) // 2
    flat = val[-1] > FLAT * val[half - 1] and train[-1] > FLAT * train[half - 1]
    if flat and val[best] > HIGH * sweep_best:
        return {
            "underfitting"
        }, f"flat since epoch {half} at {val[best] / sweep_best:.2f}x the best"
    return {"good"}, f"val {val[0]:.4g} -> {val[-1]:.4g} (best {val[best]:.4g}, epoch {best + 1})"


@pytest.mark.slow
def test_make_demo_judges_every_run_right(tmp_path: Path) -> None:
    # What `make demo` runs, from a folder laid out like the repository's.
    (tmp_path / "sweeps").mkdir()
    shutil.copy(REPO / "sweeps" / "smoke.yaml", tmp_path / "sweeps" / "smoke.yaml")
    demo_env = env(tmp_path)
    # The defaults, as in the demo: storage outputs/sweeps.db, offline runs in outputs/wandb.
    del demo_env["SWEEPER_STORAGE"], demo_env["WANDB_DIR"]
    sweep = subprocess.run(
        [str(RUN_AGENT), "--local", "sweeps/smoke.yaml", "--agents", "2"],
        cwd=tmp_path,
        env=demo_env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    report = subprocess.run(
        [sys.executable, "-m", "analysis", "report", "outputs/wandb", "--out", "reports/smoke"],
        cwd=tmp_path,
        env=demo_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert report.returncode == 0, report.stdout + report.stderr
    rows = json.loads((tmp_path / "reports" / "smoke" / "verdicts.json").read_text())
    assert len(rows) == 10, "the smoke sweep's run_cap"

    curves = {
        r["run_id"]: runs.read_progress(tmp_path / "outputs" / "runs" / r["run_id"]) for r in rows
    }
    sweep_best = min(row[m.VAL_RECON] for rows_ in curves.values() for row in rows_)
    wrong = []
    for row in rows:
        progress = curves[row["run_id"]]
        max_epochs = row["config"]["max_epochs"]
        record = runs.read_exit(tmp_path / "outputs" / "runs" / row["run_id"])
        trained_all = len(progress) == max_epochs
        if trained_all:
            assert record.status == m.STATUS_FINISHED, (row["run_id"], record)
            expected, why = expected_verdicts(progress, sweep_best)
        else:
            assert record.status == m.STATUS_STOPPED, (row["run_id"], record)
            expected, why = {"pruned"}, f"stopped after {len(progress)} of {max_epochs} epochs"
        # A trial that trained every epoch and exited 0 is COMPLETE, whenever its stop came.
        assert row["engine_state"] == ("COMPLETE" if trained_all else "PRUNED"), row["run_id"]
        if row["verdict"] not in expected:
            wrong.append(
                f"{row['run_id']}: {row['verdict']} ({'; '.join(row['reasons'])}), "
                f"expected {' or '.join(sorted(expected))} ({why})"
            )
    assert not wrong, "\n".join(wrong)
