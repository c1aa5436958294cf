"""Parallel agents never repeat a configuration while the space has an untaken one: real agent
processes on one sweep (SQLite, whose claims take turns under a lock, and the journal, where
the storage's order voids a repeat), and the sampler on its own (discrete, continuous,
exhausted)."""

from __future__ import annotations

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from sweep_helpers import (
    create,
    read_ledger,
    start_agent,
    storage_url,
    trials,
    trivial_sweep,
    write_sweep,
)

from sweeper import space as sp
from sweeper import store

AGENTS = 4
# 6 x 2 x 2 = 24 points.
DISCRETE = {
    "x": {"values": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]},
    "epochs": {"values": [1, 2]},
    "k": {"values": ["a", "b"]},
}


# Each agent's first Gaussian-process proposal warms torch up inside the claim lock: seconds
# per agent, minutes on a loaded machine.
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("method", "kind"),
    [
        ("bayes", "sqlite"),
        ("random", "sqlite"),
        pytest.param("bayes", "journal", marks=pytest.mark.slow),
    ],
)
def test_four_agents_run_sixteen_distinct_configurations_of_twenty_four(tmp_path, method, kind):
    url = storage_url(tmp_path, kind)
    file = trivial_sweep(tmp_path, run_cap=16, sleep=0.02)
    cfg = yaml.safe_load(file.read_text())
    cfg["method"] = method
    cfg["parameters"].update(DISCRETE)
    sweep_id = create(tmp_path, write_sweep(file, cfg), storage=url)
    # Started together, with no stagger: their first claims race.
    agents = [
        start_agent(tmp_path, sweep_id, tmp_path / f"agent{i}.log", storage=url)
        for i in range(AGENTS)
    ]
    for agent in agents:
        assert agent.wait(timeout=840) == 0
    ran = [yaml.safe_load(row["params"]) for row in read_ledger(tmp_path)]
    configs = {(p["x"]["value"], p["epochs"]["value"], p["k"]["value"]) for p in ran}
    assert len(ran) == 16 and len(configs) == 16, sorted(configs)
    counted = [t for t in trials(tmp_path, sweep_id, url) if store.is_counted(t)]
    assert len({sp.params_key(t.params) for t in counted}) == len(counted) == 16
    assert len({t.user_attrs["agent"] for t in counted}) > 1, "the agents shared the work"


def wrapped(cfg: dict, space: sp.Space) -> optuna.samplers.BaseSampler:
    """The method's wrapper around a fast model (TPE) for bayes: the wrapper is what is tested
    here; the agents above use the real bayes sampler."""
    if cfg["method"] == "bayes":
        return sp.Distinct(optuna.samplers.TPESampler(seed=1), space, 1, nearest=True)
    return sp.sampler_for(cfg, space, seed=1)


def ask_all(cfg: dict, n: int, running: int = 0) -> optuna.Study:
    """``n`` trials asked one after another; the first ``running`` stay running."""
    space, problems = sp.build_space(cfg["parameters"], "test")
    assert not problems
    study = optuna.create_study(sampler=wrapped(cfg, space))
    for i in range(n):
        trial = study.ask(fixed_distributions=space.distributions)
        if i >= running:
            study.tell(trial, float(sum(hash(str(v)) % 7 for v in trial.params.values())))
    return study


@pytest.mark.parametrize("method", ["bayes", "random"])
def test_running_and_finished_configurations_are_not_proposed_again(method):
    cfg = {"method": method, "parameters": DISCRETE}
    study = ask_all(cfg, 24, running=8)
    assert len({sp.params_key(t.params) for t in study.trials}) == 24
    # Once every point is taken, the budget may only repeat configurations.
    more = ask_all(cfg, 30)
    assert len({sp.params_key(t.params) for t in more.trials[:24]}) == 24


def test_bayes_is_a_gaussian_process_up_to_its_budget_limit():
    space, _ = sp.build_space(DISCRETE, "test")
    for run_cap, kind in ((24, optuna.samplers.GPSampler), (1000, optuna.samplers.TPESampler)):
        sampler = sp.sampler_for({"method": "bayes", "run_cap": run_cap}, space)
        assert isinstance(sampler, sp.Distinct) and isinstance(sampler.base, kind)
    assert sp.GP_MAX_TRIALS < 1000


def test_enqueued_trials_keep_their_configuration():
    cfg = {"method": "bayes", "run_cap": 24, "parameters": DISCRETE}
    space, _ = sp.build_space(cfg["parameters"], "test")
    study = optuna.create_study(sampler=sp.sampler_for(cfg, space, seed=0))
    point = {"x": 0.3, "epochs": 2, "k": "b"}
    first = study.ask(fixed_distributions=space.distributions)
    study.tell(first, 1.0)
    study.enqueue_trial(first.params)  # a retry: the same configuration on purpose
    study.enqueue_trial(point)
    assert study.ask(fixed_distributions=space.distributions).params == first.params
    assert study.ask(fixed_distributions=space.distributions).params == point


def test_continuous_spaces_sample_as_the_bayes_sampler_with_running_trials():
    cfg = {
        "method": "bayes",
        "run_cap": 14,
        "parameters": {"lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-2}},
    }
    space, _ = sp.build_space(cfg["parameters"], "test")
    study = optuna.create_study(sampler=sp.sampler_for(cfg, space, seed=1))
    for i in range(14):
        trial = study.ask(fixed_distributions=space.distributions)
        if i >= 4:  # the first four stay running while the process models the rest
            study.tell(trial, abs(trial.params["lr"] - 1e-3))
    lrs = [t.params["lr"] for t in study.trials]
    assert len(set(lrs)) == 14 and all(1e-5 <= v <= 1e-2 for v in lrs)
    assert [t.state for t in study.trials[:4]] == [TrialState.RUNNING] * 4


def test_without_a_claim_lock_a_repeated_configuration_is_voided(tmp_path):
    """What servers (no file lock) rely on: two agents that asked at once and got one
    configuration; the later trial is voided while an untaken point remains."""
    import dataclasses

    cfg = {
        "method": "random",
        "metric": {"name": "val/best_recon_loss", "goal": "minimize"},
        "run_cap": 3,
        "program": "train.py",
        "parameters": {"x": {"values": [1, 2]}},
    }
    opened = store.open_store(f"sqlite:///{tmp_path / 'sweeps.db'}")
    lockless = dataclasses.replace(opened, lock_path=None)
    sweep_id = store.create_sweep(lockless, yaml.safe_dump(cfg), cfg, "test", None)
    sweep = store.load_sweep(lockless, sweep_id)
    # The first agent's trial, then the same configuration reaching the second agent.
    first = store.claim(sweep, lockless)
    sweep.study.enqueue_trial(first.params)
    assert store.claim(sweep, lockless) is None
    repeated = sweep.study.get_trials(deepcopy=False)[-1]
    assert repeated.state == TrialState.FAIL and store.is_void(repeated)
    second = store.claim(sweep, lockless)
    assert second.params != first.params
    # Every point taken: a repeat is what the budget asks for now, and it runs.
    sweep.study.enqueue_trial(first.params)
    assert store.claim(sweep, lockless).params == first.params
