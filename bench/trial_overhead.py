"""Per-trial overhead of the local engine: fork server vs a cold ``python -m trainer``.

Overhead = a trial's wall time (process start to exit, as the agent sees it) minus the time
the trainer spent in its epochs (``time_per_epoch`` in progress.jsonl): imports, data, model,
``wandb.init`` up to the first step, plus teardown (checkpoint, ``wandb.finish``, exit).
Both ways run the same tiny one-epoch configuration with W&B offline, alternating, so load
on the machine hits both alike. The fork server's own start-up is paid once per agent and
printed apart. A third column shares one wandb-core service between trials
(``wandb beta core start``, ``WANDB_SERVICE``), which agents on one machine could do.

    python bench/trial_overhead.py [--trials N]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from contract import metrics  # noqa: E402
from sweeper.forkserver import ForkServer  # noqa: E402

TINY = [
    "--channels=[8, 8]",
    "--norm_num_groups=4",
    "--latent_channels=2",
    "--nonlocal_attn=False",
    "--image_size=16",
    "--n_train=8",
    "--n_val=4",
    "--batch_size=4",
    "--max_epochs=1",
]


def trial_env(work: Path, run_id: str, service: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_RUN_ID=run_id,
        WANDB_SWEEP_ID="benchmrk",
        PYTHONPATH=str(REPO),
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
    )
    if service:
        env["WANDB_SERVICE"] = service
    return env


def epoch_seconds(work: Path, run_id: str) -> float:
    rows = (work / "runs" / run_id / "progress.jsonl").read_text().splitlines()
    return sum(json.loads(row)[metrics.TIME_PER_EPOCH] for row in rows)


def cold(work: Path) -> float:
    run_id = secrets.token_hex(4)
    argv = [sys.executable, "-m", "trainer", f"--output_dir={work}", *TINY]
    started = time.perf_counter()
    with open(work / f"{run_id}.log", "wb") as log:
        code = subprocess.call(argv, env=trial_env(work, run_id), stdout=log, stderr=log, cwd=work)
    wall = time.perf_counter() - started
    assert code == 0, (work / f"{run_id}.log").read_text()
    return wall - epoch_seconds(work, run_id)


def forked(server: ForkServer, work: Path, service: str | None = None) -> float:
    run_id = secrets.token_hex(4)
    started = time.perf_counter()
    child = server.start(
        [f"--output_dir={work}", *TINY],
        trial_env(work, run_id, service),
        str(work),
        work / f"{run_id}.log",
    )
    code = child.wait(timeout=600)
    wall = time.perf_counter() - started
    assert code == 0, (work / f"{run_id}.log").read_text()
    return wall - epoch_seconds(work, run_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4, help="trials each way (default 4)")
    args = parser.parse_args()
    wandb = str(Path(sys.executable).with_name("wandb"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        server = ForkServer(sys.executable, trial_env(work, "server"), str(work))
        server.wait_ready()
        server_start = time.perf_counter() - started
        service = subprocess.run(
            [wandb, "beta", "core", "start", "--idle-timeout", "5m"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout.strip()
        cold_s, fork_s, shared_s = [], [], []
        try:
            for _ in range(args.trials):
                cold_s.append(cold(work))
                fork_s.append(forked(server, work))
                shared_s.append(forked(server, work, service))
        finally:
            server.close()
            subprocess.run(
                [wandb, "beta", "core", "stop"],
                env={**os.environ, "WANDB_SERVICE": service},
                capture_output=True,
                timeout=120,
            )
    c, f, s = (statistics.median(x) for x in (cold_s, fork_s, shared_s))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"per-trial overhead over {args.trials} trials each (median; all in seconds)")
    print(f"  cold python -m trainer     : {c:6.2f}   ({', '.join(f'{x:.2f}' for x in cold_s)})")
    print(f"  fork server                : {f:6.2f}   ({', '.join(f'{x:.2f}' for x in fork_s)})")
    print(f"  fork + shared wandb-core   : {s:6.2f}   ({', '.join(f'{x:.2f}' for x in shared_s)})")
    print(f"  ratio fork/cold            : {f / c:6.2f}   (target <= 0.08)")
    print(f"  ratio fork+shared/cold     : {s / c:6.2f}")
    print(f"  fork server start-up       : {server_start:6.2f}   (once per agent)")
    print(f"  load average (1, 5, 15 min): {load} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
