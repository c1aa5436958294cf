"""Search quality: the local engine against W&B's own engine, side by side, and what Hyperband saves.

    python bench/search_quality.py                       # all three parts, 10 repetitions
    python bench/search_quality.py --part surrogate --reps 20
    python bench/search_quality.py --part trainer --reps 10 --keep outputs/bench-table.json

Both engines search the same sweep file with the same budget (``run_cap``), one trial after
another, as one agent does:

* W&B's engine is the ``sweeps`` package W&B's server runs: ``sweeps.next_run(config, runs)``
  driven offline as its controller drives it, every finished run handed back as a ``SweepRun``
  whose history and summary hold the metric. Its randomness is numpy's global generator,
  seeded per repetition.
* The local engine is ``sweeper.space.sampler_for`` (what an agent uses) in an Optuna study;
  other samplers are listed beside it, including the one ``bayes`` used before
  (``TPESampler`` with its defaults, configurations free to repeat).

For each engine and repetition the score is the best value after the budget; the table gives
the median over repetitions, the median excess over the objective's optimum, and the ratio of
that excess to W&B's (below 1: nearer the optimum than W&B's engine).

Objectives:

``surrogate`` (``bench/search_quality.yaml``): :func:`surrogate`, a smooth stand-in for an
AutoencoderKL's best validation loss over the keys such sweeps vary, whose optimum is known
exactly. Cheap, so many repetitions.

``trainer`` (``bench/search_quality_trainer.yaml``): real trainer runs. Its space is discrete
(24 points), so every point is trained once, for real, in this process (tiny 2D models on
synthetic images, seeded); the engines then search that table of real results, and its optimum
is the best of the 24. Each training writes its per-epoch curve, which the Hyperband part uses.

``hyperband``: the same sweep with and without its ``early_terminate`` block, on the same
proposals (``method: random`` with the same seed, so the configurations do not depend on what
was stopped): epochs trained and best value reached, through the local engine's Hyperband
(W&B's rule) fed one epoch at a time. Curves: the trainer table's real ones, and
:func:`surrogate_curve` for the surrogate sweep.

Timings and results depend on the machine's load: the script prints ``/proc/loadavg``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from contract import metrics  # noqa: E402
from contract import runs as run_files  # noqa: E402
from contract.config import DEFAULTS  # noqa: E402
from sweeper import space as sp  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.ERROR)
warnings.filterwarnings("ignore")  # pydantic's deprecation noise from inside sweeps
with contextlib.redirect_stderr(io.StringIO()):
    import sweeps
    from sweeps import SweepRun

Objective = Callable[[dict[str, Any]], float]


# --- the surrogate ------------------------------------------------------------------------------
def surrogate(values: dict[str, Any]) -> float:
    """A stand-in for an AutoencoderKL's best validation L1 loss; unswept keys take defaults.

    ``capacity`` = log2(sum(channels) / 160) (0 for [32, 64, 64], 1 for [64, 128, 128]),
    ``depth`` = mean num_res_blocks - 1, ``latent`` = log2(latent_channels / 3):

    * a floor that falls with capacity, depth and latent size, with diminishing returns
      (0.050 - 0.008 capacity - 0.004 depth - 0.006 latent + 0.003 capacity * depth);
    * a log-quadratic bowl in lr around 10**(-3.3 - 0.3 capacity - 0.2 depth): bigger
      models want smaller steps (0.012 per decade squared);
    * a log-quadratic bowl in kl_weight around 10**(-6 + 0.6 capacity): too little
      regularisation overfits, too much blurs, and bigger models need more of it
      (0.004 per decade squared).

    Deterministic, so both engines are judged on the search alone.
    """
    v = {**DEFAULTS, **values}
    capacity = math.log2(sum(v["channels"]) / 160)
    blocks = v["num_res_blocks"]
    depth = (statistics.mean(blocks) if isinstance(blocks, list) else blocks) - 1
    latent = math.log2(v["latent_channels"] / 3)
    floor = 0.050 - 0.008 * capacity - 0.004 * depth - 0.006 * latent + 0.003 * capacity * depth
    lr_opt, kl_opt = _optima(capacity, depth)
    lr_term = 0.012 * (math.log10(v["lr"]) - lr_opt) ** 2
    kl_term = 0.004 * (math.log10(v["kl_weight"]) - kl_opt) ** 2
    return floor + lr_term + kl_term


def _optima(capacity: float, depth: float) -> tuple[float, float]:
    return -3.3 - 0.3 * capacity - 0.2 * depth, -6.0 + 0.6 * capacity


def surrogate_optimum(space: sp.Space) -> float:
    """Exact: for each discrete combination the bowls' centres, clipped to the bounds."""
    discrete = {k: d for k, d in space.distributions.items() if k not in ("lr", "kl_weight")}
    grid = sp.Space(fixed=space.fixed, distributions=discrete, json_params=space.json_params)
    best = math.inf
    for point in grid.grid():
        values = grid.values(point)
        v = {**DEFAULTS, **values}
        blocks = v["num_res_blocks"]
        depth = (statistics.mean(blocks) if isinstance(blocks, list) else blocks) - 1
        lr_opt, kl_opt = _optima(math.log2(sum(v["channels"]) / 160), depth)
        for key, centre in (("lr", lr_opt), ("kl_weight", kl_opt)):
            dist = space.distributions.get(key)
            if dist is not None:
                low, high = math.log10(dist.low), math.log10(dist.high)
                values[key] = 10 ** min(max(centre, low), high)
        best = min(best, surrogate(values))
    return best


