"""Preprocessed splits on disk, shared by every trial and every agent of a machine.

An entry is a folder ``<root>/<key>/`` holding ``train.npy`` and ``val.npy`` (float32, exactly
the tensors the model gets) and ``recipe.json`` (what they were built from). The key is a hash
of that recipe: the source, every file with its size and modification time, ``image_size``,
``spatial_dims``, ``in_channels``, the intensity scaling, the fit and the split. A changed file
or setting therefore gives a new key, and its files are read again; an entry is never stale.

Many processes at once: the builder of an entry holds ``<root>/<key>.lock`` (``flock``, freed
by the kernel if the builder dies) and writes into a temporary folder that ``os.replace``
renames into place once complete. A reader sees a whole entry or none, and a second agent that
asks for an entry being built waits for it instead of decoding every file again. Splits are
written row by row into memory-mapped files, so building one never needs it in memory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contract.errors import UserError

ENV = "VAE_SWEEPS_CACHE"
# Part of every key: raise it when the preprocessing changes what an entry holds.
VERSION = 1
SPLITS = ("train", "val")
RECIPE = "recipe.json"


def root(cache_dir: str | None) -> Path:
    """``cache_dir``, else ``$VAE_SWEEPS_CACHE``, else ``$XDG_CACHE_HOME/vae-sweeps``
    (``~/.cache/vae-sweeps``): one folder for the whole machine, not per run or sweep."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vae-sweeps"


def key(recipe: dict[str, Any]) -> str:
    text = json.dumps({"version": VERSION, **recipe}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass
class Entry:
    folder: Path
    hit: bool  # found complete; False when this call built it

    def path(self, split: str) -> Path:
        return self.folder / f"{split}.npy"


Shapes = dict[str, tuple[int, ...]]
Builder = Callable[[dict[str, np.ndarray]], None]


def get(where: Path, recipe: dict[str, Any], shapes: Shapes, build: Builder) -> Entry:
    """The entry for ``recipe``; built by ``build(arrays)`` (fill one writable float32 array
    per split, of ``shapes``) when absent. A UserError from ``build`` leaves nothing behind."""
    folder = where / key(recipe)
    if _complete(folder, shapes):
        return Entry(folder, hit=True)
    with _writing(where, "create the data cache"):
        where.mkdir(parents=True, exist_ok=True)
    with _locked(where / f"{folder.name}.lock"):
        if _complete(folder, shapes):  # built by another process while this one waited
            return Entry(folder, hit=True)
        # Under the lock, anything left of this key was damaged or left by a killed builder.
        for stale in [folder, *where.glob(f".{folder.name}.*")]:
            shutil.rmtree(stale, ignore_errors=True)
        with _writing(where, "write the data cache"):
            tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=where))
            tmp.chmod(0o755)  # mkdtemp's 0o700 would hide the entry from other users' agents
        try:
            with _writing(where, "write the data cache"):
                arrays = {
                    split: np.lib.format.open_memmap(
                        tmp / f"{split}.npy", mode="w+", dtype=np.float32, shape=shapes[split]
                    )
                    for split in SPLITS
                }
            build(arrays)
            with _writing(where, "write the data cache"):
                for array in arrays.values():
                    array.flush()
                del arrays
                (tmp / RECIPE).write_text(json.dumps({"version": VERSION, **recipe}, indent=1))
                os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return Entry(folder, hit=False)


def _complete(folder: Path, shapes: Shapes) -> bool:
    """Every split there, with the expected header; anything else is rebuilt."""
    if not (folder / RECIPE).is_file():
        return False
    for split in SPLITS:
        try:
            array = np.load(folder / f"{split}.npy", mmap_mode="r")
        except (OSError, ValueError):  # missing, truncated or not a .npy file
            return False
        if array.shape != shapes[split] or array.dtype != np.float32:
            return False
    return True


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with _writing(path.parent, "lock the data cache"):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def _writing(where: Path, what: str) -> Iterator[None]:
    """A full disk or a read-only folder is the user's to fix: one line naming the folder."""
    try:
        yield
    except OSError as exc:
        raise UserError(
            f"{where}: cannot {what} ({exc.strerror or type(exc).__name__}); "
            f"set cache_dir or ${ENV} to a writable folder with room for it"
        ) from None
