"""Read offline (and synced online) runs from disk with W&B's own reader.

W&B 0.31 has no Python reader for ``run-<id>.wandb`` files; ``wandb leet inspect --json``
prints one JSON record a line. That command is a thin Python wrapper (about 1.5 s of start-up)
around the ``wandb-core`` binary, so we call the binary with the same arguments the wrapper
passes, and fall back to the wrapper when the binary is not where wandb keeps it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from analysis.records import (
    CRASHED,
    END_STEP,
    FAILED,
    FINISHED,
    PREEMPTED,
    RUNNING,
    RunRecord,
    Unreadable,
    merge,
)
from contract import metrics as M
from contract.errors import EXIT_PREEMPTED, UserError
from contract.runs import LOCK, holder

STARTED = re.compile(r"\d{8}_\d{6}")
# Scalars kept from per-step rows; the rest (media metadata, _runtime...) is dropped early.
TRAIN_SCALARS = (M.TRAIN_STEP, M.TRAIN_RECON, M.TRAIN_KL, M.TRAIN_PERCEPTUAL, M.TRAIN_LOSS, M.LR)
TRIPLET_PATH = ".path"
# A scalar of a per-step row: a number, or "NaN"/"Infinity"/"-Infinity" as W&B writes them.
EPOCH_KEY = f'"{M.EPOCH}":'
SCALAR = re.compile(
    '"(' + "|".join(map(re.escape, TRAIN_SCALARS)) + ')":("?[-+0-9.eEaNIinfty]+"?)[,}]'
)


def find_run_files(root: Path) -> list[Path]:
    """Every ``run-<id>.wandb`` under ``root`` in an ``offline-run-*`` or ``run-*`` folder.

    ``os.walk`` does not follow symlinks, so ``latest-run`` is not read twice.
    """
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ("files", "logs", "tmp", "media")]
        name = os.path.basename(dirpath)
        if not (name.startswith("offline-run-") or name.startswith("run-")):
            continue
        found.extend(
            Path(dirpath, f) for f in filenames if f.startswith("run-") and f.endswith(".wandb")
        )
    return sorted(found)


def core_path() -> str | None:
    """The ``wandb-core`` binary shipped in the wandb wheel, found without importing wandb."""
    spec = importlib.util.find_spec("wandb")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations)), "bin", "wandb-core")
    return str(path) if path.exists() else None


def inspect_command(run_file: Path, core: str | None) -> list[str]:
    if core:
        # What `wandb leet inspect --json FILE` runs (wandb/cli/leet.py), minus its start-up.
        return [core, "leet", "inspect", "--no-observability", "--json", "--run-file",
                str(run_file), str(run_file.parent.parent)]  # fmt: skip
    wandb_cli = shutil.which("wandb") or str(Path(sys.executable).with_name("wandb"))
    return [wandb_cli, "leet", "inspect", "--json", str(run_file)]


class UnreadableRun(Exception):
    """W&B's reader refused a run file (corrupt or not a W&B log)."""


def read_raw(run_file: Path, core: str | None) -> str:
    # The reader writes into files, not pipes: draining a pipe as it fills cost this process
    # about 25 ms of CPU per run (an eighth of what the reader itself spends), a file 2 ms.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        code = subprocess.call(inspect_command(run_file, core), stdout=out, stderr=err)
        if code != 0:
            err.seek(0)
            lines = err.read().decode(errors="replace").strip().splitlines()
            first = (lines or [f"exit status {code}"])[0]
            raise UnreadableRun(f"wandb leet inspect failed: {first[:200]}")
        out.seek(0)
        return out.read().decode()