def surrogate_curve(values: dict[str, Any], epochs: int) -> list[float]:
    """Per-epoch validation loss falling from 0.5 towards :func:`surrogate`'s value, faster at
    a higher learning rate (``exp(-rate * epoch)``, rate = 0.08 * sqrt(lr / 1e-4)), so that
    curves cross: a slow run with a good final value can trail at the first bands."""
    final = surrogate(values)
    rate = 0.08 * math.sqrt(values.get("lr", DEFAULTS["lr"]) / 1e-4)
    return [final + (0.5 - final) * math.exp(-rate * e) for e in range(1, epochs + 1)]


# --- engines ------------------------------------------------------------------------------------
def wandb_search(cfg: dict[str, Any], objective: Objective, budget: int, seed: int) -> float:
    """W&B's engine as its controller runs it: next_run over every run so far."""
    np.random.seed(seed)
    metric = cfg["metric"]["name"]
    history: list[SweepRun] = []
    for i in range(budget):
        proposal = sweeps.next_run(cfg, history)
        value = objective({k: v["value"] for k, v in proposal.config.items()})
        history.append(
            SweepRun(
                name=f"run{i}",
                state="finished",
                config=proposal.config,
                history=[{metric: value}],
                summary_metrics={metric: value},
            )
        )
    return min(r.summary_metrics[metric] for r in history)


def optuna_search(
    sampler: optuna.samplers.BaseSampler, space: sp.Space, objective: Objective, budget: int
) -> float:
    study = optuna.create_study(sampler=sampler)
    for _ in range(budget):
        trial = study.ask(fixed_distributions=space.distributions)
        study.tell(trial, objective(space.values(trial.params)))
    return study.best_value


def candidates(cfg: dict[str, Any], space: sp.Space) -> dict[str, Callable[[int], Any]]:
    """Samplers by name, each built from a seed; ``local`` is what an agent uses now."""

    def distinct(base: optuna.samplers.BaseSampler, seed: int) -> sp.Distinct:
        return sp.Distinct(base, space, seed, nearest=cfg["method"] == "bayes")

    out: dict[str, Callable[[int], Any]] = {
        "local (sampler_for)": lambda seed: sp.sampler_for(cfg, space, seed),
    }
    if cfg["method"] == "bayes":
        out.update(
            {
                "TPE defaults (before)": lambda seed: optuna.samplers.TPESampler(seed=seed),
                "TPE, distinct": lambda s: distinct(optuna.samplers.TPESampler(seed=s), s),
                "TPE 5 start-up, distinct": lambda s: distinct(
                    optuna.samplers.TPESampler(n_startup_trials=5, seed=s), s
                ),
                "GP, distinct": lambda s: distinct(optuna.samplers.GPSampler(seed=s), s),
                "GP 5 start-up, distinct": lambda s: distinct(
                    optuna.samplers.GPSampler(n_startup_trials=5, seed=s), s
                ),
                "GP 3 start-up, distinct": lambda s: distinct(
                    optuna.samplers.GPSampler(n_startup_trials=3, seed=s), s
                ),
                "GP deterministic, distinct": lambda s: distinct(
                    optuna.samplers.GPSampler(deterministic_objective=True, seed=s), s
                ),
                "GP deterministic 5 start-up, distinct": lambda s: distinct(
                    optuna.samplers.GPSampler(
                        n_startup_trials=5, deterministic_objective=True, seed=s
                    ),
                    s,
                ),
                "GP deterministic 3 start-up, distinct": lambda s: distinct(
                    optuna.samplers.GPSampler(
                        n_startup_trials=3, deterministic_objective=True, seed=s
                    ),
                    s,
                ),
            }
        )
    else:
        out["Random (before)"] = lambda seed: optuna.samplers.RandomSampler(seed=seed)
    return out


