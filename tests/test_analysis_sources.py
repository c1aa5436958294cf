"""Where runs come from: the offline reader's edge cases, and the W&B API adapter.

The W&B API tests run against a STAND-IN of wandb's public API objects, not the real service
(no network here): ``FakeApi.runs(path, filters, per_page, lazy)`` pages like ``wandb.Api.runs``
and ``FakeRun`` has the attributes and methods the adapter uses on ``wandb.apis.public.Run``
(``id``, ``name``, ``config``, ``summary_metrics``, ``summary`` (setting a key stages it,
``update()`` writes it with the tags), ``history_keys``, ``state``, ``tags``,
``scan_history(keys)`` returning only rows that hold every requested key plus ``_step``,
``update()``, ``file(name).download(root, replace)`` returning the opened file). The same paths
also run end to end with the real wandb client against the W&B backend stand-in
``../shared/wbstub`` (a local server answering what wandb 0.31 sends), at the end of this file. Rate limits are raised the
way wandb raises them: ``wandb.errors.CommError`` wrapping a ``requests.HTTPError`` whose
response has status 429.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
import wandb
from analysis_helpers import epoch_losses
from conftest import PYTHON, REPO
from wandb.errors import CommError

from analysis import cli, wandb_api
from analysis.offline import find_run_files, parse_records, read_folder
from analysis.records import CRASHED, END_STEP, RUNNING
from contract import metrics as M
from contract.errors import UserError

EPOCHS = 12
HEADER = '{"num":1,"type":"header","header":{"version_info":{"producer":"0.31.0"}}}'


def test_empty_log_is_a_crashed_run_with_a_note(tmp_path):
    run_file = tmp_path / "offline-run-20260101_000000-abc" / "run-abc.wandb"
    run_file.parent.mkdir()
    run_file.write_bytes(b":W&B\x00\x00\x00")
    old = time.time() - 3600
    os.utime(run_file, (old, old))
    rec = parse_records([HEADER], run_file, time.time(), running_window_s=120)
    assert rec.run_id == "abc" and rec.state == CRASHED and rec.exit_code is None
    assert "no records" in rec.notes[0]
    # The same file, just written: the run is still going.
    assert parse_records([HEADER], run_file, old + 5, running_window_s=120).state == RUNNING


def line(record: dict) -> str:
    """One record as ``wandb leet inspect --json`` prints it: compact, ``num`` first."""
    return json.dumps({"num": 1, **record}, separators=(",", ":"))


def test_history_rows_become_curves_and_nan_strings_numbers(tmp_path):
    run_file = tmp_path / "offline-run-x-r1" / "run-r1.wandb"
    lines = [
        HEADER,
        line(
            {
                "type": "run",
                "run": {
                    "run_id": "r1",
                    "sweep_id": "s",
                    "config": {"update": {"_wandb": {}, "lr": 0.1}},
                },
            }
        ),
        line(
            {
                "type": "history",
                "history": {"item": {"_step": 0, M.TRAIN_STEP: 1, M.TRAIN_RECON: 1.5}},
            }
        ),
        line(
            {
                "type": "history",
                "history": {"item": {"_step": 1, M.TRAIN_STEP: 2, M.TRAIN_RECON: "NaN"}},
            }
        ),
        line(
            {
                "type": "history",
                "history": {
                    "item": {
                        "_step": 2,
                        M.EPOCH: 1,
                        M.VAL_RECON: 2.0,
                        M.val_triplet_key(0) + ".path": "media/images/val/t.png",
                    }
                },
            }
        ),  # fmt: skip
        line({"type": "summary", "summary": {"update": {M.SUMMARY_STATUS: "diverged"}}}),
        line(
            {
                "type": "summary",
                "summary": {
                    "update": {M.SUMMARY_INIT_VAL_RECON: 0.5, M.SUMMARY_TRIVIAL_VAL_RECON: "NaN"}
                },
            }
        ),
        line({"type": "config", "config": {"update": {"extra": 1}}}),
        line({"type": "exit", "exit": {"exit_code": 3}}),
    ]
    rec = parse_records(lines, run_file, 0, 0)
    assert rec.config == {"lr": 0.1, "extra": 1} and rec.sweep_id == "s"
    assert rec.train[0] == {M.TRAIN_STEP: 1.0, M.TRAIN_RECON: 1.5}
    assert str(rec.train[1][M.TRAIN_RECON]) == "nan"
    assert rec.val[0][END_STEP] == 2.0 and rec.val[0][M.VAL_RECON] == 2.0
    assert rec.val_triplets == {1: [str(run_file.parent / "files" / "media/images/val/t.png")]}
    assert (
        rec.summary[M.SUMMARY_STATUS] == "diverged" and rec.exit_code == 3 and rec.state == "failed"
    )
    # The run's own references; one that is not a finite number is no reference.
    assert rec.init_val_recon == 0.5 and rec.trivial_val_recon is None


def test_find_run_files_skips_latest_run_link(tmp_path):
    run = tmp_path / "wandb" / "offline-run-1-a"
    run.mkdir(parents=True)
    (run / "run-a.wandb").write_bytes(b"")
    (tmp_path / "wandb" / "latest-run").symlink_to(run)
    (tmp_path / "wandb" / "run-2-b").mkdir()
    (tmp_path / "wandb" / "run-2-b" / "run-b.wandb").write_bytes(b"")
    assert [p.name for p in find_run_files(tmp_path)] == ["run-a.wandb", "run-b.wandb"]


# --- the W&B public API, through a stand-in ----------------------------------------------------


def rate_limited() -> CommError:
    response = requests.Response()
    response.status_code = 429
    return CommError("rate limited", requests.HTTPError("429 Too Many Requests", response=response))


class FakeFile:
    def __init__(self, name: str, data: bytes):
        self.name, self.data = name, data

    def download(self, root: str = ".", replace: bool = False):
        path = Path(root, self.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.data)
        return open(path)


class FakeRun:
    def __init__(
        self, run_id: str, shape: str, config: dict, state: str = "finished", fail: int = 0
    ):
        self.id, self.name, self.entity, self.project = run_id, f"name-{run_id}", "ent", "proj"
        self.config = {"_wandb": {"x": 1}, **config}
        self.state, self.tags = state, ["keep-me", "crashed"]
        self.summary_metrics = {M.SUMMARY_STATUS: "finished", "verdict": "crashed"}
        self.summary = dict(self.summary_metrics)
        self.updated_summary: list[dict] = []
        self.fail = fail  # how many calls answer 429 before the call goes through
        self.calls = 0
        self.updated_tags: list[list[str]] = []
        train, val = epoch_losses(shape, EPOCHS)
        self.rows, step, steps = [], 0, 4
        for e in range(1, EPOCHS + 1):
            for _ in range(steps):
                step += 1
                self.rows.append(
                    {"_step": len(self.rows), M.TRAIN_STEP: step, M.TRAIN_RECON: train[e - 1]}
                )
            image = {"_type": "image-file", "path": f"media/images/val/triplet_step000_{e}.png"}
            self.rows.append({"_step": len(self.rows), M.EPOCH: e, M.VAL_RECON: val[e - 1],
                              M.TIME_PER_EPOCH: 1.0, M.val_triplet_key(0): image})  # fmt: skip
        self.history_keys = {"keys": {k: {} for r in self.rows for k in r}, "lastStep": step}

    def _maybe_fail(self):
        self.calls += 1
        if self.calls <= self.fail:
            raise rate_limited()

    def scan_history(self, keys=None, page_size=1000):
        self._maybe_fail()
        keys = keys or []
        return iter(
            [{k: r[k] for k in ["_step", *keys]} for r in self.rows if all(k in r for k in keys)]
        )

    def update(self):
        self._maybe_fail()
        self.updated_tags.append(list(self.tags))
        self.updated_summary.append(dict(self.summary))

    def file(self, name: str) -> FakeFile:
        from PIL import Image

        path = Path(os.environ["FAKE_MEDIA"]) / "img.png"
        Image.new("L", (24, 8), 128).save(path)
        return FakeFile(name, path.read_bytes())


class FakeApi:
    def __init__(self, runs: list[FakeRun], fail_listing: int = 0):
        self.all, self.fail_listing, self.pages, self.queries = runs, fail_listing, 0, []

    def runs(
        self, path, filters=None, order="+created_at", per_page=50, include_sweeps=False, lazy=True
    ):
        self.queries.append((path, filters, per_page, lazy))
        api = self

        class Runs:
            def __iter__(self):
                if api.fail_listing:
                    api.fail_listing -= 1
                    raise rate_limited()
                for start in range(0, len(api.all), per_page):
                    api.pages += 1
                    yield from api.all[start : start + per_page]

        return Runs()


def sweep_runs() -> list[FakeRun]:
    base = {
        "kl_weight": 1e-6,
        "channels": [8, 8],
        "norm_num_groups": 4,
        "augment": False,
        "num_res_blocks": 1,
    }
    return [
        FakeRun("good1", "good", {**base, "lr": 1e-3}),
        FakeRun("good2", "good", {**base, "lr": 3e-4}, fail=2),
        FakeRun("over1", "overfitting", {**base, "lr": 2e-3, "kl_weight": 1e-7}),
        FakeRun("under1", "underfitting", {**base, "lr": 1e-4, "channels": [4, 4]}),
        FakeRun("dead1", "good", {**base, "lr": 1e-3}, state="crashed"),
    ]


def test_paging_one_query_for_the_whole_sweep():
    runs = [FakeRun(f"r{i:03d}", "good", {"lr": 1e-3}) for i in range(450)]
    runs[0].summary_metrics.update(
        {M.SUMMARY_INIT_VAL_RECON: 0.4, M.SUMMARY_TRIVIAL_VAL_RECON: 0.3}
    )
    api = FakeApi(runs)
    records, handles, bad = wandb_api.read_sweep("ent/proj/sw1", workers=4, api=api, base_s=0.001)
    assert bad == []
    assert api.queries == [("ent/proj", {"sweep": "sw1"}, 200, False)]
    assert api.pages == 3 and len(records) == 450 and len(handles) == 450
    rec = records[0]
    assert rec.sweep_id == "sw1" and rec.config == {"lr": 1e-3} and rec.epochs == EPOCHS
    assert len(rec.train) == 4 * EPOCHS
    assert [r[END_STEP] for r in rec.val] == [4.0 * e for e in range(1, EPOCHS + 1)]
    assert (rec.init_val_recon, rec.trivial_val_recon) == (0.4, 0.3)
    assert (records[1].init_val_recon, records[1].trivial_val_recon) == (None, None)


def test_rate_limits_are_retried_with_backoff():
    runs = sweep_runs()
    api = FakeApi(runs, fail_listing=2)
    sleeps: list[float] = []
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) <= 3:
            raise rate_limited()
        return "ok"

    assert wandb_api.with_retries(flaky, sleep=sleeps.append) == "ok"
    assert len(sleeps) == 3 and sleeps[2] > sleeps[0]  # exponential backoff
    records, _, _ = wandb_api.read_sweep("ent/proj/sw1", api=api, base_s=0.001)
    assert len(records) == 5 and api.fail_listing == 0
    good2 = next(r for r in records if r.run_id == "good2")
    assert good2.epochs == EPOCHS and runs[1].calls == 4  # 2 refused + train scan + val scan


def test_errors_that_are_not_transient_are_one_user_error():
    class Missing(FakeApi):
        def runs(self, *args, **kwargs):
            raise CommError("Could not find project proj", requests.HTTPError("404"))

    with pytest.raises(
        UserError, match="ent/proj/sw1: cannot list the sweep's runs: Could not find project"
    ):
        wandb_api.read_sweep("ent/proj/sw1", api=Missing([]), base_s=0.001)
    with pytest.raises(UserError, match="no runs found for sweep sw1"):
        wandb_api.read_sweep("ent/proj/sw1", api=FakeApi([]), base_s=0.001)
    with pytest.raises(ValueError):  # a bug keeps its traceback
        wandb_api.with_retries(lambda: int("x"), sleep=lambda s: None)


def test_report_from_the_api_with_tags(tmp_path, monkeypatch):
    runs = sweep_runs()
    monkeypatch.setenv("FAKE_MEDIA", str(tmp_path))
    monkeypatch.setattr(wandb, "Api", lambda timeout=None: FakeApi(runs))
    monkeypatch.setattr(wandb_api, "with_retries", _fast(wandb_api.with_retries))
    out = tmp_path / "rep"
    assert cli.main(["report", "ent/proj/sw1", "--out", str(out), "--tag"]) == 0
    rows = {r["run_id"]: r for r in json.loads((out / "verdicts.json").read_text())}
    verdicts = {k: r["verdict"] for k, r in rows.items()}
    assert verdicts == {"good1": "good", "good2": "good", "over1": "overfitting",
                        "under1": "underfitting", "dead1": "crashed"}  # fmt: skip
    # The verdict replaces any older verdict tag and keeps the others; the summary keys are
    # replaced, the run's other summary keys kept as they were, in the same single update.
    for run in runs:
        assert run.updated_tags == [["keep-me", verdicts[run.id]]]
        row = rows[run.id]
        (summary,) = run.updated_summary
        reasons = summary.pop("verdict_reasons")
        assert summary == {M.SUMMARY_STATUS: "finished", "verdict": verdicts[run.id],
                           "verdict_remedy": "; ".join(row["remedies"])}  # fmt: skip
        # Short text: the reasons in order, cut at 500 characters.
        joined = "; ".join(row["reasons"])
        assert len(reasons) <= 500 and reasons.rstrip(".") == joined[: len(reasons.rstrip("."))]
        assert reasons == joined or reasons.endswith("...")
    assert rows["over1"]["remedies"] and len(rows["over1"]["reasons"]) > 1
    # Triplet evolution downloaded through Run.file(...).download(...).
    assert (out / "triplets" / "good1_epoch001.png").is_file()
    assert (out / "triplets" / "good1_epoch012.png").is_file()


def _fast(retry):
    return lambda call, retries=6, base_s=1.0, sleep=time.sleep: retry(call, retries, 0.001, sleep)


def test_api_path_is_the_default_out_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FAKE_MEDIA", str(tmp_path))
    monkeypatch.setattr(
        wandb, "Api", lambda timeout=None: FakeApi([FakeRun("a", "good", {"lr": 1.0})])
    )
    assert cli.main(["report", "ent/proj/abc123"]) == 0
    assert (tmp_path / "reports" / "abc123" / "report.html").is_file()


def test_per_step_rows_read_without_json_match_json(tmp_path):
    items = [
        {"_runtime": 1.5, "_step": 0, M.TRAIN_RECON: 1e-05, M.TRAIN_STEP: 1, M.LR: 0.0002},
        {"_step": 1, M.TRAIN_RECON: "-Infinity", M.TRAIN_STEP: 2, M.TRAIN_KL: 12345.5},
        {"_step": 2, M.TRAIN_RECON: "Infinity", M.TRAIN_STEP: 3, "other/x": 1},
    ]
    lines = [line({"type": "history", "history": {"item": i, "step": {"num": 0}}}) for i in items]
    lines.append(line({"type": "exit", "exit": {"exit_code": 0}}))
    rec = parse_records(lines, tmp_path / "offline-run-x-r" / "run-r.wandb", 0, 0)
    assert rec.train == [
        {M.TRAIN_RECON: 1e-05, M.TRAIN_STEP: 1.0, M.LR: 0.0002},
        {M.TRAIN_RECON: float("-inf"), M.TRAIN_STEP: 2.0, M.TRAIN_KL: 12345.5},
        {M.TRAIN_RECON: float("inf"), M.TRAIN_STEP: 3.0},
    ]
    assert rec.summary[M.TRAIN_STEP] == 3 and rec.summary["other/x"] == 1


# --- the real wandb client against the W&B backend stand-in (../shared/wbstub) ---------------

WBSTUB = REPO.parent / "shared" / "wbstub"
needs_wbstub = pytest.mark.skipif(
    not (WBSTUB / "wbstub.py").is_file(),
    reason="the W&B backend stand-in ../shared/wbstub is not beside this clone",
)


def _history(shape: str, bad: bool = False) -> list[dict]:
    """Rows as the trainer logs them: per step, then one per epoch (NaN: unparseable JSON)."""
    train, val = epoch_losses(shape, EPOCHS)
    rows, step = [], 0
    for e in range(1, EPOCHS + 1):
        for _ in range(4):
            step += 1
            rows.append({M.TRAIN_STEP: step, M.TRAIN_RECON: train[e - 1]})
        rows.append({M.EPOCH: e, M.VAL_RECON: float("nan") if bad else val[e - 1],
                     M.TIME_PER_EPOCH: 1.0, M.TRAIN_EVAL_RECON: train[e - 1]})  # fmt: skip
    return rows


@pytest.fixture
def wbstub(tmp_path):
    import sys

    sys.path.insert(0, str(WBSTUB))
    try:
        from wbstub import WandbStub
    finally:
        sys.path.remove(str(WBSTUB))
    stub = WandbStub().start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    home = tmp_path / "home"
    home.mkdir()
    # The client's own files and any login (~/.netrc) come from this test only.
    env.update(stub.env(WANDB_CONFIG_DIR=str(home / "config"), WANDB_CACHE_DIR=str(home / "cache"),
                        WANDB_DATA_DIR=str(home / "data")), HOME=str(home), TMPDIR=str(tmp_path),
               PYTHONPATH=str(REPO))  # fmt: skip
    yield stub, env
    stub.stop()


def api_report(env: dict, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    """``analysis report`` on the stand-in. One that hangs is stopped (well before pytest's own
    timeout) with SIGABRT, which makes Python print every thread's stack: the failure shows
    where it hung, with the tail of wandb-core's logs."""
    start = time.monotonic()
    env = {**env, "PYTHONFAULTHANDLER": "1"}
    cmd = [PYTHON, "-m", "analysis", "report", *args]
    with subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:  # fmt: skip
        try:
            out, err = proc.communicate(timeout=150)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            out, err = proc.communicate()
            logs = sorted(Path(env["HOME"]).rglob("*core*.log"))
            tails = "".join(f"\n--- {p}:\n{p.read_text()[-3000:]}" for p in logs)
            pytest.fail(f"analysis report hung for 150 s:\n{out}\n{err}{tails}")
    done = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    return done, time.monotonic() - start


