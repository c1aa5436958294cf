"""bench/gpu_check.sh: its options, and its Python half on the CPU (the same code paths as on a
GPU, tiny sizes; the GPU figures themselves need a GPU machine)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, offline_env

SCRIPT = REPO / "bench" / "gpu_check.sh"


def run(*args: str, env: dict | None = None, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_usage_and_bad_options_exit_2() -> None:
    assert run(str(SCRIPT), "--help").stdout.startswith("Usage: bench/gpu_check.sh")
    for bad in (["--bogus"], ["--gpu"], ["--gpu", "x"], ["--budget", "0"], ["--keep"]):
        proc = run(str(SCRIPT), *bad)
        assert proc.returncode == 2, bad
        assert proc.stderr.startswith("gpu_check.sh: error: ") and proc.stderr.count("\n") == 1


def test_without_a_gpu_it_says_so(tmp_path) -> None:
    # A PATH with only what the script needs before its GPU check: no nvidia-smi.
    (tmp_path / "dirname").symlink_to(shutil.which("dirname"))
    proc = run(shutil.which("bash"), str(SCRIPT), env={**os.environ, "PATH": str(tmp_path)})
    assert proc.returncode == 2
    assert proc.stderr == "gpu_check.sh: error: no nvidia-smi: no GPU here (use --cpu)\n"


@pytest.mark.slow
def test_cpu_loop_runs_the_trainer_the_bare_loop_and_the_step_check(tmp_path) -> None:
    env = offline_env(tmp_path)
    proc = run(sys.executable, "bench/gpu_check.py", "--cpu", "loop", env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("[gpu_check]")]
    assert any(line.startswith("[gpu_check] trainer ") and "ratio" in line for line in lines)
    assert any("peak GPU memory: trainer n/a (CPU)" in line for line in lines)
    # train_step ran with and without the adversarial term (the sync check itself needs CUDA).
    step = [line for line in lines if "train_step:" in line]
    assert step and step[0].count("ran 3 steps") == 2, lines
