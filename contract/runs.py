"""The run folder ``<output_dir>/runs/<run id>/``: what each process may find and write there.

- ``checkpoint.pt``: the latest training state (every epoch, and mid-epoch on SIGTERM/SIGUSR1);
  ``best.pt``: the state of the best validation epoch. Both are written atomically by the trainer.
- ``progress.jsonl``: one JSON object per finished epoch, ``epoch`` counting from 1; the local
  engine tails it to optimise and prune.
- ``trial.log``: the trial's stdout and stderr, written by the local engine.
"""

from __future__ import annotations

import json
from pathlib import Path

LATEST = "checkpoint.pt"
BEST = "best.pt"
PROGRESS = "progress.jsonl"
TRIAL_LOG = "trial.log"


def run_dir(output_dir: str | Path, run_id: str) -> Path:
    return Path(output_dir) / "runs" / run_id


def append_progress(folder: Path, row: dict[str, float]) -> None:
    """One JSON line per finished epoch."""
    with open(folder / PROGRESS, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()


def read_progress(folder: Path) -> list[dict]:
    """The finished epochs' rows; a line still being written ends the list."""
    try:
        lines = (folder / PROGRESS).read_text().splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows
