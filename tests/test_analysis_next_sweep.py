"""The next sweep and the hyperparameter importance, from result rows (no I/O)."""

from __future__ import annotations

import sweeps
from analysis.importance import importance
from analysis.next_sweep import next_sweep
from sweeper.validate import validate_sweep

BASE = {
    "channels": [8, 8],
    "norm_num_groups": 4,
    "num_res_blocks": 1,
    "augment": False,
    "image_size": 16,
}


def row(verdict: str, best: float, state: str = "finished", cause=None, **config) -> dict:
    return {
        "verdict": verdict,
        "best_val_recon_loss": best,
        "state": state,
        "config": {**BASE, **config},
        "numbers": {"cause": cause} if cause else {},
    }


def valid(cfg: dict) -> None:
    assert sweeps.schema_violations_from_proposed_config(cfg) == []
    assert validate_sweep(cfg, "next_sweep.yaml") == []


def test_overfitting_sweep_shifts_kl_weight_up_and_adds_augment():
    rows = [
        row("overfitting", 0.10, kl_weight=1e-7, lr=1e-3),
        row("overfitting", 0.12, kl_weight=1e-6, lr=2e-3),
        row("good", 0.15, kl_weight=1e-5, lr=5e-4),
        row("crashed", 0.5, state="failed", kl_weight=1e-5, lr=1e-2),
    ]
    cfg, notes = next_sweep(rows, ["kl_weight", "lr"], "next")
    valid(cfg)
    # The best run's kl_weight (1e-7) times 10, up to 100 times that.
    assert cfg["parameters"]["kl_weight"] == {
        "distribution": "log_uniform_values",
        "min": 1e-6,
        "max": 1e-4,
    }
    assert cfg["parameters"]["augment"] == {"values": [True, False]}
    assert any("2 of 3 runs overfit" in n for n in notes)
    # Sampled values (none repeats) stay a range around the one good run's lr (5e-4), and
    # stop halfway (geometrically) to the lr of the overfitting runs: never theirs.
    lr = cfg["parameters"]["lr"]
    assert lr["distribution"] == "log_uniform_values" and lr["min"] < 5e-4 < lr["max"] < 1e-3
    assert cfg["parameters"]["image_size"] == {
        "value": 16
    }  # the runs' non-default settings carry over


def test_underfitting_sweep_adds_capacity():
    rows = [
        row("good", 0.1, lr=1e-3, channels=[16, 16]),
        row("underfitting", 0.4, lr=1e-3),
        row("underfitting", 0.5, lr=1e-3),
    ]
    cfg, notes = next_sweep(rows, ["channels"], "next")
    valid(cfg)
    assert [32, 32] in cfg["parameters"]["channels"]["values"]
    assert cfg["parameters"]["num_res_blocks"] == {"values": [1, 2]}
    assert any("underfit" in n for n in notes)


def test_underfitting_by_the_kl_term_lowers_kl_weight_and_adds_no_capacity():
    rows = [
        row("good", 0.1, lr=1e-3, kl_weight=1e-6),
        row("underfitting", 0.4, cause="kl", lr=1e-3, kl_weight=1.0),
        row("underfitting", 0.5, cause="kl", lr=1e-3, kl_weight=0.5),
    ]
    cfg, notes = next_sweep(rows, ["kl_weight", "lr"], "next")
    valid(cfg)
    # Below the best run's kl_weight (1e-6), never above it.
    assert cfg["parameters"]["kl_weight"] == {
        "distribution": "log_uniform_values",
        "min": 1e-9,
        "max": 1e-7,
    }
    # No capacity added: the best run's channels carry over as they are.
    assert cfg["parameters"]["channels"] == {"value": [8, 8]}
    assert "num_res_blocks" not in cfg["parameters"]
    assert any("KL term dominating" in n for n in notes)


def test_underfitting_by_slow_training_raises_lr():
    rows = [
        row("good", 0.1, lr=1e-4),
        row("underfitting", 0.4, cause="slow", lr=1e-6),
        row("underfitting", 0.5, cause="slow", lr=3e-6),
    ]
    cfg, notes = next_sweep(rows, ["lr"], "next")
    valid(cfg)
    assert cfg["parameters"]["lr"] == {
        "distribution": "log_uniform_values",
        "min": 2e-4,
        "max": 2e-3,
    }
    assert cfg["parameters"]["channels"] == {"value": [8, 8]}
    assert any("too slowly" in n for n in notes)


