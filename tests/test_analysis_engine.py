"""The report shows what the local engine knows: a real local sweep (Optuna storage, Hyperband
pruner, agent) over a small fake trial program that logs real offline W&B runs.

The program plays four cases, in grid order: a good run; a run that dies of "out of memory"
after two epochs; a bad run that waits for the pruner to stop it (SIGTERM, then it ends like the
trainer: summary ``status=stopped``, exit 0); and a config error before any run exists.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import PYTHON, REPO
from sweep_helpers import create, env, storage_url, sweeper, trivial_sweep, write_sweep

from analysis import engine

# W&B's Hyperband stops a run worse than the 1/eta quantile of the runs at a band, so the bad
# run comes after two better ones.
CASES = ["good", "oom", "bad", "config"]

PROGRAM = r"""
import json, os, signal, sys, time
import wandb
from contract import metrics as M
from contract.errors import EXIT_FINISHED
from contract.runs import append_progress, run_dir

args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
case = args["case"]
if case == "config":
    print("trainer: error: channels=[8, 6]: must be multiples of norm_num_groups=4", file=sys.stderr)
    sys.exit(2)
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
folder = run_dir(args["output_dir"], os.environ["WANDB_RUN_ID"])
folder.mkdir(parents=True, exist_ok=True)
run = wandb.init(project="engine", config={"case": case, "lr": float(args["lr"])})
run.define_metric(M.TRAIN_RECON, step_metric=M.TRAIN_STEP)
run.define_metric(M.VAL_RECON, step_metric=M.EPOCH)
best, epoch = float("inf"), 0
last = {"good": 12, "oom": 2}.get(case, 3)
while epoch < last and not stop:
    epoch += 1
    # The oom case is the best while it lasts, so the pruner never stops it first.
    val = {"good": 0.1 + 0.5 / epoch, "oom": 0.05 + 0.5 / epoch}.get(case, 0.9)
    for i in range(4):
        run.log({M.TRAIN_STEP: (epoch - 1) * 4 + i + 1, M.TRAIN_RECON: 0.95 * val})
    best = min(best, val)
    run.log({M.EPOCH: epoch, M.VAL_RECON: val, M.VAL_BEST_RECON: best, M.TIME_PER_EPOCH: 0.1})
    append_progress(folder, {M.EPOCH: epoch, M.VAL_RECON: val, M.VAL_BEST_RECON: best})
    time.sleep(0.05)
# The bad case waits for the pruner's SIGTERM (an event), and gives up after a minute.
deadline = time.monotonic() + 60
while case == "bad" and not stop and time.monotonic() < deadline:
    time.sleep(0.05)
if case == "oom":
    print("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB", file=sys.stderr)
    run.finish(exit_code=1)
    sys.exit(1)
