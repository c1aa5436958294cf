"""The local engine's Hyperband is W&B's: the same runs stopped as ``sweeps.hyperband_stop_runs``
stops, over random histories, both ``strict`` values, both ways of giving the bands."""

from __future__ import annotations

import random
import warnings

import optuna
import pytest
from optuna.trial import TrialState

from sweeper.space import hyperband_bands, pruner_for

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # pydantic's deprecation noise from inside sweeps
    import sweeps
    from sweeps import RunState, SweepRun

STATES = {
    TrialState.RUNNING: RunState.running,
    TrialState.COMPLETE: RunState.finished,
    TrialState.PRUNED: RunState.finished,  # W&B: a stopped run ends as finished
    TrialState.FAIL: RunState.crashed,
}
EARLY_TERMINATE = [
    {"type": "hyperband", "min_iter": 1, "eta": 2},
    {"type": "hyperband", "min_iter": 2, "eta": 3},
    {"type": "hyperband", "min_iter": 3, "eta": 2},
    {"type": "hyperband", "max_iter": 27, "s": 2, "eta": 3},
    {"type": "hyperband", "max_iter": 8, "s": 3, "eta": 2},
]


def test_bands_are_wandbs():
    assert hyperband_bands({"min_iter": 3, "eta": 3})[:4] == [3, 9, 27, 81]
    assert hyperband_bands({"max_iter": 27, "s": 2, "eta": 3}) == [3, 9]
    assert hyperband_bands({"max_iter": 8, "s": 5, "eta": 2}) == [1, 2, 4]


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("goal", ["minimize", "maximize"])
@pytest.mark.parametrize(
    "et", EARLY_TERMINATE, ids=lambda et: str(et.get("min_iter", et.get("max_iter")))
)
def test_the_same_runs_stop_as_under_wandbs_engine(et, goal, strict):
    cfg = {
        "method": "random",
        "metric": {"name": "loss", "goal": goal},
        "early_terminate": {**et, "strict": strict},
        "parameters": {"a": {"values": [1, 2]}},
    }
    rng = random.Random(f"{et}{goal}{strict}")
    agree = stopped = 0
    for _ in range(30):
        study = optuna.create_study(direction=goal, pruner=pruner_for(cfg))
        runs = []
        for i in range(rng.randint(1, 10)):
            state = rng.choice(list(STATES))
            # Each run has its own level, so that runs differ as configurations do, plus noise.
            level = rng.random()
            history = [level + 0.3 * rng.random() / k for k in range(1, rng.randint(1, 13))]
            if rng.random() < 0.1 and history:
                history[rng.randrange(len(history))] = float("nan")  # W&B drops it
            study.add_trial(
                optuna.trial.create_trial(
                    state=state,
                    params={"a": 1},
                    distributions={"a": optuna.distributions.CategoricalDistribution([1, 2])},
                    value=None if state in (TrialState.RUNNING, TrialState.FAIL) else 0.0,
                    intermediate_values=dict(enumerate(history, start=1)),
                )
            )
            runs.append(
                SweepRun(name=str(i), state=STATES[state], history=[{"loss": v} for v in history])
            )
        wandb_stops = {r.name for r in sweeps.stop_runs(cfg, runs)}
        for trial in study.get_trials():
            if trial.state != TrialState.RUNNING:
                continue
            ours = study.pruner.prune(study, trial)
            assert ours == (str(trial.number) in wandb_stops), (trial.number, runs)
            agree += 1
            stopped += ours
    assert agree > 20 and 0 < stopped < agree, "the cases cover stops and survivals"
