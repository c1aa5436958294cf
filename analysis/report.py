"""Write the report folder: verdicts.json/.csv, report.md and report.html (one section model,
rendered twice; the HTML is self-contained), plots/, triplets/ and next_sweep.yaml."""

from __future__ import annotations

import csv
import json
import shutil
import sys
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from analysis import document as doc
from analysis import interactive, plots, warm_start
from analysis.diagnose import VERDICTS, Thresholds
from analysis.importance import importance
from analysis.judge import (
    HEALTHY,
    NOT_HYPERPARAMETERS,
    Judged,
    best_run,
    is_candidate,
    swept_params,
)
from analysis.next_sweep import next_sweep
from analysis.records import FINISHED, RunRecord, Unreadable
from contract import metrics as M
from contract.config import DEFAULTS
from contract.errors import UserError

if TYPE_CHECKING:  # the engine reader loads Optuna: only where a local sweep is read
    from analysis.engine import EngineSweep

CSV_FIELDS = [
    "rank", "run_id", "name", "sweep_id", "state", "exit_code", "engine_state", "engine_reason",
    "verdict", "epochs", "best_val_recon_loss", "final_val_recon_loss", "final_train_recon_loss",
    "reasons", "remedies", "slow_epochs", "config",
]  # fmt: skip
TRIPLET_RUNS = 3
# Epochs a triplet viewer steps through at most, evenly spaced from the first to the last: each
# is an image embedded in the page.
TRIPLET_FRAMES = 10
# The early termination's verdict, counted apart from the runs that ran their course.
PRUNED = "pruned"

# Fetches one triplet image of a run into a file; returns the file, or None if unavailable.
MediaFetcher = Callable[[RunRecord, str, Path], "Path | None"]


def copy_local(run: RunRecord, ref: str, dest: Path) -> Path | None:
    if not Path(ref).is_file():
        return None
    shutil.copyfile(ref, dest)
    return dest


def _fmt(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else ("" if x is None else str(x))


@dataclass
class SweepLabel:
    """What the report is about: the sweep's name and id, from the runs and the engine."""

    heading: str  # "smoke (ab12cd34)"
    slug: str  # a short name for the next sweep: "smoke"


def sweep_label(
    runs: Sequence[RunRecord], engine: Sequence[EngineSweep], fallback: str
) -> SweepLabel:
    names = {sw.sweep_id: sw.name for sw in engine}
    ids = sorted({r.sweep_id for r in runs if r.sweep_id})

    def one(sweep_id: str) -> str:
        name = names.get(sweep_id)
        return f"{name} ({sweep_id})" if name and name != sweep_id else sweep_id

    if not ids:
        return SweepLabel(f"runs in {fallback} (no sweep id)", fallback)
    if len(ids) == 1:
        return SweepLabel(one(ids[0]), names.get(ids[0]) or ids[0])
    return SweepLabel(f"{len(ids)} sweeps: " + ", ".join(map(one, ids)), fallback)


def counts_line(rows: list[dict[str, Any]], unreadable: Sequence[Unreadable] = ()) -> str:
    """``10 runs: 4 good, 1 overfitting; 5 pruned; 1 unreadable``: pruned runs counted apart."""
    counts = Counter(r["verdict"] for r in rows)
    order = [v for v in VERDICTS if v != PRUNED] + sorted(set(counts) - set(VERDICTS) - {PRUNED})
    parts = [", ".join(f"{counts[v]} {v}" for v in order if counts[v])]
    if counts[PRUNED]:
        parts.append(f"{counts[PRUNED]} pruned by early termination")
    if unreadable:
        parts.append(f"{len(unreadable)} unreadable")
    return f"{len(rows)} runs: " + "; ".join(p for p in parts if p)


def triplet_runs(judged: list[Judged]) -> list[Judged]:
    """Finished runs in the order their triplets are shown: the candidates for best run first."""
    finished = [j for j in judged if j.run.state == FINISHED]
    return sorted(finished, key=lambda j: not is_candidate(j.row))  # stable: by rank within


def spaced(items: list[int], n: int) -> list[int]:
    """At most ``n`` of ``items``, evenly spaced, the first and the last always in."""
    if len(items) <= n:
        return list(items)
    if n == 1:
        return [items[-1]]
    return sorted({items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)})