@needs_wbstub
def test_wbstub_report_tags_summary_and_lists_an_unreadable_run(wbstub, tmp_path):
    stub, env = wbstub
    base = {"kl_weight": 1e-6, "channels": [8, 8], "norm_num_groups": 4}
    old = {"verdict": "crashed", "verdict_reasons": "old", "verdict_remedy": "old remedy",
           M.SUMMARY_STATUS: "finished", M.SUMMARY_INIT_VAL_RECON: 0.7}  # fmt: skip
    for name, shape, lr in (("good1", "good", 1e-3), ("good2", "good", 3e-4),
                            ("over1", "overfitting", 2e-3)):  # fmt: skip
        stub.seed_run("proj", name, sweep="sw1", config={**base, "lr": lr},
                      history=_history(shape), summary=old, tags=["keep-me", "crashed"])  # fmt: skip
    # Its history holds a NaN, which wandb-core cannot parse: the history request fails.
    stub.seed_run("proj", "broken", sweep="sw1", config={**base, "lr": 1e-4},
                  history=_history("good", bad=True), summary=old)  # fmt: skip
    out = tmp_path / "rep"
    proc, _ = api_report(env, "stub-entity/proj/sw1", "--out", str(out), "--tag")
    assert proc.returncode == 0, proc.stderr
    assert "unreadable: stub-entity/proj/broken: history not readable: " in proc.stdout
    assert "3 runs: " in proc.stdout and "; 1 unreadable" in proc.stdout
    rows = {r["run_id"]: r for r in json.loads((out / "verdicts.json").read_text())}
    assert sorted(rows) == ["good1", "good2", "over1"]
    assert rows["over1"]["verdict"] == "overfitting" and rows["good1"]["verdict"] == "good"
    md = (out / "report.md").read_text()
    assert "## Unreadable runs" in md and "stub-entity/proj/broken" in md
    # The train loss measured the validation way was read too: the per-run chart draws it.
    assert "train, measured as val" in (out / "report.html").read_text()
    for name, row in rows.items():
        run = stub.backend.runs[("stub-entity", "proj", name)]
        summary = run["summaryMetrics"]
        assert summary["verdict"] == row["verdict"]
        assert summary["verdict_reasons"].startswith(row["reasons"][0][:100])
        assert summary["verdict_remedy"] == "; ".join(row["remedies"])
        # The guide's metrics and the trainer's keys are as they were.
        assert summary[M.SUMMARY_INIT_VAL_RECON] == 0.7 and summary[M.SUMMARY_STATUS] == "finished"
        assert run["tags"] == ["keep-me", row["verdict"]]
    # The unreadable run was not judged, so nothing was written to it.
    assert stub.backend.runs[("stub-entity", "proj", "broken")]["summaryMetrics"]["verdict"] == (
        "crashed"
    )
    assert stub.backend.unknown == []


