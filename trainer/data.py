"""Training and validation images as float tensors in [0, 1], decoded once per machine.

Sources (``data_source``): ``synthetic`` MONAI blobs, ``folder`` of PNG/JPEG/NIfTI files, a
MONAI ``datalist`` JSON, ``mni152`` axial slices of the MNI152 template shipped inside the
nilearn wheel. Every image becomes ``(in_channels, *[image_size] * spatial_dims)`` (``fit``:
padded to a square or cube and resized, so the whole field of view is kept; or resized per
axis; or centre-cropped). Both splits go to the disk cache (``trainer.cache``) that every
trial and agent of the machine shares, so a sweep decodes its files once. A run then maps each
split whole as one tensor (moved to the GPU once when training without augmentation), or, when
they are larger than ``stream_above_gb``, reads training batches from the cache through
DataLoader workers and never holds a split whole, in RAM or on the GPU.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from contract.config import FILE_SOURCES, Config
from contract.errors import UserError
from trainer import cache, files

MNI152_FILE = "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
# A slice is usable when brain (above 10% of the maximum) covers this share of it.
MNI152_MIN_BRAIN = 0.05
# MONAI's 3D AutoencoderKL recipe: ScaleIntensityRangePercentiles(0, 99.5) to [0, 1].
PERCENTILES = (0.0, 99.5)
BYTES_PER_GB = 1e9


class OnDisk:
    """A split in the cache, read memory-mapped: rows are read when asked for, so the split is
    never held in memory (the OS page cache may keep what was read, and gives it back)."""

    def __init__(self, path: Path, rows: slice = slice(None)):
        self.path, self.rows = path, rows
        self._array: np.ndarray | None = None
        self.shape = tuple(self.array.shape)

    @property
    def array(self) -> np.ndarray:
        if self._array is None:  # opened once per process, DataLoader workers included
            self._array = np.load(self.path, mmap_mode="r")[self.rows]  # a view: nothing read
        return self._array

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int | slice) -> torch.Tensor:
        return torch.from_numpy(np.array(self.array[index]))  # a copy: the map is read-only

    def __getstate__(self) -> dict:
        # Workers started with spawn reopen the file rather than receive a pickled copy.
        return {**vars(self), "_array": None}


Split = torch.Tensor | OnDisk


@dataclass
class Data:
    train: Split  # (N, C, *spatial), float32 in [0, 1]
    val: Split
    description: str
    seconds: float = 0.0  # to have both splits ready: the run summary's data_seconds
    cache_hit: bool = False
    streamed: bool = False


@dataclass
class _Plan:
    """How to build both splits, and the recipe that keys them in the cache."""

    recipe: dict
    shapes: cache.Shapes
    build: cache.Builder
    description: str


def load(cfg: Config) -> Data:
    """Both splits for ``cfg``, from the cache or built into it; bad folders or files raise a
    one-line UserError naming them."""
    started = time.perf_counter()
    plan = _plan(cfg)
    entry = cache.get(cache.root(cfg.cache_dir), plan.recipe, plan.shapes, plan.build)
    size = sum(int(np.prod(shape)) for shape in plan.shapes.values()) * 4
    streamed = size > cfg.stream_above_gb * BYTES_PER_GB
    if streamed:
        train, val = OnDisk(entry.path("train")), OnDisk(entry.path("val"))
    else:
        # Mapped copy-on-write, not read: pages come from the OS page cache when first touched,
        # shared by every agent that maps the entry, with no private copy (the model never
        # writes to its inputs). A 1 GB split is ready in under a millisecond this way, and a
        # full first pass over it took a quarter of np.load's time to read it.
        train, val = (torch.from_numpy(np.load(entry.path(s), mmap_mode="c")) for s in cache.SPLITS)
    seconds = time.perf_counter() - started
    how = "from the cache" if entry.hit else "decoded into the cache"
    where = f", streamed from {entry.folder}" if streamed else ""
    description = (
        f"{plan.description}, {size / BYTES_PER_GB:.2f} GB {how} in {seconds:.2f} s{where}"
    )
    return Data(train, val, description, seconds, entry.hit, streamed)


def _plan(cfg: Config) -> _Plan:
    if cfg.data_source == "synthetic":
        return _synthetic(cfg)
    if cfg.data_source in FILE_SOURCES:
        return _files(cfg)
    if cfg.data_source == "mni152":
        return _mni152(cfg)
    raise AssertionError(cfg.data_source)


def image_shape(cfg: Config) -> tuple[int, ...]:
    return (cfg.in_channels, *(cfg.image_size,) * cfg.spatial_dims)


def _recipe(cfg: Config, **source) -> dict:
    """Everything that changes the tensors of a source."""
    keys = ("data_source", "image_size", "spatial_dims", "in_channels", "intensity", "fit")
    return {**{k: getattr(cfg, k) for k in keys}, **source}


def _shapes(cfg: Config, n_train: int, n_val: int) -> cache.Shapes:
    return {"train": (n_train, *image_shape(cfg)), "val": (n_val, *image_shape(cfg))}


def _fill(array: np.ndarray, images: Iterator[torch.Tensor]) -> None:
    for i, image in enumerate(images):
        array[i] = image.numpy()


# --- synthetic ----------------------------------------------------------------------------
def _synthetic(cfg: Config) -> _Plan:
    def build(arrays: dict[str, np.ndarray]) -> None:
        from monai.data.synthetic import create_test_image_2d, create_test_image_3d

        rs = np.random.RandomState(cfg.seed)  # train first, then val: one stream of draws
        size = cfg.image_size
        blobs = {"rad_max": max(3, size // 4), "rad_min": max(1, size // 16)}
        for split in cache.SPLITS:
            for i in range(len(arrays[split])):
                if cfg.spatial_dims == 2:
                    img, _ = create_test_image_2d(size, size, random_state=rs, **blobs)
                else:
                    img, _ = create_test_image_3d(size, size, size, random_state=rs, **blobs)
                arrays[split][i] = img[None].astype(np.float32)  # broadcast to in_channels

    return _Plan(
        _recipe(cfg, seed=cfg.seed, n_train=cfg.n_train, n_val=cfg.n_val),
        _shapes(cfg, cfg.n_train, cfg.n_val),
        build,
        f"synthetic blobs (seed {cfg.seed})",
    )


# --- folder and datalist ---------------------------------------------------------------------
def _files(cfg: Config) -> _Plan:
    train_files, val_files, how = files.split(cfg)

    def stamp(path: Path) -> list:
        try:
            st = path.stat()
        except OSError as exc:
            raise UserError(f"{path}: cannot read image ({exc.strerror})") from None
        return [str(path.resolve()), st.st_size, st.st_mtime_ns]

    def build(arrays: dict[str, np.ndarray]) -> None:
        for split, paths in (("train", train_files), ("val", val_files)):
            _fill(arrays[split], (_read(p, cfg) for p in paths))

    where = cfg.data_dir if cfg.data_source == "folder" else cfg.datalist
    return _Plan(
        _recipe(
            cfg,
            train=[stamp(p) for p in train_files],
            val=[stamp(p) for p in val_files],
        ),
        _shapes(cfg, len(train_files), len(val_files)),
        build,
        f"{where} ({how}: {len(train_files)} train, {len(val_files)} val)",
    )


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
            return _scale(np.asarray(img, dtype=np.float32)[None], cfg)
        # PIL arrays are (rows, columns): no transpose, unlike MONAI's PILReader default.
        array = np.asarray(img.convert("L" if cfg.in_channels == 1 else "RGB"), dtype=np.float32)
    array = array[None] if cfg.in_channels == 1 else array.transpose(2, 0, 1)
    # Min-max of an 8-bit picture is its own range: black stays black, white stays white.
    return array / 255.0 if cfg.intensity == "minmax" else _scale(array, cfg)


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
    return _scale(array, cfg)


def _scale(array: np.ndarray, cfg: Config) -> np.ndarray:
    """To [0, 1]: the image's min and max, or MONAI's ScaleIntensityRangePercentiles with the
    0th and 99.5th percentiles (robust to a few bright voxels; values above are clipped)."""
    if cfg.intensity == "minmax":
        low, high = float(array.min()), float(array.max())
        return (array - low) / (high - low) if high > low else np.zeros_like(array)
    from monai.transforms import ScaleIntensityRangePercentiles

    lower, upper = PERCENTILES
    scale = ScaleIntensityRangePercentiles(lower, upper, b_min=0.0, b_max=1.0, clip=True)
    return np.asarray(scale(array), dtype=np.float32)


def _fit(image: torch.Tensor, cfg: Config) -> torch.Tensor:
    """(C, *spatial) -> (C, *[image_size] * dims), by ``cfg.fit``, clipped to [0, 1]."""
    size = cfg.image_size
    if cfg.fit == "crop":
        return _centre(image, (size,) * cfg.spatial_dims).clamp_(0.0, 1.0)
    if cfg.fit == "pad_resize":  # a square/cube first, so the whole field of view is kept
        image = _centre(image, (max(image.shape[1:]),) * cfg.spatial_dims)
    if tuple(image.shape[1:]) != (size,) * cfg.spatial_dims:
        mode = "bilinear" if cfg.spatial_dims == 2 else "trilinear"
        shrink = cfg.spatial_dims == 2 and max(image.shape[1:]) > size
        image = F.interpolate(
            image[None], size=(size,) * cfg.spatial_dims, mode=mode, antialias=shrink
        )[0]
    return image.clamp_(0.0, 1.0)


def _centre(image: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
    """Centre-crop the axes longer than ``spatial`` and zero-pad the shorter ones."""
    crop = tuple(
        slice((n - want) // 2, (n - want) // 2 + want) if n > want else slice(None)
        for n, want in zip(image.shape[1:], spatial, strict=True)
    )
    image = image[(slice(None), *crop)]
    pad: list[int] = []
    for n, want in reversed(list(zip(image.shape[1:], spatial, strict=True))):
        before = (want - n) // 2  # F.pad wants the last dimension first
        pad += [before, want - n - before]
    return F.pad(image, pad)


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


def _mni152(cfg: Config) -> _Plan:
    total = cfg.n_train + cfg.n_val
    template = mni152_path()

    def build(arrays: dict[str, np.ndarray]) -> None:
        slices = mni152_slices()
        if total > len(slices):
            raise UserError(
                f"n_train + n_val = {total}: the MNI152 template has only {len(slices)} usable "
                "slices"
            )
        chosen = np.linspace(0, len(slices) - 1, total).round().astype(int)
        # Validation slices spread evenly through the brain, so both splits see every level.
        val_pos = set(np.linspace(0, total - 1, cfg.n_val).round().astype(int).tolist())
        images = (_fit(torch.from_numpy(slices[i].copy())[None], cfg) for i in chosen)
        n = {"train": 0, "val": 0}
        for k, image in enumerate(images):
            split = "val" if k in val_pos else "train"
            arrays[split][n[split]] = image.numpy()
            n[split] += 1

    st = template.stat()
    return _Plan(
        _recipe(
            cfg,
            template=[str(template), st.st_size, st.st_mtime_ns],
            n_train=cfg.n_train,
            n_val=cfg.n_val,
        ),
        _shapes(cfg, cfg.n_train, cfg.n_val),
        build,
        f"MNI152 (ICBM 2009a) T1 axial slices ({cfg.n_train} train, {cfg.n_val} val)",
    )


# --- batches --------------------------------------------------------------------------------
def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffle of one epoch, reproducible from (seed, epoch) alone, so a resume finds it."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def train_batches(data: Split, cfg: Config, epoch: int, skip: int = 0) -> Iterator[torch.Tensor]:
    """Batches of one training epoch, leaving out its first ``skip`` batches (a resume). The
    same batches, in the same order, whether ``data`` is in memory or streamed from disk."""
    order = epoch_order(len(data), cfg.seed, epoch)
    if isinstance(data, torch.Tensor) and not cfg.augment:
        # Indices on the data's device: one copy per epoch, so a CUDA step never waits for one.
        for idx in list(order.to(data.device).split(cfg.batch_size))[skip:]:
            yield data[idx]
        return
    chunks = list(order.split(cfg.batch_size))[skip:]
    from torch.utils.data import DataLoader

    loader = DataLoader(
        _Samples(data, augmentations(cfg) if cfg.augment else None, cfg.seed * 100_003 + epoch),
        batch_sampler=[idx.tolist() for idx in chunks],
        num_workers=cfg.num_workers,
        # Page-locked batches let .to(device, non_blocking=True) overlap the copy with compute.
        pin_memory=torch.cuda.is_available(),
        # A loader draws its workers' base seed from this generator; from the global one it
        # would shift the model's random stream at each epoch start, and a resume with it.
        generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch),
    )
    yield from loader


def val_batches(
    data: Split, batch_size: int, device: torch.device
) -> Iterator[tuple[int, torch.Tensor]]:
    """The validation split in order, one batch at a time on ``device``, with the index of
    its first sample."""
    for start in range(0, len(data), batch_size):
        yield start, data[start : start + batch_size].to(device, non_blocking=True)


def to_device(data: Split, device: torch.device) -> Split:
    """An in-memory split moves to the device once; a streamed one stays on disk."""
    return data.to(device) if isinstance(data, torch.Tensor) else data


def mean_image(data: Split, chunk: int = 64) -> torch.Tensor:
    """The mean image of a split, (1, C, *spatial): summed in float64 a chunk at a time, the
    same way in memory and streamed (never read whole)."""
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, len(data), chunk):
        part = data[start : start + chunk].sum(dim=0, keepdim=True, dtype=torch.float64)
        total = total.to(part.device) + part
    return (total / len(data)).float()


def spread_subset(data: Split, n: int) -> Split:
    """``n`` images (at most all) spread evenly over a split, every k-th from the first: the
    same images for the whole run, read in place (a view in memory, a strided map on disk)."""
    n = min(n, len(data))
    rows = slice(0, (len(data) // n) * n, len(data) // n) if n else slice(0, 0)
    if isinstance(data, torch.Tensor):
        return data[rows]
    return OnDisk(data.path, rows)


def steps_per_epoch(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


class _Samples(torch.utils.data.Dataset):
    """One training sample, read (from memory or the disk cache) and optionally augmented.
    Each sample's random draw depends on (seed, epoch, index) only: the same with any number
    of workers, and after a mid-epoch resume."""

    def __init__(self, data: Split, transform: Callable | None, seed: int):
        self.data, self.transform, self.seed = data, transform, seed

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.transform is None:
            return self.data[i]
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
