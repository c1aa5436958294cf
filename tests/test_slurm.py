"""slurm/sweep.sbatch on a real one-node SLURM cluster (munge, slurmctld, slurmd started here)
with the real trainer: a 2-task array runs a local sweep to its end, a task warned of its
preemption (SIGUSR1 to its batch shell) gives its trial back and the requeued task resumes it
from its checkpoint, every epoch once. The cluster's credentials expire after 10 s, so a requeued
task starts again after about 11 s, not SLURM's default 2 minutes.

Trainers hold mid-epoch (``trainer.hold``) so each signal lands where the test says, however
loaded the machine."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import slurm_cluster
from conftest import REPO
from optuna.trial import TrialState
from sweep_helpers import assert_accounted, assert_no_traceback, create, env, trials, wait_for
from test_sweeper_trainer import TINY, tiny_sweep
from trainer_helpers import hold_env, offline_runs

from contract import metrics as m
from contract import runs
from sweeper import store
from trainer import hold


@pytest.fixture(scope="module")
def slurm() -> Iterator[dict[str, str]]:
    why = slurm_cluster.missing()
    if why:
        pytest.skip(why)
    with slurm_cluster.cluster() as cluster_env:
        yield cluster_env


def project(tmp_path: Path) -> None:
    """The submit folder looks like the project's: its scripts, as the README runs them."""
    (tmp_path / "run_agent.sh").symlink_to(REPO / "run_agent.sh")
    (tmp_path / "slurm").symlink_to(REPO / "slurm")