def triplet_evolution(judged: list[Judged], out: Path, fetch: MediaFetcher) -> list[dict[str, Any]]:
    """The first validation triplet of the best finished runs, at up to ``TRIPLET_FRAMES``
    logged epochs (evenly spaced); ``stills`` are the first, middle and last of those."""
    shown = []
    for j in triplet_runs(judged):
        if len(shown) == TRIPLET_RUNS:
            break
        picks = spaced(sorted(j.run.val_triplets), TRIPLET_FRAMES)
        if not picks:
            continue
        images = []
        for epoch in picks:
            dest = out / "triplets" / f"{j.run.run_id}_epoch{epoch:03d}.png"
            dest.parent.mkdir(exist_ok=True)
            got = fetch(j.run, j.run.val_triplets[epoch][0], dest)
            if got:
                images.append({"epoch": epoch, "path": got.relative_to(out).as_posix()})
        if images:
            stills = sorted({0, len(images) // 2, len(images) - 1})
            shown.append(
                {
                    "run_id": j.run.run_id,
                    "name": j.row["name"],
                    "rank": j.row["rank"],
                    "verdict": j.row["verdict"],
                    "images": images,
                    "stills": [images[i] for i in stills],
                }
            )
    return shown


def check_out(out: Path) -> None:
    """``--out`` must be a folder or a place where one can be made: one line otherwise."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--out {out}: {parent} is not a folder")
            break


def write_report(
    judged: list[Judged],
    out: Path,
    label: SweepLabel,
    th: Thresholds,
    top: int = 12,
    fetch: MediaFetcher = copy_local,
    engine: Sequence[EngineSweep] = (),
    unreadable: Sequence[Unreadable] = (),
    notes: Sequence[str] = (),
) -> Path:
    check_out(out)
    try:
        (out / "plots").mkdir(parents=True, exist_ok=True)
        _write(judged, out, label, th, top, fetch, engine, unreadable, notes)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise UserError(
            f"--out {out}: cannot write the report: {exc.strerror or exc}{where}"
        ) from None
    return out


T = TypeVar("T")


class Failures(list):
    """What could not be built, in words; the rest of the report is written all the same."""

    def run(self, what: str, build: Callable[[], T], fallback: T) -> T:
        try:
            return build()
        except OSError:  # the report folder cannot be written: the caller's one-line error
            raise
        except Exception as exc:  # a bug: its traceback goes to stderr, the report still out
            traceback.print_exc(file=sys.stderr)
            self.append(f"{what} could not be built ({type(exc).__name__}: {exc})")
            return fallback


def _write(judged, out, label, th, top, fetch, engine, unreadable, notes) -> None:
    rows = [j.row for j in judged]
    params = swept_params(rows)
    failed = Failures()

    (out / "verdicts.json").write_text(json.dumps(rows, indent=1, default=str))
    with open(out / "verdicts.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            listed = ("reasons", "remedies", "slow_epochs", "config")
            w.writerow({**r, **{k: json.dumps(r[k]) for k in listed}})

    imps, imp_note = failed.run("importance", lambda: importance(rows, params), (None, ""))
    imp_note = imp_note or "not computed: " + failed[-1]
    plot_dir = out / "plots"

    def png(what: str, draw: Callable[[], Path | None]) -> str | None:
        path = failed.run(f"the {what} figure", draw, None)
        return path.relative_to(out).as_posix() if path else None

    def chart(what: str, build: Callable[[], dict[str, Any] | None]) -> dict[str, Any] | None:
        return failed.run(f"the interactive {what} chart", build, None)

    ia = interactive
    charts = [
        doc.Chart("Validation loss of every run", "val_all",
                  png("loss curves", lambda: plots.loss_curves(judged, plot_dir, top)),
                  chart("validation loss", lambda: ia.val_all(judged))),
        doc.Chart("Training vs validation loss per run", "per_run", None,
                  chart("per-run loss", lambda: ia.per_run(judged, top))),
        doc.Chart("Ranking", "ranking", png("ranking", lambda: plots.ranking(judged, plot_dir, top)),
                  None),
        doc.Chart("Swept values against the best validation loss (parallel coordinates)",
                  "parallel",
                  png("parallel coordinates",
                      lambda: plots.parallel_coordinates(judged, params, plot_dir)),
                  chart("parallel coordinates", lambda: ia.parallel(judged, params))),
        doc.Chart("Best validation loss against each swept hyperparameter", "params",
                  png("swept values", lambda: plots.params_vs_loss(judged, params, plot_dir)),
                  chart("swept values", lambda: ia.params_vs_loss(judged, params))),
        doc.Chart("Time per epoch", "time",
                  png("time per epoch", lambda: plots.time_per_epoch(judged, plot_dir)),
                  chart("time per epoch", lambda: ia.time_per_epoch(judged))),
        doc.Chart("fANOVA importance of each swept hyperparameter", "importance",
                  png("importance", lambda: plots.importance_bars(imps, plot_dir)) if imps else None,
                  chart("importance", lambda: ia.importance_bars(imps)) if imps else None),
    ]  # fmt: skip
    charts = [c for c in charts if c.path or c.spec]
    triplets = failed.run("the triplets", lambda: triplet_evolution(judged, out, fetch), [])

    def proposal() -> tuple[dict[str, Any], list[str]]:
        cfg, sweep_notes = next_sweep(rows, params, f"next-{label.slug}")
        return cfg, sweep_notes + _check_sweep(cfg)

    sweep_cfg, sweep_notes = failed.run("next_sweep.yaml", proposal, (None, []))
    if sweep_cfg is not None:
        local = [(e.sweep_id, e.storage) for e in engine]
        warm = failed.run(
            "the warm start line",
            lambda: warm_start.lines(sweep_cfg, rows, out / "next_sweep.yaml", local),
            [],
        )
        sweep_notes = sweep_notes + warm
        for line in warm:
            print(line)
        (out / "next_sweep.yaml").write_text(
            "# Next sweep, from the analysis of " + label.heading + ":\n"
            + "".join(f"# - {n}\n" for n in sweep_notes)
            + yaml.safe_dump(sweep_cfg, sort_keys=False)
        )  # fmt: skip
    else:
        sweep_notes = ["not written: " + failed[-1]]

    title = f"Sweep report: {label.heading}"
    sections = build_sections(
        rows, params, imps, imp_note, th, sweep_notes, charts, triplets, engine, unreadable,
        [*notes, *(f"not in this report: {f}" for f in failed)],
    )  # fmt: skip
    (out / "report.md").write_text(doc.to_markdown(title, sections))
    js = interactive.plotly_js() if any(c.spec for c in charts) else ""
    (out / "report.html").write_text(doc.to_html(title, sections, out, js))


def _check_sweep(cfg: dict[str, Any]) -> list[str]:
    """The sweeper's own validation of the proposed sweep, when the sweeper is installed."""
    try:
        from sweeper.validate import validate_sweep
    except ImportError:
        return []
    problems = validate_sweep(cfg, "next_sweep.yaml")
    return [f"check before use: {p}" for p in problems] or [
        "checked with python -m sweeper validate: valid"
    ]


def _who(row: dict[str, Any]) -> str:
    return row["run_id"] if row["name"] == row["run_id"] else f"{row['name']} ({row['run_id']})"


def _best_lines(rows: list[dict[str, Any]], params: list[str]) -> list[str]:
    best = best_run(rows)
    if best is None:
        counts = Counter(f"{r['state']}/{r['verdict']}" for r in rows)
        found = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        return [
            "best run: none: no run finished with a healthy verdict ("
            + ", ".join(HEALTHY)
            + f"); state/verdict of the runs: {found or 'no runs'}"
        ]
    lines = [
        f"best run: {_who(best)}, best {M.VAL_RECON} {best['best_val_recon_loss']:.4g}, "
        f"verdict {best['verdict']} (the lowest among finished runs with a healthy verdict)"
    ]
    lower = [r for r in rows if r["rank"] < best["rank"]]
    if lower:
        passed = ", ".join(f"{_who(r)} ({r['verdict']})" for r in lower[:5])
        lines.append(f"lower losses, but not finished and healthy: {passed}")
    # The swept values, then what else differs from the trainer's defaults: the rest is noise,
    # and where outputs go is not part of what was learnt.
    shown = [p for p in params if p in best["config"]] + sorted(
        k
        for k, v in best["config"].items()
        if k not in params and k not in NOT_HYPERPARAMETERS and DEFAULTS.get(k, v) != v
    )
    lines.append(
        "best config: "
        + ", ".join(f"{k}={json.dumps(best['config'][k])}" for k in shown)
        + " (every other key: the trainer's default)"
    )
    return lines


def _engine_section(engine: Sequence[EngineSweep], rows: list[dict[str, Any]]) -> doc.Section:
    seen = {r["run_id"] for r in rows}
    blocks: list[doc.Block] = []
    for sw in engine:
        states = Counter(t.state for t in sw.trials if not t.void)
        reasons = Counter(t.reason for t in sw.trials if t.reason and not t.void)
        blocks.append(
            doc.Text(
                f"Sweep {sw.name} ({sw.sweep_id}) in {sw.storage}: {len(sw.trials)} trials: "
                + ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
                + (
                    "; reasons: " + ", ".join(f"{n} {r}" for r, n in reasons.items())
                    if reasons
                    else ""
                )
            )
        )
        blocks.append(
            doc.Table(
                ["trial", "state", "run", "reason", "exit code", "value", "retry of", "run read"],
                [
                    [
                        str(t.number),
                        t.state,
                        t.run_id or "",
                        t.reason or "",
                        _fmt(t.exit_code),
                        _fmt(t.value),
                        _fmt(t.retry_of),
                        "yes" if t.run_id in seen else "no W&B run found",
                    ]
                    for t in sorted(sw.trials, key=lambda t: t.number)
                ],
            )  # fmt: skip
        )
    return doc.Section("Local engine: trial states", blocks)


RANK_HEAD = ["rank", "name", "run", "state", "verdict", "epochs", "best val", "final val",
             "final train", "swept values"]  # fmt: skip


def build_sections(
    rows, params, imps, imp_note, th, sweep_notes, figures, triplets, engine, unreadable, notes
) -> list[doc.Section]:
    """Every section of the report, once, for both renderers."""
    with_engine = any(r.get("engine_state") for r in rows)
    summary = [counts_line(rows, unreadable), *_best_lines(rows, params), *notes]
    head = RANK_HEAD[:4] + ["engine"] * with_engine + RANK_HEAD[4:]
    ranking = []
    for r in rows:
        cells: list[doc.Cell] = [str(r["rank"]), r["name"], r["run_id"], r["state"]]
        if with_engine:
            cells.append(r.get("engine_state") or "")
        cells += [doc.Verdict(r["verdict"]), str(r["epochs"]), _fmt(r["best_val_recon_loss"]),
                  _fmt(r["final_val_recon_loss"]), _fmt(r["final_train_recon_loss"]),
                  ", ".join(f"{p}={json.dumps(r['config'].get(p))}" for p in params)]  # fmt: skip
        ranking.append(cells)
    sections = [
        doc.Section("Summary", [doc.Items(summary)]),
        doc.Section(
            "Ranking",
            [doc.Table(head, ranking, sortable=True, row_ids=[r["run_id"] for r in rows])],
        ),
        doc.Section(
            "Figures",
            list(figures)
            + [doc.Text("No chart: no run logged a validation loss or a time per epoch.")]
            * (not any(f.spec for f in figures)),
        ),
        doc.Section(
            "Hyperparameter importance",
            [doc.Text(imp_note)] + ([doc.Items([f"{k}: {v:.3f}" for k, v in imps.items()])] if imps else []),
        ),
    ]  # fmt: skip
    if engine:
        sections.append(_engine_section(engine, rows))
    if unreadable:
        sections.append(
            doc.Section(
                "Unreadable runs",
                [
                    doc.Text("These runs could not be read; every other run is reported."),
                    doc.Table(["run file", "reason"], [[u.source, u.reason] for u in unreadable]),
                ],
            )
        )
    sections.append(doc.Section("Verdicts, reasons and remedies"))
    for r in rows:
        items = [*r["reasons"]]
        if r.get("engine_state"):
            why = f" ({r['engine_reason']})" if r.get("engine_reason") else ""
            items.append(f"local engine: trial {r['engine_state']}{why}")
        items += [f"remedy: {x}" for x in r["remedies"]]
        items += [
            f"slowdown: epoch {s['epoch']}: {s['time_per_epoch']:.3g} s ({s['x_median']:.1f}x the median)"
            for s in r["slow_epochs"]
        ]
        sections.append(
            doc.Section(f"#{r['rank']} {_who(r)}", [doc.Items(items)], 3, verdict=r["verdict"])
        )
    trip = doc.Section(
        "Triplets evolution (best finished runs, healthy ones first; the page steps through up to"
        f" {TRIPLET_FRAMES} epochs, the Markdown shows the first, middle and last)"
    )
    trip.blocks = [
        doc.Viewer(
            f"#{t['rank']} {t['name']}: {t['verdict']}",
            [(f"epoch {i['epoch']}", i["path"]) for i in t["images"]],
            [(f"epoch {i['epoch']}", i["path"]) for i in t["stills"]],
        )
        for t in triplets
    ] or [doc.Text("No triplet images were logged by the finished runs.")]
    sections.append(trip)
    sections.append(
        doc.Section("Next sweep", [doc.Text("next_sweep.yaml:"), doc.Items(sweep_notes)])
    )
    sections.append(
        doc.Section(
            "Thresholds", [doc.Items([f"{k} = {getattr(th, k)}" for k in th.__dataclass_fields__])]
        )
    )
    return sections
