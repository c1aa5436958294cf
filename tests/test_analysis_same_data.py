""" "The same data" on real trainer runs: two datalists, and minmax against percentile on one
folder, are never compared (their losses mean different things)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from trainer_helpers import TINY_2D, run_trainer

from analysis.diagnose import Thresholds, epoch_curves
from analysis.judge import contexts, judge, swept_params
from analysis.next_sweep import next_sweep
from analysis.offline import read_folder
from analysis.records import data_group


def images(folder: Path, n: int, seed: int) -> list[Path]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        # A few bright pixels: percentile scaling clips them, minmax does not.
        array = (rng.random((16, 16)) * 120).astype(np.uint8)
        array[0, :2] = 255
        Image.fromarray(array).save(folder / f"{i}.png")
        out.append(folder / f"{i}.png")
    return out


def datalist(path: Path, files: list[Path], n_val: int) -> Path:
    doc = {
        "training": [{"image": str(f.relative_to(path.parent))} for f in files[n_val:]],
        "validation": [{"image": str(f.relative_to(path.parent))} for f in files[:n_val]],
    }
    path.write_text(json.dumps(doc))
    return path


def test_two_datalists_and_two_intensities_are_four_data(tmp_path: Path) -> None:
    tiles = images(tmp_path / "tiles", 12, 0)
    lists = [
        datalist(tmp_path / "a.json", tiles, 3),
        datalist(tmp_path / "b.json", list(reversed(tiles)), 3),
    ]
    runs = {
        "minmax": ["--data_source=folder", f"--data_dir={tmp_path / 'tiles'}"],
        "percentile": [
            "--data_source=folder",
            f"--data_dir={tmp_path / 'tiles'}",
            "--intensity=percentile",
        ],
        "list-a": ["--data_source=datalist", f"--datalist={lists[0]}"],
        "list-b": ["--data_source=datalist", f"--datalist={lists[1]}"],
    }
    cache = f"--cache_dir={tmp_path / 'cache'}"
    with ThreadPoolExecutor(2) as pool:
        done = list(
            pool.map(
                lambda kv: run_trainer(tmp_path, *TINY_2D, cache, *kv[1], WANDB_RUN_ID=kv[0]),
                runs.items(),
            )
        )
    for proc in done:
        assert proc.returncode == 0, proc.stderr
    records = read_folder(tmp_path / "wandb")[0]
    assert {r.run_id for r in records} == set(runs)
    # Four data settings, each its own sweep context: no run is "x times the best" of another.
    assert len({data_group(r.config) for r in records}) == 4
    curves = [epoch_curves(r.train, r.val) for r in records]
    assert sorted(c.runs for c in contexts(records, curves).values()) == [1, 1, 1, 1]
    rows = [j.row for j in judge(records, Thresholds())]
    cfg, notes = next_sweep(rows, swept_params(rows), "next")
    kept = cfg["parameters"]
    assert "values" not in kept.get("intensity", {}) and "values" not in kept.get("datalist", {})
    assert any("3 runs on 3 other data left out" in n for n in notes), notes
