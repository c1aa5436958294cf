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
from conftest import PYTHON, REPO, offline_env

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
    assert html.count("data:image/png;base64,") >= 5
    assert "http://" not in html and "https://" not in html
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
    # Triplet evolution: only good-a logged images; its first, middle and last epoch are shown.
    good_a = next(r for r in rows if r["name"] == "good-a")
    assert sorted(p.name for p in (out / "triplets").iterdir()) == [
        f"{good_a['run_id']}_epoch{e:03d}.png" for e in (1, 7, 12)
    ]
    assert f"triplets/{good_a['run_id']}_epoch007.png" in md


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


# Loaded before the report's own markup: records load errors, then every image's decoded size.
PROBE = """<script>
window.probeErrors = [];
addEventListener("error", e => probeErrors.push(e.message || "failed to load " + (e.target.alt || e.target.tagName)), true);
addEventListener("load", () => {
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify({errors: probeErrors, images: [...document.images].map(
    i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}))});
  document.body.appendChild(pre);
});
</script>"""


def chromium_probe(page: str, tmp: Path) -> dict:
    """What a real headless Chromium saw when it loaded ``page`` (HTML text)."""
    path = tmp / "probed.html"
    path.write_text(page.replace("<head>", "<head>" + PROBE, 1))
    proc = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", path.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, "the probe never ran: " + proc.stdout[-500:]
    return json.loads(unescape(found.group(1)))


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="chromium not installed (Debian package `chromium`; .ci/run installs it)",
)
def test_html_report_shows_every_plot_in_a_real_chromium(reported, tmp_path):
    out, _, _ = reported
    page = (out / "report.html").read_text()
    seen = chromium_probe(page, tmp_path)
    assert seen["errors"] == []
    expected = len(list((out / "plots").glob("*.png"))) + len(
        list((out / "triplets").glob("*.png"))
    )
    assert expected >= 9 and len(seen["images"]) == expected
    for image in seen["images"]:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image
    assert any("parallel coordinates" in i["alt"] for i in seen["images"])
    # The probe tells a broken image from a good one.
    broken = page.replace("data:image/png;base64,", "data:image/png;base64,AAAA", 1)
    first = chromium_probe(broken, tmp_path)["images"][0]
    assert first["width"] == 0


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
