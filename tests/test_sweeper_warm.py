"""Warm start (``python -m sweeper create FILE --from OLD_ID``): real agents run the trivial
program for the old sweep, on SQLite and on the journal; the new sweep is seeded with exactly
the old finished trials that fit its space, never proposes them again, and counts them toward
run_cap."""

from __future__ import annotations

import json

import pytest
import yaml
from optuna.trial import TrialState
from sweep_helpers import create, storage_url, sweeper, trials, trivial_sweep, write_sweep

from sweeper import space as space_mod
from sweeper import warm

OLD_X = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
NEW_X = [0.1, 0.2, 0.3, 0.4, 0.7]


def discrete(tmp_path, name: str, xs: list[float], run_cap: int):
    path = trivial_sweep(tmp_path, run_cap, epochs=2, sleep=0.0)
    cfg = yaml.safe_load(path.read_text())
    cfg["parameters"]["x"] = {"values": xs}
    return write_sweep(tmp_path / f"{name}.yaml", cfg)


def ledger(tmp_path, sweep_id: str) -> list[float]:
    lines = (tmp_path / "ledger.jsonl").read_text().splitlines()
    return [r["x"] for r in map(json.loads, lines) if r["group"] == sweep_id]


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_seeds_exactly_the_fitting_trials_and_never_reruns_them(tmp_path, kind):
    url = storage_url(tmp_path, kind)
    old_id = create(tmp_path, discrete(tmp_path, "old", OLD_X, 4), storage=url)
    done = sweeper(tmp_path, "agent", old_id, storage=url, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    old = {t.number: t for t in trials(tmp_path, old_id, url)}
    fitting = {
        t.number: t
        for t in old.values()
        if t.state == TrialState.COMPLETE and t.params["x"] in NEW_X
    }
    assert len(fitting) >= 2  # 4 distinct of 6 points: at least 2 of the 4 shared ones

    made = sweeper(
        tmp_path, "create", str(discrete(tmp_path, "new", NEW_X, 5)), "--from", old_id, storage=url
    )
    assert made.returncode == 0, made.stderr
    new_id = made.stdout.strip()
    left_out = len(old) - len(fitting)
    assert f"seeded {len(fitting)} of sweep {old_id}'s trials into {new_id}" in made.stderr
    if left_out:
        assert f"{left_out} outside the new space (x: " in made.stderr
    assert f"{5 - len(fitting)} new trials left in run_cap 5" in made.stderr

    seeded = trials(tmp_path, new_id, url)
    assert len(seeded) == len(fitting)
    for t in seeded:
        origin = t.user_attrs[warm.SEEDED_FROM]
        source = fitting[origin["trial"]]
        assert origin == {
            "sweep": old_id,
            "trial": source.number,
            "run_id": source.user_attrs["run_id"],
        }
        assert t.state == TrialState.COMPLETE and t.values == source.values
        assert t.params == source.params
        assert t.intermediate_values == source.intermediate_values

    done = sweeper(tmp_path, "agent", new_id, storage=url, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    ran = ledger(tmp_path, new_id)
    # The budget counts the seeded trials: only the untaken points ran, each once.
    assert sorted(ran) == sorted(set(NEW_X) - {t.params["x"] for t in fitting.values()})
    status = sweeper(tmp_path, "status", new_id, storage=url)
    assert status.returncode == 0, status.stderr
    assert f"seeded {len(fitting)}, counted 5" in status.stdout
    rows = [line for line in status.stdout.splitlines() if line.startswith("  trial")]
    assert sum(f"seeded from sweep {old_id} trial" in line for line in rows) == len(fitting)


def test_seeds_that_spend_the_budget_and_bad_old_sweeps_are_one_line(tmp_path):
    url = storage_url(tmp_path)
    old_id = create(tmp_path, discrete(tmp_path, "old", OLD_X, 4), storage=url)
    assert sweeper(tmp_path, "agent", old_id, storage=url, timeout=300).returncode == 0
    new = discrete(tmp_path, "new", NEW_X, 2)
    spent = sweeper(tmp_path, "create", str(new), "--from", old_id, storage=url)
    assert spent.returncode == 2
    assert "count toward run_cap (2)" in spent.stderr and "Traceback" not in spent.stderr
    assert len(spent.stderr.strip().splitlines()) == 1
    unknown = sweeper(tmp_path, "create", str(new), "--from", "nosuchid", storage=url)
    assert unknown.returncode == 2 and "no local sweep 'nosuchid'" in unknown.stderr
    elsewhere = sweeper(
        tmp_path, "create", str(new), "--from", old_id, "--from-storage",
        f"sqlite:///{tmp_path / 'absent.db'}", storage=url,
    )  # fmt: skip
    assert elsewhere.returncode == 2 and "no such file" in elsewhere.stderr
    assert not (tmp_path / "absent.db").exists()


def test_fit_names_the_key_outside_the_space():
    space, _ = space_mod.build_space(
        {
            "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
            "channels": {"values": [[8, 16], [16, 32]]},
            "max_epochs": {"value": 16},
        },
        "new",
    )
    base = {"lr": 1e-3, "channels": [16, 32], "max_epochs": 16}
    params, _ = warm.fit(space, base)
    assert params == {"lr": 1e-3, "channels": json.dumps([16, 32])}
    assert warm.fit(space, {**base, "lr": 2e-6}) == (None, "lr=2e-06")
    assert warm.fit(space, {**base, "max_epochs": 8}) == (None, "max_epochs=8")
    assert warm.fit(space, {**base, "channels": [8, 32]})[1] == "channels=[8, 32]"
    # A key the new sweep does not name runs at the trainer's default: only that value fits.
    assert warm.fit(space, {**base, "kl_weight": 0.1}) == (None, "kl_weight=0.1")
    assert warm.fit(space, {**base, "kl_weight": 1e-06})[0] is not None
