"""The report's warm-start line: W&B's --prior_run list holds only the finished runs inside the
next sweep's space (W&B's bayes ignores the others); a local sweep gets sweeper create --from."""

from __future__ import annotations

from pathlib import Path

from analysis import warm_start

NEXT = {
    "method": "bayes",
    "metric": {"name": "val/best_recon_loss", "goal": "minimize"},
    "run_cap": 8,
    "parameters": {
        "lr": {"distribution": "log_uniform_values", "min": 1.0e-4, "max": 1.0e-2},
        "max_epochs": {"value": 16},
    },
}


def row(run_id: str, state: str = "finished", **config):
    return {
        "run_id": run_id,
        "state": state,
        "engine_state": None,
        "best_val_recon_loss": 0.1,
        "config": {"max_epochs": 16, "output_dir": "elsewhere", **config},
        "sources": [f"team/vae/{run_id}"],
    }


def test_prior_runs_are_the_finished_runs_inside_the_new_space():
    rows = [
        row("inside", lr=1e-3),
        row("lowlr", lr=2e-6),
        row("crashed", state="crashed", lr=1e-3),
        row("shorter", lr=1e-3, max_epochs=8),
        row("klhigh", lr=1e-3, kl_weight=0.5),
    ]
    (line,) = warm_start.lines(NEXT, rows, Path("r/next_sweep.yaml"), [])
    assert "wandb sweep --entity team --project vae --prior_run inside r/next_sweep.yaml" in line
    assert "1 finished runs fit its space, 3 do not" in line


def test_a_local_sweep_gets_the_sweeper_line():
    (line,) = warm_start.lines(
        NEXT, [row("a", lr=1e-3)], Path("next_sweep.yaml"), [("ab12cd34", "journal:/s/j")]
    )
    assert "python -m sweeper create next_sweep.yaml --from ab12cd34 --storage journal:/s/j" in line
