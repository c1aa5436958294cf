"""Verdicts on real runs whose regime is known by construction (``tests/corpus.py``).

The committed corpora hold real trainer runs read back by W&B's reader: each test judges a set
of them with the analysis and asserts the full confusion matrix (expected regime x verdict) is
diagonal, on each corpus, on one-regime subsets and on every run alone, so that no verdict
depends on having better or worse siblings. The last test trains a few tiny runs now and reads
them through ``python -m analysis report``.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from conftest import PYTHON, offline_env
from corpus import CORPORA, REGIMES, Entry, load, matrix
from trainer_helpers import TRAIN_TIMEOUT

from analysis.diagnose import Thresholds
from analysis.judge import judge
from analysis.offline import read_folder
from contract import metrics as M

ENTRIES = {name: load(name) for name in CORPORA}
CAPACITY = "underfitting-capacity"
KL_CHANGE = re.compile(r"kl_weight from ([-+0-9.e]+) to ([-+0-9.e]+)")


def verdicts(entries: list[Entry]) -> dict[str, dict]:
    """Each run's result row when exactly these runs are judged together."""
    return {j.run.run_id: j.row for j in judge([e.record for e in entries], Thresholds())}


def assert_all_right(entries: list[Entry]) -> None:
    rows = verdicts(entries)
    wrong = [
        f"{e.name}: expected {e.regime}, got {rows[e.record.run_id]['verdict']}: "
        + " | ".join(rows[e.record.run_id]["reasons"])
        for e in entries
        if rows[e.record.run_id]["verdict"] != e.regime
    ]
    table = matrix(entries, {k: r["verdict"] for k, r in rows.items()})
    assert not wrong, table + "\n" + "\n".join(wrong)


def subsets() -> list[tuple[str, list[Entry]]]:
    """Each corpus whole, each regime alone, each data source alone, each family alone, the
    Hyperband sweep alone, each run alone."""
    out = []
    for name, entries in ENTRIES.items():
        out.append((f"{name}", entries))
        for regime in REGIMES:
            # Without its wider sibling, a capacity-limited run may have nothing to be high
            # against: see the baseline test below.
            only = [e for e in entries if e.regime == regime and e.construction != CAPACITY]
            out.append((f"{name}-only-{regime}", only))
        for source in sorted({e.source for e in entries}):
            out.append((f"{name}-only-{source}", [e for e in entries if e.source == source]))
        for family in sorted({e.family for e in entries if e.family}):
            out.append((f"{name}-family-{family}", [e for e in entries if e.family == family]))
        sweep = [e for e in entries if e.engine is not None]
        out.append((f"{name}-hyperband-sweep", sweep))
        # Alone, a capacity-limited run may have nothing to be high against: see below.
        out.extend((f"{name}-alone-{e.name}", [e]) for e in entries if e.construction != CAPACITY)
    return out


SUBSETS = subsets()


def test_corpora_hold_every_regime_on_both_data_sources() -> None:
    for entries in ENTRIES.values():
        assert len(entries) >= 12
        assert {e.regime for e in entries} == set(REGIMES)
        for regime in ("good", "underfitting"):
            sources = {e.source for e in entries if e.regime == regime}
            assert {"synthetic", "mni152"} <= sources
        assert len({e.source for e in entries if e.regime == "overfitting"}) >= 1
        for e in entries:
            assert e.record.init_val_recon is not None and e.record.trivial_val_recon is not None
            assert (e.engine is not None and e.engine["state"] == "PRUNED") == (
                e.regime == "pruned"
            )


@pytest.mark.parametrize("entries", [s[1] for s in SUBSETS], ids=[s[0] for s in SUBSETS])
def test_confusion_matrix_is_diagonal(entries: list[Entry]) -> None:
    assert_all_right(entries)


def test_capacity_limited_runs_alone_are_underfitting_against_a_baseline() -> None:
    # A plateau that beats the mean image and its start is high only against what a wider
    # model reaches on the same data: its sweep sibling, or a baseline at that level.
    runs = [e for es in ENTRIES.values() for e in es if e.construction == CAPACITY]
    assert runs
    for e in runs:
        baseline = 1.01 * min(r[M.VAL_RECON] for r in e.record.val) / 1.6
        (j,) = judge([e.record], Thresholds(baseline=baseline))
        assert j.row["verdict"] == "underfitting", j.row["reasons"]
        assert any("widen channels" in r for r in j.row["remedies"]), j.row["remedies"]
        assert not any("lr" in r or "kl_weight" in r for r in j.row["remedies"])
        # Alone, with nothing to be high against: underfitting, or good saying that its
        # plateau could not be judged, never a silent good.
        (j,) = judge([e.record], Thresholds())
        assert j.row["verdict"] == "underfitting" or any(
            "nothing here shows to be high" in r for r in j.row["reasons"]
        ), j.row["reasons"]


