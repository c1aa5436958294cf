"""What ``early_stop`` saves and costs, replayed on the project's corpora of real runs.

The stop reads only the curve so far (``contract.trends.stop_test``), so replaying a finished
run epoch by epoch gives the epoch where it would have stopped, exactly. For each run built to
overfit: the share of its epochs the stop saves, and the best validation loss it keeps against
the full run's best (the stopped run keeps ``best.pt``); for each good run: whether it stops,
and where. The corpora are those of ``tests/corpus.py`` (``tuning``, ``heldout``, ``families``,
``unseen``) and the development set.

Printed, for each ``early_stop_patience`` (the share of the epochs so far the test must hold
in a row, at least 3), one line:
the overfitting runs' median and worst epochs saved and best-loss cost, and the good runs
stopped (and those stopped before their last 10% of epochs). Targets: >= 30% of epochs saved and <= 2% best-loss
cost (medians); no good run stopped before its last 10%.

    python bench/early_stop_replay.py [--patience 0.1 0.2 0.3] [--runs]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from corpus import Entry, load, load_dev  # noqa: E402

from analysis.diagnose import epoch_curves  # noqa: E402
from contract.config import DEFAULTS as CONFIG  # noqa: E402
from contract.trends import DEFAULTS, overfit_test, should_stop  # noqa: E402

# Good runs may stop only in their last LATE share of epochs.
LATE = 0.1


def replay(entry: Entry) -> tuple[list[float], list[bool]]:
    """The run's validation curve and, for each epoch, whether the overfitting test held on
    the curve up to it (what the trainer computes after that epoch)."""
    c = epoch_curves(entry.record.train, entry.record.val)
    n = len(c.epochs)
    held = []
    for t in range(1, n + 1):
        evals = c.train_eval[:t] if len(c.train_eval) == n else []
        held.append(overfit_test(c.epochs[:t], c.val[:t], c.train[:t], evals, DEFAULTS)[0])
    return c.val, held


def stop_epoch(val: list[float], held: list[bool], share: float) -> tuple[int, int, float, float]:
    """(epochs of the full run, epochs trained with the stop, full run's best, kept best)."""
    n = len(held)
    t = next((t for t in range(1, n + 1) if should_stop(held[:t], share)), n)
    return (
        n,
        t,
        min(v for v in val if math.isfinite(v)),
        min(v for v in val[:t] if math.isfinite(v)),
    )


def corpora() -> list[Entry]:
    out: list[Entry] = []
    for name in ("tuning", "heldout", "families", "unseen"):
        out += load(name)
    return out + load_dev()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--patience",
        type=float,
        nargs="+",
        default=[0.1, 0.2, 0.3],
        help="early_stop_patience settings to compare (looser, default, stricter)",
    )
    parser.add_argument("--runs", action="store_true", help="print every overfitting run too")
    args = parser.parse_args(argv)
    started = time.monotonic()
    entries = corpora()
    over = [e for e in entries if e.regime == "overfitting"]
    good = [e for e in entries if e.regime == "good"]
    print(
        f"{len(entries)} runs: {len(over)} built to overfit, {len(good)} good"
        f" (default early_stop_patience {CONFIG['early_stop_patience']})"
    )
    head = (
        "patience  overfit stopped  saved median  saved worst  cost median  cost worst"
        "  good stopped  good stopped before last 10%"
    )
    print(head)
    print("-" * len(head))
    replays = {id(e): replay(e) for e in over + good}
    for p in args.patience:
        saved, cost, stopped = [], [], 0
        detail = []
        for e in over:
            n, t, full, kept = stop_epoch(*replays[id(e)], p)
            stopped += t < n
            saved.append((n - t) / n)
            cost.append(kept / full - 1)
            detail.append(
                f"  {e.name:40s} {t:4d}/{n:<4d} saved {saved[-1]:6.1%} cost {cost[-1]:+.2%}"
            )
        early, late = [], 0
        for e in good:
            n, t, _, _ = stop_epoch(*replays[id(e)], p)
            if t < n and t < math.ceil((1 - LATE) * n):
                early.append(f"{e.name} at {t}/{n}")
            elif t < n:
                late += 1
        print(
            f"{p:8g}  {stopped:>7d}/{len(over):<7d}  {statistics.median(saved):12.1%}"
            f"  {min(saved):11.1%}  {statistics.median(cost):+11.2%}  {max(cost):+10.2%}"
            f"  {len(early) + late:>12d}  {len(early)}{': ' if early else ''}{', '.join(early)}"
        )
        if args.runs:
            print("\n".join(detail))
    print(f"\n{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
