"""Data sources, read for real from files the tests write (PNG, JPEG, NIfTI) and from the
MNI152 template inside the installed nilearn wheel."""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from contract.config import MNI152_SLICES, build
from contract.errors import UserError
from trainer import data

TINY = {"channels": [8, 8], "norm_num_groups": 4, "image_size": 16}


def folder_cfg(path: Path, **extra):
    return build({**TINY, "data_source": "folder", "data_dir": str(path), **extra})


def write_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path)


def top_bright(rows: int = 32, cols: int = 16) -> np.ndarray:
    """Bright top quarter, dark elsewhere: shows whether a reader transposes."""
    img = np.zeros((rows, cols), dtype=np.uint8)
    img[: rows // 4] = 255
    return img


def test_png_train_val_subfolders_keep_orientation(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("val", 2)):
        (tmp_path / split).mkdir()
        for i in range(n):
            write_png(tmp_path / split / f"{i}.png", top_bright())
    d = data.load(folder_cfg(tmp_path))
    assert d.train.shape == (3, 1, 16, 16) and d.val.shape == (2, 1, 16, 16)
    assert d.train.dtype == torch.float32
    assert float(d.train.min()) >= 0.0 and float(d.train.max()) <= 1.0
    image = d.train[0, 0]
    # 32x16 padded to 32x32 (columns), then halved: bright band on top, across the middle.
    assert float(image[0, 4:12].mean()) > 0.9
    assert float(image[12:, :].max()) < 0.1
    assert float(image[:, 0].max()) < 0.1  # padding on the left, not a transposed image


def test_rgb_jpeg_with_three_channels(tmp_path: Path) -> None:
    for i in range(3):
        rgb = np.zeros((16, 16, 3), dtype=np.uint8)
        rgb[..., 0] = 250  # red
        Image.fromarray(rgb).save(tmp_path / f"{i}.jpg", quality=95)
    d = data.load(folder_cfg(tmp_path, in_channels=3, val_fraction=0.34))
    assert d.train.shape[1:] == (3, 16, 16) and len(d.train) + len(d.val) == 3
    assert float(d.train[:, 0].mean()) > 0.9 and float(d.train[:, 2].mean()) < 0.1


def test_split_is_fixed_disjoint_and_independent_of_seed(tmp_path: Path) -> None:
    for i in range(10):
        write_png(tmp_path / f"img{i:02d}.png", np.full((16, 16), i * 25, dtype=np.uint8))
    a = data.load(folder_cfg(tmp_path, val_fraction=0.2, seed=0))
    b = data.load(folder_cfg(tmp_path, val_fraction=0.2, seed=7))
    assert len(a.train) == 8 and len(a.val) == 2
    assert torch.equal(a.val, b.val) and torch.equal(a.train, b.train)
    train_levels = {round(float(x.mean()), 3) for x in a.train}
    val_levels = {round(float(x.mean()), 3) for x in a.val}
    assert not train_levels & val_levels


def test_nifti_2d_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(4):
        shape = (20, 20) if i % 2 else (20, 20, 1)  # a 2D image is often stored with a unit z
        volume = rng.uniform(-100, 900, size=shape).astype(np.float32)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / f"s{i}.nii.gz")
    d = data.load(folder_cfg(tmp_path, val_fraction=0.25))
    assert d.train.shape == (3, 1, 16, 16) and d.val.shape == (1, 1, 16, 16)
    assert float(d.train.min()) >= 0.0 and float(d.train.max()) <= 1.0
    assert float(d.train.max()) > 0.8  # min-max normalised, not clipped raw intensities


def test_nifti_3d_volumes(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for split, n in (("train", 2), ("val", 1)):
        (tmp_path / split).mkdir()
        for i in range(n):
            volume = rng.uniform(0, 1000, size=(24, 20, 18)).astype(np.float32)
            nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / split / f"v{i}.nii")
    cfg = build({**TINY, "spatial_dims": 3, "data_source": "folder", "data_dir": str(tmp_path)})
    d = data.load(cfg)
    assert d.train.shape == (2, 1, 16, 16, 16) and d.val.shape == (1, 1, 16, 16, 16)


