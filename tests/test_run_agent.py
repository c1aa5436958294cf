"""run_agent.sh: the commands it would run (--dry-run), and a real stop by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from sweep_helpers import (
    RUN_AGENT,
    assert_no_traceback,
    env,
    read_ledger,
    trials,
    trivial_sweep,
    wait_for,
)
from test_sweeper_trainer import TINY, tiny_sweep
from trainer_helpers import hold_env

from contract import metrics as m
from contract import runs
from sweeper import store
from trainer import hold


def run_agent(
    tmp_path: Path,
    *args: str,
    path_prefix: Path | None = None,
    extra_env: dict[str, str] | None = None,
    **kw,
):
    e = env(tmp_path, **(extra_env or {}))
    e.pop("CUDA_VISIBLE_DEVICES", None)
    e.update(extra_env or {})
    if path_prefix is not None:
        e["PATH"] = f"{path_prefix}{os.pathsep}{e['PATH']}"
    return subprocess.run(
        [str(RUN_AGENT), *args],
        cwd=tmp_path,
        env=e,
        capture_output=True,
        text=True,
        timeout=60,
        **kw,
    )


def launches(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("[run_agent] agent ")]


def fake_nvidia_smi(tmp_path: Path, gpus: int) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nvidia-smi"
    lines = "".join(f"echo 'GPU {i}: NVIDIA H200 (UUID: GPU-{i})'\n" for i in range(gpus))
    script.write_text(f"#!/bin/sh\n{lines}")
    script.chmod(0o755)
    return bin_dir


@pytest.mark.parametrize(
    ("args", "devices", "command"),
    [
        (
            ["abcd1234", "--gpus", "0,1", "--agents-per-gpu", "2", "--count", "3"],
            ["0", "0", "1", "1"],
            "python -m sweeper agent abcd1234 --count 3",
        ),
        (
            ["ent/proj/abcd1234", "--gpus", "3,5"],
            ["3", "5"],
            "wandb agent --forward-signals ent/proj/abcd1234",
        ),
        (
            ["ent/proj/abcd1234", "--gpus", "0,1", "--agents", "3", "--count", "2"],
            ["0", "1", "0"],
            "wandb agent --forward-signals --count 2 ent/proj/abcd1234",
        ),
        (
            ["abcd1234", "--gpus", "none", "--agents", "2", "--storage", "sqlite:///s.db"],
            ["", ""],
            "python -m sweeper agent abcd1234 --storage sqlite:///s.db",
        ),
    ],
)
def test_dry_run_prints_one_launch_per_agent(tmp_path, args, devices, command):
    done = run_agent(tmp_path, *args, "--dry-run")
    assert done.returncode == 0, done.stderr
    lines = launches(done.stdout)
    assert len(lines) == len(devices)
    for i, (line, device) in enumerate(zip(lines, devices, strict=True)):
        where = f"GPU {device}" if device else "CPU"
        assert line.startswith(f"[run_agent] agent {i} ({where}): CUDA_VISIBLE_DEVICES={device} ")
        assert f" {command} > logs/agent-abcd1234-{i}" in line
    assert not (tmp_path / "logs").exists(), "a dry run starts and writes nothing"


def test_dry_run_defaults_to_every_gpu_nvidia_smi_lists(tmp_path):
    bin_dir = fake_nvidia_smi(tmp_path, gpus=3)
    done = run_agent(tmp_path, "abcd1234", "--dry-run", path_prefix=bin_dir)
    assert [line.split("CUDA_VISIBLE_DEVICES=")[1][0] for line in launches(done.stdout)] == [
        "0",
        "1",
        "2",
    ]
    no_gpu = run_agent(tmp_path, "abcd1234", "--dry-run")
    assert len(launches(no_gpu.stdout)) == 1 and "(CPU)" in no_gpu.stdout


MIGS = [
    "MIG-1a2b3c4d-0000-1111-2222-333344445555",
    "MIG-9f8e7d6c-0000-1111-2222-333344445555",
]


@pytest.mark.parametrize(
    ("inherited", "args", "devices"),
    [
        ("2,3", [], ["2", "3"]),
        ("2,3", ["--agents-per-gpu", "2"], ["2", "2", "3", "3"]),
        (",".join(MIGS), [], MIGS),
        (
            "GPU-0f1e2d3c-aaaa-bbbb-cccc-ddddeeeeffff",
            ["--agents", "2"],
            ["GPU-0f1e2d3c-aaaa-bbbb-cccc-ddddeeeeffff"] * 2,
        ),
        ("", [], [""]),
    ],
)
def test_inherited_cuda_visible_devices_are_the_only_gpus_used(tmp_path, inherited, args, devices):
    """A scheduler's job sees its own GPUs in CUDA_VISIBLE_DEVICES while nvidia-smi lists all
    eight: the agents get exactly the inherited ones."""
    bin_dir = fake_nvidia_smi(tmp_path, gpus=8)
    done = run_agent(
        tmp_path,
        "abcd1234",
        *args,
        "--dry-run",
        path_prefix=bin_dir,
        extra_env={"CUDA_VISIBLE_DEVICES": inherited},
    )
    assert done.returncode == 0, done.stderr
    got = [
        line.split("CUDA_VISIBLE_DEVICES=", 1)[1].split()[0] if "(CPU)" not in line else ""
        for line in launches(done.stdout)
    ]
    assert got == devices
    assert f"GPUs from the inherited CUDA_VISIBLE_DEVICES: {inherited or 'none'}" in done.stdout
    given = run_agent(
        tmp_path,
        "abcd1234",
        "--gpus",
        "5",
        "--dry-run",
        path_prefix=bin_dir,
        extra_env={"CUDA_VISIBLE_DEVICES": inherited},
    )
    assert [
        line.split("CUDA_VISIBLE_DEVICES=", 1)[1].split()[0] for line in launches(given.stdout)
    ] == ["5"], "--gpus wins"


def test_garbled_inherited_cuda_visible_devices_is_one_line(tmp_path):
    done = run_agent(
        tmp_path, "abcd1234", "--dry-run", extra_env={"CUDA_VISIBLE_DEVICES": "0,,x y"}
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "inherited CUDA_VISIBLE_DEVICES=0,,x y" in line


def test_dry_run_local_file_creates_then_runs(tmp_path):
    file = trivial_sweep(tmp_path, run_cap=2)
    done = run_agent(tmp_path, "--local", str(file), "--agents", "2", "--count", "1", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"[run_agent] python -m sweeper create {file}"
    assert all("python -m sweeper agent ID --count 1" in line for line in launches(done.stdout))
    assert not (tmp_path / "sweeps.db").exists()
    again = run_agent(tmp_path, "--local", str(file), "--max-retries", "0", "--dry-run")
    assert again.stdout.splitlines()[0].endswith(f"create {file} --max-retries 0")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["abcd1234", "--agents-per-gpu", "2"], "no GPU found"),
        (["abcd1234", "--count", "0"], "--count=0: must be a positive integer"),
        (["abcd1234", "--gpus", "a,b"], "--gpus=a,b: expected a list"),
        (["abcd1234", "--gpus", "MIG-"], "--gpus=MIG-: expected a list"),
        (["abcd1234", "--frobnicate"], "unknown option --frobnicate"),
        (["--local", "missing.yaml"], "--local missing.yaml: no such file"),
        (["abcd1234", "--agents", "2", "--agents-per-gpu", "2"], "not both"),
        (["abcd1234", "--max-retries", "2"], "--max-retries goes with --local FILE"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path, args, message):
    done = run_agent(tmp_path, *args, "--dry-run")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("run_agent.sh: error: ") and message in line


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
def test_sigterm_or_ctrl_c_stops_its_agents_and_only_those(tmp_path, how):
    file = trivial_sweep(tmp_path, run_cap=6, sleep=2.0)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    proc = subprocess.Popen(
        [str(RUN_AGENT), "--local", str(file), "--agents", "2", "--stagger", "0.2"],
        cwd=tmp_path,
        env=env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, like a job in a terminal
        # A terminal's job starts with SIGINT at its default, whatever this process inherited
        # (a shell cannot trap a signal that was ignored when it started).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        wait_for(lambda: len(read_ledger(tmp_path)) >= 2, 90, "both agents to start a trial")
        trial_pids = [row["pid"] for row in read_ledger(tmp_path)]
        if how == "sigterm":
            proc.send_signal(signal.SIGTERM)
        else:  # the terminal sends SIGINT to the whole foreground process group
            os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        alive = bystander.poll() is None
        bystander.kill()
        bystander.wait()
    assert alive, "run_agent.sh must stop only its own agents"
    assert proc.returncode != 0
    assert "stopping 2 agent(s)" in err
    sweep_id = next(
        line.split()[-1] for line in out.splitlines() if line.startswith("[run_agent] local sweep")
    )
    for pid in trial_pids:
        assert not Path(f"/proc/{pid}/cmdline").exists() or _zombie(pid)
    # Each agent gave its running trial back, so a later agent runs it again.
    given_back = [t for t in trials(tmp_path, sweep_id) if store.is_lost(t)]
    assert len(given_back) == 2
    logs = sorted((tmp_path / "logs").glob(f"agent-{sweep_id}-*.log"))
    assert len(logs) == 2 and all("given back" in log.read_text() for log in logs)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


WBSTUB = REPO.parent / "shared" / "wbstub"


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(
    not (WBSTUB / "wbstub.py").is_file(),
    reason="the W&B backend stand-in ../shared/wbstub is not beside this clone",
)
def test_sigusr1_preempts_a_real_wandb_agent_trial_and_ends_the_agent_cleanly(tmp_path):
    """SIGUSR1 to run_agent.sh with a real `wandb agent` (which forwards only SIGINT and
    SIGTERM): the trainer checkpoints and exits 75, the agent itself survives USR1 (sent to it
    too, as a scheduler signalling every process would) and ends cleanly on the SIGTERM that
    follows. The stand-in does not requeue preempted runs, so the requeue is not tested here:
    only what happens on this machine."""
    sys.path.insert(0, str(WBSTUB))
    try:
        from wbstub import WandbStub
    finally:
        sys.path.remove(str(WBSTUB))
    home = tmp_path / "home"
    home.mkdir()
    e = {k: v for k, v in env(tmp_path).items() if k not in ("WANDB_MODE", "CUDA_VISIBLE_DEVICES")}
    file = tiny_sweep(
        tmp_path,
        method="random",
        parameters={**TINY, "lr": {"values": [1.0e-3]}, "max_epochs": {"value": 3}},
    )
    with WandbStub() as stub:
        e.update(stub.env(WANDB_CONFIG_DIR=str(home / "config"), HOME=str(home)))
        made = subprocess.run(
            ["wandb", "sweep", "--project", "proj", str(file)],
            cwd=tmp_path, env={**e, "WANDB_SILENT": "false"}, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        sweep_path = made.stderr.split("wandb agent ", 1)[1].split()[0]
        proc = subprocess.Popen(
            [str(RUN_AGENT), sweep_path, "--gpus", "none", "--count", "1"],
            cwd=tmp_path,
            env={**e, **hold_env("step:3")},  # 2 steps an epoch: mid-epoch 2
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            held = tmp_path / "outputs" / "runs"
            wait_for(lambda: list(held.glob(f"*/{hold.HELD}")), 240, "the trial to hold")
            folder = next(held.glob(f"*/{hold.HELD}")).parent
            before = (folder / runs.LATEST).stat().st_mtime_ns  # epoch 1's
            (agent,) = _children(proc.pid)
            os.kill(agent, signal.SIGUSR1)  # what `scancel --full --signal=USR1` adds
            proc.send_signal(signal.SIGUSR1)
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        unknown = list(stub.unknown)
    assert proc.returncode == 75, err
    assert f"SIGUSR1: preempting 1 agent(s): {agent}" in err
    assert "exited with status" not in err, "the wandb agent ended cleanly on SIGTERM"
    record = runs.read_exit(folder)
    assert record is not None and (record.status, record.exit_code) == (m.STATUS_PREEMPTED, 75)
    assert f"SIGUSR1 to trainer pid {record.pid} (agent pid {agent})" in err
    assert (folder / runs.LATEST).stat().st_mtime_ns > before, "checkpointed mid-epoch 2"
    assert not unknown, unknown
    logs = list((tmp_path / "logs").glob("agent-*.log"))
    assert len(logs) == 1
    assert_no_traceback(*logs)  # wandb agent writes the trainer's output there too
