"""The local engine on storages that several machines share, as the README's several-machines
recipe runs it: a real PostgreSQL server, and a journal file in a shared folder. Agents on two
simulated hosts (their own hostname), one host's agent killed with kill -9 mid-trial, its
trial retried by the other host once its heartbeats stop, every slot counted once. The server
is started here, from the PostgreSQL binaries on this machine."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from optuna.trial import TrialState
from sweep_helpers import (
    RUN_AGENT,
    assert_accounted,
    assert_no_traceback,
    assert_one_process_per_run,
    env,
    on_host,
    read_ledger,
    start_agent,
    storage_url,
    sweeper,
    trivial_sweep,
    wait_for,
    wait_for_line,
)

from sweeper import store


def _server_binaries() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    bindir = Path(
        subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip()
    )
    return bindir if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL server on a free port, in a temporary data folder; yields its base URL."""
    bindir = _server_binaries()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (pg_config --bindir: no initdb/pg_ctl)")
    # The server refuses to run as root: run it as the postgres user, in a folder it owns.
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    top = Path(tempfile.mkdtemp(prefix="sweeper-pg-"))
    data = top / "data"
    if as_postgres:
        shutil.chown(top, "postgres", "postgres")
    port = _free_port()

    def pg(*args: str) -> None:
        subprocess.run([*as_postgres, *args], check=True, capture_output=True, timeout=120)

    try:
        pg(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
        options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"
        pg(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-l",
            str(top / "log"),
            "-o",
            options,
            "start",
        )
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        if (data / "postmaster.pid").exists():
            pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def pg_url(postgres: str, request: pytest.FixtureRequest) -> str:
    """A fresh database on the server: the README's postgresql://USER:PASS@HOST/DB form."""
    name = "t" + "".join(c for c in request.node.name.lower() if c.isalnum())[:40]
    port = postgres.rsplit(":", 1)[1]
    createdb = _server_binaries() / "createdb"
    subprocess.run(
        [str(createdb), "-h", "127.0.0.1", "-p", port, "-U", "postgres", name],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return f"{postgres}/{name}"


@pytest.fixture(params=["postgresql", pytest.param("journal", marks=pytest.mark.slow)])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A storage that agents on several machines can share."""
    if request.param == "postgresql":
        return request.getfixturevalue("pg_url")
    return storage_url(tmp_path, "journal")


def test_agents_on_two_hosts_survive_kill_9_through_heartbeats(tmp_path, shared_url):
    hold = tmp_path / "hold"
    hold.touch()  # every trial waits after its epochs while this file exists
    file = trivial_sweep(tmp_path, run_cap=4, sleep=0.2, hold=str(hold))
    made = sweeper(
        tmp_path, "create", str(file), "--storage", shared_url, "--heartbeat", "1", "--grace", "3"
    )
    assert made.returncode == 0, made.stderr
    sweep_id = made.stdout.strip()

    a_log, b_out = tmp_path / "a.log", tmp_path / "b.out"
    a = start_agent(tmp_path, sweep_id, a_log, "--storage", shared_url, host="nodea")
    # The other host runs the recipe's second line as written (CPU here: --gpus none).
    recipe = [
        str(RUN_AGENT),
        sweep_id,
        "--storage",
        shared_url,
        "--gpus",
        "none",
        "--logs",
        str(tmp_path / "logs"),
    ]
    with open(b_out, "wb") as out:
        b = subprocess.Popen(
            on_host("nodeb", recipe),
            cwd=tmp_path,
            env=env(tmp_path),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_line(a_log, "trial ", 90)
        wait_for(lambda: len(read_ledger(tmp_path)) >= 2, 90, "both hosts' trials to start")
        killed_run = a_log.read_text().split(" run ", 1)[1].split()[0].rstrip(":")
        (child,) = [row for row in read_ledger(tmp_path) if row["run_id"] == killed_run]
        a.send_signal(signal.SIGKILL)
        assert a.wait(timeout=30) == -signal.SIGKILL
        wait_for(lambda: not _alive(child["pid"]), 30, "nodea's trial process to die with it")
        hold.unlink()
        assert b.wait(timeout=180) == 0, b_out.read_text()
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=60)

    sweep = store.load_sweep(store.open_store(shared_url), sweep_id)
    all_trials = sweep.study.get_trials(deepcopy=False)
    assert_accounted(all_trials, budget=4)
    (lost,) = [t for t in all_trials if store.is_lost(t)]
    assert lost.user_attrs["run_id"] == killed_run
    assert lost.user_attrs["lost"].startswith("no heartbeat from agent nodea:")
    (retry,) = [t for t in all_trials if t.user_attrs.get("retry_of") == lost.number]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["run_id"] == killed_run
    assert retry.user_attrs["agent"].startswith("nodeb:")
    assert [row["run_id"] for row in read_ledger(tmp_path)].count(killed_run) == 2
    assert_one_process_per_run(tmp_path)
    summary = b_out.read_text()
    assert "finished" in summary and "COMPLETE 4" in summary
    assert_no_traceback(a_log, b_out, *(tmp_path / "logs").iterdir())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return store._start_time(pid) is not None  # a zombie has ended too


def test_a_bare_postgresql_url_works_and_a_missing_database_is_one_line(tmp_path, pg_url):
    file = trivial_sweep(tmp_path, run_cap=1, sleep=0.01)
    made = sweeper(tmp_path, "create", str(file), "--storage", pg_url)
    assert made.returncode == 0, made.stderr
    done = sweeper(tmp_path, "status", made.stdout.strip(), "--storage", pg_url)
    assert done.returncode == 0 and "budget 1" in done.stdout
    missing = pg_url.rsplit("/", 1)[0] + "/nosuchdb"
    done = sweeper(tmp_path, "status", "abcdefgh", "--storage", missing)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert 'database "nosuchdb" does not exist' in line