run.summary[M.SUMMARY_STATUS] = M.STATUS_STOPPED if stop else M.STATUS_FINISHED
run.finish(exit_code=EXIT_FINISHED)
"""


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("engine")
    program = tmp / "fake_trial.py"
    program.write_text(PROGRAM)
    sweep_file = write_sweep(
        tmp / "engine.yaml",
        {
            "name": "engine-states",
            "program": str(program),
            "method": "grid",
            "metric": {"name": "val/best_recon_loss", "goal": "minimize"},
            "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2},
            "parameters": {
                "case": {"values": CASES},
                "lr": {"value": 0.001},
                "output_dir": {"value": str(tmp / "outputs")},
            },
        },
    )
    sweep_id = create(tmp, sweep_file)
    agent = sweeper(tmp, "agent", sweep_id, timeout=240)
    assert agent.returncode == 0, agent.stdout + agent.stderr
    return tmp, sweep_id


def report(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    run_env = {**env(tmp), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [PYTHON, "-m", "analysis", "report", *args],
        env=run_env, cwd=tmp, capture_output=True, text=True,
    )  # fmt: skip


def test_runs_carry_their_trial_state_and_reason(local_sweep):
    tmp, sweep_id = local_sweep
    proc = report(tmp, sweep_id, "--out", "rep")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp / "rep" / "verdicts.json").read_text())
    by_case = {r["config"]["case"]: r for r in rows}
    assert set(by_case) == {"good", "bad", "oom"}  # the config error never started a run
    assert by_case["good"]["engine_state"] == "COMPLETE"
    assert by_case["bad"]["engine_state"] == "PRUNED"
    assert by_case["oom"]["engine_state"] == "FAIL"
    assert by_case["oom"]["engine_reason"] == "out of memory"
    assert by_case["good"]["engine_reason"] is None


def test_report_names_the_sweep_and_shows_the_engine(local_sweep):
    tmp, sweep_id = local_sweep
    # The folder flow (as make demo runs it), the storage named explicitly.
    url = f"sqlite:///{tmp / 'sweeps.db'}"
    proc = report(tmp, str(tmp / "wandb"), "--storage", url, "--out", "rep2")
    assert proc.returncode == 0, proc.stderr
    assert "3 runs: 1 good, 1 crashed; 1 pruned by early termination" in proc.stdout
    rows = json.loads((tmp / "rep2" / "verdicts.json").read_text())
    good = next(r for r in rows if r["config"]["case"] == "good")
    md = (tmp / "rep2" / "report.md").read_text()
    html = (tmp / "rep2" / "report.html").read_text()
    assert md.startswith(f"# Sweep report: engine-states ({sweep_id})\n")
    assert f"<h1>Sweep report: engine-states ({sweep_id})</h1>" in html
    assert f"- best run: {good['run_id']}, best val/recon_loss" in md
    engine = md.split("## Local engine: trial states", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in engine.splitlines() if line.startswith("| ") and "trial" not in line]
    states = [line.split(" | ")[1:4:2] for line in lines]  # state, reason
    assert states == [["COMPLETE", ""], ["FAIL", "out of memory"], ["PRUNED", ""],
                      ["FAIL", "config error"]]  # fmt: skip
    assert lines[-1].endswith("| no W&B run found |")
    assert "Local engine: trial states" in html and "out of memory" in html
    assert "output_dir" not in md.split("- best config: ", 1)[1].split("\n", 1)[0]


def test_storage_that_cannot_be_read_is_one_line(local_sweep):
    tmp, _ = local_sweep
    proc = report(tmp, str(tmp / "wandb"), "--storage", "sqlite:///nowhere.db", "--out", "rep3")
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == "analysis: error: --storage sqlite:///nowhere.db: no such SQLite file"
    )


def test_a_journal_storage_is_only_read(tmp_path):
    url = storage_url(tmp_path, "journal")
    sweep_id = create(tmp_path, trivial_sweep(tmp_path, run_cap=2, sleep=0.01), storage=url)
    assert sweeper(tmp_path, "agent", sweep_id, storage=url).returncode == 0
    journal = tmp_path / "sweeps.journal"
    before = journal.read_bytes()
    (seen,), notes = engine.read_sweeps(url, {sweep_id}, True)
    assert not notes and seen.name == "trivial"
    assert [t.state for t in seen.trials] == ["COMPLETE", "COMPLETE"]
    assert len(seen.latest_by_run()) == 2
    assert journal.read_bytes() == before
    assert sorted(p.name for p in tmp_path.glob("sweeps.journal*")) == ["sweeps.journal"]


def test_a_bad_journal_for_the_report_is_one_line(local_sweep):
    tmp, _ = local_sweep
    runs = str(tmp / "wandb")
    proc = report(tmp, runs, "--storage", "journal:nowhere.journal", "--out", "rep4")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "analysis: error: --storage journal:nowhere.journal: no such journal file"
    )
    proc = report(tmp, runs, "--storage", "journal:engine.yaml", "--out", "rep4")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"analysis: error: --storage journal:engine.yaml: {tmp / 'engine.yaml'} is not an "
        "Optuna journal file"
    )
    assert not (tmp / "nowhere.journal").exists() and not (tmp / "rep4").exists()
