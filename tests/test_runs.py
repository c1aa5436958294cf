"""The run folder contract (contract.runs): the lock across real processes, progress rows keyed
by epoch, the exit record."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import REPO

from contract import metrics as m
from contract import runs
from contract.errors import UserError

# Takes the run's lock, says so on stdout, then holds it until killed.
HOLD = """
import sys, time
from pathlib import Path
from contract import runs
lock = runs.take_lock(Path(sys.argv[1]))
print("locked", flush=True)
sys.stdin.read()
"""


def hold_lock(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout.readline().strip() == "locked"  # waits for the event, not for time
    return proc


def test_lock_is_held_for_the_holders_life_and_dropped_by_kill_9(tmp_path: Path) -> None:
    folder = runs.run_dir(tmp_path / "out", "run1")
    proc = hold_lock(folder)
    try:
        owner = runs.holder(folder)
        assert owner is not None and owner.pid == proc.pid
        assert owner.host == socket.gethostname()
        assert f"pid {proc.pid} on {owner.host} since" in str(owner)
        before = sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir())
        with pytest.raises(
            runs.RunBusy, match=rf"run run1 is already being trained by pid {proc.pid}"
        ):
            runs.take_lock(folder)
        after = sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir())
        assert after == before, "a refused process changes nothing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert runs.holder(folder) is None  # the kernel dropped it with the process
    with runs.take_lock(folder) as lock:
        assert runs.holder(folder).pid == os.getpid() == lock.owner.pid
    assert runs.holder(folder) is None


def test_probing_never_makes_a_trainer_give_up(tmp_path: Path) -> None:
    """An agent checking liveness holds the lock shared for an instant; a trainer starting
    at that instant waits it out instead of calling the run busy."""
    folder = tmp_path / "runs" / "probed"
    folder.mkdir(parents=True)
    done = threading.Event()
    probes = 0

    def probe() -> None:
        nonlocal probes
        while not done.is_set():
            runs.holder(folder)
            probes += 1

    thread = threading.Thread(target=probe)
    thread.start()
    try:
        for _ in range(500):
            runs.take_lock(folder).release()
    finally:
        done.set()
        thread.join()
    assert probes > 0


def test_unwritable_output_dir_is_one_user_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UserError, match=r"output_dir='.*a-file': cannot create or write"):
        runs.take_lock(runs.run_dir(blocker, "run1"))


@pytest.mark.parametrize(
    "run_id", ["abc123", "a b", "with-dash_and.dot", "", " ", " lead", "a/b", "x:y", "q?", "it's"]
)
def test_run_id_rule_is_wandbs(run_id: str) -> None:
    from wandb.errors import UsageError
    from wandb.sdk.wandb_settings import Settings

    try:
        Settings(run_id=run_id)
        wandb_ok = True
    except UsageError:
        wandb_ok = False
    try:
        runs.check_run_id(run_id)
        ours_ok = True
    except UserError as exc:
        ours_ok = False
        assert str(exc).startswith(f"WANDB_RUN_ID={run_id!r}: a run id must")
    assert ours_ok == wandb_ok


@pytest.mark.parametrize("run_id", [".", ".."])
def test_run_id_must_name_a_folder(run_id: str) -> None:
    with pytest.raises(UserError, match="must be a folder name"):
        runs.check_run_id(run_id)


def write_lines(folder: Path, *lines: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / runs.PROGRESS).write_text("".join(line + "\n" for line in lines))


def test_progress_rows_are_keyed_by_epoch(tmp_path: Path) -> None:
    rows = [{m.EPOCH: e, m.VAL_RECON: 1.0 / e, m.VAL_BEST_RECON: 1.0 / e} for e in (1, 2, 3)]
    write_lines(tmp_path, *map(json.dumps, rows[:2]), json.dumps({**rows[1], m.VAL_RECON: 9.0}))
    assert runs.read_progress(tmp_path) == rows[:2]  # an epoch's first row counts
    assert runs.restore_progress(tmp_path, rows) == [3]
    assert runs.restore_progress(tmp_path, rows) == []
    assert runs.read_progress(tmp_path) == rows
    with open(tmp_path / runs.PROGRESS, "a") as f:
        f.write('{"epoch": 4, "val/rec')  # being written
    assert runs.read_progress(tmp_path) == rows


def test_epoch_values_read_the_rows_metric(tmp_path: Path) -> None:
    new = [{m.EPOCH: 1, m.VAL_RECON: 0.5, m.VAL_BEST_RECON: 0.5}]
    new.append({m.EPOCH: 2, m.VAL_RECON: 0.7, m.VAL_BEST_RECON: 0.5})
    write_lines(tmp_path, *map(json.dumps, new))
    assert runs.epoch_values(tmp_path, m.VAL_BEST_RECON) == [(1, 0.5), (2, 0.5)]
    assert runs.epoch_values(tmp_path, m.VAL_RECON) == [(1, 0.5), (2, 0.7)]
    # Rows without the running best (older trainers, other swept programs) still read.
    write_lines(
        tmp_path / "old",
        '{"val/recon_loss": 0.4}',
        '{"val/recon_loss": NaN}',
        '{"val/recon_loss": 0.6}',
    )
    assert runs.epoch_values(tmp_path / "old", m.VAL_BEST_RECON) == [(1, 0.4), (2, 0.4), (3, 0.4)]
    assert runs.epoch_values(tmp_path / "old", m.VAL_BEST_RECON, "maximize")[-1] == (3, 0.6)
    assert runs.epoch_values(tmp_path / "missing", m.VAL_BEST_RECON) == []


def test_exit_record_round_trip_and_a_new_holder_clears_it(tmp_path: Path) -> None:
    folder = tmp_path / "runs" / "r"
    with runs.take_lock(folder) as lock:
        assert runs.read_exit(folder) is None
        write_lines(folder, '{"epoch": 1}', '{"epoch": 2}')
        written = runs.write_exit(lock, m.STATUS_PREEMPTED, 75, "SIGUSR1\nsecond line")
    back = runs.read_exit(folder)
    assert back == written
    assert (back.status, back.exit_code, back.reason) == ("preempted", 75, "SIGUSR1")
    assert back.epochs == 2, "the rows of progress.jsonl"
    assert back.pid == os.getpid() and back.ended >= back.started
    with runs.take_lock(folder):
        assert runs.read_exit(folder) is None, "a new attempt starts without the old record"
    with pytest.raises(ValueError, match="unknown exit status"), runs.take_lock(folder) as lock:
        runs.write_exit(lock, "fine", 0)
