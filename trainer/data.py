"""Training and validation images, all in memory as float tensors in [0, 1].

Sources (``data_source``): ``synthetic`` MONAI blobs, ``folder`` of PNG/JPEG/NIfTI files,
``mni152`` axial slices of the MNI152 template shipped inside the nilearn wheel. Every
image becomes ``(in_channels, *[image_size] * spatial_dims)``: padded to a square (cube)
with zeros, then resized, so the whole field of view is kept.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from contract.config import Config
from contract.errors import UserError
from trainer import files

MNI152_FILE = "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
# A slice is usable when brain (above 10% of the maximum) covers this share of it.
MNI152_MIN_BRAIN = 0.05


@dataclass
class Data:
    train: torch.Tensor  # (N, C, *spatial), float32 in [0, 1]
    val: torch.Tensor
    description: str


def load(cfg: Config) -> Data:
    """Build both splits for ``cfg``; bad folders or files raise a one-line UserError."""
    if cfg.data_source == "synthetic":
        return _synthetic(cfg)
    if cfg.data_source == "folder":
        return _folder(cfg)
    if cfg.data_source == "mni152":
        return _mni152(cfg)
    raise AssertionError(cfg.data_source)


# --- synthetic ----------------------------------------------------------------------------
def _synthetic(cfg: Config) -> Data:
    from monai.data.synthetic import create_test_image_2d, create_test_image_3d

    rs = np.random.RandomState(cfg.seed)
    size = cfg.image_size
    blobs = {"rad_max": max(3, size // 4), "rad_min": max(1, size // 16)}

    def one() -> np.ndarray:
        if cfg.spatial_dims == 2:
            img, _ = create_test_image_2d(size, size, random_state=rs, **blobs)
        else:
            img, _ = create_test_image_3d(size, size, size, random_state=rs, **blobs)
        return np.repeat(img[None].astype(np.float32), cfg.in_channels, axis=0)

    train = torch.from_numpy(np.stack([one() for _ in range(cfg.n_train)]))
    val = torch.from_numpy(np.stack([one() for _ in range(cfg.n_val)]))
    return Data(train, val, f"synthetic blobs (seed {cfg.seed})")


# --- folder -------------------------------------------------------------------------------
def _folder(cfg: Config) -> Data:
    train_files, val_files, how = files.split(cfg)
    train = torch.stack([_read(p, cfg) for p in train_files])
    val = torch.stack([_read(p, cfg) for p in val_files])
    return Data(train, val, f"{cfg.data_dir} ({how}: {len(train)} train, {len(val)} val)")


def _read(path: Path, cfg: Config) -> torch.Tensor:
    """One file -> (C, *spatial) in [0, 1] at image_size."""
    try:
        read = _read_nifti if files.is_nifti(path) else _read_picture
        array = read(path, cfg)
    except UserError:
        raise
    except Exception as exc:  # any reader failure on a user's file is bad input
        detail = " ".join(str(exc).split())  # one line, whatever the reader said
        raise UserError(f"{path}: cannot read image ({type(exc).__name__}: {detail})") from None
    return _fit(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)), cfg)


def _read_picture(path: Path, cfg: Config) -> np.ndarray:
    from PIL import Image

    if cfg.spatial_dims != 2:
        raise UserError(f"{path}: a 2D picture needs spatial_dims=2")
    if cfg.in_channels not in (1, 3):
        raise UserError(
            f"{path}: PNG/JPEG images give 1 or 3 channels, not in_channels={cfg.in_channels}"
        )
    with Image.open(path) as img:
        img.load()
        if img.mode.startswith("I") and cfg.in_channels == 1:  # 16/32-bit greyscale
            return _minmax(np.asarray(img, dtype=np.float32))[None]
        # PIL arrays are (rows, columns): no transpose, unlike MONAI's PILReader default.
        array = np.asarray(img.convert("L" if cfg.in_channels == 1 else "RGB"), dtype=np.float32)
    array = array / 255.0
    return array[None] if cfg.in_channels == 1 else array.transpose(2, 0, 1)


def _read_nifti(path: Path, cfg: Config) -> np.ndarray:
    import nibabel as nib

    array = np.asarray(nib.load(path).get_fdata(dtype=np.float32))
    while array.ndim > cfg.spatial_dims and array.shape[-1] == 1 and cfg.in_channels == 1:
        array = array[..., 0]
    if array.ndim == cfg.spatial_dims and cfg.in_channels == 1:
        array = array[None]
    elif array.ndim == cfg.spatial_dims + 1 and array.shape[-1] == cfg.in_channels:
        array = np.moveaxis(array, -1, 0)
    else:
        raise UserError(
            f"{path}: shape {array.shape} does not fit spatial_dims={cfg.spatial_dims}, "
            f"in_channels={cfg.in_channels}"
        )
    if not np.isfinite(array).all():
        raise UserError(f"{path}: contains NaN or infinite values")
    return _minmax(array)


def _minmax(array: np.ndarray) -> np.ndarray:
    low, high = float(array.min()), float(array.max())
    return (array - low) / (high - low) if high > low else np.zeros_like(array)


def _fit(image: torch.Tensor, cfg: Config) -> torch.Tensor:
    """Zero-pad to a square/cube (centred), then resize to image_size."""
    spatial = image.shape[1:]
    side = max(spatial)
    pad: list[int] = []
    for n in reversed(spatial):  # F.pad wants the last dimension first
        before = (side - n) // 2
        pad += [before, side - n - before]
    image = F.pad(image, pad)
    if side != cfg.image_size:
        mode = "bilinear" if cfg.spatial_dims == 2 else "trilinear"
        shrink = cfg.spatial_dims == 2 and side > cfg.image_size
        image = F.interpolate(
            image[None], size=(cfg.image_size,) * cfg.spatial_dims, mode=mode, antialias=shrink
        )[0]
    return image.clamp_(0.0, 1.0)


# --- MNI152 -------------------------------------------------------------------------------
def mni152_path() -> Path:
    """The template inside the installed nilearn wheel, found without importing nilearn (slow)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "data_source=mni152 needs the MNI152 template from nilearn: pip install 'vae-sweeps[mni152]'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / MNI152_FILE
    if not path.is_file():
        raise UserError(f"{path}: MNI152 template missing from the installed nilearn")
    return path


