"""Which files a ``data_source=folder`` run reads; torch-free, so a missing or empty folder
fails in milliseconds, before torch, MONAI and W&B start."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contract.config import Config
from contract.errors import UserError

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
# The split of a folder without train/ and val/ must not move when a sweep varies `seed`.
SPLIT_SEED = 0


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise UserError(f"data_dir={str(folder)!r}: folder not found")
    suffixes = PICTURE_SUFFIXES + NIFTI_SUFFIXES
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(suffixes))
    if not files:
        raise UserError(
            f"data_dir={str(folder)!r}: no images ({', '.join(suffixes)}) in this folder"
        )
    return files


def split(cfg: Config) -> tuple[list[Path], list[Path], str]:
    """(train files, val files, how): ``train/`` and ``val/`` subfolders, else a fixed split."""
    root = Path(cfg.data_dir or "")
    if (root / "train").is_dir() or (root / "val").is_dir():
        return list_images(root / "train"), list_images(root / "val"), "train/ and val/"
    files = list_images(root)
    if len(files) < 2:
        raise UserError(
            f"data_dir={str(root)!r}: needs at least 2 images to split into train and val, "
            f"found {len(files)}"
        )
    order = np.random.default_rng(SPLIT_SEED).permutation(len(files))
    n_val = min(len(files) - 1, max(1, round(len(files) * cfg.val_fraction)))
    val = sorted(files[i] for i in order[:n_val])
    train = sorted(files[i] for i in order[n_val:])
    return train, val, f"split by val_fraction={cfg.val_fraction}"