@needs_wbstub
@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"WANDB_API_KEY": None}, ["no W&B API key", "`wandb login`", "WANDB_API_KEY"]),
        ({"WANDB_API_KEY": "not-a-key"}, ["did not accept the API key", "`wandb login`",
                                          "WANDB_API_KEY"]),
        ({"no_server": True}, ["did not answer within 3 s", "WANDB_BASE_URL", "--timeout"]),
    ],
    ids=["no-key", "wrong-key", "no-server"],
)  # fmt: skip
def test_wbstub_bad_login_or_server_is_one_line_and_exit_2(wbstub, tmp_path, change, words):
    stub, env = wbstub
    stub.seed_run("proj", "r1", sweep="sw1", config={"lr": 1e-3}, history=_history("good"))
    with socket.socket() as nobody:
        # A port bound here and never listened on refuses every connection, and no other
        # process can take it while the test runs (a stopped server's freed port could be).
        nobody.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{nobody.getsockname()[1]}"
        if change.pop("no_server", False):
            env["WANDB_BASE_URL"] = url
        for key, value in change.items():
            env.pop(key) if value is None else env.update({key: value})
        proc, took = api_report(env, "stub-entity/proj/sw1", "--out", str(tmp_path / "r"),
                                "--timeout", "3")  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("analysis: error: "), proc.stderr
    for w in words:
        assert w in lines[0]
    if "WANDB_BASE_URL" in words:
        assert url in lines[0]
        assert took < 3 + 45  # the timeout, plus start-up on a loaded machine
    assert not (tmp_path / "r").exists()