def test_volume_in_2d_mode_is_a_user_error(tmp_path: Path) -> None:
    for i in range(2):
        nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), tmp_path / f"{i}.nii")
    with pytest.raises(
        UserError, match=r"[01]\.nii: shape \(8, 8, 8\) does not fit spatial_dims=2"
    ):
        data.load(folder_cfg(tmp_path))


def test_missing_empty_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="folder not found"):
        data.load(folder_cfg(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        data.load(folder_cfg(tmp_path / "empty"))
    (tmp_path / "one").mkdir()
    write_png(tmp_path / "one" / "a.png", top_bright())
    with pytest.raises(UserError, match="needs at least 2 images"):
        data.load(folder_cfg(tmp_path / "one"))
    (tmp_path / "bad" / "train").mkdir(parents=True)
    (tmp_path / "bad" / "val").mkdir()
    write_png(tmp_path / "bad" / "train" / "a.png", top_bright())
    (tmp_path / "bad" / "val" / "broken.nii.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match=r"broken\.nii\.gz: cannot read image"):
        data.load(folder_cfg(tmp_path / "bad"))


def test_mni152_slices() -> None:
    assert len(data.mni152_slices()) == MNI152_SLICES  # the config's up-front rule agrees
    cfg = build({"data_source": "mni152"})
    d = data.load(cfg)
    assert d.train.shape == (cfg.n_train, 1, 64, 64) and d.val.shape == (cfg.n_val, 1, 64, 64)
    assert float(d.train.min()) >= 0.0 and float(d.train.max()) <= 1.0
    assert all(float(x.mean()) > 0.02 for x in torch.cat([d.train, d.val]))  # brain, not air
    flat_train = d.train.flatten(1)
    for v in d.val.flatten(1):  # no validation slice is also a training slice
        assert float((flat_train - v).abs().amax(dim=1).min()) > 0


def test_mni152_without_nilearn_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nilearn", None)  # how Python marks a module as absent
    with pytest.raises(UserError, match=r"pip install 'vae-sweeps\[mni152\]'"):
        data.load(build({"data_source": "mni152"}))


def test_synthetic_is_deterministic_2d_and_3d() -> None:
    a = data.load(build({**TINY, "seed": 3}))
    b = data.load(build({**TINY, "seed": 3}))
    c = data.load(build({**TINY, "seed": 4}))
    assert torch.equal(a.train, b.train) and torch.equal(a.val, b.val)
    assert not torch.equal(a.train, c.train)
    assert not torch.equal(a.train[: len(a.val)], a.val)
    d3 = data.load(build({**TINY, "spatial_dims": 3, "n_train": 2, "n_val": 1, "in_channels": 2}))
    assert d3.train.shape == (2, 2, 16, 16, 16)


def test_batches_resume_where_the_epoch_stopped() -> None:
    cfg = build({**TINY, "n_train": 10, "batch_size": 4})
    x = data.load(cfg).train
    full = list(data.train_batches(x, cfg, epoch=2))
    assert [len(b) for b in full] == [4, 4, 2] == [4, 4, 2][: data.steps_per_epoch(10, 4)]
    tail = list(data.train_batches(x, cfg, epoch=2, skip=1))
    assert all(torch.equal(a, b) for a, b in zip(full[1:], tail, strict=True))
    other = list(data.train_batches(x, cfg, epoch=3))
    assert not torch.equal(torch.cat(full), torch.cat(other))  # a new shuffle per epoch


@pytest.mark.parametrize("dims", [2, 3])
def test_augmentation_gives_plain_tensors(dims: int) -> None:
    cfg = build({**TINY, "spatial_dims": dims, "n_train": 8, "batch_size": 4, "augment": True})
    plain = build({**TINY, "spatial_dims": dims, "n_train": 8, "batch_size": 4})
    x = data.load(cfg).train
    augmented = list(data.train_batches(x, cfg, epoch=1))
    original = list(data.train_batches(x, plain, epoch=1))
    assert all(type(b) is torch.Tensor for b in augmented)  # not MetaTensor
    assert [b.shape for b in augmented] == [b.shape for b in original]
    assert not all(torch.equal(a, b) for a, b in zip(augmented, original, strict=True))
    again = list(data.train_batches(x, cfg, epoch=1))
    assert all(torch.equal(a, b) for a, b in zip(augmented, again, strict=True))  # reproducible
