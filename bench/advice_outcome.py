"""Does following the report's advice give a better model for the same compute?

For each case, a first sweep whose space is wrong as the metrics guide describes (or a
well-placed control) runs on real data (MNI152 slices, tiny images and models, a few epochs),
then with the same budget of N more trials:

  (a) the report's next_sweep.yaml, started warm (``sweeper create --from``);
  (b) N more trials of the first sweep (the same file, started warm from it too).

Printed side by side, per case and seed: the best validation loss of (a) and (b), the epochs
their new trials trained, and the verdict counts of the first sweep and of each follow-up.

    python bench/advice_outcome.py [--seeds 1 2] [--first 3] [--trials 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
BASE = {
    "data_source": "mni152",
    "image_size": 16,
    "n_val": 8,
    "batch_size": 8,
    "max_epochs": 4,
    "norm_num_groups": 4,
    "nonlocal_attn": False,
    "max_val_triplets": 1,
    "log_every": 50,
}
# Each case: what the first sweep searches and the values it fixes (over BASE).
CASES = {
    "capacity too small": (
        {"channels": {"values": [[4, 4], [4, 8]]}, "lr": {"values": [1.0e-3, 3.0e-3]}},
        {"latent_channels": 1, "n_train": 48},
    ),
    "kl_weight too high": (
        {"kl_weight": {"values": [0.3, 1.0]}, "lr": {"values": [1.0e-3, 3.0e-3]}},
        {"channels": [8, 16], "n_train": 48},
    ),
    "lr too low": (
        {"lr": {"values": [1.0e-6, 3.0e-6]}, "latent_channels": {"values": [2, 4]}},
        {"channels": [8, 16], "n_train": 48},
    ),
    "too few images": (
        {"lr": {"values": [1.0e-3, 3.0e-3]}, "latent_channels": {"values": [2, 4]}},
        {"channels": [16, 32], "n_train": 8, "max_epochs": 8},
    ),
    "control": (
        {"lr": {"values": [1.0e-3, 3.0e-3]}, "latent_channels": {"values": [2, 4]}},
        {"channels": [8, 16], "n_train": 48},
    ),
}


def sweep_file(path: Path, searched: dict, fixed: dict, run_cap: int, seed: int) -> Path:
    params = dict(searched)
    params.update({k: {"value": v} for k, v in {**BASE, **fixed, "seed": seed}.items()})
    cfg = {
        "name": path.stem,
        "command": ["${env}", "${interpreter}", "-m", "trainer", "${args}"],
        "method": "random",
        "metric": {"name": "val/best_recon_loss", "goal": "minimize"},
        "run_cap": run_cap,
        "parameters": params,
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", PYTHONPATH=str(REPO))
    env["SWEEPER_STORAGE"] = f"sqlite:///{cwd / 'sweeps.db'}"
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done


def create(cwd: Path, file: Path, *extra: str) -> tuple[str, str]:
    done = run(cwd, "sweeper", "create", str(file), *extra)
    return done.stdout.strip(), done.stderr.strip()


def outcome(cwd: Path, sweep_id: str) -> dict:
    """Best value (seeded trials included), epochs the sweep's own trials trained, verdicts."""
    sys.path.insert(0, str(REPO))
    from sweeper import store as st
    from sweeper import warm

    sweep = st.load_sweep(st.open_store(f"sqlite:///{cwd / 'sweeps.db'}"), sweep_id)
    trials = sweep.study.get_trials(deepcopy=False)
    values = [t.values[0] for t in trials if t.values]
    epochs = sum(len(t.intermediate_values) for t in trials if not warm.describe(t))
    out = cwd / f"report-{sweep_id}"
    run(cwd, "analysis", "report", "outputs/wandb", "--sweep", sweep_id, "--out", str(out))
    verdicts = Counter(r["verdict"] for r in json.loads((out / "verdicts.json").read_text()))
    return {"best": min(values), "epochs": epochs, "verdicts": dict(verdicts), "report": out}


def one(case: str, seed: int, first: int, n: int, root: Path) -> dict:
    cwd = root / f"{case.replace(' ', '_')}-{seed}"
    cwd.mkdir()
    searched, fixed = CASES[case]
    first_id, _ = create(cwd, sweep_file(cwd / "first.yaml", searched, fixed, first, seed))
    run(cwd, "sweeper", "agent", first_id)
    before = outcome(cwd, first_id)
    nxt = yaml.safe_load((before["report"] / "next_sweep.yaml").read_text())
    # The budget counts seeded trials (as W&B counts prior runs): K seeded + N new.
    nxt["run_cap"] = warm_count(cwd, first_id, nxt) + n
    (cwd / "next.yaml").write_text(yaml.safe_dump(nxt, sort_keys=False))
    a_id, a_line = create(cwd, cwd / "next.yaml", "--from", first_id)
    run(cwd, "sweeper", "agent", a_id)
    b_id, b_line = create(
        cwd, sweep_file(cwd / "more.yaml", searched, fixed, first + n, seed), "--from", first_id
    )
    run(cwd, "sweeper", "agent", b_id)
    return {
        "before": before,
        "a": outcome(cwd, a_id),
        "b": outcome(cwd, b_id),
        "a_line": a_line,
        "b_line": b_line,
    }


def warm_count(cwd: Path, first_id: str, cfg: dict) -> int:
    sys.path.insert(0, str(REPO))
    from sweeper import store as st
    from sweeper import warm
    from sweeper.space import build_space

    old = st.load_sweep(st.open_store(f"sqlite:///{cwd / 'sweeps.db'}"), first_id)
    space, _ = build_space(cfg.get("parameters") or {}, "next.yaml")
    cfg = {**cfg, "run_cap": 10**6}
    return len(warm.plan(cfg, space, old, "next")[0])


def fmt(v: dict) -> str:
    return " ".join(f"{k}={n}" for k, n in sorted(v.items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--first", type=int, default=3, help="trials of the first sweep")
    parser.add_argument("--trials", type=int, default=3, help="N: trials after the first sweep")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    print(f"load: {os.getloadavg()[0]:.1f} (1-min average at start), {os.cpu_count()} cores")
    print(f"seeds {args.seeds}, first sweep {args.first} trials, then N={args.trials} each way")
    rows = []
    with tempfile.TemporaryDirectory(prefix="advice-outcome-") as tmp:
        for case in args.cases:
            for seed in args.seeds:
                r = one(case, seed, args.first, args.trials, Path(tmp))
                rows.append((case, seed, r))
                print(f"  {case} seed {seed}: (a) {r['a_line']}", flush=True)
    head = f"{'case':<20} {'seed':>4} {'best (a)':>10} {'best (b)':>10} {'ep (a)':>6} {'ep (b)':>6}"
    print(head + "  verdicts first | (a) | (b)")
    for case, seed, r in rows:
        print(
            f"{case:<20} {seed:>4} {r['a']['best']:>10.5f} {r['b']['best']:>10.5f} "
            f"{r['a']['epochs']:>6} {r['b']['epochs']:>6}  {fmt(r['before']['verdicts'])} | "
            f"{fmt(r['a']['verdicts'])} | {fmt(r['b']['verdicts'])}"
        )
    for case in args.cases:
        ratio = [r["a"]["best"] / r["b"]["best"] for c, _s, r in rows if c == case]
        spread = statistics.pstdev(ratio) if len(ratio) > 1 else float("nan")
        print(
            f"{case:<20} best (a)/(b): median {statistics.median(ratio):.3f}, spread {spread:.3f}"
        )
    print("early_stop: not measured (the config key is not in this tree)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
