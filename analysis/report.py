"""Write the report folder: verdicts.json/.csv, report.md, report.html (self-contained),
plots/, triplets/ and next_sweep.yaml."""

from __future__ import annotations

import base64
import csv
import html
import json
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from analysis import plots
from analysis.diagnose import VERDICTS, Thresholds
from analysis.importance import importance
from analysis.judge import Judged, swept_params
from analysis.next_sweep import next_sweep
from analysis.records import FINISHED, RunRecord
from contract import metrics as M
from contract.config import DEFAULTS

CSV_FIELDS = [
    "rank", "run_id", "name", "sweep_id", "state", "exit_code", "verdict", "epochs",
    "best_val_recon_loss", "final_val_recon_loss", "final_train_recon_loss",
    "reasons", "remedies", "slow_epochs", "config",
]  # fmt: skip
TRIPLET_RUNS = 3

# Fetches one triplet image of a run into a file; returns the file, or None if unavailable.
MediaFetcher = Callable[[RunRecord, str, Path], "Path | None"]


def copy_local(run: RunRecord, ref: str, dest: Path) -> Path | None:
    if not Path(ref).is_file():
        return None
    shutil.copyfile(ref, dest)
    return dest


def _fmt(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else ("" if x is None else str(x))


def triplet_evolution(judged: list[Judged], out: Path, fetch: MediaFetcher) -> list[dict[str, Any]]:
    """First, middle and last epoch's first validation triplet of the best finished runs."""
    shown = []
    for j in judged:
        if len(shown) == TRIPLET_RUNS:
            break
        epochs = sorted(j.run.val_triplets)
        if j.run.state != FINISHED or not epochs:
            continue
        picks = sorted({epochs[0], epochs[len(epochs) // 2], epochs[-1]})
        images = []
        for epoch in picks:
            dest = out / "triplets" / f"{j.run.run_id}_epoch{epoch:03d}.png"
            dest.parent.mkdir(exist_ok=True)
            got = fetch(j.run, j.run.val_triplets[epoch][0], dest)
            if got:
                images.append({"epoch": epoch, "path": got.relative_to(out).as_posix()})
        if images:
            shown.append(
                {
                    "run_id": j.run.run_id,
                    "name": j.row["name"],
                    "rank": j.row["rank"],
                    "images": images,
                }
            )
    return shown


def write_report(
    judged: list[Judged],
    out: Path,
    title: str,
    th: Thresholds,
    top: int = 12,
    fetch: MediaFetcher = copy_local,
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "plots").mkdir(exist_ok=True)
    rows = [j.row for j in judged]
    params = swept_params(rows)

    (out / "verdicts.json").write_text(json.dumps(rows, indent=1, default=str))
    with open(out / "verdicts.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(
                {
                    **r,
                    **{
                        k: json.dumps(r[k])
                        for k in ("reasons", "remedies", "slow_epochs", "config")
                    },
                }
            )

    imps, imp_note = importance(rows, params)
    figures = [
        ("Training vs validation loss", plots.loss_curves(judged, out / "plots", top)),
        ("Ranking", plots.ranking(judged, out / "plots", top)),
        ("Best validation loss against each swept hyperparameter", plots.params_vs_loss(judged, params, out / "plots")),
        ("Time per epoch", plots.time_per_epoch(judged, out / "plots")),
    ]  # fmt: skip
    if imps:
        figures.append(
            (
                "fANOVA importance of each swept hyperparameter",
                plots.importance_bars(imps, out / "plots"),
            )
        )
    figures = [(t, p) for t, p in figures if p]
    triplets = triplet_evolution(judged, out, fetch)

    sweep_cfg, sweep_notes = next_sweep(rows, params, f"next-{title}")
    sweep_notes += _check_sweep(sweep_cfg)
    (out / "next_sweep.yaml").write_text(
        "# Next sweep, from the analysis of " + title + ":\n"
        + "".join(f"# - {n}\n" for n in sweep_notes)
        + yaml.safe_dump(sweep_cfg, sort_keys=False)
    )  # fmt: skip

    sections = _sections(rows, params, imps, imp_note, th, sweep_notes)
    (out / "report.md").write_text(_markdown(title, sections, figures, triplets))
    (out / "report.html").write_text(_html(title, sections, figures, triplets, out))
    return out


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


def _sections(rows, params, imps, imp_note, th, sweep_notes) -> dict[str, Any]:
    counts = Counter(r["verdict"] for r in rows)
    best = next((r for r in rows if r["best_val_recon_loss"] is not None), None)
    summary = [f"{len(rows)} runs: " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS if counts[v])]
    if best:
        summary.append(
            f"best run: {_who(best)}, best {M.VAL_RECON}"
            f" {best['best_val_recon_loss']:.4g}, verdict {best['verdict']}"
        )
        # The swept values, then what else differs from the trainer's defaults: the rest is noise.
        shown = [p for p in params if p in best["config"]] + sorted(
            k for k, v in best["config"].items() if k not in params and DEFAULTS.get(k, v) != v
        )
        summary.append(
            "best config: "
            + ", ".join(f"{k}={json.dumps(best['config'][k])}" for k in shown)
            + " (every other key: the trainer's default)"
        )
    ranking = [
        [r["rank"], r["name"], r["run_id"], r["state"], r["verdict"], r["epochs"], _fmt(r["best_val_recon_loss"]),
         _fmt(r["final_val_recon_loss"]), _fmt(r["final_train_recon_loss"]),
         ", ".join(f"{p}={json.dumps(r['config'].get(p))}" for p in params)]
        for r in rows
    ]  # fmt: skip
    detail = [
        (r, [*r["reasons"]], r["remedies"], [f"epoch {s['epoch']}: {s['time_per_epoch']:.3g} s ({s['x_median']:.1f}x the median)" for s in r["slow_epochs"]])
        for r in rows
    ]  # fmt: skip
    thresholds = [(k, getattr(th, k)) for k in th.__dataclass_fields__]
    return {
        "summary": summary,
        "ranking": ranking,
        "detail": detail,
        "importance": (imps, imp_note),
        "thresholds": thresholds,
        "next": sweep_notes,
    }


RANK_HEAD = [
    "rank",
    "name",
    "run",
    "state",
    "verdict",
    "epochs",
    "best val",
    "final val",
    "final train",
    "swept values",
]


def _markdown(title, s, figures, triplets) -> str:
    md = [f"# Sweep report: {title}", "", "## Summary", *[f"- {x}" for x in s["summary"]], ""]
    md += ["## Ranking", "", "| " + " | ".join(RANK_HEAD) + " |", "|" + "---|" * len(RANK_HEAD)]
    md += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in s["ranking"]]
    md += ["", "## Figures", ""]
    md += [f"### {t}\n\n![{t}]({p.relative_to(p.parent.parent).as_posix()})\n" for t, p in figures]
    imps, note = s["importance"]
    md += ["## Hyperparameter importance", "", note, ""]
    if imps:
        md += [f"- {k}: {v:.3f}" for k, v in imps.items()] + [""]
    md += ["## Verdicts, reasons and remedies", ""]
    for r, reasons, remedies, slow in s["detail"]:
        md.append(f"### #{r['rank']} {_who(r)}: {r['verdict']}")
        md += [f"- {x}" for x in reasons]
        md += [f"- remedy: {x}" for x in remedies]
        md += [f"- slowdown: {x}" for x in slow]
        md.append("")
    md += ["## Triplets evolution (best runs; first, middle and last epoch)", ""]
    for t in triplets:
        md.append(
            f"**#{t['rank']} {t['name']}**: "
            + " ".join(f"![epoch {i['epoch']}]({i['path']})" for i in t["images"])
        )
        md.append("")
    if not triplets:
        md += ["No triplet images were logged by the finished runs.", ""]
    md += ["## Next sweep", "", "`next_sweep.yaml`:", *[f"- {x}" for x in s["next"]], ""]
    md += ["## Thresholds", "", *[f"- `{k}` = {v}" for k, v in s["thresholds"]], ""]
    return "\n".join(md)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}">'


def _html(title, s, figures, triplets, out: Path) -> str:
    e = html.escape
    h = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Sweep report: {e(title)}</title><style>",
        "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:13px}",
        "td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}.v{font-weight:bold}",
        ".trip img{height:96px;image-rendering:pixelated;margin-right:8px}",
        f"</style></head><body><h1>Sweep report: {e(title)}</h1><h2>Summary</h2><ul>",
        *[f"<li>{e(x)}</li>" for x in s["summary"]],
        "</ul><h2>Ranking</h2><table><tr>"
        + "".join(f"<th>{e(c)}</th>" for c in RANK_HEAD)
        + "</tr>",
    ]
    for row in s["ranking"]:
        color = plots.COLORS.get(row[4], "#000")
        cells = [f"<td>{e(str(c))}</td>" for c in row]
        cells[4] = f"<td class='v' style='color:{color}'>{e(row[4])}</td>"
        h.append("<tr>" + "".join(cells) + "</tr>")
    h.append("</table><h2>Figures</h2>")
    for t, p in figures:
        h.append(f"<h3>{e(t)}</h3>{_img(p)}")
    imps, note = s["importance"]
    h.append(f"<h2>Hyperparameter importance</h2><p>{e(note)}</p>")
    if imps:
        h.append("<ul>" + "".join(f"<li>{e(k)}: {v:.3f}</li>" for k, v in imps.items()) + "</ul>")
    h.append("<h2>Verdicts, reasons and remedies</h2>")
    for r, reasons, remedies, slow in s["detail"]:
        color = plots.COLORS.get(r["verdict"], "#000")
        h.append(
            f"<h3>#{r['rank']} {e(_who(r))}: <span style='color:{color}'>{e(r['verdict'])}</span></h3><ul>"
        )
        h += [f"<li>{e(x)}</li>" for x in reasons]
        h += [f"<li><b>remedy</b>: {e(x)}</li>" for x in remedies]
        h += [f"<li><b>slowdown</b>: {e(x)}</li>" for x in slow]
        h.append("</ul>")
    h.append("<h2>Triplets evolution (best runs; first, middle and last epoch)</h2>")
    for t in triplets:
        imgs = "".join(
            f"<figure style='display:inline-block'>{_img(out / i['path'])}<figcaption>epoch {i['epoch']}</figcaption></figure>"
            for i in t["images"]
        )
        h.append(f"<div class='trip'><p><b>#{t['rank']} {e(t['name'])}</b></p>{imgs}</div>")
    if not triplets:
        h.append("<p>No triplet images were logged by the finished runs.</p>")
    h.append("<h2>Next sweep</h2><p><code>next_sweep.yaml</code>:</p><ul>")
    h += [f"<li>{e(x)}</li>" for x in s["next"]]
    h.append("</ul><h2>Thresholds</h2><ul>")
    h += [f"<li><code>{e(k)}</code> = {e(str(v))}</li>" for k, v in s["thresholds"]]
    h.append("</ul></body></html>")
    return "\n".join(h)
