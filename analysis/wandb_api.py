"""Pull a sweep's runs through W&B's public API into neutral run records (a thin adapter).

One paged query lists the sweep's runs with their config, summary and state; each run's full
(not sampled) history is read with ``scan_history`` for just the keys the diagnosis needs, the
train and the validation keys separately (``scan_history`` returns only rows holding every
requested key). Runs are read concurrently, a bounded number at a time, and every request is
retried with exponential backoff on HTTP 429 and transient errors.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from analysis.diagnose import VERDICTS
from analysis.records import END_STEP, RunRecord
from contract import metrics as M
from contract.errors import UserError

T = TypeVar("T")
TRANSIENT_STATUS = {429, 500, 502, 503, 504}
TRAIN_KEYS = [M.TRAIN_STEP, M.TRAIN_RECON]
VAL_KEYS = [M.EPOCH, M.VAL_RECON, M.TIME_PER_EPOCH]
PAGE_SIZE = 200


def _status(exc: BaseException) -> int | None:
    """The HTTP status behind an exception, looking through wandb's CommError wrapping."""
    seen = 0
    while exc is not None and seen < 5:
        response = getattr(exc, "response", None)
        code = getattr(response, "status_code", None)
        if isinstance(code, int):
            return code
        exc = getattr(exc, "exc", None) or exc.__cause__ or exc.__context__
        seen += 1
    return None


def _transient(exc: BaseException) -> bool:
    if _status(exc) in TRANSIENT_STATUS:
        return True
    name = type(exc).__name__
    return name in (
        "ConnectionError",
        "Timeout",
        "ReadTimeout",
        "ConnectTimeout",
        "ChunkedEncodingError",
    )


def with_retries(
    call: Callable[[], T], retries: int = 6, base_s: float = 1.0, sleep=time.sleep
) -> T:
    """``call()``, retried with exponential backoff and jitter on rate limits and transient errors."""
    for attempt in range(retries + 1):
        try:
            return call()
        except Exception as exc:
            if attempt == retries or not _transient(exc):
                raise
            sleep(base_s * 2**attempt * (0.5 + random.random()))
    raise AssertionError("unreachable")


def _end_steps(train: list[dict[str, Any]], val: list[dict[str, Any]]) -> None:
    """Give each val row the last train step logged before it (W&B's ``_step`` orders rows)."""
    train_sorted = sorted(train, key=lambda r: r.get("_step", 0))
    i, last = 0, math.nan
    for row in sorted(val, key=lambda r: r.get("_step", 0)):
        while i < len(train_sorted) and train_sorted[i].get("_step", 0) < row.get("_step", 0):
            last = train_sorted[i][M.TRAIN_STEP]
            i += 1
        row[END_STEP] = last


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def read_run(run: Any, sweep_id: str, retries: int, base_s: float) -> RunRecord:
    train = with_retries(lambda: list(run.scan_history(keys=TRAIN_KEYS)), retries, base_s)
    val = with_retries(lambda: list(run.scan_history(keys=VAL_KEYS)), retries, base_s)
    if not val:  # a run that logs no time_per_epoch still has a validation curve
        val = with_retries(lambda: list(run.scan_history(keys=VAL_KEYS[:2])), retries, base_s)
    _end_steps(train, val)
    rec = RunRecord(
        run_id=run.id,
        name=run.name or run.id,
        sweep_id=sweep_id,
        state=run.state,
        config={k: v for k, v in dict(run.config).items() if not k.startswith("_")},
        summary=dict(run.summary_metrics),
        sources=[f"{run.entity}/{run.project}/{run.id}" if hasattr(run, "entity") else run.id],
    )
    rec.train = [{k: _number(r.get(k)) for k in (*TRAIN_KEYS, "_step")} for r in train]
    rec.val = [{k: _number(r.get(k)) for k in (*VAL_KEYS, END_STEP, "_step")} for r in val]
    return rec


def split_path(path: str) -> tuple[str, str, str]:
    entity, project, sweep_id = path.split("/")
    return entity, project, sweep_id


def read_sweep(
    path: str, workers: int = 8, api: Any = None, retries: int = 6, base_s: float = 1.0
) -> tuple[list[RunRecord], dict[str, Any]]:
    """The sweep's runs as records, and the API run objects by id (for ``--tag`` and media)."""
    entity, project, sweep_id = split_path(path)
    if api is None:
        import wandb

        api = wandb.Api(timeout=60)
    try:
        runs = with_retries(
            lambda: list(
                api.runs(
                    f"{entity}/{project}",
                    filters={"sweep": sweep_id},
                    per_page=PAGE_SIZE,
                    lazy=False,
                )
            ),
            retries,
            base_s,
        )
    except Exception as exc:
        if _transient(exc) or type(exc).__name__ in (
            "CommError",
            "ValueError",
            "HTTPError",
            "AuthenticationError",
        ):
            raise UserError(
                f"{path}: cannot list the sweep's runs: {str(exc).splitlines()[0][:200]}"
            ) from None
        raise
    if not runs:
        raise UserError(f"{path}: no runs found for sweep {sweep_id} in {entity}/{project}")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        records = list(pool.map(lambda r: read_run(r, sweep_id, retries, base_s), runs))
    return records, {r.id: r for r in runs}


def tag_verdicts(
    handles: dict[str, Any], verdicts: dict[str, str], retries: int = 6, base_s: float = 1.0
) -> None:
    """Write each verdict to its run as a tag (replacing an older verdict tag)."""
    for run_id, verdict in verdicts.items():
        run = handles[run_id]
        run.tags = [t for t in run.tags if t not in VERDICTS] + [verdict]
        with_retries(run.update, retries, base_s)


def media_fetcher(handles: dict[str, Any], retries: int = 6, base_s: float = 1.0):
    """Downloads a run's first validation triplet at an epoch (for the triplets evolution)."""

    def fetch(rec: RunRecord, ref: str, dest: Path) -> Path | None:
        run = handles[rec.run_id]
        got = with_retries(
            lambda: run.file(ref).download(root=str(dest.parent / ".media"), replace=True),
            retries,
            base_s,
        )
        got.close()  # File.download returns the downloaded file, opened
        src = Path(got.name)
        if not src.is_file():
            return None
        src.replace(dest)
        return dest

    return fetch


def load_triplet_refs(
    handles: dict[str, Any], rec: RunRecord, retries: int = 6, base_s: float = 1.0
) -> None:
    """Fill ``rec.val_triplets`` with the media paths of its first validation triplet per epoch."""
    key = M.val_triplet_key(0)
    rows = with_retries(
        lambda: list(handles[rec.run_id].scan_history(keys=[M.EPOCH, key])), retries, base_s
    )
    for row in rows:
        image = row.get(key)
        if isinstance(image, dict) and image.get("path"):
            rec.val_triplets[int(row[M.EPOCH])] = [image["path"]]