def slurm_run(slurm: dict[str, str], tmp_path: Path, *args: str, **extra: str) -> str:
    done = subprocess.run(
        list(args),
        cwd=tmp_path,
        env={**env(tmp_path, **extra), **slurm},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"{args}: {done.stderr}"
    return done.stdout


def queued(slurm, tmp_path, job: str) -> dict[str, str]:
    """Array task -> state, for the tasks of ``job`` still in the queue."""
    out = slurm_run(slurm, tmp_path, "squeue", "-h", "-r", "-j", job, "-o", "%i %T")
    return dict(line.split() for line in out.splitlines())


def run_of_task(tmp_path: Path, job: str, task: int) -> str | None:
    """The run id the task's agent started last (from its log)."""
    found = None
    for log in (tmp_path / "logs" / f"slurm-{job}-{task}").glob("agent-*.log"):
        for line in log.read_text().splitlines():
            # A trial's start line, not the closing "best: trial N run ID {...}" line.
            start = STARTED.match(line)
            if start:
                found = start[1]
    return found


STARTED = re.compile(r"\[sweeper \S+\] trial \d+ run (\w+)(?: \(retry of trial \d+\))?: \{")


def held(tmp_path: Path, run_id: str) -> bool:
    return (runs.run_dir(tmp_path / "outputs", run_id) / hold.HELD).exists()


def release(tmp_path: Path, run_id: str) -> None:
    (runs.run_dir(tmp_path / "outputs", run_id) / hold.RELEASE).touch()


MAX_EPOCHS = 3


@contextmanager
def held_array(tmp_path: Path, slurm: dict[str, str]) -> Iterator[tuple[str, str, str, str]]:
    """A local sweep of 2 trials (3 epochs each, no retry allowed: only a trial given back, which
    costs none, can go on) run by a 2-task array of slurm/sweep.sbatch, both trials held at
    step 3 (2 steps an epoch: mid-epoch 2, after epoch 1's row). Yields the sweep id, the job
    id and the run ids of task 0 and task 1. A failure inside prints the queue, the logs and the
    trials; what is still queued at the end is cancelled."""
    project(tmp_path)
    file = tiny_sweep(
        tmp_path,
        method="random",
        run_cap=2,
        parameters={
            **TINY,
            "lr": {"values": [1.0e-3, 3.0e-3]},
            "max_epochs": {"value": MAX_EPOCHS},
        },
    )
    sweep_id = create(tmp_path, file, "--max-retries", "0")
    job = slurm_run(
        slurm, tmp_path,
        "sbatch", "--parsable", "--array=0-1", "--cpus-per-task=1",
        "--output", str(tmp_path / "slurm-%A_%a.out"),
        "slurm/sweep.sbatch", sweep_id, "--gpus", "none",
        SWEEP_STAGGER="1", **hold_env("step:3"),
    ).strip()  # fmt: skip
    try:
        wait_for(
            lambda: all((r := run_of_task(tmp_path, job, t)) and held(tmp_path, r) for t in (0, 1)),
            300,
            "both tasks' trials to hold mid-epoch 2",
        )
        yield sweep_id, job, run_of_task(tmp_path, job, 0), run_of_task(tmp_path, job, 1)
    except Exception:
        _dump(slurm, tmp_path, job, sweep_id)
        raise
    finally:
        if queued(slurm, tmp_path, job):
            slurm_run(slurm, tmp_path, "scancel", job)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_array_preempted_task_resumes_its_trial_after_requeue(tmp_path, slurm):
    with held_array(tmp_path, slurm) as (sweep_id, job, preempted, other):
        slurm_run(slurm, tmp_path, "scancel", "--batch", "--signal=USR1", f"{job}_0")
        out0 = tmp_path / f"slurm-{job}_0.out"
        wait_for(
            lambda: out0.exists() and "run_agent.sh exited with status" in out0.read_text(),
            120,
            "task 0 to end after SIGUSR1",
        )
        first_end = out0.read_text()
        states = [
            (t.number, t.state.name, t.user_attrs.get("exit_code"))
            for t in trials(tmp_path, sweep_id)
        ]
        print("after SIGUSR1:", states)
        wait_for(lambda: f"{job}_0" not in queued(slurm, tmp_path, job), 60, "task 0 to leave")
        slurm_run(slurm, tmp_path, "scontrol", "requeue", f"{job}_0")

        def resumed() -> bool:
            if held(tmp_path, preempted):  # a retry that reaches the hold point again
                release(tmp_path, preempted)
            return any(
                t.user_attrs.get("run_id") == preempted and t.state == TrialState.COMPLETE
                for t in trials(tmp_path, sweep_id)
            )

        wait_for(resumed, 400, "the requeued task to finish the preempted trial", every=1.0)
        release(tmp_path, other)
        wait_for(lambda: not queued(slurm, tmp_path, job), 300, "the array to end")

    assert "run_agent.sh exited with status 75" in first_end, first_end
    all_trials = trials(tmp_path, sweep_id)
    print("trials:", [(t.number, t.state.name, t.user_attrs) for t in all_trials])
    assert_accounted(all_trials, budget=2)
    (lost,) = [t for t in all_trials if store.is_lost(t)]
    assert lost.user_attrs["run_id"] == preempted and lost.user_attrs.get(store.PREEMPTED)
    (retry,) = [t for t in all_trials if t.user_attrs.get("retry_of") == lost.number]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["run_id"] == preempted
    assert retry.user_attrs[store.FAULTS] == 0, "an announced preemption costs no retry"
    folder = runs.run_dir(tmp_path / "outputs", preempted)
    epochs = [json.loads(x)["epoch"] for x in (folder / runs.PROGRESS).read_text().splitlines()]
    assert epochs == list(range(1, MAX_EPOCHS + 1)), "every epoch exactly once"
    pieces = offline_runs(tmp_path, preempted)
    assert [p.exit_code for p in pieces] == [75, 0] and pieces[0].preempting
    steps = [row[m.TRAIN_STEP] for p in pieces for row in p.rows_with(m.TRAIN_STEP)]
    assert steps == list(range(steps[0], steps[0] + len(steps))), "train/step continuous"
    assert len(steps) == MAX_EPOCHS * 2
    out0 = (tmp_path / f"slurm-{job}_0.out").read_text()
    assert out0.count("[sweep.sbatch] job") == 2 and "(restart 1)" in out0
    assert_no_traceback(*(tmp_path / "logs").rglob("*.log"))


def _dump(slurm, tmp_path, job, sweep_id) -> None:
    """What a failed wait needs to be understood: the queue, the job, every log, the trials."""
    for args in (["squeue", "-r", "-o", "%i %T %r %S"], ["scontrol", "show", "job", job]):
        done = subprocess.run(args, env={**env(tmp_path), **slurm}, capture_output=True, text=True)
        print(f"=== {' '.join(args)}\n{done.stdout}{done.stderr}")
    logs = [*sorted(tmp_path.glob("slurm-*.out")), *sorted((tmp_path / "logs").rglob("*.log"))]
    for log in [*logs, Path(slurm["SLURM_TOP"]) / "slurmctld.log"]:
        print(f"=== {log.name}\n{log.read_text(errors='replace')[-4000:]}")
    print(
        "=== trials", [(t.number, t.state.name, t.user_attrs) for t in trials(tmp_path, sweep_id)]
    )


def children(pid: int, name: str) -> list[int]:
    """The live child processes of ``pid`` running the program ``name``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            comm, fields = stat.read_text().split(" (", 1)[1].rsplit(")", 1)
        except (OSError, IndexError, ValueError):
            continue
        state, parent = fields.split()[:2]
        if comm == name and state != "Z" and int(parent) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGUSR1, 75), (signal.SIGTERM, 0)], ids=["preempt", "cancel"]
)
def test_a_task_signalled_before_its_agents_start_starts_none(tmp_path, sig, code):
    """A preemption warning (or a cancel) while the task waits its turn to start: no agent
    starts, a preemption is the task's exit status 75, and the wait's sleep ends with it."""
    project(tmp_path)
    script = subprocess.Popen(
        ["bash", "slurm/sweep.sbatch", "nosuchsweep"],
        cwd=tmp_path,
        env=env(tmp_path, SLURM_ARRAY_TASK_ID="1", SWEEP_STAGGER="600"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # The stagger's sleep starts after the traps are set: signal the script then.
        wait_for(lambda: children(script.pid, "sleep"), 30, "the start stagger's sleep")
        napping = children(script.pid, "sleep")
        script.send_signal(sig)
        out, _ = script.communicate(timeout=30)
    finally:
        if script.poll() is None:
            script.kill()
            script.wait()
    assert script.returncode == code, out
    assert f"{sig.name} before the agents started: none started" in out, out
    assert not (tmp_path / "logs").exists(), "no agent started"
    wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in napping), 10, "sleep to end")


def readme_slurm_block() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("### SLURM cluster", 1)[1].split("\n## ", 1)[0]
    block = section.split("```\n", 1)[1].split("```", 1)[0]
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_slurm_recipe_runs_as_written(tmp_path):
    """The README's recipe, with the shared folder in tmp_path: the sweep is created, the
    sbatch line names this script and passes run_agent.sh options it takes, status answers."""
    lines = [line.replace("/shared/", f"{tmp_path}/") for line in readme_slurm_block()]
    create_line, sbatch_line = lines[0].split(), lines[1].split()
    file = REPO / create_line[4]
    done = subprocess.run(
        [sys.executable, "-m", "sweeper", "create", str(file), *create_line[5:]],
        cwd=tmp_path, env=env(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    sweep_id = done.stdout.strip()
    script = sbatch_line.index("slurm/sweep.sbatch")
    assert (REPO / sbatch_line[script]).exists()
    assert sbatch_line[script + 1] == "ID"
    options = sbatch_line[script + 2 :]
    dry = subprocess.run(
        [str(REPO / "run_agent.sh"), sweep_id, *options, "--dry-run"],
        cwd=tmp_path, env=env(tmp_path, CUDA_VISIBLE_DEVICES="1"), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert "agent 0 (GPU 1)" in dry.stdout
    status_line = next(line for line in lines if line.startswith("python -m sweeper status"))
    words = status_line.replace("ID", sweep_id).split()
    done = subprocess.run(
        [sys.executable, *words[1:]], cwd=tmp_path, env=env(tmp_path), capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "budget" in done.stdout


@pytest.mark.slow
def test_scancel_gives_the_trial_back_and_the_other_task_finishes_it(tmp_path, slurm):
    """Plain scancel: SIGTERM to every process of the task at once (batch shell, run_agent.sh,
    agent, fork server, trainer), then SIGKILL after KillWait. The trial is given back, not
    lost, and the other task resumes it under the same run id."""
    with held_array(tmp_path, slurm) as (sweep_id, job, cancelled, other):
        slurm_run(slurm, tmp_path, "scancel", f"{job}_0")
        wait_for(lambda: f"{job}_0" not in queued(slurm, tmp_path, job), 120, "task 0 to end")
        after_cancel = {
            t.number: (t.state.name, dict(t.user_attrs)) for t in trials(tmp_path, sweep_id)
        }
        print("after scancel:", after_cancel)
        release(tmp_path, other)

        def resumed_done() -> bool:
            # The retry may reach the hold point again (if it resumed before step 3): let it go.
            if held(tmp_path, cancelled):
                release(tmp_path, cancelled)
            return not queued(slurm, tmp_path, job)

        wait_for(resumed_done, 400, "task 1 to finish both trials and the array to end")

    all_trials = trials(tmp_path, sweep_id)
    print("trials:", [(t.number, t.state.name, t.user_attrs) for t in all_trials])
    assert_accounted(all_trials, budget=2)
    (given_back,) = [t for t in all_trials if store.is_lost(t)]
    assert given_back.user_attrs["run_id"] == cancelled
    (retry,) = [t for t in all_trials if t.user_attrs.get("retry_of") == given_back.number]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["run_id"] == cancelled
    assert retry.user_attrs[store.FAULTS] == 0, "a trial given back costs no retry"
    assert run_of_task(tmp_path, job, 1) == cancelled, "task 1 ran the retry last"
    folder = runs.run_dir(tmp_path / "outputs", cancelled)
    epochs = [json.loads(x)["epoch"] for x in (folder / runs.PROGRESS).read_text().splitlines()]
    assert epochs == list(range(1, MAX_EPOCHS + 1)), "every epoch exactly once"
    # The cancel stops W&B's service with the trainer: the trainer still saves the step it
    # reached (held at step 3, mid-epoch 2) and ends without a traceback.
    trial_log = (folder / runs.TRIAL_LOG).read_text()
    assert "Traceback" not in trial_log, trial_log
    assert "resumed at epoch 2 step 3" in trial_log, trial_log
    out0 = (tmp_path / f"slurm-{job}_0.out").read_text()
    assert out0.count("[sweep.sbatch] job") == 1, out0
    stops = [line for line in out0.splitlines() if line.startswith("[run_agent] stopping")]
    assert len(set(stops)) == 1, out0  # the same agents, however many copies of SIGTERM
    log0 = next((tmp_path / "logs" / f"slurm-{job}-0").glob("agent-*.log")).read_text()
    assert f"run {cancelled}: given back" in log0, log0
    assert log0.count("stopping (signal") == 1, "one stop, however many copies of SIGTERM"
    assert_no_traceback(*(tmp_path / "logs").rglob("*.log"))
