"""Pull a sweep's runs through W&B's public API into neutral run records (a thin adapter).

One paged query lists the sweep's runs with their config, summary and state; each run's full
(not sampled) history is read with ``scan_history`` for just the keys the diagnosis needs, the
train and the validation keys separately (``scan_history`` returns only rows holding every
requested key). Runs are read concurrently, a bounded number at a time, and every request is
retried with exponential backoff on HTTP 429 and transient errors. A run whose history cannot
be read is set aside with its reason; the others are reported.

What a user can get wrong (no login, a wrong key, a server that does not answer) is one line
naming what to check, within ``timeout`` seconds.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from analysis.diagnose import VERDICTS
from analysis.records import END_STEP, RunRecord, Unreadable
from contract import metrics as M
from contract.errors import UserError

T = TypeVar("T")
TRANSIENT_STATUS = {429, 500, 502, 503, 504}
TRAIN_KEYS = [M.TRAIN_STEP, M.TRAIN_RECON]
VAL_KEYS = [M.EPOCH, M.VAL_RECON, M.TIME_PER_EPOCH]
EVAL_KEYS = [M.EPOCH, M.TRAIN_EVAL_RECON]
PAGE_SIZE = 200
DEFAULT_TIMEOUT_S = 30.0
CLOUD_URL = "https://api.wandb.ai"
# The summary keys --tag writes besides the tag: W&B's runs table and charts colour and filter
# by summary values, not by tags.
SUMMARY_VERDICT, SUMMARY_REASONS, SUMMARY_REMEDY = "verdict", "verdict_reasons", "verdict_remedy"
SUMMARY_TEXT_MAX = 500
# How wandb words a server that never answered (wandb-core's request timeout, a refused or
# unresolvable connection), as opposed to one that answered "no".
NO_ANSWER = re.compile(
    r"did not respond in time|timed? ?out|connection refused|failed to establish|"
    r"name or service not known|no such host|connection reset|unreachable",
    re.I,
)


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


def _logged(run: Any, key: str) -> bool:
    """Whether the run's history holds ``key`` (True when the listing did not say)."""
    keys = getattr(run, "history_keys", None)
    if isinstance(keys, str):
        keys = json.loads(keys)
    if not isinstance(keys, dict) or not isinstance(keys.get("keys"), dict):
        return True
    return key in keys["keys"]


def read_run(run: Any, sweep_id: str, retries: int, base_s: float) -> RunRecord:
    train = with_retries(lambda: list(run.scan_history(keys=TRAIN_KEYS)), retries, base_s)
    val = with_retries(lambda: list(run.scan_history(keys=VAL_KEYS)), retries, base_s)
    if not val:  # a run that logs no time_per_epoch still has a validation curve
        val = with_retries(lambda: list(run.scan_history(keys=VAL_KEYS[:2])), retries, base_s)
    if _logged(run, M.TRAIN_EVAL_RECON):
        evals = with_retries(lambda: list(run.scan_history(keys=EVAL_KEYS)), retries, base_s)
        by_epoch = {r[M.EPOCH]: r[M.TRAIN_EVAL_RECON] for r in evals}
        for row in val:
            if row.get(M.EPOCH) in by_epoch:
                row[M.TRAIN_EVAL_RECON] = by_epoch[row[M.EPOCH]]
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
    rec.val = [
        {k: _number(r.get(k)) for k in (*VAL_KEYS, END_STEP, "_step", M.TRAIN_EVAL_RECON) if k in r}
        for r in val
    ]
    return rec


def server_url(message: str = "") -> str:
    """The W&B server the client talks to: named in wandb's message, else its settings."""
    named = re.search(r"(https?://[^\s:]+(?::\d+)?)", message)
    if named:
        return named.group(1)
    return os.environ.get("WANDB_BASE_URL") or CLOUD_URL


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def connect(timeout: float = DEFAULT_TIMEOUT_S) -> Any:
    """``wandb.Api``; no login, a refused key or a server that does not answer is one line."""
    import wandb
    from wandb.errors import AuthenticationError, CommError, UsageError

    try:
        return wandb.Api(timeout=timeout)
    except UsageError as exc:
        raise UserError(
            f"no W&B API key ({_first_line(exc)}): run `wandb login`, or set WANDB_API_KEY"
            " (the key from your W&B settings page)"
        ) from None
    except CommError as exc:
        message = _first_line(exc)
        url = server_url(message)
        if NO_ANSWER.search(message) or not isinstance(exc, AuthenticationError):
            raise UserError(
                f"the W&B server at {url} did not answer within {timeout:g} s ({message}):"
                " check WANDB_BASE_URL (unset for W&B's cloud), the network and any proxy,"
                " or wait longer with --timeout"
            ) from None
        raise UserError(
            f"W&B did not accept the API key for {url} ({message}): run `wandb login`,"
            " or set WANDB_API_KEY to a valid key for this server"
        ) from None