def compare(
    title: str,
    cfg: dict[str, Any],
    objective: Objective,
    optimum: float,
    reps: int,
    only: list[str] | None,
) -> dict[str, Any]:
    space, problems = sp.build_space(cfg["parameters"], title)
    assert not problems, problems
    budget = int(cfg["run_cap"])
    engines: dict[str, Callable[[int], float]] = {
        "W&B (sweeps.next_run)": lambda seed: wandb_search(cfg, objective, budget, seed)
    }
    for name, make in candidates(cfg, space).items():
        if only is None or name in only or name.startswith("local"):
            engines[name] = lambda seed, make=make: optuna_search(
                make(seed), space, objective, budget
            )
    print(f"\n## {title}: method {cfg['method']}, budget {budget}, {reps} repetitions")
    print(f"optimum {optimum:.6g}; load {load()}")
    rows: dict[str, dict[str, Any]] = {}
    for name, search in engines.items():
        started = time.monotonic()
        bests = [search(seed) for seed in range(reps)]
        rows[name] = {
            "median_best": statistics.median(bests),
            "median_excess": statistics.median(b - optimum for b in bests),
            "mean_excess": statistics.mean(b - optimum for b in bests),
            "optimum_found": sum(math.isclose(b, optimum, rel_tol=1e-9) for b in bests),
            "bests": bests,
            "seconds": time.monotonic() - started,
        }
    reference = rows["W&B (sweeps.next_run)"]["median_excess"]
    print(
        f"| engine | median best-after-{budget} | median excess | ratio to W&B | mean excess "
        "| optimum found | s |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        row["ratio"] = row["median_excess"] / reference if reference > 0 else math.inf
        print(
            f"| {name} | {row['median_best']:.6g} | {row['median_excess']:.3g} | "
            f"{row['ratio']:.2f} | {row['mean_excess']:.3g} | {row['optimum_found']}/{reps} | "
            f"{row['seconds']:.0f} |"
        )
    return rows


# --- the trainer table --------------------------------------------------------------------------
def train_table(cfg: dict[str, Any], keep: Path | None) -> dict[str, list[float]]:
    """Every point of the sweep trained once: {json of the values: per-epoch val/recon_loss}.

    Each point runs the trainer's own entrypoint in this process (``python -m trainer
    --config FILE``), with W&B disabled: the same training a sweep's trial does."""
    if keep is not None and keep.exists():
        table = json.loads(keep.read_text())
        print(f"trainer table read from {keep} ({len(table)} points)")
        return table
    os.environ.setdefault("WANDB_MODE", "disabled")
    os.environ.setdefault("WANDB_SILENT", "true")
    from trainer.cli import main as trainer_main

    space, _ = sp.build_space(cfg["parameters"], "trainer")
    table: dict[str, list[float]] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="search-quality-") as tmp:
        for i, point in enumerate(space.grid()):
            run_id = f"point{i:03d}"
            config = Path(tmp, f"{run_id}.yaml")
            config.write_text(yaml.safe_dump({**space.values(point), "output_dir": tmp}))
            os.environ["WANDB_RUN_ID"] = run_id
            with contextlib.redirect_stdout(io.StringIO()):
                code = trainer_main(["--config", str(config)])
            assert code == 0, (point, code)
            rows = run_files.read_progress(run_files.run_dir(tmp, run_id))
            table[key_of(space, point)] = [row[metrics.VAL_RECON] for row in rows]
    print(f"trained {len(table)} points in {time.monotonic() - started:.0f} s; load {load()}")
    if keep is not None:
        keep.parent.mkdir(parents=True, exist_ok=True)
        keep.write_text(json.dumps(table))
    return table


def key_of(space: sp.Space, params: dict[str, Any]) -> str:
    return json.dumps(sorted(space.values(params).items()))


