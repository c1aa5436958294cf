"""Which files a ``data_source=folder`` or ``datalist`` run reads; torch-free, so a missing or
empty folder, a bad datalist or a listed file that does not exist fails in milliseconds,
before torch, MONAI and W&B start."""

from __future__ import annotations

import json
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
    """(train files, val files, how) of a folder or a datalist run."""
    if cfg.data_source == "datalist":
        return datalist(cfg)
    root = Path(cfg.data_dir or "")
    if (root / "train").is_dir() or (root / "val").is_dir():
        return list_images(root / "train"), list_images(root / "val"), "train/ and val/"
    files = list_images(root)
    if len(files) < 2:
        raise UserError(
            f"data_dir={str(root)!r}: needs at least 2 images to split into train and val, "
            f"found {len(files)}"
        )
    return fixed_split(files, cfg)


def fixed_split(files: list[Path], cfg: Config) -> tuple[list[Path], list[Path], str]:
    """The same validation files whatever the seed: ``val_fraction`` of them, at least one."""
    order = np.random.default_rng(SPLIT_SEED).permutation(len(files))
    n_val = min(len(files) - 1, max(1, round(len(files) * cfg.val_fraction)))
    val = sorted(files[i] for i in order[:n_val])
    train = sorted(files[i] for i in order[n_val:])
    return train, val, f"split by val_fraction={cfg.val_fraction}"


def datalist(cfg: Config) -> tuple[list[Path], list[Path], str]:
    """A MONAI (Decathlon-style) datalist: ``{"training": [{"image": path}, ...],
    "validation": [...]}``, paths relative to the file's folder. Other keys (``name``,
    ``labels``, ``test``...) and other fields of an entry (``label``) are ignored. Without a
    ``validation`` list, the training list is split by ``val_fraction``, as a folder is."""
    path = Path(cfg.datalist or "")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"datalist={str(path)!r}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"datalist={str(path)!r}: cannot read ({type(exc).__name__})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(doc, dict) or "training" not in doc:
        found = ", ".join(map(repr, doc)) if isinstance(doc, dict) else type(doc).__name__
        raise UserError(f"{path}: needs a 'training' list of {{\"image\": path}} (found {found})")
    train = _entries(path, doc, "training")
    if "validation" not in doc:
        if len(train) < 2:
            raise UserError(
                f"{path}: without a 'validation' list, 'training' needs at least 2 images to split"
            )
        return fixed_split(train, cfg)
    return train, _entries(path, doc, "validation"), "training and validation lists"


def _entries(path: Path, doc: dict, key: str) -> list[Path]:
    entries = doc[key]
    if not isinstance(entries, list) or not entries:
        raise UserError(f'{path}: {key!r} must be a non-empty list of {{"image": path}}')
    out = []
    for i, entry in enumerate(entries):
        where = f"{path}: {key}[{i}]"
        if not isinstance(entry, dict) or "image" not in entry:
            raise UserError(f'{where}: expected {{"image": path}}, got {entry!r}')
        image = entry["image"]
        if not isinstance(image, str):
            raise UserError(f"{where}: 'image' must be one path (a string), got {image!r}")
        # Decathlon lists write "./imagesTr/x.nii.gz": relative to the list's folder.
        file = path.parent / image
        if not file.is_file():
            raise UserError(f"{where}: image {image!r} not found (looked for {file})")
        if not file.name.lower().endswith(PICTURE_SUFFIXES + NIFTI_SUFFIXES):
            suffixes = ", ".join(PICTURE_SUFFIXES + NIFTI_SUFFIXES)
            raise UserError(f"{where}: {image!r} is not an image file ({suffixes})")
        out.append(file)
    return out
