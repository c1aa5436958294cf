"""Faults of the local engine with real processes and signals: a paused agent, a trial taken
over from another host, a trial that is always preempted, stop signals at every stage, a
trial process that ignores SIGTERM, owner liveness without /proc. Each run checks from the
trial program's ledger that no run id was ever alive in two processes at once."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState
from sweep_helpers import (
    assert_accounted,
    assert_no_traceback,
    assert_one_process_per_run,
    create,
    env,
    read_ledger,
    start_agent,
    storage_url,
    sweeper,
    trials,
    trivial_sweep,
    wait_for,
    wait_for_line,
    write_sweep,
)

from sweeper import agent as agent_mod
from sweeper import store

FAST = ("--heartbeat", "1", "--grace", "3")  # heartbeats every second, stale after 3 s


def stop(*agents: subprocess.Popen) -> None:
    for agent in agents:
        if agent.poll() is None:
            agent.kill()
            agent.wait(timeout=30)


@pytest.mark.parametrize(
    ("host", "run_lock", "seen"),
    [
        # Same host: b sees the heartbeat go stale, and the owner alive.
        (None, False, "still runs on this host: left to it"),
        # nodea's heartbeats stop, but the run folder (shared here) shows its run training.
        ("nodea", True, "but its run is being trained by pid"),
    ],
    ids=["own-host", "run-lock-elsewhere"],
)
def test_a_paused_owner_keeps_its_trial(tmp_path, host, run_lock, seen):
    hold = tmp_path / "hold"
    hold.touch()
    file = trivial_sweep(tmp_path, run_cap=1, sleep=0.05, hold=str(hold), run_lock=run_lock)
    sweep_id = create(tmp_path, file, *FAST)
    a = start_agent(tmp_path, sweep_id, tmp_path / "a.log", host=host)
    b = None
    try:
        wait_for(lambda: read_ledger(tmp_path), 60, "the trial to start")
        a.send_signal(signal.SIGSTOP)  # its trial's process goes on, its heartbeats stop
        b = start_agent(tmp_path, sweep_id, tmp_path / "b.log")
        wait_for_line(tmp_path / "b.log", seen, 60)  # b leaves the trial alone
        a.send_signal(signal.SIGCONT)
        hold.unlink()
        assert a.wait(timeout=60) == 0
        assert b.wait(timeout=60) == 0
    finally:
        stop(a, *([b] if b else []))
    (only,) = trials(tmp_path, sweep_id)
    assert only.state == TrialState.COMPLETE
    assert len(read_ledger(tmp_path)) == 1
    assert_one_process_per_run(tmp_path)
    assert_no_traceback(tmp_path / "a.log", tmp_path / "b.log")


# The journal has no claim lock and no server: the storage's order alone keeps claims exact.
SHARED = ["sqlite", pytest.param("journal", marks=pytest.mark.slow)]


@pytest.mark.parametrize("kind", SHARED)
def test_an_owner_whose_trial_was_taken_over_stops_it_and_goes_on(tmp_path, kind):
    url = storage_url(tmp_path, kind)
    hold = tmp_path / "hold"
    hold.touch()
    file = trivial_sweep(tmp_path, run_cap=1, sleep=0.05, hold=str(hold))
    sweep_id = create(tmp_path, file, *FAST, storage=url)
    log = tmp_path / "a.log"
    a = start_agent(tmp_path, sweep_id, log, host="nodea", storage=url)
    try:
        wait_for(lambda: read_ledger(tmp_path), 60, "the trial to start")
        a.send_signal(signal.SIGSTOP)
        # Seen from this host, nodea's agent is silent: after the grace period its trial is
        # taken over (lost, and a retry enqueued with the same run id).
        here = store.open_store(url)
        sweep = store.load_sweep(here, sweep_id)
        wait_for(lambda: _reap(sweep, here), 60, "this host to take the trial over")
        a.send_signal(signal.SIGCONT)
        # nodea notices at its next heartbeat, stops its trial process, then runs the retry.
        wait_for(lambda: len(read_ledger(tmp_path)) == 2, 60, "the retry to start")
        hold.unlink()
        assert a.wait(timeout=60) == 0
    finally:
        stop(a)
    text = log.read_text()
    assert text.count("taken over by another agent") == 1, text
    assert "no heartbeat from agent nodea" in text
    all_trials = trials(tmp_path, sweep_id, url)
    assert_accounted(all_trials, budget=1)
    assert [t.state for t in all_trials] == [TrialState.FAIL, TrialState.COMPLETE]
    first, second = read_ledger(tmp_path)
    assert first["run_id"] == second["run_id"], "the retry resumes the same run"
    assert_one_process_per_run(tmp_path)
    assert_no_traceback(log)


def test_a_trial_waits_while_another_process_holds_its_run_lock(tmp_path):
    sweep_id = create(tmp_path, trivial_sweep(tmp_path, run_cap=1, sleep=0.01, run_lock=True))
    here = store.open_store(f"sqlite:///{tmp_path / 'sweeps.db'}")
    store.load_sweep(here, sweep_id).study.enqueue_trial(
        {"x": 0.5}, user_attrs={store.RUN_ID: "heldrun1"}
    )
    folder = tmp_path / "outputs" / "runs" / "heldrun1"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from contract.runs import take_lock; "
            "lock = take_lock(Path(sys.argv[1])); print('locked', flush=True); input()",
            str(folder),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    log = tmp_path / "agent.log"
    agent = None
    try:
        assert holder.stdout.readline() == "locked\n"
        agent = start_agent(tmp_path, sweep_id, log)
        wait_for_line(log, "still being trained by pid", 60)
        assert read_ledger(tmp_path) == []
        holder.kill()
        assert agent.wait(timeout=60) == 0
    finally:
        stop(holder, *([agent] if agent else []))
    (row,) = read_ledger(tmp_path)
    assert row["run_id"] == "heldrun1"
    assert trials(tmp_path, sweep_id)[0].state == TrialState.COMPLETE
    assert_one_process_per_run(tmp_path)
    assert_no_traceback(log)


def _reap(sweep: store.Sweep, here: store.Store) -> bool:
    """Reap as an agent of this host would before its claim; True once a trial was lost."""
    with here.claim_lock():
        store.reap(sweep, here)
    return any(store.is_lost(t) for t in store.tally(sweep).trials)


def test_a_trial_that_always_exits_75_ends_fail_after_max_retries(tmp_path):
    file = trivial_sweep(tmp_path, run_cap=1, sleep=0.01, epochs=1, exit_code=75)
    sweep_id = create(tmp_path, file, "--max-retries", "2")
    done = sweeper(tmp_path, "agent", sweep_id)
    assert done.returncode == 0, done.stdout + done.stderr
    all_trials = trials(tmp_path, sweep_id)
    assert_accounted(all_trials, budget=1)
    assert [t.state for t in all_trials] == [TrialState.FAIL] * 3  # the original + 2 retries
    last = all_trials[-1]
    assert store.is_counted(last) and store.is_gave_up(last)
    reason = "preempted (exit 75); 3 faults, no retry left (max_retries=2)"
    assert last.user_attrs["reason"] == reason
    assert reason in done.stdout
    status = sweeper(tmp_path, "status", sweep_id)
    assert reason in status.stdout and "finished" in status.stdout
    assert "max_retries 2" in status.stdout
    # The report reads the same reason for the run (its latest trial).
    from analysis import engine

    (seen,), _ = engine.read_sweeps(f"sqlite:///{tmp_path / 'sweeps.db'}", {sweep_id}, True)
    assert seen.latest_by_run()[last.user_attrs["run_id"]].reason == reason
    assert len(read_ledger(tmp_path)) == 3
    assert_one_process_per_run(tmp_path)


def _blocked_on_flock(pid: int) -> bool:
    """The process waits for a flock (Linux lists waiters in /proc/locks with '->')."""
    return any(
        line.split()[1] == "->" and line.split()[5] == str(pid)
        for line in Path("/proc/locks").read_text().splitlines()
        if len(line.split()) > 5
    )


def test_sigterm_while_claiming_stops_the_agent_at_once(tmp_path):
    sweep_id = create(tmp_path, trivial_sweep(tmp_path, run_cap=1, sleep=0.01))
    log = tmp_path / "agent.log"
    with open(tmp_path / "sweeps.db.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # every claim waits for this lock
        agent = start_agent(tmp_path, sweep_id, log)
        try:
            wait_for(lambda: _blocked_on_flock(agent.pid), 60, "the agent to wait for the lock")
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(timeout=30) == 128 + signal.SIGTERM  # the lock is still held
        finally:
            stop(agent)
    assert trials(tmp_path, sweep_id) == []
    assert_no_traceback(log)
    done = sweeper(tmp_path, "agent", sweep_id)
    assert done.returncode == 0
    assert_accounted(trials(tmp_path, sweep_id), budget=1)


def trainer_sweep(tmp_path: Path, **params) -> Path:
    """The real trainer on a tiny model, started from the fork server."""
    values = {
        "channels": [8, 8],
        "norm_num_groups": 4,
        "latent_channels": 2,
        "nonlocal_attn": False,
        "image_size": 16,
        "n_train": 8,
        "n_val": 4,
        "batch_size": 4,
        "output_dir": str(tmp_path / "outputs"),
        **params,
    }
    return write_sweep(
        tmp_path / "tiny.yaml",
        {
            "command": ["${env}", "${interpreter}", "-m", "trainer", "${args}"],
            "method": "random",
            "metric": {"name": "val/best_recon_loss", "goal": "minimize"},
            "run_cap": 1,
            "parameters": {
                "lr": {"values": [1.0e-3]},
                **{k: {"value": v} for k, v in values.items()},
            },
        },
    )


def test_sigterm_during_the_fork_server_warm_up_gives_the_trial_back_at_once(tmp_path):
    # Many epochs: an agent that let the trial run before stopping would time out here.
    sweep_id = create(tmp_path, trainer_sweep(tmp_path, max_epochs=10_000))
    log = tmp_path / "agent.log"
    agent = start_agent(tmp_path, sweep_id, log)
    try:
        # Printed once the trial is claimed, before the fork server's imports (seconds).
        wait_for_line(log, "trial 0 run", 60)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        stop(agent)
    assert "given back (agent stopped)" in log.read_text()
    assert_no_traceback(log)
    (given_back,) = trials(tmp_path, sweep_id)
    assert store.is_lost(given_back) and given_back.user_attrs["given_back"]


@pytest.mark.parametrize("second", [None, signal.SIGTERM, signal.SIGINT])
def test_a_trial_that_ignores_sigterm_is_killed(tmp_path, second):
    """After the kill delay, or at once on a second Ctrl-C (the delay is then far away). A
    second SIGTERM, as a scheduler's cancel sends, changes nothing: the delay still runs."""
    hold = tmp_path / "hold"
    hold.touch()
    file = trivial_sweep(tmp_path, run_cap=1, sleep=0.01, hold=str(hold), ignore_term=True)
    sweep_id = create(tmp_path, file)
    log = tmp_path / "agent.log"
    delay = {None: "1", signal.SIGTERM: "3", signal.SIGINT: "600"}[second]
    agent = start_agent(tmp_path, sweep_id, log, WANDB_AGENT_KILL_DELAY=delay)
    try:
        wait_for(lambda: read_ledger(tmp_path), 60, "the trial to start")
        agent.send_signal(signal.SIGTERM)
        wait_for_line(log, f"SIGKILL after {delay} s or at a second Ctrl-C", 60)
        if second:
            # A Ctrl-C this close to the first signal is the same one (SIGINT and SIGTERM reach
            # the agent together from a terminal and run_agent.sh); waiting past the window
            # makes it a second one however slow the machine: the first was handled before the
            # line was written.
            time.sleep(agent_mod.SAME_SIGNAL_SECONDS + 0.1)
            agent.send_signal(second)
        assert agent.wait(timeout=60) == 128 + (second or signal.SIGTERM)
    finally:
        stop(agent)
    (row,) = read_ledger(tmp_path)
    with pytest.raises(ProcessLookupError):
        os.kill(row["pid"], 0)
    text = log.read_text()
    killed_late = f"still running {delay} s after SIGTERM, killing it (SIGKILL)" in text
    assert killed_late == (second != signal.SIGINT)
    assert "given back (agent stopped)" in text
    (given_back,) = trials(tmp_path, sweep_id)
    assert store.is_lost(given_back)
    assert_no_traceback(log)


