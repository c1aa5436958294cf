"""optuna-dashboard (the ``dashboard`` extra) serves a local sweep's storage unchanged: its API
lists the sweep and its trials, and a real headless browser renders the sweep's page."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from sweep_helpers import create, env, sweeper, trials, trivial_sweep, wait_for

DASHBOARD = Path(sys.executable).with_name("optuna-dashboard")
BROWSER = shutil.which("chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def answers(url: str) -> bool:
    try:
        get_json(url)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False
    return True


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    """A finished two-trial local sweep, and a dashboard on its storage: (url, sweep id)."""
    tmp_path = tmp_path_factory.mktemp("dashboard")
    sweep_id = create(tmp_path, trivial_sweep(tmp_path, run_cap=2, sleep=0.01))
    assert sweeper(tmp_path, "agent", sweep_id).returncode == 0
    url = f"http://127.0.0.1:{free_port()}"
    log = open(tmp_path / "dashboard.log", "wb")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(
        [
            str(DASHBOARD),
            f"sqlite:///{tmp_path / 'sweeps.db'}",
            "--host",
            "127.0.0.1",
            "--port",
            url.rsplit(":", 1)[1],
        ],
        cwd=tmp_path,
        env=env(tmp_path),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(
            lambda: server.poll() is not None or answers(f"{url}/api/studies"),
            timeout=120,
            what="optuna-dashboard to answer",
        )
        assert server.poll() is None, (tmp_path / "dashboard.log").read_text()
        yield url, sweep_id, trials(tmp_path, sweep_id)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_the_api_lists_the_sweep_and_its_trials(dashboard):
    url, sweep_id, stored = dashboard
    (summary,) = get_json(f"{url}/api/studies")["study_summaries"]
    assert summary["study_name"] == sweep_id
    assert {"key": "name", "value": "trivial"} in summary["user_attrs"]
    study = get_json(f"{url}/api/studies/{summary['study_id']}")
    shown = sorted((t["number"], t["state"], t["values"][0]) for t in study["trials"])
    assert shown == sorted((t.number, "Complete", t.values[0]) for t in stored)
    assert {p["name"] for t in study["trials"] for p in t["params"]} == {"x"}


@pytest.mark.skipif(BROWSER is None, reason="no chromium binary on PATH (apt-get install chromium)")
def test_a_headless_browser_shows_the_sweep(dashboard, tmp_path):
    url, sweep_id, _ = dashboard
    page = subprocess.run(
        [
            BROWSER,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=10000",  # let the page fetch the studies and render them
            "--dump-dom",
            f"{url}/dashboard",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert page.returncode == 0, page.stderr[-2000:]
    assert sweep_id in page.stdout, page.stdout[-2000:]