# The stand-in runs as its own process here, so that stopping it drops every open connection
# too: it stops once the sweep is listed, before any history is read.
MIDWAY = """
import json, os, subprocess, sys, time
from pathlib import Path
from analysis import wandb_api
from contract.errors import UserError, run_cli

stub_py, seed, tmp = sys.argv[1:4]
port_file = Path(tmp, "port")
server = subprocess.Popen([sys.executable, stub_py, "--port-file", str(port_file),
                           "--seed-file", seed], stdout=subprocess.DEVNULL)
while not port_file.exists() or not port_file.read_text():
    if server.poll() is not None:
        raise SystemExit("the stand-in did not start")
    time.sleep(0.05)
os.environ["WANDB_BASE_URL"] = "http://127.0.0.1:" + port_file.read_text()
api = wandb_api.connect(timeout=3)

class StopsAfterListing:
    def runs(self, *args, **kwargs):
        runs = list(api.runs(*args, **kwargs))
        server.kill()
        server.wait()
        return runs

def main(argv):
    start = time.monotonic()
    try:
        wandb_api.read_sweep("stub-entity/proj/sw1", workers=1, api=StopsAfterListing(),
                             base_s=0.01)
    except UserError as exc:
        print(json.dumps({"error": str(exc), "took": time.monotonic() - start}), flush=True)
    return 0

# The commands' own ending: W&B's service is torn down within a deadline.
run_cli(main, "midway")
"""