def test_owners_are_judged_alive_without_proc(monkeypatch):
    me = store.my_owner_tag()
    assert store.owner_alive(me) is True
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = me.split(":")[0]
    gone_tag = f"{host}:{gone.pid}:{store._start_time(os.getpid())}"
    assert store.owner_alive(gone_tag) is False
    # Without /proc (macOS, the BSDs): the start time comes from ps.
    monkeypatch.setattr(store, "PROC", Path("/nonexistent-proc"))
    me = store.my_owner_tag()
    assert me.rsplit(":", 1)[1] != store.UNKNOWN
    assert store.owner_alive(me) is True
    assert store.owner_alive(f"{host}:{gone.pid}:{me.rsplit(':', 1)[1]}") is False
    assert store.owner_alive(f"elsewhere:{os.getpid()}:1") is None  # heartbeats decide
    # Neither /proc nor ps: this host cannot tell, heartbeats decide.
    monkeypatch.setattr(store.shutil, "which", lambda _name: None)
    assert store.owner_alive(me) is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+psycopg2://u:secret@127.0.0.1/db", "pip install 'psycopg2-binary'"),
        ("mysql://u:secret@127.0.0.1/db", "write mysql+pymysql://"),
        ("nosuch://u:secret@127.0.0.1/db", "unknown database scheme 'nosuch'"),
        ("postgresql://u:secret@127.0.0.1:1/db", "cannot open it (connection failed"),
    ],
)
def test_a_bad_storage_url_is_one_line_naming_the_fix(tmp_path, url, expected):
    done = sweeper(tmp_path, "status", "abcdefgh", "--storage", url)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert expected in line and "secret" not in line
    if "psycopg2" in url:
        assert "psycopg2 driver" in line