def test_pruned_runs_are_not_counted_as_finished():
    rows = [
        row("good", 0.1, lr=1e-3),
        row("good", 0.12, lr=2e-3),
        row("pruned", 0.09, lr=5e-2),
        row("pruned", 0.3, lr=1e-2),
    ]
    cfg, notes = next_sweep(rows, ["lr"], "next")
    valid(cfg)
    assert notes[0] == "ranges narrowed around the best 2 of 2 good runs (2 finished)"
    assert cfg["parameters"]["lr"]["max"] < 5e-2


def test_repeated_values_stay_a_list():
    rows = [row("good", 0.1 + i / 100, lr=[1e-3, 1e-4][i % 2]) for i in range(6)]
    cfg, _ = next_sweep(rows, ["lr"], "next")
    valid(cfg)
    assert sorted(cfg["parameters"]["lr"]["values"]) == [1e-4, 1e-3]


def test_importance_needs_enough_varied_finished_runs():
    few = [row("good", 0.1, lr=1e-3), row("good", 0.2, lr=1e-4)]
    result, why = importance(few, ["lr"])
    assert result is None and "at least 3 finished runs" in why
    same = [row("good", 0.1 + i, lr=1e-3) for i in range(4)]
    assert importance(same, ["lr"])[0] is None
    # lr drives the loss, channels (a list, encoded as a string) barely.
    many = [
        row(
            "good",
            0.1 * (1 + i % 4) + 0.001 * (i % 2),
            lr=[1e-4, 3e-4, 1e-3, 3e-3][i % 4],
            channels=[[8, 8], [16, 16]][i % 2],
        )  # fmt: skip
        for i in range(16)
    ]
    result, why = importance(many, ["lr", "channels"])
    assert set(result) == {"lr", "channels"} and result["lr"] > result["channels"]
    assert "fANOVA" in why and "16 finished runs" in why


def test_no_finished_run_keeps_the_explored_values():
    """The first report of a sweep still running, or whose runs all crashed."""
    rows = [
        row("insufficient", None, state="running", channels=[8, 8], lr=1e-3),
        row("crashed", None, state="crashed", channels=[16, 16], lr=2e-3),
    ]
    cfg, notes = next_sweep(rows, ["channels", "lr"], "next")
    valid(cfg)
    assert sorted(cfg["parameters"]["channels"]["values"]) == [[8, 8], [16, 16]]
    assert any("no finished run" in n for n in notes)


def test_data_keys_and_seed_are_never_searched_and_mixed_data_is_left_out():
    """Runs of two datalists and of two intensities on one folder differ in data keys: the
    next sweep keeps the best run's data and says which runs it left out."""
    folder = {"data_source": "folder", "data_dir": "tiles"}
    rows = [
        row("good", 0.10, lr=1e-3, seed=1, intensity="minmax", **folder),
        row("good", 0.11, lr=2e-3, seed=2, intensity="minmax", **folder),
        row("good", 0.12, lr=3e-3, seed=3, intensity="minmax", **folder),
        row("good", 0.05, lr=1e-3, seed=1, intensity="percentile", **folder, state="failed"),
        row("good", 0.08, lr=5e-3, seed=4, intensity="percentile", **folder),
        row("good", 0.07, lr=5e-3, seed=5, data_source="datalist", datalist="a.json"),
        row("good", 0.09, lr=5e-3, seed=6, data_source="datalist", datalist="b.json"),
    ]
    params = ["data_source", "data_dir", "datalist", "intensity", "seed", "lr"]
    cfg, notes = next_sweep(rows, params, "next")
    space = cfg["parameters"]
    for key in ("data_source", "datalist", "intensity", "seed", "image_size", "data_dir"):
        assert "values" not in space.get(key, {}) and "distribution" not in space.get(key, {})
    # The best finished healthy run is the datalist a.json one (0.07): its data alone.
    assert space["data_source"] == {"value": "datalist"} and space["datalist"] == {
        "value": "a.json"
    }
    assert space["lr"]["min"] <= 5e-3 <= space["lr"]["max"]
    assert any(
        n.startswith("built from the 1 runs on the best run's data") and "6 runs on 3 other" in n
        for n in notes
    ), notes


