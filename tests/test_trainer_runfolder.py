"""The trainer keeps the run folder's contract: one live process per run id (the lock), every
finished epoch's progress row exactly once whatever kill, resumes refused when a step would
change meaning, and bad folders or run ids refused before anything is written."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import torch
from trainer_helpers import (
    TINY_2D,
    assert_one_line_error,
    hold_env,
    offline_runs,
    run_trainer,
    signal_and_wait,
    start_trainer,
    wait_for_hold,
)

from contract import metrics as m
from contract import runs
from trainer import hold

# 32 steps per epoch, 3 epochs.
LONGER = [*TINY_2D, "--n_train=128", "--max_epochs=3"]
EPOCHS = 3


def progress_lines(folder: Path) -> list[dict]:
    """Every line of progress.jsonl as written, duplicates included."""
    return [json.loads(line) for line in (folder / runs.PROGRESS).read_text().splitlines()]


def files_state(folder: Path) -> list[tuple[str, int, int]]:
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir())


@pytest.mark.slow
def test_second_trainer_on_a_live_run_exits_2_and_the_first_is_untouched(tmp_path: Path) -> None:
    folder = tmp_path / "out" / "runs" / "twice1"
    first = start_trainer(tmp_path, *LONGER, WANDB_RUN_ID="twice1", **hold_env("epoch:1"))
    try:
        wait_for_hold(first, folder)  # alive, holding its lock, until released
        # Stopped (Ctrl-Z, a stalled host), the first still owns its run; it changes nothing
        # meanwhile, so any change in the folder would be the second process's.
        first.send_signal(signal.SIGSTOP)
        before = files_state(folder)
        assert runs.holder(folder).pid == first.pid

        second = run_trainer(tmp_path, *LONGER, WANDB_RUN_ID="twice1")
        assert_one_line_error(second, f"run twice1 is already being trained by pid {first.pid}")
        assert second.stdout == ""
        assert files_state(folder) == before, "the refused process touched the run folder"
        assert runs.holder(folder).pid == first.pid, "never two live processes on one run"
        assert runs.read_exit(folder) is None
        first.send_signal(signal.SIGCONT)
        (folder / hold.RELEASE).touch()
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, err
    assert "finished after 3 epochs" in out
    assert [row[m.EPOCH] for row in progress_lines(folder)] == [1, 2, 3]
    (run,) = offline_runs(tmp_path, "twice1")  # the second never started a W&B run
    assert run.exit_code == 0
    record = runs.read_exit(folder)
    assert (record.status, record.exit_code, record.pid, record.epochs) == (
        m.STATUS_FINISHED,
        0,
        first.pid,
        EPOCHS,
    )
    assert runs.holder(folder) is None


@pytest.mark.slow
def test_kill_between_checkpoint_and_progress_row_loses_no_row(tmp_path: Path) -> None:
    folder = tmp_path / "out" / "runs" / "gap1"
    proc = start_trainer(tmp_path, *LONGER, WANDB_RUN_ID="gap1", **hold_env("epoch:2"))
    wait_for_hold(proc, folder)
    code, _, _ = signal_and_wait(proc, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert runs.holder(folder) is None and runs.read_exit(folder) is None  # killed: no record
    saved = torch.load(folder / runs.LATEST, weights_only=True)["position"]["epoch"]
    # The folder as a kill right after the checkpoint of epoch `saved` leaves it: that epoch's
    # row (and none after it) not yet appended.
    rows = progress_lines(folder)
    lost = next(row for row in rows if row[m.EPOCH] == saved)
    kept = [row for row in rows if row[m.EPOCH] < saved]
    (folder / runs.PROGRESS).write_text("".join(json.dumps(r) + "\n" for r in kept))

    again = run_trainer(tmp_path, *LONGER, WANDB_RUN_ID="gap1")
    assert again.returncode == 0, again.stderr
    rows = progress_lines(folder)
    assert [row[m.EPOCH] for row in rows] == list(range(1, EPOCHS + 1)), "each epoch once"
    assert rows[saved - 1] == lost, "the row comes from the checkpoint, not from training again"
    assert all(tuple(row) == m.progress_keys(16) for row in rows)
    assert runs.read_exit(folder).status == m.STATUS_FINISHED


@pytest.mark.slow
def test_resume_with_a_changed_step_key_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "out" / "runs" / "resume1"
    done = run_trainer(tmp_path, *TINY_2D, "--max_epochs=1", WANDB_RUN_ID="resume1")
    assert done.returncode == 0, done.stderr
    before = files_state(folder)

    changed = run_trainer(
        tmp_path, *TINY_2D, "--max_epochs=2", "--batch_size=2", WANDB_RUN_ID="resume1"
    )
    assert_one_line_error(
        changed, "checkpoint was written with batch_size=4, this run has batch_size=2"
    )
    assert len(offline_runs(tmp_path, "resume1")) == 1, "refused before W&B starts"
    after = {name: rest for name, *rest in files_state(folder)}
    for name, *rest in before:
        if name not in (runs.EXIT, runs.LOCK):  # the refusal is recorded; nothing else moves
            assert after[name] == rest, name
    record = runs.read_exit(folder)
    assert (record.status, record.exit_code, record.epochs) == (runs.STATUS_ERROR, 2, 1)
    assert "batch_size=4" in record.reason

    longer = run_trainer(tmp_path, *TINY_2D, "--max_epochs=2", WANDB_RUN_ID="resume1")
    assert longer.returncode == 0, longer.stderr  # training on with the same steps is allowed
    assert "resumed at epoch 2" in longer.stdout
    assert [row[m.EPOCH] for row in progress_lines(folder)] == [1, 2]


def test_unwritable_output_dir_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = run_trainer(tmp_path, *TINY_2D, f"--output_dir={blocker / 'out'}")
    assert_one_line_error(proc, f"output_dir={str(blocker / 'out')!r}: cannot create or write")
    assert proc.stdout == ""
    assert not (tmp_path / "wandb").exists()


@pytest.mark.parametrize("run_id", ["a/b", "x:y", "..", " padded"])
def test_run_id_that_wandb_refuses_is_one_line_naming_the_rule(tmp_path: Path, run_id: str) -> None:
    proc = run_trainer(tmp_path, *TINY_2D, WANDB_RUN_ID=run_id)
    assert_one_line_error(proc, f"WANDB_RUN_ID={run_id!r}: a run id must")
    assert "wandb login" not in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "wandb").exists()


@pytest.mark.slow
def test_a_setting_wandb_refuses_gets_no_login_hint(tmp_path: Path) -> None:
    proc = run_trainer(tmp_path, *TINY_2D, WANDB_PROJECT="a/b", WANDB_RUN_ID="proj1")
    assert_one_line_error(proc, "W&B: Invalid project name 'a/b'")
    assert "wandb login" not in proc.stderr
    record = runs.read_exit(tmp_path / "out" / "runs" / "proj1")
    assert (record.status, record.exit_code) == (runs.STATUS_ERROR, 2)


@pytest.mark.slow
def test_analysis_tells_a_quiet_live_run_from_a_killed_one_by_its_lock(tmp_path: Path) -> None:
    from analysis.offline import read_folder
    from analysis.records import CRASHED, RUNNING

    folder = tmp_path / "out" / "runs" / "quiet1"
    proc = start_trainer(tmp_path, *LONGER, WANDB_RUN_ID="quiet1", **hold_env("epoch:1"))
    try:
        wait_for_hold(proc, folder)  # alive until killed, however fast the machine
        # wandb-core writes the summary record to the run file when it flushes: wait for it.
        deadline = time.monotonic() + 120
        while True:
            (run,), _, _ = read_folder(tmp_path, running_window_s=0.0)
            if m.SUMMARY_RUN_DIR in run.summary or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        proc.send_signal(signal.SIGSTOP)
        # With no grace at all for a quiet log, the lock still says the run is alive.
        (run,), _, _ = read_folder(tmp_path, running_window_s=0.0)
        assert run.summary[m.SUMMARY_RUN_DIR] == str(folder.resolve())
        assert run.state == RUNNING
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # However fresh its log, a run whose lock is free and that wrote no exit is dead.
    (run,), _, _ = read_folder(tmp_path, running_window_s=1e9)
    assert run.state == CRASHED
