"""End to end: runs logged by the real wandb library (offline), read back and reported.

Crafted runs come from ``tests/analysis_helpers.py`` (a logging script run as a subprocess);
one run comes from the real trainer.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from html import unescape
from pathlib import Path

import pytest
import yaml
from analysis_helpers import record
from conftest import PYTHON, REPO, offline_env

from analysis import interactive
from contract import metrics as M

HELPER = str(Path(__file__).with_name("analysis_helpers.py"))
SWEEP, OTHER_SWEEP = "swp00001", "swp00002"
BASE = {
    "kl_weight": 1e-6, "channels": [8, 8], "norm_num_groups": 4, "augment": False,
    "num_res_blocks": 1, "lr": 1e-3,
}  # fmt: skip
# name -> (spec, expected verdict)
RUNS = {
    "good-a": ({"shape": "good", "images": True}, "good"),
    "good-b": ({"shape": "good", "seed": 3, "config": {"lr": 3e-4, "channels": [16, 16]}}, "good"),
    "noisy": ({"shape": "noisy", "config": {"lr": 5e-4, "kl_weight": 1e-5}}, "good"),
    "overfit": (
        {"shape": "overfitting", "config": {"kl_weight": 1e-7, "channels": [16, 16]}},
        "overfitting",
    ),
    "underfit": (
        {"shape": "underfitting", "config": {"channels": [4, 4], "lr": 1e-4}},
        "underfitting",
    ),
    "diverged": ({"shape": "diverged", "config": {"lr": 0.1}}, "diverged"),
    "short": ({"shape": "good", "epochs": 2, "config": {"max_epochs": 2}}, "insufficient"),
}


def spec(name: str, extra: dict) -> dict:
    config = {**BASE, **extra.pop("config", {})}
    return {"name": name, "epochs": 12, "steps": 8, "config": config, **extra}


def log(
    tmp: Path, specs: list[dict], sweep: str = SWEEP, check: bool = True
) -> subprocess.CompletedProcess:
    env = offline_env(tmp, WANDB_SWEEP_ID=sweep)
    return subprocess.run(
        [PYTHON, HELPER, json.dumps(specs)], env=env, capture_output=True, text=True, check=check
    )


def report(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [PYTHON, "-m", "analysis", "report", *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=cwd,
    )


def _cores_of(pid: int) -> list[Path]:
    """The wandb-core processes serving the client ``pid`` (started with ``--pid PID``)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:  # the process ended meanwhile
            continue
        if not args[0].endswith(b"wandb-core") or b"--pid" not in args:
            continue
        if args[args.index(b"--pid") + 1 :][:1] == [str(pid).encode()]:
            found.append(cmdline.parent)
    return found


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("runs")
    procs = [
        subprocess.Popen(
            [PYTHON, HELPER, json.dumps([spec(n, dict(s)) for n, (s, _) in RUNS.items()])],
            env=offline_env(tmp, WANDB_SWEEP_ID=SWEEP),
        ),
        # A crash: the script raises after 6 epochs, wandb records exit status 1.
        subprocess.Popen(
            [
                PYTHON,
                HELPER,
                json.dumps([spec("crash", {"shape": "good", "epochs": 6, "crash": True})]),
            ],
            env=offline_env(tmp, WANDB_SWEEP_ID=SWEEP),
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [PYTHON, HELPER, json.dumps([spec("other", {"shape": "good"})])],
            env=offline_env(tmp, WANDB_SWEEP_ID=OTHER_SWEEP),
        ),
    ]
    # Preempted after 5 epochs (exit 75), then resumed under the same run id from epoch 5.
    first = spec(
        "resumed", {"shape": "overfitting", "epochs": 5, "run_id": "resumed1", "exit_code": 75}
    )
    log(tmp, [first])
    log(tmp, [spec("resumed", {"shape": "overfitting", "run_id": "resumed1", "first_epoch": 5})])
    # Killed outright (SIGKILL): no exit record. Its file is made old, as a dead run's would be.
    killed = subprocess.Popen(
        [
            PYTHON,
            HELPER,
            json.dumps([spec("killed", {"shape": "good", "epochs": 10**6, "run_id": "killed01"})]),
        ],
        env=offline_env(tmp, WANDB_SWEEP_ID=SWEEP),
    )
    for p in procs:
        assert p.wait(timeout=240) in (0, 1)
    assert procs[1].returncode == 1
    # Kill it once W&B has flushed some of its history (an empty log could not name its sweep).
    deadline = time.time() + 60
    while time.time() < deadline and not any(
        f.stat().st_size > 20_000 for f in tmp.glob("wandb/offline-run-*/run-killed01.wandb")
    ):
        time.sleep(0.5)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    # wandb-core runs in its own session and flushes the run file after its client died: wait
    # for it to exit, so that nothing writes to the file once it is made old.
    deadline = time.time() + 60
    while time.time() < deadline and _cores_of(killed.pid):
        time.sleep(0.2)
    old = time.time() - 3600
    for f in tmp.glob("wandb/offline-run-*/run-killed01.wandb"):
        os.utime(f, (old, old))
    return tmp


