"""The report's pure parts: which run is the best, how runs are counted, what the title names,
and the one section model rendered as Markdown and as HTML."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from analysis import document as doc
from analysis import report
from analysis.engine import EngineSweep
from analysis.records import RunRecord, Unreadable

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="
)


def row(run_id: str, loss: float | None, verdict: str, state: str = "finished", **extra) -> dict:
    return {"run_id": run_id, "name": run_id, "best_val_recon_loss": loss, "verdict": verdict,
            "state": state, "config": {"lr": 0.1}, **extra}  # fmt: skip


def ranked(*rows: dict) -> list[dict]:
    out = sorted(rows, key=lambda r: (r["best_val_recon_loss"] is None, r["best_val_recon_loss"]))
    for rank, r in enumerate(out, 1):
        r["rank"] = rank
    return out


def test_best_run_is_finished_and_healthy_whatever_the_loss_of_the_others():
    rows = ranked(
        row("crash", 0.01, "crashed", state="crashed"),
        row("nan", 0.02, "diverged", state="failed"),
        row("cut", 0.03, "pruned"),
        row("trial-pruned", 0.035, "good", engine_state="PRUNED"),
        row("short", 0.04, "insufficient"),
        row("over", 0.05, "overfitting", engine_state="COMPLETE"),
        row("fine", 0.06, "good"),
    )
    assert report.best_run(rows)["run_id"] == "over"
    lines = report._best_lines(rows, ["lr"])
    assert lines[0].startswith("best run: over, best val/recon_loss 0.05, verdict overfitting")
    assert lines[1].startswith("lower losses, but not finished and healthy: crash (crashed)")
    assert lines[2] == "best config: lr=0.1 (every other key: the trainer's default)"


def test_no_best_run_says_why():
    rows = ranked(row("a", 0.1, "crashed", state="crashed"), row("b", None, "insufficient"))
    assert report.best_run(rows) is None
    (line,) = report._best_lines(rows, [])
    assert line.startswith("best run: none: no run finished with a healthy verdict")
    assert "1 crashed/crashed, 1 finished/insufficient" in line


def test_pruned_and_unreadable_runs_are_counted_apart():
    rows = [row("a", 0.1, "good"), row("b", 0.2, "pruned"), row("c", 0.3, "pruned"),
            row("d", 0.4, "crashed")]  # fmt: skip
    line = report.counts_line(rows, [Unreadable("x/run-x.wandb", "bad header")])
    assert line == "4 runs: 1 good, 1 crashed; 2 pruned by early termination; 1 unreadable"
    assert report.counts_line([row("a", 0.1, "pruned")]) == "1 runs: 1 pruned by early termination"


def test_title_names_the_sweep_not_the_folder():
    local = [EngineSweep("ab12cd34", "smoke", "sqlite:///x.db", [])]
    one = [RunRecord("r1", sweep_id="ab12cd34"), RunRecord("r2", sweep_id="ab12cd34")]
    assert report.sweep_label(one, local, "wandb") == report.SweepLabel("smoke (ab12cd34)", "smoke")
    assert report.sweep_label(one, [], "wandb").heading == "ab12cd34"
    two = [*one, RunRecord("r3", sweep_id="zz99yy88")]
    assert report.sweep_label(two, local, "wandb").heading == (
        "2 sweeps: smoke (ab12cd34), zz99yy88"
    )
    assert report.sweep_label([RunRecord("r")], [], "runs").heading == "runs in runs (no sweep id)"


def test_one_section_model_renders_the_same_content_twice(tmp_path: Path):
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "p.png").write_bytes(PNG)
    sections = [
        doc.Section("Summary", [doc.Items(["2 runs: 1 good, 1 crashed"]), doc.Text("a <note>")]),
        doc.Section("Ranking", [doc.Table(["run", "verdict"], [["r1", doc.Verdict("good")]])]),
        doc.Section("Figures", [doc.Figure("Loss", "plots/p.png")]),
        doc.Section("#1 r1", [doc.Gallery("r1", [("epoch 1", "plots/p.png")])], 3, "good"),
    ]
    md = doc.to_markdown("Sweep report: s (id)", sections)
    page = doc.to_html("Sweep report: s (id)", sections, tmp_path)
    assert md.splitlines()[0] == "# Sweep report: s (id)"
    assert re.findall(r"^#+ (.*)$", md, re.M)[1:] == [
        "Summary", "Ranking", "Figures", "#1 r1: good"
    ]  # fmt: skip
    assert "| r1 | good |" in md and "![Loss](plots/p.png)" in md and "- 2 runs: " in md
    headings = [re.sub("<[^>]+>", "", h) for h in re.findall(r"<h[1-3]>(.*?)</h[1-3]>", page)]
    assert headings == ["Sweep report: s (id)", "Summary", "Ranking", "Figures", "#1 r1: good"]
    assert "a &lt;note&gt;" in page and "<td>r1</td>" in page
    assert "color:#2ca02c'>good</span>" in page  # the plots' colour for good
    assert page.count("data:image/png;base64,") == 2 and "plots/p.png" not in page
