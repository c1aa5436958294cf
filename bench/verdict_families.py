"""Verdicts on real runs, family by family, held out: are the rules right on kinds of runs
their thresholds were not chosen on?

The runs are the committed corpora of real trainer runs (``tests/corpus.py``: ``tuning``,
``heldout``, ``families`` and ``unseen``, whose regime is checked on the raw curves when they are
made) and the development set (``tests/data/verdicts/real_runs.json``). ``unseen`` was built
once the rules were frozen: it is judged, and never used to choose a threshold. The families corpus groups its
runs by the kind of run users have (3D, 64 px, a NIfTI folder, L2, augment, the adversarial
term, short, long, batch-1 noise, capacity-limited, low lr, KL, early/late overfitting, still
improving, Hyperband-pruned).

Printed:
1. each corpus's confusion matrix (expected regime x verdict) with the default thresholds,
   its runs judged together, and how many are right when each run is judged alone;
2. leave-one-family-out: for each family, thresholds are chosen on every other run (each
   threshold of ``GRID`` varied one at a time around the defaults, the most runs right wins,
   ties to the default), then the held-out family is judged with them, together and run by
   run. A rule that is right only when its family was seen is fitted, not right.

    python bench/verdict_families.py [--families tests/data/corpus/families.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from corpus import DATA, Entry, load, load_dev, matrix  # noqa: E402

from analysis.diagnose import Thresholds  # noqa: E402
from analysis.judge import judge  # noqa: E402

# The thresholds the held-out choice may move, and the values it tries (defaults included).
GRID = {
    "trend_z": (1.5, 2.0, 2.5, 3.0),
    "slow_drop": (0.05, 0.1, 0.15, 0.2),
    "near_trivial": (0.8, 0.9, 1.0),
    "high_vs_best": (1.3, 1.5, 2.0),
    "gl_max": (3.0, 5.0, 10.0),
    "gap_growth": (1.15, 1.25, 1.5),
}


def verdicts(entries: list[Entry], th: Thresholds) -> dict[str, str]:
    """Verdict of each run (by name) when these runs are judged together."""
    by_id = {j.run.run_id: j.row["verdict"] for j in judge([e.record for e in entries], th)}
    return {e.name: by_id[e.record.run_id] for e in entries}


def right(groups: list[list[Entry]], th: Thresholds) -> int:
    """Runs right, each group judged together (a corpus is one sweep's worth of context)."""
    return sum(
        v == e.regime
        for group in groups
        for e, v in zip(group, verdicts(group, th).values(), strict=True)
    )


def alone(entries: list[Entry], th: Thresholds) -> int:
    return sum(verdicts([e], th)[e.name] == e.regime for e in entries)


def candidates() -> list[Thresholds]:
    base = Thresholds()
    out = [base]
    for name, values in GRID.items():
        out += [replace(base, **{name: v}) for v in values if v != getattr(base, name)]
    return out


def choose(groups: list[list[Entry]], grid: list[Thresholds]) -> tuple[Thresholds, int]:
    """The grid point with the most runs right (the first, closest to the defaults, on ties)."""
    scored = [(right(groups, th), -i) for i, th in enumerate(grid)]
    score, i = max(scored)
    return grid[-i], score


def changed(th: Thresholds) -> str:
    base = Thresholds()
    diff = [f"{k}={getattr(th, k):g}" for k in GRID if getattr(th, k) != getattr(base, k)]
    return ", ".join(diff) or "defaults"


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", type=Path, default=DATA / "families.json")
    args = parser.parse_args(argv)
    started = time.monotonic()
    corpora: dict[str, list[Entry]] = {
        "tuning": load("tuning"),
        "heldout": load("heldout"),
        "dev (34 runs)": load_dev(),
    }
    if args.families.exists():
        corpora["families"] = load(args.families.stem, args.families.parent)
    # Built once the rules were frozen: judged, never used to choose a threshold below.
    corpora["unseen"] = load("unseen")
    th = Thresholds()
    for name, entries in corpora.items():
        v = verdicts(entries, th)
        ok = sum(v[e.name] == e.regime for e in entries)
        print(f"== {name}: {ok}/{len(entries)} right together, {alone(entries, th)} alone")
        print(matrix(entries, {e.record.run_id: v[e.name] for e in entries}))
        for e in entries:
            if v[e.name] != e.regime:
                print(f"  wrong: {e.name} ({e.family or e.construction}) {e.regime} -> {v[e.name]}")
    fams = corpora.get("families", [])
    if not fams:
        print("no families corpus: leave-one-family-out skipped")
        return 0
    others = [corpora[k] for k in corpora if k not in ("families", "unseen")]
    grid = candidates()
    rows = [["family", "runs", "right (defaults)", "alone", "right (held out)", "alone", "chosen"]]
    names = sorted({e.family for e in fams})
    total: dict[str, int] = dict.fromkeys(("n", "d", "da", "h", "ha"), 0)
    for family in names:
        held = [e for e in fams if e.family == family]
        rest = [e for e in fams if e.family != family]
        chosen, _ = choose([*others, rest], grid)
        counts: dict[str, int] = {
            "n": len(held),
            "d": right([held], th),
            "da": alone(held, th),
            "h": right([held], chosen),
            "ha": alone(held, chosen),
        }
        for k, x in counts.items():
            total[k] += x
        n = counts["n"]
        rows.append(
            [family, str(n), *(f"{counts[k]}/{n}" for k in ("d", "da", "h", "ha")), changed(chosen)]
        )
    n = total["n"]
    rows.append(["all", str(n), *(f"{total[k]}/{n}" for k in ("d", "da", "h", "ha")), ""])
    print("\n== leave one family out (thresholds chosen without the family, then judged)")
    print(table(rows))
    print(f"\n{len(grid)} threshold sets tried per family; {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