def test_the_report_names_a_missing_driver_the_same_way():
    from analysis import engine
    from contract.errors import UserError

    with pytest.raises(UserError) as caught:
        engine.read_sweeps("postgresql+psycopg2://u:secret@127.0.0.1/db", {"abcdefgh"}, True)
    assert "needs the psycopg2 driver, not installed: pip install 'psycopg2-binary'" in str(
        caught.value
    )
    assert "secret" not in str(caught.value)


def test_engine_settings_are_checked(tmp_path):
    file = trivial_sweep(tmp_path, run_cap=1)
    done = sweeper(tmp_path, "create", str(file), "--heartbeat", "5", "--grace", "6")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "sweeper: error: --grace=6.0: must be at least twice the heartbeat (5.0 s), "
        "or live agents look dead to other hosts"
    )
    done = sweeper(tmp_path, "create", str(file), "--max-retries", "-1")
    assert done.returncode == 2 and "--max-retries=-1: must be >= 0" in done.stderr
    assert not (tmp_path / "sweeps.db").exists(), "nothing is created"


def read_only(folder: Path, command: list[str]) -> list[str]:
    """``command`` with ``folder`` unwritable: its mode for a user, a read-only bind mount in
    the command's own mount namespace for root (whom modes do not stop)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return command
    if shutil.which("unshare") is None:
        pytest.skip("unshare not found (util-linux): cannot make a folder read-only for root")
    remount = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    return ["unshare", "-m", "sh", "-c", remount, str(folder), *command]


def test_a_bad_journal_is_one_line(tmp_path):
    (tmp_path / "readonly").mkdir()
    (tmp_path / "sweeps.db").write_bytes(b"SQLite format 3\x00" + bytes(200))
    # A record of an operation this Optuna does not know, as a newer one would write it.
    (tmp_path / "newer.journal").write_text('{"op_code": 99, "worker_id": "w-1"}\n')
    cases = {
        "journal:nowhere/sweeps.journal": f"no folder {tmp_path / 'nowhere'}",
        "journal:readonly/sweeps.journal": f"cannot write in {tmp_path / 'readonly'}",
        "journal:sweeps.db": f"{tmp_path / 'sweeps.db'} is not an Optuna journal file",
        "journal:newer.journal": "record 1 (op_code 99) was written by an Optuna incompatible",
    }
    for url, expected in cases.items():
        command = [sys.executable, "-m", "sweeper", "status", "abcdefgh", "--storage", url]
        if "readonly" in url:
            command = read_only(tmp_path / "readonly", command)
        done = subprocess.run(
            command, cwd=tmp_path, env=env(tmp_path), capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2, (url, done.stderr)
        (line,) = done.stderr.splitlines()
        assert line.startswith(f"sweeper: error: storage '{url}': ") and expected in line, line
    assert not (tmp_path / "nowhere").exists()
    assert list((tmp_path / "readonly").iterdir()) == []
    assert (tmp_path / "newer.journal").read_text().count("\n") == 1, "nothing written"


def test_a_relative_journal_path_is_relative_to_the_working_directory(tmp_path):
    (tmp_path / "shared").mkdir()
    file = trivial_sweep(tmp_path, run_cap=1, sleep=0.01)
    sweep_id = create(tmp_path, file, storage="journal:shared/sweeps.journal")
    assert (tmp_path / "shared" / "sweeps.journal").is_file()
    url = f"journal:{tmp_path / 'shared' / 'sweeps.journal'}"
    done = sweeper(tmp_path, "agent", sweep_id, storage=url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_accounted(trials(tmp_path, sweep_id, url), budget=1)