def mni152_slices() -> np.ndarray:
    """Usable axial slices, (S, rows, columns) in [0, 1], anterior up."""
    import nibabel as nib

    volume = np.asarray(nib.load(mni152_path()).dataobj, dtype=np.float32)  # x, y, z (RAS)
    volume = volume / volume.max()
    brain = (volume > 0.1).mean(axis=(0, 1))
    keep = np.flatnonzero(brain >= MNI152_MIN_BRAIN)
    # (x, y) -> (rows = y flipped so anterior is up, columns = x)
    return np.ascontiguousarray(np.flip(volume[:, :, keep].transpose(2, 1, 0), axis=1))


def _mni152(cfg: Config) -> Data:
    slices = mni152_slices()
    total = cfg.n_train + cfg.n_val
    if total > len(slices):
        raise UserError(
            f"n_train + n_val = {total}: the MNI152 template has only {len(slices)} usable slices"
        )
    chosen = np.unique(np.linspace(0, len(slices) - 1, total).round().astype(int))
    # Validation slices spread evenly through the brain, so both splits see every level.
    val_pos = set(np.linspace(0, len(chosen) - 1, cfg.n_val).round().astype(int).tolist())
    images = [_fit(torch.from_numpy(slices[i].copy())[None], cfg) for i in chosen]
    train = torch.stack([im for k, im in enumerate(images) if k not in val_pos])
    val = torch.stack([im for k, im in enumerate(images) if k in val_pos])
    return Data(
        train, val, f"MNI152 (ICBM 2009a) T1 axial slices ({len(train)} train, {len(val)} val)"
    )


# --- batches --------------------------------------------------------------------------------
def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffle of one epoch, reproducible from (seed, epoch) alone, so a resume finds it."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def train_batches(
    data: torch.Tensor, cfg: Config, epoch: int, skip: int = 0
) -> Iterator[torch.Tensor]:
    """Batches of one training epoch, leaving out its first ``skip`` batches (a resume)."""
    order = epoch_order(len(data), cfg.seed, epoch)
    if not cfg.augment:
        # Indices on the data's device: one copy per epoch, so a CUDA step never waits for one.
        for idx in list(order.to(data.device).split(cfg.batch_size))[skip:]:
            yield data[idx]
        return
    chunks = list(order.split(cfg.batch_size))[skip:]
    from torch.utils.data import DataLoader

    loader = DataLoader(
        _Augmented(data, augmentations(cfg), seed=cfg.seed * 100_003 + epoch),
        batch_sampler=[idx.tolist() for idx in chunks],
        num_workers=cfg.num_workers,
    )
    yield from loader


def steps_per_epoch(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


class _Augmented(torch.utils.data.Dataset):
    """Each sample's random draw depends on (seed, epoch, index) only: the same with any
    number of workers, and after a mid-epoch resume."""

    def __init__(self, data: torch.Tensor, transform, seed: int):
        self.data, self.transform, self.seed = data, transform, seed

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> torch.Tensor:
        self.transform.set_random_state(seed=(self.seed * 1_000_003 + i) % 2**32)
        out = self.transform(self.data[i])
        # Random transforms return MetaTensor; the model (and torch.compile) want plain tensors.
        return out.as_tensor() if hasattr(out, "as_tensor") else torch.as_tensor(out)


def augmentations(cfg: Config):
    """Random flips, 90-degree rotations and a mild affine; training split only."""
    from monai.transforms import Compose, RandAffine, RandFlip, RandRotate90

    dims = cfg.spatial_dims
    shift = 0.05 * cfg.image_size
    return Compose(
        [
            *[RandFlip(prob=0.5, spatial_axis=a) for a in range(dims)],
            RandRotate90(prob=0.5, spatial_axes=(0, 1)),
            RandAffine(
                prob=0.5,
                rotate_range=(0.2,) * (1 if dims == 2 else 3),
                scale_range=(0.1,) * dims,
                translate_range=(shift,) * dims,
                padding_mode="zeros",
            ),
        ]
    )
