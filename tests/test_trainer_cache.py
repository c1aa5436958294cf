"""The disk cache of preprocessed splits, streaming from it, MONAI datalists, percentile
scaling and the fits to image_size, on real NIfTI files the tests write."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import REPO

from contract.config import FITS, build
from contract.errors import UserError
from trainer import cache, data

TINY_3D = {"spatial_dims": 3, "channels": [4, 4], "norm_num_groups": 4, "image_size": 8}


def write_volumes(folder: Path, n: int, shape=(12, 10, 8), seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"v{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(rng.uniform(0, 1000, shape).astype(np.float32), np.eye(4)), path)
        paths.append(path)
    return paths


def folder_cfg(folder: Path, **extra):
    return build({**TINY_3D, "data_source": "folder", "data_dir": str(folder), **extra})


def entries(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]


def test_second_load_is_a_hit_with_the_same_tensors(tmp_path: Path, data_cache: Path) -> None:
    write_volumes(tmp_path / "vols", 6)
    cfg = folder_cfg(tmp_path / "vols")
    first, second = data.load(cfg), data.load(cfg)
    assert not first.cache_hit and second.cache_hit
    assert torch.equal(first.train, second.train) and torch.equal(first.val, second.val)
    assert first.train.shape == (5, 1, 8, 8, 8) and first.val.shape == (1, 1, 8, 8, 8)
    (entry,) = entries(data_cache)
    recipe = json.loads((entry / cache.RECIPE).read_text())
    assert len(recipe["train"]) == 5 and recipe["image_size"] == 8
    assert first.seconds > 0 and second.seconds > 0


@pytest.mark.parametrize(
    "change",
    [{"image_size": 16}, {"intensity": "percentile"}, {"fit": "crop"}, {"val_fraction": 0.5}],
)
def test_every_setting_that_changes_the_tensors_is_in_the_key(tmp_path: Path, change) -> None:
    write_volumes(tmp_path / "vols", 6)
    data.load(folder_cfg(tmp_path / "vols"))
    assert not data.load(folder_cfg(tmp_path / "vols", **change)).cache_hit
    assert data.load(folder_cfg(tmp_path / "vols", seed=5, lr=1.0)).cache_hit  # not these


def test_a_rebuild_leaves_runs_that_map_the_old_entry_intact(tmp_path: Path) -> None:
    write_volumes(tmp_path / "vols", 4)
    cfg = folder_cfg(tmp_path / "vols")
    running = data.load(cfg)  # a run that maps the entry, as the trainer does
    expected = running.train.clone()
    (running_entry,) = {p.parent for p in cache.root(None).glob("*/train.npy")}
    (running_entry / cache.RECIPE).unlink()  # incomplete: the next load rebuilds the entry
    rebuilt = data.load(cfg)
    assert not rebuilt.cache_hit
    # The old files were removed, not overwritten: the first run still reads its own pages.
    assert torch.equal(running.train, expected) and torch.equal(rebuilt.train, expected)


def test_a_changed_file_is_read_again(tmp_path: Path) -> None:
    paths = write_volumes(tmp_path / "vols", 4)
    cfg = folder_cfg(tmp_path / "vols", val_fraction=0.25)
    before = data.load(cfg)
    volume = np.zeros((12, 10, 8), np.float32)
    volume[:6] = 1000.0  # a half-bright volume: clearly not the random one it replaces
    for path in paths:
        nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    after = data.load(cfg)
    assert not after.cache_hit
    assert not torch.equal(before.train, after.train)
    assert torch.equal(after.train[0], after.train[1])  # every file now holds the new volume


def test_a_file_replaced_by_a_corrupt_one_names_it(tmp_path: Path) -> None:
    paths = write_volumes(tmp_path / "vols", 4)
    cfg = folder_cfg(tmp_path / "vols")
    data.load(cfg)
    paths[2].write_bytes(b"not a NIfTI file")
    with pytest.raises(UserError, match=rf"{paths[2].name}: cannot read image") as err:
        data.load(cfg)
    assert "\n" not in str(err.value)


def test_a_damaged_entry_is_rebuilt(tmp_path: Path, data_cache: Path) -> None:
    write_volumes(tmp_path / "vols", 4)
    cfg = folder_cfg(tmp_path / "vols")
    good = data.load(cfg).train.clone()  # a copy: the loaded tensor maps the file damaged next
    (entry,) = entries(data_cache)
    (entry / "train.npy").write_bytes((entry / "train.npy").read_bytes()[:200])  # truncated
    again = data.load(cfg)
    assert not again.cache_hit and torch.equal(again.train, good)
    assert data.load(cfg).cache_hit


LOAD_AND_REPORT = """
import json, sys
from contract.config import FITS, build
from trainer import data
d = data.load(build(json.loads(sys.argv[1])))
print(json.dumps({"hit": d.cache_hit, "sum": float(d.train.sum())}))
"""


def test_two_processes_building_one_entry_at_once(tmp_path: Path, data_cache: Path) -> None:
    write_volumes(tmp_path / "vols", 12, shape=(24, 24, 24))
    layer = json.dumps({**TINY_3D, "data_source": "folder", "data_dir": str(tmp_path / "vols")})
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LOAD_AND_REPORT, layer],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    # The lock lets one build while the other waits and reads: one decode, same tensors.
    assert sorted(r["hit"] for r in results) == [False, True]
    assert results[0]["sum"] == results[1]["sum"]
    assert len(entries(data_cache)) == 1
    assert not [p for p in data_cache.iterdir() if p.name.startswith(".")]  # no temporary left


def test_an_unwritable_cache_is_one_line(tmp_path: Path) -> None:
    write_volumes(tmp_path / "vols", 2)
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match=r"file/cache: cannot create the data cache"):
        data.load(folder_cfg(tmp_path / "vols", cache_dir=str(tmp_path / "file" / "cache")))


# --- streaming ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra", [{}, {"num_workers": 2}, {"augment": True}, {"augment": True, "num_workers": 2}]
)
def test_streamed_batches_equal_in_memory_ones(extra) -> None:
    base = {**TINY_3D, "n_train": 10, "n_val": 3, "batch_size": 4, **extra}
    memory = data.load(build(base))
    streamed = data.load(build({**base, "stream_above_gb": 0}))
    assert not memory.streamed and streamed.streamed and streamed.cache_hit
    assert isinstance(streamed.train, data.OnDisk) and len(streamed.train) == 10
    cfg = build(base)
    for epoch in (1, 2):
        for skip in (0, 1):  # a resume skips the batches already done
            a = list(data.train_batches(memory.train, cfg, epoch, skip))
            b = list(data.train_batches(streamed.train, cfg, epoch, skip))
            assert len(a) == len(b) == 3 - skip
            assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
            assert all(type(y) is torch.Tensor for y in b)
    cpu = torch.device("cpu")
    starts, val_a = zip(*data.val_batches(memory.val, 2, cpu), strict=True)
    _, val_b = zip(*data.val_batches(streamed.val, 2, cpu), strict=True)
    assert starts == (0, 2)
    assert torch.equal(torch.cat(val_a), torch.cat(val_b))
    assert torch.equal(torch.cat(val_b), memory.val)
    assert torch.equal(data.mean_image(memory.train), data.mean_image(streamed.train))
    assert torch.allclose(data.mean_image(memory.train), memory.train.mean(0, keepdim=True))


def test_the_limit_decides_the_path() -> None:
    cfg = {**TINY_3D, "n_train": 10, "n_val": 2}  # 12 x 8^3 float32 = 24,576 bytes
    assert not data.load(build({**cfg, "stream_above_gb": 24_576 / 1e9})).streamed
    assert data.load(build({**cfg, "stream_above_gb": 24_575 / 1e9})).streamed


# --- datalist, percentile, fit -----------------------------------------------------------------
def write_datalist(path: Path, doc) -> Path:
    path.write_text(json.dumps(doc))
    return path


def make_dataset(tmp_path: Path) -> Path:
    """Five volumes in imagesTr/, as a Decathlon task folder holds them."""
    write_volumes(tmp_path / "ds" / "imagesTr", 5)
    return tmp_path / "ds" / "dataset.json"


def test_datalist_paths_relative_to_the_file(tmp_path: Path) -> None:
    listing = write_datalist(
        make_dataset(tmp_path),
        {
            "name": "test",
            "training": [{"image": f"./imagesTr/v{i:03d}.nii.gz", "label": "x"} for i in (0, 1, 2)],
            "validation": [{"image": f"imagesTr/v{i:03d}.nii.gz"} for i in (3, 4)],
        },
    )
    cfg = build({**TINY_3D, "data_source": "datalist", "datalist": str(listing)})
    d = data.load(cfg)
    assert d.train.shape == (3, 1, 8, 8, 8) and d.val.shape == (2, 1, 8, 8, 8)
    assert "training and validation lists: 3 train, 2 val" in d.description
    images = tmp_path / "ds" / "imagesTr"
    expected = [data._read(images / f"v{i:03d}.nii.gz", cfg) for i in range(5)]
    assert torch.equal(torch.cat([d.train, d.val]), torch.stack(expected))  # in list order


def test_datalist_without_validation_is_split_like_a_folder(tmp_path: Path) -> None:
    listing = write_datalist(
        make_dataset(tmp_path),
        {"training": [{"image": f"imagesTr/v{i:03d}.nii.gz"} for i in range(5)]},
    )
    d = data.load(build({**TINY_3D, "data_source": "datalist", "datalist": str(listing)}))
    folder = data.load(folder_cfg(tmp_path / "ds" / "imagesTr"))
    assert len(d.train) == 4 and len(d.val) == 1  # val_fraction=0.2 of 5
    assert torch.equal(d.train, folder.train) and torch.equal(d.val, folder.val)


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        (None, "datalist='{list}': file not found"),
        ("{not json", "not valid JSON"),
        ({"train": [{"image": "a.nii.gz"}]}, "needs a 'training' list of {\"image\": path}"),
        ({"training": [{"img": "a.nii.gz"}]}, 'training[0]: expected {"image": path}'),
        ({"training": []}, "'training' must be a non-empty list"),
        (
            {"training": [{"image": "../elsewhere/a.nii.gz"}], "validation": [{"image": "b"}]},
            "training[0]: image '../elsewhere/a.nii.gz' not found (looked for",
        ),
        ({"training": [{"image": "notes.txt"}, {"image": "notes.txt"}]}, "is not an image file"),
    ],
)
def test_bad_datalists_are_one_line_and_exit_2(tmp_path: Path, doc, words: str) -> None:
    listing = tmp_path / "ds" / "list.json"
    listing.parent.mkdir()
    (listing.parent / "notes.txt").write_text("x")
    if isinstance(doc, str):
        listing.write_text(doc)
    elif doc is not None:
        write_datalist(listing, doc)
    proc = subprocess.run(
        [sys.executable, "-m", "trainer", "--data_source=datalist", f"--datalist={listing}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words.replace("{list}", str(listing)) in lines[0], proc.stderr


def test_percentile_scaling_is_monais_and_resists_a_bright_voxel(tmp_path: Path) -> None:
    from monai.transforms import ScaleIntensityRangePercentiles

    rng = np.random.default_rng(3)
    volume = rng.uniform(0, 100, (8, 8, 8)).astype(np.float32)
    volume[0, 0, 0] = 1e6  # one hot voxel squashes min-max, not the 99.5th percentile
    (tmp_path / "vols").mkdir()
    for i in range(2):
        nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "vols" / f"{i}.nii")
    minmax = data.load(folder_cfg(tmp_path / "vols")).train[0]
    pct = data.load(folder_cfg(tmp_path / "vols", intensity="percentile")).train[0]
    monai = ScaleIntensityRangePercentiles(0, 99.5, b_min=0.0, b_max=1.0, clip=True)
    assert torch.allclose(pct[0], torch.as_tensor(monai(volume[None]))[0], atol=1e-6)
    assert float(minmax.mean()) < 0.01 < 0.3 < float(pct.mean())


def test_fits_to_image_size(tmp_path: Path) -> None:
    volume = np.zeros((16, 8, 8), np.float32)
    volume[4:12] = 1.0  # bright centre slab along the long axis
    (tmp_path / "vols").mkdir()
    for i in range(2):
        nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "vols" / f"{i}.nii")
    fit = {f: data.load(folder_cfg(tmp_path / "vols", fit=f)).train[0, 0] for f in FITS}
    assert all(x.shape == (8, 8, 8) for x in fit.values())
    assert float(fit["crop"].min()) == 1.0  # the central 8 of the long axis: all slab
    # Resized per axis: the long axis halves (slab in 2..5), the short ones fill the volume.
    assert float(fit["resize"][2:6].min()) == 1.0
    assert float(fit["resize"][[0, 1, 6, 7]].max()) == 0.0
    # Padded to 16^3 first, then halved: the short axes keep only their centre 4.
    assert float(fit["pad_resize"][:, 0].max()) == 0.0
    assert float(fit["pad_resize"][2:6, 2:6, 2:6].min()) == 1.0
