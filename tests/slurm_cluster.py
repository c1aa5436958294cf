"""A one-node SLURM cluster for tests: munge, slurmctld and slurmd from the machine's packages,
started with a temporary slurm.conf on free ports, stopped by the pids they wrote."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CRED_EXPIRE = 10  # seconds
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing() -> str | None:
    """Why a cluster cannot start here, or None."""
    gone = [d for d in DAEMONS if shutil.which(d) is None and not Path("/usr/sbin", d).exists()]
    if gone:
        return f"SLURM/munge not installed (missing {', '.join(gone)}; apt-get install slurmctld slurmd slurm-client munge)"
    if os.geteuid() != 0:
        return "the SLURM daemons need root here (SlurmUser=root, munged as munge)"
    return None


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _stop(pidfile: Path) -> None:
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


@contextmanager
def cluster() -> Iterator[dict[str, str]]:
    """Yields the environment clients need (SLURM_CONF)."""
    top = Path(tempfile.mkdtemp(prefix="vae-slurm-"))
    os.chmod(top, 0o755)
    munge_dir = top / "munge"
    munge_dir.mkdir()
    shutil.chown(munge_dir, "munge", "munge")
    key = Path("/etc/munge/munge.key")
    if not key.exists():  # a fresh machine whose package did not make one
        maker = shutil.which("mungekey") or _binary("mungekey")
        if Path(maker).exists():
            subprocess.run(["runuser", "-u", "munge", "--", maker, "--create"], check=True)
        else:
            subprocess.run([_binary("create-munge-key")], check=True, input="y\n", text=True)
    socket_path = munge_dir / "munge.socket"
    munge_pid = munge_dir / "munged.pid"
    subprocess.run(
        [
            "runuser", "-u", "munge", "--", _binary("munged"),
            f"--socket={socket_path}", f"--pid-file={munge_pid}",
            f"--log-file={munge_dir / 'munged.log'}", f"--seed-file={munge_dir / 'seed'}",
        ],
        check=True, timeout=30,
    )  # fmt: skip
    host = socket.gethostname().split(".")[0]
    cpus = "2"
    probe = subprocess.run([_binary("slurmd"), "-C"], capture_output=True, text=True)
    for word in probe.stdout.split():
        if word.startswith("CPUs="):
            cpus = word.split("=", 1)[1]
    conf = top / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=vaetest",
                f"SlurmctldHost={host}(127.0.0.1)",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                # A requeued job may start again only once its old credential has expired
                # (cred_expire, 120 s by default): short here, so a requeue is tested quickly.
                f"AuthInfo=socket={socket_path},cred_expire={CRED_EXPIRE}",
                "SlurmUser=root",
                f"SlurmctldPort={_free_port()}",
                f"SlurmdPort={_free_port()}",
                f"SlurmctldPidFile={top / 'slurmctld.pid'}",
                f"SlurmdPidFile={top / 'slurmd.pid'}",
                f"SlurmctldLogFile={top / 'slurmctld.log'}",
                f"SlurmdLogFile={top / 'slurmd.log'}",
                f"StateSaveLocation={top / 'state'}",
                f"SlurmdSpoolDir={top / 'spool'}",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core",
                "JobAcctGatherType=jobacct_gather/none",
                "MpiDefault=none",
                "ReturnToService=2",
                "JobRequeue=1",
                "KillWait=30",
                "SchedulerType=sched/backfill",
                f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN",
                f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP "
                "OverSubscribe=FORCE:4",
                "",
            ]
        )
    )
    (top / "state").mkdir()
    (top / "spool").mkdir()
    env = dict(os.environ, SLURM_CONF=str(conf))
    try:
        subprocess.run([_binary("slurmctld"), "-f", str(conf)], check=True, env=env, timeout=60)
        subprocess.run([_binary("slurmd"), "-f", str(conf)], check=True, env=env, timeout=60)
        deadline = time.monotonic() + 60
        while True:
            state = subprocess.run(
                ["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=env
            ).stdout.strip()
            if state in ("idle", "mix", "alloc"):
                break
            if time.monotonic() > deadline:
                log = (top / "slurmctld.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the SLURM node did not come up (sinfo: {state!r}):\n{log}")
            time.sleep(0.3)
        yield {"SLURM_CONF": str(conf), "SLURM_TOP": str(top)}
    finally:
        _stop(top / "slurmd.pid")
        _stop(top / "slurmctld.pid")
        _stop(munge_pid)
        shutil.rmtree(top, ignore_errors=True)
