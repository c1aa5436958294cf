"""What the data cache saves each trial: ``data_seconds`` of a trial that decodes a folder of 3D
NIfTI volumes against one that finds them in the cache.

The folder (by default 60 int16 volumes of 160x192x160, head-like ellipsoids with noise, as
``.nii.gz``) is generated once and kept under ``outputs/bench/``. Each trial is a fresh Python
process, as a sweep's trials are, that loads both splits with the trainer's own code (its time
is the run summary's ``data_seconds``): the first with an empty cache, the next ones hitting it.
Usage: ``python bench/data_cache.py [--volumes N] [--shape X Y Z] [--image-size S]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ONE_TRIAL = """
import json, sys
from contract.config import build
from trainer import data
d = data.load(build(json.loads(sys.argv[1])))
print(json.dumps({"seconds": d.seconds, "hit": d.cache_hit, "streamed": d.streamed}))
"""


def make_folder(folder: Path, n: int, shape: tuple[int, int, int]) -> None:
    import nibabel as nib
    import numpy as np

    done = folder / "complete.json"
    if done.exists() and json.loads(done.read_text()) == {"n": n, "shape": list(shape)}:
        return
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.nii.gz"):
        old.unlink()
    rng = np.random.default_rng(0)
    axes = [np.linspace(-1, 1, s, dtype=np.float32) for s in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    for i in range(n):
        r = (x / 0.8) ** 2 + (y / 0.9) ** 2 + (z / 0.75) ** 2 * rng.uniform(0.9, 1.1)
        head = np.where(r < 1, 600 + 400 * np.cos(6 * r + rng.uniform(0, 3)), 0)
        noisy = head + rng.normal(0, 20, shape).astype(np.float32)
        volume = np.clip(noisy, 0, None).astype(np.int16)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), folder / f"sub-{i:03d}_T1w.nii.gz")
    done.write_text(json.dumps({"n": n, "shape": list(shape)}))


def trial(layer: dict) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", ONE_TRIAL, json.dumps(layer)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=60)
    parser.add_argument("--shape", type=int, nargs=3, default=(160, 192, 160))
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    folder = REPO / "outputs" / "bench" / f"nifti-{args.volumes}-{'x'.join(map(str, args.shape))}"
    make_folder(folder, args.volumes, tuple(args.shape))
    with tempfile.TemporaryDirectory() as cache_dir:
        layer = {
            "data_source": "folder",
            "data_dir": str(folder),
            "spatial_dims": 3,
            "image_size": args.image_size,
            "cache_dir": cache_dir,
        }
        runs = [trial(layer) for _ in range(args.trials)]
    first, later = runs[0], runs[1:]
    assert not first["hit"] and all(r["hit"] for r in later)
    best_later = min(r["seconds"] for r in later)
    print(
        f"{args.volumes} volumes of {'x'.join(map(str, args.shape))} (.nii.gz, int16) -> "
        f"{args.image_size}^3; load {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} cores"
    )
    print(f"trial 1 (decodes into the cache): data_seconds {first['seconds']:.2f}")
    for i, r in enumerate(later, start=2):
        print(f"trial {i} (cache hit): data_seconds {r['seconds']:.3f}")
    print(f"cache hit / first trial: {best_later / first['seconds']:.4f}x (best hit)")


if __name__ == "__main__":
    main()
