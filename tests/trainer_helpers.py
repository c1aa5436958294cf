"""Run the real trainer in a subprocess and read its offline W&B runs back with W&B's own
reader (``wandb leet inspect --json``), as the analysis does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import PYTHON, offline_env

WANDB = str(Path(sys.executable).with_name("wandb"))
# Tiny models that train in milliseconds per step on a CPU.
TINY_COMMON = [
    "--norm_num_groups=4",
    "--latent_channels=2",
    "--image_size=16",
    "--n_train=8",
    "--n_val=3",
    "--batch_size=4",
    "--max_epochs=2",
]
TINY_2D = ["--channels=[8, 8]", *TINY_COMMON]
TINY_3D = ["--spatial_dims=3", "--channels=[4, 4, 4]", *TINY_COMMON]
TRAIN_TIMEOUT = 180


def trainer_cmd(tmp_path: Path, *args: str) -> list[str]:
    return [PYTHON, "-m", "trainer", f"--output_dir={tmp_path / 'out'}", *args]


def run_trainer(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        trainer_cmd(tmp_path, *args),
        env=offline_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=TRAIN_TIMEOUT,
    )


def start_trainer(tmp_path: Path, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        trainer_cmd(tmp_path, *args),
        env=offline_env(tmp_path, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def hold_env(at: str) -> dict[str, str]:
    """Environment that holds the trainer at ``at`` (``epoch:N`` or ``step:N``; trainer.hold)."""
    from trainer import hold

    return {hold.ENV: at}


def wait_for_hold(proc: subprocess.Popen, folder: Path, timeout: float = 120) -> str:
    """Wait until the trainer says it holds at its hold point (bounded); returns where."""
    from trainer import hold

    held = folder / hold.HELD
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited early ({proc.returncode}): {proc.stderr.read()}")
        if held.exists():
            return held.read_text().strip()
        time.sleep(0.02)
    raise AssertionError(f"the trainer did not reach its hold point in {timeout} s")


def signal_and_wait(
    proc: subprocess.Popen, signum: int, timeout: float = 120
) -> tuple[int, str, str]:
    proc.send_signal(signum)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        raise
    return proc.returncode, out, err


def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    """Exit status 2 and one line on stderr holding every word; no traceback."""
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("trainer: error: ")
    for word in words:
        assert word in lines[0], lines[0]


def only_run_dir(tmp_path: Path) -> Path:
    """The one run folder under out/runs/."""
    (folder,) = (tmp_path / "out" / "runs").iterdir()
    return folder


@dataclass
class OfflineRun:
    """One ``offline-run-*`` folder as W&B's reader sees it."""

    path: Path
    run_id: str = ""
    sweep_id: str | None = None
    group: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None
    preempting: bool = False

    def rows_with(self, key: str) -> list[dict[str, Any]]:
        return [row for row in self.history if key in row]


def read_offline_run(path: Path) -> OfflineRun:
    out = subprocess.run(
        [WANDB, "leet", "inspect", "--json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "WANDB_SILENT": "true"},
        check=True,
    ).stdout
    run = OfflineRun(path)
    for line in out.splitlines():
        record = json.loads(line)
        kind = record["type"]
        body = record.get(kind, {})
        if kind == "run":
            run.run_id = body["run_id"]
            run.sweep_id = body.get("sweep_id")
            run.group = body.get("run_group")
            run.config.update(body.get("config", {}).get("update", {}))
        elif kind == "config":
            run.config.update(body.get("update", {}))
        elif kind == "history":
            run.history.append(body["item"])
        elif kind == "summary":
            run.summary.update(body.get("update", {}))
        elif kind == "metric":
            run.metrics.append(body)
        elif kind == "exit":
            run.exit_code = body.get("exit_code", 0)
        elif kind == "preempting":
            run.preempting = True
    run.config.pop("_wandb", None)
    return run


def offline_runs(wandb_parent: Path, run_id: str | None = None) -> list[OfflineRun]:
    """Every offline-run folder (of one run id), oldest first: a resumed run has several."""
    folders = sorted((wandb_parent / "wandb").glob("offline-run-*"))
    if run_id is not None:
        folders = [f for f in folders if f.name.endswith(f"-{run_id}")]
    return [read_offline_run(f) for f in folders]


def run_trainer_on_terminal(tmp_path: Path, *args: str, **env: str) -> tuple[int, str]:
    """Run the trainer with stdout on a pseudo-terminal, as in an interactive shell."""
    import fcntl
    import pty
    import struct
    import termios
    import threading

    main_fd, child_fd = pty.openpty()
    # A new terminal is 0 columns wide: give it a size, as a real one has.
    fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen(
        trainer_cmd(tmp_path, *args),
        env=offline_env(tmp_path, **env),
        stdout=child_fd,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(child_fd)
    chunks: list[bytes] = []

    def drain() -> None:  # keep the terminal's buffer from filling up
        while True:
            try:
                chunk = os.read(main_fd, 4096)
            except OSError:  # the child closed the terminal
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=TRAIN_TIMEOUT)
    finally:
        reader.join(timeout=10)
        os.close(main_fd)
    return proc.returncode, b"".join(chunks).decode(errors="replace")
