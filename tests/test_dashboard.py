"""optuna-dashboard (the ``dashboard`` extra) serves a local sweep's storage unchanged: its API
lists the sweep and its trials, and a real headless browser renders the sweep's page. A journal
sweep opens through ``make dashboard STORAGE=journal:PATH``, as the README says."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO
from sweep_helpers import create, env, storage_url, sweeper, trials, trivial_sweep, wait_for

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


@contextlib.contextmanager
def serving(tmp_path: Path, kind: str, command) -> Iterator[tuple[str, str, list]]:
    """A finished two-trial local sweep in a storage of this kind, and the dashboard that
    ``command(storage, port)`` starts on it: (url, sweep id, its trials)."""
    storage = storage_url(tmp_path, kind)
    sweep_id = create(tmp_path, trivial_sweep(tmp_path, run_cap=2, sleep=0.01), storage=storage)
    assert sweeper(tmp_path, "agent", sweep_id, storage=storage).returncode == 0
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "dashboard.log", "wb")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(
        command(storage, port),
        cwd=tmp_path,
        env=env(tmp_path),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # make and its dashboard are stopped together
    )
    try:
        wait_for(
            lambda: server.poll() is not None or answers(f"{url}/api/studies"),
            timeout=120,
            what="optuna-dashboard to answer",
        )
        assert server.poll() is None, (tmp_path / "dashboard.log").read_text()
        yield url, sweep_id, trials(tmp_path, sweep_id, storage)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("dashboard"), "sqlite", dashboard_on) as served:
        yield served


def dashboard_on(storage: str, port: int) -> list[str]:
    return [str(DASHBOARD), storage, "--host", "127.0.0.1", "--port", str(port)]


def make_dashboard(storage: str, port: int) -> list[str]:
    """The Makefile's target as the README gives it (``-o install``: the venv is the one
    running these tests)."""
    return ["make", "-C", str(REPO), "-s", "-o", "install", "dashboard",
            f"STORAGE={storage}", f"DASHBOARD_PORT={port}"]  # fmt: skip


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on PATH")
def test_make_dashboard_opens_a_journal_sweep(tmp_path):
    with serving(tmp_path, "journal", make_dashboard) as (url, sweep_id, stored):
        assert_lists(url, sweep_id, stored)


def test_the_api_lists_the_sweep_and_its_trials(dashboard):
    assert_lists(*dashboard)


def assert_lists(url: str, sweep_id: str, stored: list) -> None:
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