def _number(value: object) -> float | None:
    """History values: numbers, or the strings "NaN"/"Infinity" W&B writes for non-finite ones."""
    if type(value) in (float, int, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def parse_records(
    lines: Iterable[str], run_file: Path, now: float, running_window_s: float
) -> RunRecord:
    """A RunRecord from the JSON lines of one ``.wandb`` file (one piece of a run)."""
    run_id = run_file.stem.removeprefix("run-")
    rec = RunRecord(run_id=run_id, sources=[str(run_file.parent)])
    files_dir = run_file.parent / "files"
    last_step: float | None = None
    # The summary W&B shows holds each key's last value: the last train and val rows suffice.
    last_train_line = ""
    last_val_item: dict[str, object] = {}
    explicit_summary: dict[str, object] = {}
    exit_code: int | None = None
    for line in lines:
        # Every line starts with {"num":N,"type":"KIND": find the kind without parsing the line.
        start = line.find('"type":"', 0, 40) + 8
        kind = line[start : line.find('"', start)]
        if kind == "history":
            # Per-step rows are nearly all of a log: read their few scalars without json.
            if '.path"' not in line and EPOCH_KEY not in line:
                row = {k: float(v.strip('"')) for k, v in SCALAR.findall(line)}
                if M.TRAIN_STEP in row:
                    rec.train.append(row)
                    last_step, last_train_line = row[M.TRAIN_STEP], line
                    continue
            item = json.loads(line)["history"]["item"]
            _history_row(rec, item, files_dir, last_step)
            if M.TRAIN_STEP in item:
                last_step, last_train_line = rec.train[-1][M.TRAIN_STEP], line
            else:
                last_val_item = item
        elif kind == "summary":
            # Most summary records mirror a history row (they carry _step); only explicit
            # ``run.summary[...] = ...`` updates add information.
            if '"_step":' in line or '"_wandb.runtime"' in line:
                continue
            explicit_summary.update(json.loads(line)["summary"]["update"])
        elif kind == "run":
            run = json.loads(line)["run"]
            rec.config.update(run.get("config", {}).get("update", {}))
            # A W&B sweep's run records its sweep; a local sweep's trial its group (older
            # local trials recorded the local sweep as sweep_id too).
            rec.sweep_id = run.get("sweep_id") or run.get("run_group") or None
            rec.name = run.get("display_name") or run_id
        elif kind == "config":
            rec.config.update(json.loads(line)["config"].get("update", {}))
        elif kind == "exit":
            exit_code = int(json.loads(line)["exit"].get("exit_code", 0))
    rec.config.pop("_wandb", None)
    rec.name = rec.name or run_id
    last_train = json.loads(last_train_line)["history"]["item"] if last_train_line else {}
    last_values = {**last_val_item, **last_train}
    rec.summary = {k: v for k, v in last_values.items() if not k.startswith("_") and "." not in k}
    rec.summary.update(explicit_summary)
    rec.exit_code = exit_code
    rec.state = _state(
        exit_code, run_file, now, running_window_s, rec.summary.get(M.SUMMARY_RUN_DIR)
    )
    if not rec.config and not rec.train and not rec.val:
        rec.notes.append("the log holds no records (the process was killed before W&B flushed)")
    return rec


def _state(
    exit_code: int | None,
    run_file: Path,
    now: float,
    running_window_s: float,
    run_dir: object = None,
) -> str:
    if exit_code is None:
        # No exit record: still being written, or killed. Where its run folder is visible
        # here, the run's lock says which, however long the process has been quiet.
        folder = Path(run_dir) if isinstance(run_dir, str) else None
        if folder is not None and (folder / LOCK).exists():
            with contextlib.suppress(OSError):  # unreadable here: the file's age decides
                return RUNNING if holder(folder) else CRASHED
        # Elsewhere, a live run's file grows every few seconds (history, system stats), so an
        # old file means a dead process.
        fresh = now - run_file.stat().st_mtime <= running_window_s
        return RUNNING if fresh else CRASHED
    if exit_code == 0:
        return FINISHED
    if exit_code == EXIT_PREEMPTED:
        return PREEMPTED
    return FAILED


def _history_row(rec: RunRecord, item: dict, files_dir: Path, last_step: float | None) -> None:
    if M.TRAIN_STEP in item:
        row = {k: _number(item[k]) for k in TRAIN_SCALARS if k in item}
        rec.train.append(row)
        path = item.get(M.TRAIN_TRIPLETS + TRIPLET_PATH)
        # A resumed piece starts mid-run: its epoch is known only after its first val row.
        epoch = int(rec.val[-1][M.EPOCH]) + 1 if rec.val else (1 if row[M.TRAIN_STEP] == 1 else 0)
        if path and epoch:
            rec.train_triplets[epoch] = str(files_dir / path)
    if M.EPOCH in item:
        row = {k: _number(v) for k, v in item.items() if not k.startswith("_") and "." not in k}
        row[END_STEP] = last_step if last_step is not None else math.nan
        epoch = int(row[M.EPOCH])
        rec.val.append(row)
        paths = sorted(
            (k, v)
            for k, v in item.items()
            if k.endswith(TRIPLET_PATH) and M.VAL_TRIPLET_PATTERN.match(k[: -len(TRIPLET_PATH)])
        )
        if paths:
            rec.val_triplets[epoch] = [str(files_dir / v) for _, v in paths]


def read_file(run_file: Path, core: str | None, now: float, running_window_s: float) -> RunRecord:
    return parse_records(read_raw(run_file, core).splitlines(), run_file, now, running_window_s)


def read_or_why(
    run_file: Path, core: str | None, now: float, running_window_s: float
) -> RunRecord | Unreadable:
    """The run, or why it cannot be read: one bad file must not hide the other runs."""
    try:
        return read_file(run_file, core, now, running_window_s)
    except UnreadableRun as exc:
        return Unreadable(str(run_file), str(exc))
    # Malformed records from the reader (bad JSON, a record without its fields) or a file
    # removed while the folder was read: the run's data, not the analysis, is at fault.
    except (ValueError, KeyError, OSError) as exc:
        return Unreadable(str(run_file), f"{type(exc).__name__}: {str(exc)[:200]}")


def read_folder(
    root: Path, sweep: str | None = None, workers: int = 0, running_window_s: float = 120.0
) -> tuple[list[RunRecord], list[str], list[Unreadable]]:
    """Every run under ``root`` (pieces of a resumed run merged), optionally of one sweep;
    notes on what was left out; and the run files that could not be read."""
    files = find_run_files(root)
    if not files:
        raise UserError(f"{root}: no W&B runs found (no offline-run-*/run-*.wandb under it)")
    core = core_path()
    now = time.time()
    workers = workers or default_workers()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        read = list(pool.map(lambda f: read_or_why(f, core, now, running_window_s), files))
    unreadable = [r for r in read if isinstance(r, Unreadable)]
    pieces = [r for r in read if isinstance(r, RunRecord)]
    if not pieces:
        u = unreadable[0]
        raise UserError(
            f"{root}: none of its {len(files)} W&B run files could be read ({u.source}: {u.reason})"
        )
    by_id: dict[str, list[RunRecord]] = {}
    # Folder names hold the start time, so sorting by it puts resumed pieces in order.
    for piece in sorted(pieces, key=lambda r: _started(Path(r.sources[0]).name)):
        by_id.setdefault(piece.run_id, []).append(piece)
    runs = [merge(parts) for parts in by_id.values()]
    notes = []
    if sweep:
        # A run killed before W&B flushed anything has an empty log: its sweep is unknown.
        unknown = sum(1 for r in runs if r.sweep_id is None and not (r.config or r.train or r.val))
        runs = [r for r in runs if r.sweep_id == sweep]
        if not runs:
            raise UserError(f"{root}: no run of sweep {sweep!r} among {len(by_id)} runs")
        if unknown:
            notes.append(
                f"{unknown} run(s) with an empty log (killed before W&B wrote it) left out: their sweep is unknown"
            )
        if unreadable:
            notes.append(f"{len(unreadable)} unreadable run file(s) listed: their sweep is unknown")
    return runs, notes, unreadable


def _started(folder: str) -> str:
    """``20261128_133358`` from ``offline-run-20261128_133358-<id>`` or ``run-...-<id>``."""
    found = STARTED.search(folder)
    return found.group(0) if found else folder


def default_workers() -> int:
    return min(16, 2 * (os.cpu_count() or 1))
