"""Streamed against in-memory training: images/s of the same loop over the same 3D data.

Both splits are built once into a temporary data cache; then, in this process, two copies of
the same model (same initial weights) train epoch by epoch, alternating between the two data
paths in ABBA order so that a change in the machine's load hits both alike (on a shared CPU one
epoch can still differ from the next by a quarter: run more epochs for a steadier ratio):

- **in memory**: the split whole, as one tensor mapped from the cache (``stream_above_gb``
  above its size), batches indexed from it, as the trainer does for data that fits;
- **streamed**: the split memory-mapped from the cache (``stream_above_gb=0``), batches read
  through a DataLoader with ``--workers`` worker processes.

Epoch 1 of each is a warm-up and not counted. The ratio streamed/in-memory of training images/s
is the figure of merit (target >= 0.9 on a CPU). The loaders alone (no model) are timed too:
that ratio is far below 1, since indexing a tensor costs next to nothing, and shows how much of
a step reading from disk could take at most. The cache file sits in the OS page cache after the
build, as it does for every trial after the first on a machine with the RAM for it; a split
larger than RAM reads from the disk itself, at the disk's speed.
Usage: ``python bench/data_stream.py [--epochs N] [--workers W] [--threads T]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="num_workers when streamed")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--n-train", type=int, default=24)
    args = parser.parse_args()

    import torch

    from contract.config import build
    from trainer import data
    from trainer.model import build_model, forward, losses

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        layer = {
            "spatial_dims": 3,
            "channels": [8, 16],
            "norm_num_groups": 8,
            "latent_channels": 2,
            "nonlocal_attn": False,
            "image_size": args.image_size,
            "n_train": args.n_train,
            "n_val": 4,
            "batch_size": 4,
            "cache_dir": tmp,
        }
        cfg = {
            "in memory": build(layer),
            "streamed": build({**layer, "stream_above_gb": 0, "num_workers": args.workers}),
        }
        splits = {name: data.load(c).train for name, c in cfg.items()}
        assert isinstance(splits["streamed"], data.OnDisk)
        assert isinstance(splits["in memory"], torch.Tensor)
        mb = splits["in memory"].numel() * 4 / 1e6
        print(
            f"3D synthetic, {args.n_train} images of {args.image_size}^3 ({mb:.0f} MB), batch 4, "
            f"streamed with num_workers={args.workers}; torch threads {torch.get_num_threads()}; "
            f"load {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} cores",
            flush=True,
        )

        loader = {name: 0.0 for name in cfg}
        for epoch in range(1, args.epochs + 1):
            for name, c in cfg.items():
                started = time.perf_counter()
                n = sum(len(b) for b in data.train_batches(splits[name], c, epoch))
                if epoch > 1:
                    loader[name] += n / (time.perf_counter() - started) / (args.epochs - 1)

        models, optims = {}, {}
        for name, c in cfg.items():
            torch.manual_seed(0)
            models[name] = build_model(c)
            optims[name] = torch.optim.Adam(models[name].parameters(), lr=c.lr)
        images = {name: 0 for name in cfg}
        seconds = {name: 0.0 for name in cfg}
        for epoch in range(1, args.epochs + 1):
            # ABBA order: a load that rises or falls through the run favours neither path.
            for name in list(cfg)[:: 1 if epoch % 2 else -1]:
                c, model, optimizer = cfg[name], models[name], optims[name]
                started, n = time.perf_counter(), 0
                for x in data.train_batches(splits[name], c, epoch):
                    recon, z_mu, z_sigma = forward(model, x, sample=True)
                    out = losses(x, recon, z_mu, z_sigma, c, None)
                    optimizer.zero_grad(set_to_none=True)
                    out["total"].backward()
                    optimizer.step()
                    n += len(x)
                took = time.perf_counter() - started
                print(f"epoch {epoch} {name}: {n / took:.2f} images/s", flush=True)
                if epoch > 1:
                    seconds[name] += took
                    images[name] += n
        speed = {name: images[name] / seconds[name] for name in cfg}
        for name in cfg:
            print(
                f"{name:>9}: training {speed[name]:7.2f} images/s   loader alone "
                f"{loader[name]:9.0f} images/s"
            )
        print(
            f"streamed / in memory: training {speed['streamed'] / speed['in memory']:.3f}x "
            f"(target >= 0.9), loader alone {loader['streamed'] / loader['in memory']:.3f}x; "
            f"load {os.getloadavg()[0]:.1f} (1 min)"
        )


if __name__ == "__main__":
    main()