@pytest.fixture(scope="module")
def reported(runs_dir: Path, tmp_path_factory) -> tuple[Path, list[dict], str]:
    out = tmp_path_factory.mktemp("report")
    # Run the CLI in a process that then checks torch and MONAI were never imported.
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['analysis', 'report', {str(runs_dir)!r}, '--sweep', {SWEEP!r}, '--out', {str(out)!r}]\n"
        "try:\n    runpy.run_module('analysis', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "print('heavy:', sorted(m for m in ('torch', 'monai') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([PYTHON, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out, json.loads((out / "verdicts.json").read_text()), proc.stdout


def test_every_crafted_run_gets_the_expected_verdict(reported):
    _, rows, _ = reported
    by_name = {r["name"]: r for r in rows}
    for name, (_, verdict) in RUNS.items():
        assert by_name[name]["verdict"] == verdict, (name, by_name[name]["reasons"])
    assert by_name["crash"]["verdict"] == "crashed" and by_name["crash"]["state"] == "failed"
    assert by_name["diverged"]["exit_code"] == 3


def test_killed_run_is_read_and_crashed(reported):
    _, rows, _ = reported
    (killed,) = [r for r in rows if r["run_id"] == "killed01"]
    assert killed["state"] == "crashed" and killed["verdict"] == "crashed"
    assert killed["exit_code"] is None and killed["epochs"] > 0
    assert "without an exit record" in killed["reasons"][0]


def test_resumed_run_is_merged_by_run_id(reported):
    _, rows, _ = reported
    resumed = [r for r in rows if r["run_id"] == "resumed1"]
    assert len(resumed) == 1
    r = resumed[0]
    assert r["state"] == "finished" and r["epochs"] == 12 and len(r["sources"]) == 2
    assert r["verdict"] == "overfitting"
    assert any("resumed" in reason for reason in r["reasons"])


def test_sweep_filter_and_fields(reported):
    out, rows, stdout = reported
    assert {r["sweep_id"] for r in rows} == {SWEEP}
    assert "other" not in {r["name"] for r in rows}
    assert len(rows) == len(RUNS) + 3  # crash, resumed, killed
    fields = {"run_id", "state", "verdict", "reasons", "config", "best_val_recon_loss",
              "final_val_recon_loss", "final_train_recon_loss", "epochs", "remedies", "slow_epochs"}  # fmt: skip
    assert all(fields <= set(r) for r in rows)
    over = next(r for r in rows if r["name"] == "overfit")
    assert "raise kl_weight from 1e-07 to 1e-06 (more regularisation)" in over["remedies"]
    assert over["config"]["channels"] == [16, 16]
    best = [r["best_val_recon_loss"] for r in rows if r["best_val_recon_loss"] is not None]
    assert best == sorted(best)
    assert f"report: {out / 'report.html'}" in stdout


def test_analysis_never_imports_torch_or_monai(reported):
    assert "heavy: []" in reported[2]


def test_report_files(reported):
    out, rows, _ = reported
    for name in (
        "verdicts.csv",
        "report.md",
        "report.html",
        "next_sweep.yaml",
        "plots/loss_curves.png",
    ):
        assert (out / name).is_file(), name
    csv_lines = (out / "verdicts.csv").read_text().splitlines()
    assert len(csv_lines) == len(rows) + 1 and csv_lines[0].startswith("rank,run_id")
    html = (out / "report.html").read_text()
    # plotly.js is embedded once, and the page asks for nothing outside itself.
    js = interactive.plotly_js()
    assert html.count(js) == 1
    ours = html.replace(js, "")
    assert (
        "http://" not in ours
        and "https://" not in ours
        and "src=" not in ours.replace('src="data:image/png;base64,', "")
    )
    assert ours.count("data:image/png;base64,") == 10  # the triplet viewer's frames
    md = (out / "report.md").read_text()
    assert md.startswith(f"# Sweep report: {SWEEP}\n")
    # The best run is finished and healthy, even where a crashed run reached a lower loss.
    best = next(
        r
        for r in rows
        if r["state"] == "finished" and r["verdict"] in ("good", "overfitting", "underfitting")
    )
    assert f"- best run: {best['name']} ({best['run_id']}), best val/recon_loss" in md
    assert "## Hyperparameter importance" in md and "fANOVA" in md
    for heading in (
        "## Ranking",
        "## Triplets evolution",
        "## Next sweep",
        "remedy: raise kl_weight",
    ):
        assert heading in md
    # Triplet evolution: only good-a logged images: 10 of its 12 epochs, evenly spaced, in the
    # page; its first, middle and last of those in the Markdown.
    good_a = next(r for r in rows if r["name"] == "good-a")
    assert sorted(p.name for p in (out / "triplets").iterdir()) == [
        f"{good_a['run_id']}_epoch{e:03d}.png" for e in (1, 2, 3, 5, 6, 7, 8, 10, 11, 12)
    ]
    stills = re.findall(r"triplets/\S+_epoch(\d+)\.png", md)
    assert stills == ["001", "007", "012"]


def test_next_sweep_is_valid_for_wandb_and_the_sweeper(reported):
    import sweeps
    from sweeper.validate import validate_file

    out, _, _ = reported
    cfg = yaml.safe_load((out / "next_sweep.yaml").read_text())
    assert sweeps.schema_violations_from_proposed_config(cfg) == []
    assert validate_file(out / "next_sweep.yaml") == []
    assert cfg["metric"] == {"name": "val/best_recon_loss", "goal": "minimize"}
    assert "channels" in cfg["parameters"] and "lr" in cfg["parameters"]


def test_other_sweep_and_default_out(runs_dir, tmp_path):
    proc = report(str(runs_dir), "--sweep", OTHER_SWEEP, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "reports" / OTHER_SWEEP / "verdicts.json").read_text())
    assert [r["name"] for r in rows] == ["other"]
    # Too few runs for importance: the report says why instead.
    assert (
        "needs at least 3 finished runs"
        in (tmp_path / "reports" / OTHER_SWEEP / "report.md").read_text()
    )


def test_local_sweep_id_reads_outputs_wandb(runs_dir, tmp_path):
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "wandb").symlink_to(runs_dir / "wandb")
    proc = report(OTHER_SWEEP, "--out", "r", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [r["name"] for r in json.loads((tmp_path / "r" / "verdicts.json").read_text())] == [
        "other"
    ]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["does/not/exist/here"], "no such folder"),
        (["nowhere"], "no such folder"),
        (["{empty}"], "no W&B runs found"),
        (["{runs}", "--sweep", "zzzzzzzz"], "no run of sweep 'zzzzzzzz'"),
        (["{runs}", "--tag"], "--tag writes verdicts"),
        (["ent/proj/abc", "--sweep", "xyz"], "contradicts the sweep path"),
        (["{runs}", "--min_epochs", "x"], "invalid int value"),
        (["{runs}", "--min-epochs", "0"], "min_epochs=0: must be >= 1"),
        (["{runs}", "--explode-factor", "-1"], "explode_factor=-1.0: must be > 0"),
        (["{runs}", "--workers", "-1"], "--workers=-1: must be >= 0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(runs_dir, tmp_path, args, words):
    (tmp_path / "empty").mkdir()
    args = [a.format(empty=tmp_path / "empty", runs=runs_dir) for a in args]
    proc = report(*args, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert words in lines[-1]
    if words != "invalid int value":  # argparse prints its usage line first
        assert len(lines) == 1 and lines[0].startswith("analysis: error: ")


def test_one_unreadable_run_never_blocks_the_others(runs_dir, tmp_path):
    # Two good runs copied next to a run file that is not a W&B log at all.
    good = sorted(runs_dir.glob("wandb/offline-run-*"))[:2]
    for folder in good:
        shutil.copytree(folder, tmp_path / "wandb" / folder.name)
    bad = tmp_path / "wandb" / "offline-run-20261201_120000-garbage1" / "run-garbage1.wandb"
    bad.parent.mkdir()
    bad.write_bytes(bytes(range(256)) * 8)
    proc = report(str(tmp_path), "--out", str(tmp_path / "rep"))
    assert proc.returncode == 0, proc.stderr
    assert f"unreadable: {bad}: wandb leet inspect failed" in proc.stdout
    rows = json.loads((tmp_path / "rep" / "verdicts.json").read_text())
    assert len(rows) == 2 and "garbage1" not in {r["run_id"] for r in rows}
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Unreadable runs" in md and str(bad) in md
    assert "2 runs: " in md and "; 1 unreadable" in md
    # Nothing readable at all: one line and exit 2.
    for folder in good:
        shutil.rmtree(tmp_path / "wandb" / folder.name)
    proc = report(str(tmp_path), "--out", str(tmp_path / "rep2"))
    assert proc.returncode == 2
    assert (
        proc.stderr.count("\n") == 1 and "none of its 1 W&B run files could be read" in proc.stderr
    )


@pytest.mark.parametrize(
    ("out", "words"),
    [
        ("{file}", "exists and is not a folder"),
        ("{file}/sub", "is not a folder"),
        ("/proc/analysis-report", "cannot write the report"),
    ],
)
def test_out_that_cannot_be_a_folder_is_one_line_and_exit_2(runs_dir, tmp_path, out, words):
    (tmp_path / "taken").write_text("keep me")
    out = out.format(file=tmp_path / "taken")
    proc = report(str(runs_dir), "--sweep", OTHER_SWEEP, "--out", out)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"analysis: error: --out {out}: ")
    assert words in lines[0]
    assert (tmp_path / "taken").read_text() == "keep me"


# Loaded before the report's own scripts: records every error, console error, blocked request
# and alert; once every chart is drawn, what each chart holds, then brushes the parallel
# coordinates (window.probeBrush, in the axis's own units), sorts the ranking by best val and
# moves the first triplet viewer's slider, and reports what the page then shows.
PROBE = """<script>
(function () {
  const errors = [], alerts = [];
  window.probeErrors = errors;
  addEventListener("error", e => errors.push("error: " + (e.message || "failed to load " + (e.target && (e.target.alt || e.target.tagName)))), true);
  addEventListener("unhandledrejection", e => errors.push("rejection: " + e.reason));
  document.addEventListener("securitypolicyviolation", e => errors.push("csp: " + e.violatedDirective + " " + e.blockedURI));
  const consoleError = console.error;
  console.error = function (...a) { errors.push("console: " + a.join(" ")); consoleError.apply(console, a); };
  for (const f of ["alert", "confirm", "prompt"]) window[f] = m => { alerts.push(f + ": " + m); };
  function finish(result) {
    const pre = document.createElement("pre");
    pre.id = "probe";
    pre.textContent = JSON.stringify(result);
    document.body.appendChild(pre);
  }
  function drawn() {
    const charts = [...document.querySelectorAll("div.chart")];
    return new Promise(resolve => {
      const poll = () => charts.every(c => c.dataset.drawn) ? resolve(charts) : setTimeout(poll, 50);
      poll();
    });
  }
  addEventListener("load", async () => {
    const result = {errors, alerts};
    try {
      const charts = await drawn();
      result.charts = charts.map(gd => ({
        key: gd.dataset.kind,
        rendered: !!gd.querySelector(".main-svg") && !!gd._fullLayout,
        traces: gd.data.map(t => ({
          type: t.type, name: t.name, meta: t.meta || null,
          runs: t.customdata ? [...new Set(t.customdata.filter(x => x))] : null,
          lines: t.type === "parcoords" ? t.dimensions[0].values.length : null,
        })),
      }));
      const brush = window.probeBrush;
      const par = document.getElementById("chart-parallel");
      if (brush && par) {
        const dims = par.data[0].dimensions;
        const dim = dims.findIndex(d => d.label.startsWith(brush.axis));
        const log = dims[dim].label.endsWith("(log)");
        const range = brush.range.map(v => log ? Math.log10(v) : v);
        await Plotly.restyle(par, {["dimensions[" + dim + "].constraintrange"]: [range]});
        brush.dim = dim;
        result.brushed = JSON.parse(document.getElementById("chart-parallel-brushed").dataset.runs);
        result.brushedText = document.getElementById("chart-parallel-brushed").textContent;
        result.constraint = par._fullData[0].dimensions[brush.dim].constraintrange;
        result.rankingShown = [...document.querySelectorAll("table[data-runs] tr[data-run]")].filter(r => !r.hidden).map(r => r.dataset.run);
      }
      const th = [...document.querySelectorAll("table.sortable th")].find(h => h.textContent === "best val");
      if (th) {
        th.click(); th.click();
        const col = [...th.parentNode.children].indexOf(th);
        result.sortedDesc = [...th.closest("table").tBodies[0].rows].map(r => r.cells[col].textContent);
      }
      const viewer = document.querySelector("div.viewer");
      if (viewer) {
        const input = viewer.querySelector("input");
        input.value = 0; input.dispatchEvent(new Event("input"));
        result.viewer = {frames: viewer.querySelectorAll("figure").length, shown: viewer.querySelector("output").textContent,
                         visible: [...viewer.querySelectorAll("figure")].filter(f => !f.hidden).length};
      }
    } catch (e) { errors.push("probe: " + e + " " + e.stack); }
    result.images = [...document.images].map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth}));
    result.scripts = document.scripts.length;
    result.links = [...document.querySelectorAll("[href]")].map(a => a.getAttribute("href"));
    result.handlers = [...document.querySelectorAll("*")].flatMap(el => [...el.attributes].filter(a => a.name.startsWith("on")).map(a => el.tagName + " " + a.name));
    result.bold = document.querySelectorAll("b").length;
    result.svgText = [...document.querySelectorAll("svg text")].map(t => t.textContent);
    result.cells = [...document.querySelectorAll("td, h3, figcaption, .viewer b")].map(t => t.textContent);
    result.tags = [...new Set([...document.querySelectorAll("body *")].map(el => el.tagName.toLowerCase()))].sort();
    result.resources = performance.getEntriesByType("resource").map(e => e.name);
    finish(result);
  });
})();
</script>"""
NO_NETWORK = ["--proxy-server=socks5://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND"]
needs_chromium = pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="chromium not installed (Debian package `chromium`; .ci/run installs it)",
)


def chromium(*args: str) -> subprocess.CompletedProcess:
    """Headless Chromium, network disabled; virtual time lets every timer and promise run."""
    return subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=60000",
         *NO_NETWORK, *args],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip


def chromium_probe(page: str, tmp: Path, brush: dict | None = None) -> dict:
    """What a real headless Chromium saw when it loaded ``page`` (HTML text)."""
    path = tmp / "probed.html"
    setup = f"<script>window.probeBrush = {json.dumps(brush)};</script>"
    path.write_text(page.replace("<title>", setup + PROBE + "<title>", 1))
    proc = chromium("--dump-dom", path.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, "the probe never ran: " + proc.stdout[-500:]
    return json.loads(unescape(found.group(1)))


def screenshot_is_not_blank(page: Path, tmp: Path) -> None:
    """A screenshot as a person would see the page: charts painted in the verdicts' colours."""
    from PIL import Image

    shot = tmp / "shot.png"
    proc = chromium("--screenshot=" + str(shot), "--window-size=1280,2600", page.resolve().as_uri())
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    pixels = list(image.getdata())
    assert len(set(pixels)) > 200  # text, lines and fills, not a blank or single-colour page
    ink = sum(1 for p in pixels if sum(p) < 600) / len(pixels)
    assert ink > 0.01, ink
    good = (0x2C, 0xA0, 0x2C)  # the colour of "good" in every chart
    assert (
        sum(1 for p in pixels if all(abs(a - b) < 30 for a, b in zip(p, good, strict=True))) > 100
    )


def _drawn(seen: dict) -> dict[str, list[dict]]:
    assert seen["errors"] == [] and seen["alerts"] == [], seen["errors"] + seen["alerts"]
    assert seen["resources"] == []  # nothing fetched: no request left the page
    charts = {c["key"]: c["traces"] for c in seen["charts"]}
    assert all(c["rendered"] for c in seen["charts"]), seen["charts"]
    return charts


@needs_chromium
def test_html_report_is_interactive_in_a_real_chromium(reported, tmp_path):
    out, rows, _ = reported
    with_epochs = [r for r in rows if r["epochs"] > 0]
    scored = [r for r in rows if r["best_val_recon_loss"] is not None]
    # Brush the best-val axis from the lowest loss to halfway between the 4th and 5th distinct
    # values (runs of one configuration and seed can tie: a resumed run and its twin).
    losses = sorted(set(r["best_val_recon_loss"] for r in scored))
    lo, hi = losses[0] * 0.999, (losses[3] + losses[4]) / 2
    seen = chromium_probe(
        (out / "report.html").read_text(),
        tmp_path,
        {"axis": "best val/recon_loss", "range": [lo, hi]},
    )
    charts = _drawn(seen)
    assert set(charts) == {"val_all", "per_run", "parallel", "params", "time", "importance"}
    verdict_of = {r["run_id"]: r["verdict"] for r in rows}
    # Every run's validation curve, one trace per verdict (the legend hides or isolates one).
    assert sorted(r for t in charts["val_all"] for r in t["runs"]) == sorted(
        r["run_id"] for r in with_epochs
    )
    assert len(charts["val_all"]) == len({r["verdict"] for r in with_epochs})
    for trace in charts["val_all"] + charts["params"] + charts["time"][:-1]:
        assert {verdict_of[r] for r in trace["runs"]} == {trace["name"].split(" (")[0]}, trace
    # Train and validation of the 12 best runs (--top), one legend entry per run.
    per_run = [t["meta"] for t in charts["per_run"]]
    assert list(dict.fromkeys(per_run)) == [r["run_id"] for r in with_epochs][:12]
    assert all(per_run.count(r) == 2 for r in per_run)  # train and val: none logged eval loss
    (par,) = charts["parallel"]
    assert par["type"] == "parcoords" and par["lines"] == len(scored)
    assert sorted({r for t in charts["params"] for r in t["runs"]}) == sorted(
        r["run_id"] for r in scored
    )
    assert {r for t in charts["time"] for r in t["runs"]} == {r["run_id"] for r in with_epochs}
    assert len(charts["importance"]) == 1
    # The brush keeps exactly the runs inside it, in the list and in the ranking.
    inside = [r["run_id"] for r in scored if lo <= r["best_val_recon_loss"] <= hi]
    assert 4 <= len(inside) < len(scored) and sorted(seen["brushed"]) == sorted(inside)
    assert seen["rankingShown"] == inside  # rank order
    assert seen["brushedText"].startswith(
        f"{len(inside)} of {len(scored)} runs in the brushed ranges"
    )
    # The ranking sorts by a column (twice clicked: descending), empty cells last.
    values = [float(v) for v in seen["sortedDesc"] if v]
    assert values == sorted(values, reverse=True) and len(values) == len(scored)
    assert all(not v for v in seen["sortedDesc"][len(values) :])
    # The triplet viewer steps through good-a's frames; each image decoded.
    assert seen["viewer"] == {"frames": 10, "shown": "epoch 1", "visible": 1}
    assert len(seen["images"]) == len(list((out / "triplets").glob("*.png"))) == 10
    for image in seen["images"]:
        assert image["complete"] and image["width"] > 0, image
    screenshot_is_not_blank(out / "report.html", tmp_path)


HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "</script><script>alert(2)</script>",
    '<a href="javascript:alert(3)">click</a><b>&lt;bold&gt;</b>',
]


def _png(path: Path) -> str:
    from PIL import Image

    Image.new("L", (24, 8), 100).save(path)
    return str(path)


def _write(tmp: Path, records: list, top: int = 12) -> tuple[Path, str, str]:
    """The report of ``records``, written in this process as the CLI writes it."""
    from analysis import judge
    from analysis import report as rep
    from analysis.diagnose import Thresholds

    out = tmp / "rep"
    judged = judge.judge(records, Thresholds())
    rep.write_report(judged, out, rep.SweepLabel("s (s)", "s"), Thresholds(), top=top)
    return out, (out / "report.md").read_text(), (out / "report.html").read_text()


@needs_chromium
def test_hostile_names_and_values_stay_text(tmp_path):
    """Run names and config values come from whoever logged the runs: none may become markup."""
    image = _png(tmp_path / "t.png")
    records = [
        record(HOSTILE[0], config={"lr": 1e-3, "note": HOSTILE[1], "channels": [8, 8]},
               triplets={e: image for e in range(1, 13)}),
        record(HOSTILE[1], "overfitting", config={"lr": 3e-4, "note": HOSTILE[0],
                                                  "channels": HOSTILE[2]}),
        record(HOSTILE[2], "underfitting", config={"lr": 1e-4, "note": HOSTILE[2],
                                                   "channels": [8, 8]}),
    ]  # fmt: skip
    out, md, page = _write(tmp_path, records)
    charts = page.count("class='chart'")
    assert charts == 6 and page.count("<script") == charts + 2  # specs, plotly.js, the runtime
    seen = chromium_probe(page, tmp_path)
    drawn = _drawn(seen)
    assert len(drawn) == charts
    assert seen["scripts"] == charts + 4  # and the probe's two
    assert seen["links"] == [] and seen["handlers"] == []
    assert [i["alt"] for i in seen["images"]] == [
        f"epoch {e}" for e in (1, 2, 3, 5, 6, 7, 8, 10, 11, 12)
    ]
    assert not {"a", "iframe", "object", "embed", "form"} & set(seen["tags"])
    assert seen["bold"] == 1  # the viewer's caption; a run's <b> stays text
    # Each string shows as typed: in the page's text and in the charts' own text.
    for hostile in HOSTILE:
        assert any(hostile in c for c in seen["cells"]), hostile
        assert any(hostile in t for t in seen["svgText"]), hostile
    assert seen["viewer"]["frames"] == 10


# A sweep of each degenerate shape: no section may stop the others.
DEGENERATE = {
    "one-run": lambda: [record("solo", config={"lr": 1e-3})],
    "all-equal": lambda: [record(f"r{i}", config={"lr": lr, "channels": [8, 8]})
                          for i, lr in enumerate((1e-4, 1e-3, 1e-2))],
    "all-crashed": lambda: [record(f"c{i}", epochs=4, state="crashed", config={"lr": lr})
                            for i, lr in enumerate((1e-4, 1e-3, 1e-2))],
    "one-value": lambda: [record(f"v{i}", shape, config={"lr": lr, "channels": [8, 8],
                                                         **({"augment": i == 1} if i else {})})
                          for i, (shape, lr) in enumerate((("good", 1e-3), ("overfitting", 3e-4),
                                                           ("underfitting", 1e-4)))],
    "nothing-logged": lambda: [record(f"n{i}", epochs=0, state="crashed", config={"lr": lr})
                               for i, lr in enumerate((1e-4, 1e-3))],
}  # fmt: skip


@pytest.mark.parametrize("shape", list(DEGENERATE))
def test_degenerate_sweeps_get_their_whole_report(tmp_path, shape):
    out, md, page = _write(tmp_path, DEGENERATE[shape]())
    assert "not in this report" not in md and "could not be built" not in page
    for heading in ("## Summary", "## Ranking", "## Figures", "## Hyperparameter importance",
                    "## Verdicts, reasons and remedies", "## Triplets evolution", "## Next sweep",
                    "## Thresholds"):  # fmt: skip
        assert heading in md, heading
    assert (out / "verdicts.json").is_file() and (out / "next_sweep.yaml").is_file()
    importance = md.split("## Hyperparameter importance")[1].split("##")[0]
    if shape == "all-equal":  # fANOVA has nothing to share out: the report says so
        assert "every one of the 3 finished runs reached the same best val/recon_loss" in importance
    if shape == "one-value":  # channels is not swept; augment is, with a run lacking it
        assert "(2 finished with a validation loss, 2 varying hyperparameters)" in importance
        assert "channels" not in page.split("chart-parallel-spec")[1].split("</script>")[0]
        assert "(unset)" in page
    if shape == "nothing-logged":
        assert "No chart: no run logged" in page and "class='chart'" not in page
    if shape in ("all-crashed", "one-value") and shutil.which("chromium"):
        _drawn(chromium_probe(page, tmp_path))


def test_a_section_that_fails_never_stops_the_others(tmp_path, monkeypatch, capsys):
    from analysis import interactive as ia

    def broken(*args):
        raise RuntimeError("a bug in one chart")

    monkeypatch.setattr(ia, "parallel", broken)
    out, md, page = _write(tmp_path, DEGENERATE["all-equal"]())
    line = "not in this report: the interactive parallel coordinates chart could not be built"
    assert f"{line} (RuntimeError: a bug in one chart)" in md
    assert "Traceback" in capsys.readouterr().err and "a bug in one chart" in page
    assert page.count("class='chart'") == 4 and "## Next sweep" in md  # the others are all there


@pytest.mark.slow
def test_real_trainer_run_is_read_and_reported(tmp_path):
    env = offline_env(tmp_path, WANDB_SWEEP_ID="trainer1")
    args = ["--channels=[8, 8]", "--norm_num_groups=4", "--image_size=16", "--n_train=8", "--n_val=3",
            "--batch_size=4", "--max_epochs=2", f"--output_dir={tmp_path / 'out'}"]  # fmt: skip
    subprocess.run(
        [PYTHON, "-m", "trainer", *args], env=env, check=True, capture_output=True, cwd=tmp_path
    )
    proc = report(str(tmp_path), "--out", str(tmp_path / "rep"))
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads((tmp_path / "rep" / "verdicts.json").read_text())
    assert row["state"] == "finished" and row["sweep_id"] == "trainer1"
    assert row["epochs"] == 2 and row["verdict"] == "insufficient"
    assert row["config"]["channels"] == [8, 8] and row["config"]["max_epochs"] == 2
    assert 0 < row["best_val_recon_loss"] < 10 and 0 < row["final_train_recon_loss"] < 10
    assert row["remedies"] == ["raise max_epochs from 2 (too few epochs to judge)"]
    assert len(list((tmp_path / "rep" / "triplets").glob("*.png"))) == 2
    # The W&B log and the trainer's own progress file agree on the validation curve.
    progress_file = tmp_path / "out" / "runs" / row["run_id"] / "progress.jsonl"
    val = [json.loads(line)[M.VAL_RECON] for line in progress_file.read_text().splitlines()]
    assert row["final_val_recon_loss"] == pytest.approx(val[-1])
    assert row["best_val_recon_loss"] == pytest.approx(min(val))
