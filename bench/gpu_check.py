"""The Python half of ``bench/gpu_check.sh``: the trainer against a bare loop on one device.

``loop``: images/s of the trainer (``trainer.train.run`` in this process, W&B offline, every
metric of the contract logged; its training-phase speed read from ``train_time_per_epoch`` in
the run's ``progress.jsonl``) against a bare loop of the same model, data, loss and Adam
steps under the same bf16 autocast, with nothing else. Epoch 1 of each is a warm-up and not
counted; the bare loop runs before and after the trainer and the mean is the reference.
Peak GPU memory (``torch.cuda.max_memory_allocated``) of each. Then ``train_step`` itself, with
and without the adversarial term, under ``torch.cuda.set_sync_debug_mode("error")``: any step
that waits on the host raises there, and the line names the call.

``sweep K FOLDER``: writes FOLDER/sweep.yaml, a local sweep of K identical trials (seeds
differ) for ``run_agent.sh``. ``agents FOLDER SECONDS``: the total images/s of those trials,
the sum over runs of each one's training-phase rate (epoch 1 excluded), and over the whole
``run_agent.sh`` wall time.

``--cpu``: tiny sizes on the CPU, the same code paths in seconds (no GPU figures).
Usage: ``python bench/gpu_check.py [--cpu] loop | sweep K FOLDER | agents FOLDER SECONDS``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# A 3D VAE of the size users sweep; 16 steps per epoch.
GPU_SIZES = {
    "spatial_dims": 3,
    "image_size": 64,
    "channels": [32, 64, 64],
    "batch_size": 4,
    "n_train": 64,
    "n_val": 8,
    "max_epochs": 3,
}
# The same paths in seconds on a CPU.
CPU_SIZES = {
    "spatial_dims": 2,
    "image_size": 16,
    "channels": [8, 8],
    "norm_num_groups": 4,
    "latent_channels": 2,
    "batch_size": 4,
    "n_train": 32,
    "n_val": 4,
    "max_epochs": 2,
}
# Steps timed under the sync check, after warm-up steps (cudnn picks its kernels then).
WARMUP_STEPS, CHECKED_STEPS = 2, 3


def sizes(cpu: bool) -> dict:
    return dict(CPU_SIZES if cpu else GPU_SIZES, precision="bf16")


def images_per_second(rows: list[dict], n_train: int) -> float:
    counted = rows[1:]  # epoch 1 warms up
    return n_train * len(counted) / sum(r["train_time_per_epoch"] for r in counted)


def bare_loop(cfg) -> tuple[float, int]:
    """(images/s over epochs 2..N, peak bytes allocated on the GPU; 0 on the CPU)."""
    import torch

    from trainer import data
    from trainer.model import build_model, forward, losses
    from trainer.train import resolve_device

    device, dtype = resolve_device(cfg)
    torch.manual_seed(cfg.seed)
    train_x = data.load(cfg).train.to(device)
    model = build_model(cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    images, seconds = 0, 0.0
    for epoch in range(1, cfg.max_epochs + 1):
        started = time.perf_counter()
        for x in data.train_batches(train_x, cfg, epoch):
            with torch.autocast(device.type, dtype=dtype):
                recon, z_mu, z_sigma = forward(model, x, sample=True)
                out = losses(x, recon, z_mu, z_sigma, cfg, None)
            optimizer.zero_grad(set_to_none=True)
            out["total"].backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if epoch > 1:
            seconds += time.perf_counter() - started
            images += len(train_x)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else 0
    return images / seconds, peak


def trainer_run(cfg) -> tuple[float, int]:
    """(images/s of the trainer's training phase over epochs 2..N, peak GPU bytes)."""
    import torch

    from contract import runs
    from trainer import train

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    # As ``python -m trainer`` does: the run folder locked, then the run.
    with runs.take_lock(runs.run_dir(cfg.output_dir, runs.new_run_id())) as lock:
        code = train.run(cfg, lock)
    os.environ.pop("WANDB_RUN_ID")  # the run sets it; the next wandb.init is another run
    if code != 0:
        raise SystemExit(f"gpu_check: the trainer exited with {code}")
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    (progress,) = Path(cfg.output_dir).glob("runs/*/progress.jsonl")
    rows = [json.loads(line) for line in progress.read_text().splitlines()]
    return images_per_second(rows, cfg.n_train), peak


def sync_check(cfg) -> str:
    """Run ``train_step`` (the trainer's own stage) with every host sync made an error."""
    import torch
    import wandb

    from contract import runs
    from trainer import data, train

    folder = runs.run_dir(cfg.output_dir, runs.new_run_id())
    folder.mkdir(parents=True)
    p = train.prepare(cfg, folder)
    run = wandb.init(project="gpu-check", config=cfg.to_dict())
    try:
        s = train.setup(p, run, train.Signals(), tty=False)
        train.start_epoch(s, 1)
        batches = iter(data.train_batches(s.train_x, cfg, 1))
        for i in range(WARMUP_STEPS):
            train.train_step(s, i, next(batches))
        if p.device.type != "cuda":
            for i in range(WARMUP_STEPS, WARMUP_STEPS + CHECKED_STEPS):
                train.train_step(s, i, next(batches))
            return f"ran {CHECKED_STEPS} steps; not checked on the CPU (no CUDA)"
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for i in range(WARMUP_STEPS, WARMUP_STEPS + CHECKED_STEPS):
                train.train_step(s, i, next(batches))
        except RuntimeError as exc:
            return f"a step waits for the host: {str(exc).splitlines()[0]}"
        finally:
            torch.cuda.set_sync_debug_mode(0)
        torch.cuda.synchronize()
        return f"no host sync in {CHECKED_STEPS} steps"
    finally:
        run.finish()


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB" if n else "n/a (CPU)"


def loop(cpu: bool) -> None:
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true")
    import torch

    from contract.config import build

    where = "CPU" if cpu else torch.cuda.get_device_name()
    print(f"[gpu_check] torch {torch.__version__} on {where}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["WANDB_DIR"] = tmp
        cfg = build(sizes(cpu), {"output_dir": str(Path(tmp) / "out")})
        before, bare_peak = bare_loop(cfg)
        rate, trainer_peak = trainer_run(cfg)
        after, _ = bare_loop(cfg)
        bare = (before + after) / 2
        # Never flushed during the checked steps: steps per epoch > warm-up + checked steps.
        quiet = {"log_every": 10**6, "output_dir": str(Path(tmp) / "sync")}
        plain = sync_check(build(sizes(cpu), quiet))
        adv = {"adv_weight": 0.01, "adv_warmup_epochs": 0, "disc_layers": 2, "disc_channels": 8}
        adversarial = sync_check(build(sizes(cpu), quiet, adv))
    print(f"[gpu_check] model: {json.dumps(sizes(cpu))}")
    print(f"[gpu_check] bare loop  {before:,.1f} / {after:,.1f} images/s (before / after)")
    print(f"[gpu_check] trainer    {rate:,.1f} images/s  ratio {rate / bare:.3f} to the bare loop")
    print(f"[gpu_check] peak GPU memory: trainer {mib(trainer_peak)}, bare loop {mib(bare_peak)}")
    print(f"[gpu_check] train_step: {plain}; with the adversarial term: {adversarial}")


def write_sweep(cpu: bool, agents: int, folder: Path) -> None:
    """A local sweep of ``agents`` trials, one per agent, all of the same size."""
    import yaml

    parameters = {k: {"value": v} for k, v in sizes(cpu).items()}
    parameters["seed"] = {"values": list(range(agents))}
    parameters["output_dir"] = {"value": str(folder / "out")}
    sweep = {
        "name": f"gpu-check-{agents}",
        "method": "grid",
        "metric": {"name": "val/best_recon_loss", "goal": "minimize"},
        "run_cap": agents,
        "command": ["${env}", "${interpreter}", "-m", "trainer", "${args}"],
        "parameters": parameters,
    }
    (folder / "sweep.yaml").write_text(yaml.safe_dump(sweep, sort_keys=False))


def agents_report(cpu: bool, folder: Path, wall: float) -> None:
    progress = sorted((folder / "out").glob("runs/*/progress.jsonl"))
    n_train, epochs = sizes(cpu)["n_train"], sizes(cpu)["max_epochs"]
    rates = []
    for path in progress:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        if len(rows) != epochs:
            raise SystemExit(f"gpu_check: {path} has {len(rows)} epochs, expected {epochs}")
        rates.append(images_per_second(rows, n_train))
    total = n_train * epochs * len(progress)
    print(
        f"[gpu_check] {len(progress)} agent(s): {sum(rates):,.1f} images/s together while "
        f"training (each {', '.join(f'{r:,.1f}' for r in rates)}); {total / wall:,.1f} images/s "
        f"over the {wall:.0f} s of run_agent.sh, start-up included"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU")
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("loop", help="trainer against a bare loop, peak memory, sync check")
    sweep = sub.add_parser("sweep", help="write FOLDER/sweep.yaml for K agents")
    sweep.add_argument("agents", type=int)
    sweep.add_argument("folder", type=Path)
    agents = sub.add_parser("agents", help="total images/s of the runs under FOLDER")
    agents.add_argument("folder", type=Path)
    agents.add_argument("wall", type=float, help="seconds run_agent.sh took")
    args = parser.parse_args()
    if args.what == "loop":
        loop(args.cpu)
    elif args.what == "sweep":
        write_sweep(args.cpu, args.agents, args.folder)
    else:
        agents_report(args.cpu, args.folder, args.wall)


if __name__ == "__main__":
    main()