def test_values_only_bad_runs_had_are_never_offered():
    rows = [
        row("good", 0.10, lr=1e-3, kl_weight=1e-6),
        row("good", 0.11, lr=1e-3, kl_weight=1e-5),
        row("good", 0.12, lr=3e-4, kl_weight=1e-6),
        row("underfitting", 0.4, cause="slow", lr=2e-6, kl_weight=1e-6),
        row("overfitting", 0.09, lr=1e-3, kl_weight=0.0),
        row("overfitting", 0.095, lr=1e-3, kl_weight=0.0),
    ]
    for r in rows:  # the sweep drew from lists: values repeat
        r["config"]["channels"] = [8, 8]
    cfg, _ = next_sweep(rows, ["lr", "kl_weight"], "next")
    valid(cfg)
    space = cfg["parameters"]
    assert not offers(space["lr"], 2e-6) and not offers(space["kl_weight"], 0.0)
    # The good runs' values only, no "next value" added to make two choices.
    assert sorted(space["lr"]["values"]) == [3e-4, 1e-3]


def offers(spec: dict, value: float) -> bool:
    if "values" in spec:
        return value in spec["values"]
    if "value" in spec:
        return spec["value"] == value
    return spec["min"] <= value <= spec["max"]


def test_the_best_runs_own_remedy_raises_max_epochs():
    rows = [
        row("good", 0.10, lr=1e-3, max_epochs=8),
        row("good", 0.12, lr=2e-3, max_epochs=8),
    ]
    rows[0]["remedies"] = ["still improving: raise max_epochs from 8 to 16"]
    cfg, notes = next_sweep(rows, ["lr"], "next")
    valid(cfg)
    assert cfg["parameters"]["max_epochs"] == {"value": 16}
    assert any("max_epochs raised to 16" in n for n in notes)


def test_channels_that_norm_num_groups_does_not_divide_are_left_out():
    rows = [
        row("good", 0.10, channels=[8, 16, 16], norm_num_groups=16),
        row("good", 0.11, channels=[16, 32, 32], norm_num_groups=16),
        row("good", 0.12, channels=[16, 16, 16], norm_num_groups=16),
        row("good", 0.13, channels=[8, 16, 16], norm_num_groups=16),
    ]
    cfg, notes = next_sweep(rows, ["channels"], "next")
    valid(cfg)
    assert [8, 16, 16] not in cfg["parameters"]["channels"]["values"]
    assert any("left out" in n for n in notes)


def test_a_sweep_of_every_verdict_gives_a_valid_next_sweep_of_good_values_only():
    """The families corpus (real runs' curves and configs: good, still improving, overfitting,
    underfitting by lr, KL and capacity, pruned) plus one run made to diverge, placed on one
    data setting as one sweep, judged by the analysis."""
    import copy
    import math

    from corpus import load

    from analysis.diagnose import Thresholds
    from analysis.judge import judge, swept_params
    from analysis.records import DATA_KEYS
    from contract import metrics as M

    records = [copy.deepcopy(e.record) for e in load("families")]
    data = {k: records[0].config.get(k) for k in (*DATA_KEYS, "seed")}
    for rec in records:
        rec.config.update(data)
        rec.sweep_id = "every"
    diverged = copy.deepcopy(records[0])
    diverged.run_id, diverged.state, diverged.exit_code = "diverged", "failed", 3
    diverged.config["lr"] = 0.5
    diverged.val[-1][M.VAL_RECON] = math.nan
    diverged.summary[M.SUMMARY_DIVERGED] = True
    rows = [j.row for j in judge([*records, diverged], Thresholds())]
    verdicts = {r["verdict"] for r in rows}
    assert {"good", "overfitting", "underfitting", "pruned", "diverged"} <= verdicts, verdicts

    cfg, notes = next_sweep(rows, swept_params(rows), "next")
    valid(cfg)
    space = cfg["parameters"]
    for key in (*DATA_KEYS, "seed"):
        assert "values" not in space.get(key, {}) and "distribution" not in space.get(key, {})
    good = [r for r in rows if r["verdict"] == "good"]
    for key, spec in space.items():
        if "values" not in spec:
            continue
        for value in spec["values"]:
            # Offered: a good run's value, or one a remedy adds that no run had.
            had = [r for r in rows if r["config"].get(key) == value]
            assert not had or any(r in good for r in had), (key, value)
    assert not offers(space.get("lr", {"value": 0.1}), 0.5)