# --- hyperband ----------------------------------------------------------------------------------
def hyperband_saving(
    title: str, cfg: dict[str, Any], curve: Callable[[dict[str, Any]], list[float]], reps: int
) -> dict[str, Any]:
    """Epochs trained and best value, with and without early_terminate, same proposals."""
    random_cfg = {**cfg, "method": "random"}
    plain = {k: v for k, v in random_cfg.items() if k != "early_terminate"}
    space, _ = sp.build_space(cfg["parameters"], title)
    budget = int(cfg["run_cap"])
    results = {"with": [], "without": []}
    for seed in range(reps):
        for arm, arm_cfg in (("with", random_cfg), ("without", plain)):
            study = optuna.create_study(
                sampler=sp.sampler_for(arm_cfg, space, seed), pruner=sp.pruner_for(arm_cfg)
            )
            epochs, bests = 0, []
            for _ in range(budget):
                trial = study.ask(fixed_distributions=space.distributions)
                best = math.inf
                pruned = False
                for epoch, value in enumerate(curve(space.values(trial.params)), start=1):
                    epochs += 1
                    best = min(best, value)
                    trial.report(best, step=epoch)  # val/best_recon_loss, as the agent does
                    if trial.should_prune():
                        pruned = True
                        break
                if pruned:
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                else:
                    study.tell(trial, best)
                bests.append(best)  # a stopped run's best counts too, as in W&B's table
            results[arm].append((epochs, min(bests)))
    et = cfg["early_terminate"]
    with_epochs = statistics.median(e for e, _ in results["with"])
    without_epochs = statistics.median(e for e, _ in results["without"])
    same_best = sum(
        math.isclose(a[1], b[1]) for a, b in zip(results["with"], results["without"], strict=True)
    )
    saved = 1 - with_epochs / without_epochs
    print(f"\n## Hyperband, {title}: {et}, budget {budget}, {reps} repetitions (random proposals)")
    print("| arm | median epochs trained | median best value |")
    print("|---|---|---|")
    for arm, label in (("without", "no early termination"), ("with", "hyperband")):
        print(
            f"| {label} | {statistics.median(e for e, _ in results[arm]):.0f} | "
            f"{statistics.median(b for _, b in results[arm]):.6g} |"
        )
    print(
        f"epochs saved: {saved:.0%}; the same best value in {same_best} of {reps} repetitions; "
        f"load {load()}"
    )
    return {"saved": saved, "same_best": same_best, "reps": reps, "results": results}


def load() -> str:
    """The 1, 5 and 15 minute load averages: the figures depend on what else runs."""
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--part", choices=["surrogate", "trainer", "hyperband", "all"], default="all"
    )
    parser.add_argument("--reps", type=int, default=10, help="repetitions per engine (default 10)")
    parser.add_argument("--sweep", type=Path, default=REPO / "bench" / "search_quality.yaml")
    parser.add_argument(
        "--trainer-sweep", type=Path, default=REPO / "bench" / "search_quality_trainer.yaml"
    )
    parser.add_argument("--keep", type=Path, help="read (or write) the trainer table here")
    parser.add_argument(
        "--only", nargs="*", help="candidate samplers to run besides W&B's engine and the local one"
    )
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args(argv)
    cfg = yaml.safe_load(args.sweep.read_text())
    trainer_cfg = yaml.safe_load(args.trainer_sweep.read_text())
    figures: dict[str, Any] = {"load_start": load()}
    if args.part in ("surrogate", "all"):
        space, _ = sp.build_space(cfg["parameters"], "surrogate")
        figures["surrogate"] = compare(
            f"surrogate ({args.sweep.name})",
            cfg,
            surrogate,
            surrogate_optimum(space),
            args.reps,
            args.only,
        )
    if args.part in ("trainer", "hyperband", "all"):
        table = train_table(trainer_cfg, args.keep)
        space, _ = sp.build_space(trainer_cfg["parameters"], "trainer")

        def real(values: dict[str, Any]) -> float:
            return min(table[json.dumps(sorted(values.items()))])

        def real_curve(values: dict[str, Any]) -> list[float]:
            return table[json.dumps(sorted(values.items()))]

        if args.part in ("trainer", "all"):
            figures["trainer"] = compare(
                f"trainer ({args.trainer_sweep.name})",
                trainer_cfg,
                real,
                min(min(c) for c in table.values()),
                args.reps,
                args.only,
            )
        if args.part in ("hyperband", "all"):
            figures["hyperband_trainer"] = hyperband_saving(
                f"trainer ({args.trainer_sweep.name})", trainer_cfg, real_curve, args.reps
            )
            epochs = int(cfg["parameters"]["max_epochs"]["value"])
            figures["hyperband_surrogate"] = hyperband_saving(
                f"surrogate ({args.sweep.name})",
                cfg,
                lambda values: surrogate_curve(values, epochs),
                args.reps,
            )
    figures["load_end"] = load()
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
