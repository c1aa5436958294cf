"""Cost of ``python -m analysis report`` on a 200-run sweep against the bare cost of reading the
same runs with ``wandb leet inspect --json`` (same concurrency). Target: ratio <= 1.2.

Both wall-clock time and CPU time (user + system, of the process and every process it waited
for, wandb-core included) are measured: on a machine shared with other work the wall-clock
ratio swings with the load, the CPU ratio much less.

The sweep (200 offline runs, 30 epochs x 50 steps, a validation triplet image per epoch) is
written once with the real wandb library by parallel logging processes and cached in ``--data``.

Two readings are timed as the baseline:
- ``wandb leet inspect --json FILE`` per run, the command as users type it (a Python wrapper
  that starts the ``wandb-core`` binary);
- the ``wandb-core leet inspect`` binary itself with the wrapper's arguments, which is what the
  analysis runs: the floor of any analysis built on W&B's reader.

Then, in this process, the report's own stages are timed apart (reading, judging, writing the
report folder) and the size of ``report.html`` (plotly.js embedded, every chart, the triplet
viewers) is printed.

    python bench/analysis_scale.py [--data DIR] [--runs 200] [--epochs 30] [--steps 50]
                                   [--workers N] [--no-cli] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from analysis.offline import core_path, default_workers, find_run_files, inspect_command  # noqa: E402

HELPER = REPO / "tests" / "analysis_helpers.py"
SWEEP_ID = "bench001"
SHAPES = ["good", "good", "noisy", "overfitting", "underfitting", "flat", "good", "diverged"]


def specs(runs: int, epochs: int, steps: int) -> list[dict]:
    out = []
    for i in range(runs):
        config = {
            "lr": [1e-4, 3e-4, 1e-3, 3e-3][i % 4],
            "kl_weight": [1e-7, 1e-6, 1e-5][i % 3],
            "channels": [[8, 8], [16, 16], [32, 32]][i % 5 % 3],
            "norm_num_groups": 4,
            "augment": i % 2 == 0,
            "num_res_blocks": 1 + i % 2,
            "max_epochs": epochs,
        }
        shape = SHAPES[i % len(SHAPES)]
        out.append({"shape": shape, "epochs": epochs, "steps": steps, "seed": i, "config": config,
                    "images": True, "name": f"bench-{i:03d}-{shape}"})  # fmt: skip
    return out


def generate(data: Path, runs: int, epochs: int, steps: int, procs: int) -> None:
    if data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", WANDB_DIR=str(data), WANDB_SILENT="true", WANDB_SWEEP_ID=SWEEP_ID,
               WANDB_CONFIG_DIR=str(data / ".config"), PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")  # fmt: skip
    all_specs = specs(runs, epochs, steps)
    chunks = [all_specs[i::procs] for i in range(procs)]
    start = time.perf_counter()
    children = [
        subprocess.Popen([sys.executable, str(HELPER), json.dumps(c)], env=env) for c in chunks if c
    ]
    if any(p.wait() != 0 for p in children):
        raise SystemExit("a logging process failed")
    print(f"wrote {runs} runs in {time.perf_counter() - start:.1f} s with {procs} processes")
    (data / "complete.json").write_text(
        json.dumps({"runs": runs, "epochs": epochs, "steps": steps})
    )


def children_cpu() -> float:
    """CPU seconds of every finished child process (and the processes they waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def read_all(files: list[Path], command, workers: int) -> tuple[float, float]:
    """(wall s, CPU s) of reading every file with ``command``."""

    def one(f: Path) -> int:
        return len(subprocess.run(command(f), capture_output=True, check=True).stdout)

    start, cpu = time.perf_counter(), children_cpu()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        total = sum(pool.map(one, files))
    assert total > 0
    return time.perf_counter() - start, children_cpu() - cpu


def time_report(data: Path, workers: int) -> tuple[float, float]:
    """(wall s, CPU s) of the whole report, in its own process."""
    with tempfile.TemporaryDirectory() as out:
        start, cpu = time.perf_counter(), children_cpu()
        subprocess.run(
            [sys.executable, "-m", "analysis", "report", str(data), "--out", out,
             "--workers", str(workers)],
            check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        return time.perf_counter() - start, children_cpu() - cpu


def stages(data: Path, workers: int) -> None:
    """Reading, judging and writing the report, timed apart in this process."""
    from analysis import judge, report
    from analysis.diagnose import Thresholds
    from analysis.offline import read_folder

    start = time.perf_counter()
    runs, _, _ = read_folder(data, workers=workers)
    read_s = time.perf_counter() - start
    judged = judge.judge(runs, Thresholds())
    judge_s = time.perf_counter() - start - read_s
    with tempfile.TemporaryDirectory() as out:
        label = report.SweepLabel(SWEEP_ID, SWEEP_ID)
        report.write_report(judged, Path(out), label, Thresholds(), fetch=report.copy_local)
        write_s = time.perf_counter() - start - read_s - judge_s
        html = (Path(out) / "report.html").stat().st_size
        md = (Path(out) / "report.md").stat().st_size
    print(f"  in one process: reading {read_s:.2f} s, judging {judge_s:.2f} s,"
          f" writing the report {write_s:.2f} s")  # fmt: skip
    print(f"  report.html {html / 1e6:.2f} MB, report.md {md / 1e3:.1f} kB")


def load() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=REPO / "outputs" / "bench" / "analysis_scale")
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--procs", type=int, default=max(2, (os.cpu_count() or 1) * 2))
    p.add_argument("--workers", type=int, default=default_workers(), help="runs read at once")
    p.add_argument("--no-cli", action="store_true", help="skip the slow wandb CLI baseline")
    p.add_argument("--repeat", type=int, default=1, help="time reading and report this many times")
    args = p.parse_args()

    marker = args.data / "complete.json"
    wanted = {"runs": args.runs, "epochs": args.epochs, "steps": args.steps}
    if not marker.exists() or json.loads(marker.read_text()) != wanted:
        generate(args.data, args.runs, args.epochs, args.steps, args.procs)
    files = find_run_files(args.data)
    assert len(files) == args.runs, f"{len(files)} run files in {args.data}"

    core = core_path()
    wandb_cli = str(Path(sys.executable).with_name("wandb"))
    rows = args.epochs * args.steps + args.epochs
    print(
        f"{args.runs} runs x {rows} history rows, {args.workers} reads at once, {os.cpu_count()} CPUs"
    )
    if not args.no_cli:
        cli = [wandb_cli, "leet", "inspect", "--json"]
        cli_s, _ = read_all(files, lambda f: [*cli, str(f)], args.workers)
        print(f"wandb leet inspect --json, every run:       {cli_s:7.2f} s")
    for _ in range(args.repeat):
        core_s, core_cpu = read_all(files, lambda f: inspect_command(f, core), args.workers)
        report_s, report_cpu = time_report(args.data, args.workers)
        print(
            f"wandb-core leet inspect --json, every run:  {core_s:7.2f} s  ({core_cpu:.2f} s CPU)"
        )
        print(
            f"python -m analysis report (whole report):   {report_s:7.2f} s  ({report_cpu:.2f} s CPU)"
        )
        if not args.no_cli:
            print(
                f"ratio report / wandb leet inspect:          {report_s / cli_s:7.2f}  (target <= 1.2)"
            )
        print(
            f"ratio report / wandb-core reading alone:    {report_s / core_s:7.2f}  (target <= 1.2)"
        )
        print(
            f"  the same in CPU time:                     {report_cpu / core_cpu:7.2f}  (target <= 1.2)"
        )
        print(f"  load average (1, 5, 15 min):              {' '.join(load())}")
    stages(args.data, args.workers)
    print(f"  load average (1, 5, 15 min):              {' '.join(load())}")


if __name__ == "__main__":
    main()