def kl_changes(remedies: list[str]) -> list[tuple[float, float]]:
    """(from, to) of every remedy that changes kl_weight."""
    return [tuple(map(float, c.groups())) for r in remedies for c in KL_CHANGE.finditer(r)]


@pytest.mark.parametrize("name", CORPORA)
def test_remedies_move_kl_weight_the_right_way(name: str) -> None:
    entries = ENTRIES[name]
    rows = verdicts(entries)
    for e in entries:
        row = rows[e.record.run_id]
        changes = kl_changes(row["remedies"])
        if e.regime == "underfitting" or row["verdict"] == "underfitting":
            assert all(after < before for before, after in changes), (e.name, row["remedies"])
        if e.regime == "overfitting" or row["verdict"] == "overfitting":
            assert all(after > before for before, after in changes), (e.name, row["remedies"])
        if e.construction == "underfitting-kl":  # the KL term dominates: lower it
            assert any(after < before for before, after in changes), (e.name, row["remedies"])
        said = " ".join(row["remedies"])
        # More epochs or capacity never for an overfitting run; a lower lr only for divergence.
        if row["verdict"] == "overfitting":
            assert not re.search(r"max_epochs|widen|num_res_blocks|raise lr", said), said
        assert "lower lr" not in said, (e.name, said)
        if e.construction == "underfitting-capacity":
            assert "widen channels" in said and "lr" not in said, (e.name, said)


# --- real runs trained now, read by W&B's reader ---------------------------------------------------

TINY = [
    "--image_size=16",
    "--channels=[8, 16]",
    "--norm_num_groups=8",
    "--latent_channels=2",
    "--nonlocal_attn=False",
    "--max_val_triplets=0",
]
LIVE = {
    "good": [*TINY, "--n_train=96", "--n_val=16", "--batch_size=16", "--lr=3e-3", "--max_epochs=12"],
    "underfitting": [*TINY, "--n_train=32", "--n_val=8", "--lr=1e-6", "--max_epochs=6"],
}  # fmt: skip


@pytest.mark.slow
def test_real_runs_read_back_with_their_references_and_verdicts(tmp_path: Path) -> None:
    for regime, args in LIVE.items():
        proc = subprocess.run(
            [PYTHON, "-m", "trainer", f"--output_dir={tmp_path / 'out'}", *args],
            env=offline_env(tmp_path, WANDB_RUN_ID=f"live-{regime}"),
            capture_output=True,
            text=True,
            timeout=TRAIN_TIMEOUT,
        )
        assert proc.returncode == 0, proc.stderr
    records = read_folder(tmp_path / "wandb")[0]
    by_id = {r.run_id: r for r in records}
    assert set(by_id) == {f"live-{regime}" for regime in LIVE}
    for rec in records:
        assert rec.init_val_recon == rec.summary[M.SUMMARY_INIT_VAL_RECON] > 0
        assert rec.trivial_val_recon == rec.summary[M.SUMMARY_TRIVIAL_VAL_RECON] > 0
        assert all(r[M.TRAIN_EVAL_RECON] > 0 for r in rec.val)
    good = by_id["live-good"]
    assert min(r[M.VAL_RECON] for r in good.val) < 0.5 * good.init_val_recon

    report = subprocess.run(
        [PYTHON, "-m", "analysis", "report", str(tmp_path / "wandb"), "--out", str(tmp_path / "r")],
        env=offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=TRAIN_TIMEOUT,
    )
    assert report.returncode == 0, report.stderr
    rows = json.loads((tmp_path / "r" / "verdicts.json").read_text())
    assert {r["run_id"]: r["verdict"] for r in rows} == {f"live-{k}": k for k in LIVE}
    # The gap is read on the training images scored as validation is, not the epoch means.
    assert all(r["numbers"]["true_gap"] for r in rows)
    # Alone, with no better sibling to compare with, the underfitting run is still underfitting.
    (alone,) = judge([by_id["live-underfitting"]], Thresholds())
    assert alone.row["verdict"] == "underfitting", alone.row["reasons"]