@needs_wbstub
def test_wbstub_server_that_stops_midway_is_not_waited_on_once_per_run(wbstub, tmp_path):
    _, env = wbstub
    seed = tmp_path / "seed.json"
    runs = [{"project": "proj", "name": f"r{i}", "sweep": "sw1", "config": {"lr": i},
             "history": _history("good")} for i in range(3)]  # fmt: skip
    seed.write_text(json.dumps({"runs": runs}))
    proc = subprocess.run(
        [PYTHON, "-c", MIDWAY, str(WBSTUB / "wbstub.py"), str(seed), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["error"].startswith(
        "stub-entity/proj/sw1: none of the sweep's 3 runs could be read; the first:"
        " stub-entity/proj/r0: history not readable: "
    ), result
    # The first run waits out the 3 s timeout; the two others are not asked at all (asking all
    # three would take at least 9 s).
    assert result["took"] < 9, result


LOGS_ONE_ROW = "import wandb; run = wandb.init(project='proj'); run.log({'epoch': 1}); run.finish()"


@needs_wbstub
def test_a_local_trials_offline_run_uploads_with_wandb_sync(wbstub, tmp_path):
    """W&B refuses a run that names a sweep it does not have (``sweep X not found``, and
    ``wandb sync`` still exits 0): a local trial names none, and keeps its sweep as its group."""
    from sweeper.agent import trial_env

    stub, env = wbstub
    params = tmp_path / "params.yaml"
    params.write_text("lr:\n  value: 0.001\n")
    folders = {}
    for run_id, inherited in (("local1", {}), ("claims1", {"WANDB_SWEEP_ID": "abcd1234"})):
        # The trial's environment as the local agent builds it, even from a shell that has a
        # WANDB_SWEEP_ID of its own; the second run names the local sweep as older trials did.
        base = {**env, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / run_id),
                "WANDB_SWEEP_ID": "abcd1234"}  # fmt: skip
        with pytest.MonkeyPatch.context() as mp:
            for key, value in base.items():
                mp.setenv(key, value)
            trial = {**trial_env("abcd1234", run_id, params), **inherited}
        subprocess.run([PYTHON, "-c", LOGS_ONE_ROW], env=trial, check=True, timeout=120)
        (folders[run_id],) = (tmp_path / run_id / "wandb").glob("offline-run-*")
        # ``--sweep ID`` finds it, new runs (by their group) and old ones (by sweep_id) alike.
        (rec,) = read_folder(tmp_path / run_id, sweep="abcd1234")[0]
        assert rec.run_id == run_id
    for folder in folders.values():
        done = subprocess.run([PYTHON, "-m", "wandb", "sync", "-p", "proj", str(folder)], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
    uploaded = stub.backend.runs.get(("stub-entity", "proj", "local1"))
    assert uploaded is not None, stub.backend.runs.keys()
    assert "abcd1234" in json.dumps(uploaded)  # its group
    # What the old environment did: the run names a sweep W&B does not have, and is lost.
    assert ("stub-entity", "proj", "claims1") not in stub.backend.runs
    assert stub.backend.unknown == []