def _read_error(exc: BaseException) -> bool:
    """An error of the W&B client or its transport (a run it could not read), not a bug here."""
    import requests
    from wandb.errors import Error

    return isinstance(exc, (Error, requests.RequestException, OSError)) or (
        type(exc).__name__ == "WandbApiFailedError"  # wandb-core's answer to a failed request
    )


def split_path(path: str) -> tuple[str, str, str]:
    entity, project, sweep_id = path.split("/")
    return entity, project, sweep_id


def read_sweep(
    path: str,
    workers: int = 8,
    api: Any = None,
    retries: int = 6,
    base_s: float = 1.0,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> tuple[list[RunRecord], dict[str, Any], list[Unreadable]]:
    """The sweep's runs as records, the API run objects by id (for ``--tag`` and media), and
    the runs whose history could not be read, with why."""
    entity, project, sweep_id = split_path(path)
    if api is None:
        api = connect(timeout)
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
            "WandbApiFailedError",
        ):
            raise UserError(
                f"{path}: cannot list the sweep's runs: {str(exc).splitlines()[0][:200]}"
            ) from None
        raise
    if not runs:
        raise UserError(f"{path}: no runs found for sweep {sweep_id} in {entity}/{project}")
    gone = threading.Event()  # the server stopped answering: do not wait on it once per run

    def one(run: Any) -> RunRecord | Unreadable:
        where = f"{entity}/{project}/{run.id}"
        if gone.is_set():
            return Unreadable(
                where, f"not read: the W&B server at {server_url()} stopped answering"
            )
        try:
            return read_run(run, sweep_id, retries, base_s)
        except Exception as exc:
            if not _read_error(exc):
                raise
            message = _first_line(exc)
            if NO_ANSWER.search(message):
                gone.set()
            return Unreadable(where, f"history not readable: {type(exc).__name__}: {message}")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, runs))
    records = [r for r in results if isinstance(r, RunRecord)]
    unreadable = [r for r in results if isinstance(r, Unreadable)]
    if not records:
        raise UserError(
            f"{path}: none of the sweep's {len(runs)} runs could be read; the first:"
            f" {unreadable[0].source}: {unreadable[0].reason}"
        )
    return records, {r.id: r for r in runs}, unreadable


def _short(items: list[str]) -> str:
    joined = "; ".join(items)
    return joined if len(joined) <= SUMMARY_TEXT_MAX else joined[: SUMMARY_TEXT_MAX - 3] + "..."


def verdict_summary(row: dict[str, Any]) -> dict[str, str]:
    """The summary keys --tag writes for one judged run (W&B colours and filters by these)."""
    return {
        SUMMARY_VERDICT: row["verdict"],
        SUMMARY_REASONS: _short(row["reasons"]),
        SUMMARY_REMEDY: _short(row["remedies"]),
    }


def tag_verdicts(
    handles: dict[str, Any], rows: list[dict[str, Any]], retries: int = 6, base_s: float = 1.0
) -> None:
    """Write each verdict to its run as a tag (replacing an older verdict tag) and as the summary
    keys ``verdict``, ``verdict_reasons`` and ``verdict_remedy`` (replacing older values; the
    run's other summary keys, the metrics guide's among them, are left as they are)."""
    for row in rows:
        run = handles[row["run_id"]]
        run.tags = [t for t in run.tags if t not in VERDICTS] + [row["verdict"]]
        # Setting a key only stages it; update() then writes the tags and the summary at once.
        for key, value in verdict_summary(row).items():
            run.summary[key] = value
        with_retries(run.update, retries, base_s)


def media_fetcher(handles: dict[str, Any], retries: int = 6, base_s: float = 1.0):
    """Downloads a run's first validation triplet at an epoch (for the triplets evolution)."""

    def fetch(rec: RunRecord, ref: str, dest: Path) -> Path | None:
        run = handles[rec.run_id]
        try:
            got = with_retries(
                lambda: run.file(ref).download(root=str(dest.parent / ".media"), replace=True),
                retries,
                base_s,
            )
        except Exception as exc:
            if not _read_error(exc):
                raise
            return None  # the report shows the images it could fetch
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
    try:
        rows = with_retries(
            lambda: list(handles[rec.run_id].scan_history(keys=[M.EPOCH, key])), retries, base_s
        )
    except Exception as exc:
        if not _read_error(exc):
            raise
        rec.notes.append(f"triplet images not readable: {_first_line(exc)}")
        return
    for row in rows:
        image = row.get(key)
        if isinstance(image, dict) and image.get("path"):
            rec.val_triplets[int(row[M.EPOCH])] = [image["path"]]
