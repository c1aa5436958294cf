"""Claim latency of the local engine with parallel agents, per storage: SQLite (one machine),
the journal file (a shared folder) and PostgreSQL (a database server).

A claim is what an agent does before each trial: reap dead agents' trials, ask the sampler for
the next trial, record its owner and first heartbeat (``sweeper.store.claim``). Here N agent
processes (8 by default) claim back to back on one sweep, each trial told COMPLETE at once:
the worst case, every agent contending at every moment (real agents claim once per trial).
The sweep is a random search over one continuous parameter, so the sampler costs next to
nothing and the storage is what is measured. Storages alternate (ABBA), so the machine's load
hits all alike; ratios are to SQLite. PostgreSQL is started as the tests start it (a
temporary server from ``pg_config --bindir``, as the ``postgres`` user when run as root);
without its binaries it is left out, and the script says so.

    python bench/claim_latency.py [--agents 8] [--claims 20] [--rounds 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SWEEP = {
    "name": "claims",
    "program": "none.py",
    "method": "random",
    "metric": {"name": "val/best_recon_loss", "goal": "minimize"},
    "run_cap": 100_000,
    "parameters": {"x": {"min": 0.0, "max": 1.0}},
}


def worker(url: str, sweep_id: str, claims: int, go: Path, out: Path) -> None:
    """One agent's claims, timed; starts when ``go`` exists, so all agents start together."""
    from sweeper import store as st

    opened = st.open_store(url)
    sweep = st.load_sweep(opened, sweep_id)
    while not go.exists():
        time.sleep(0.01)
    times = []
    for _ in range(claims):
        start = time.perf_counter()
        trial = st.claim(sweep, opened)
        times.append(time.perf_counter() - start)
        if trial is not None:
            sweep.study.tell(trial, trial.params["x"])
    out.write_text(json.dumps(times))


def run(url: str, agents: int, claims: int, work: Path) -> list[float]:
    """Every claim's seconds, from ``agents`` processes on a new sweep in ``url``."""
    import yaml

    from sweeper import store as st

    text = yaml.safe_dump(SWEEP)
    sweep_id = st.create_sweep(st.open_store(url), text, SWEEP, "bench", None)
    go = work / f"go-{sweep_id}"
    outs = [work / f"{sweep_id}-{i}.json" for i in range(agents)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", url, sweep_id, str(claims), str(go), str(out)],
            env=env,
        )
        for out in outs
    ]
    time.sleep(0.5)
    # Imports done (optuna, the storage opened): the workers wait for the go file.
    while any(p.poll() is None for p in procs) and not _all_waiting(procs):
        time.sleep(0.1)
    go.touch()
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"a worker failed on {url} (exit {p.returncode})")
    return [t for out in outs for t in json.loads(out.read_text())]


def _all_waiting(procs: list[subprocess.Popen]) -> bool:
    """Every worker sleeps in its wait for the go file (state S and no CPU for a moment)."""
    before = [_cpu(p.pid) for p in procs]
    time.sleep(0.3)
    return before == [_cpu(p.pid) for p in procs]


def _cpu(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@contextlib.contextmanager
def postgres() -> Iterator[str | None]:
    """A temporary PostgreSQL server's base URL, as the tests start one; None without it."""
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        yield None
        return
    done = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
    bindir = Path(done.stdout.strip())
    if not (bindir / "initdb").exists():
        yield None
        return
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    top = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    data = top / "data"
    if as_postgres:
        shutil.chown(top, "postgres", "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def pg(*args: str) -> None:
        subprocess.run([*as_postgres, *args], check=True, capture_output=True, timeout=120)

    try:
        pg(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
        options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(top / "log"),
           "-o", options, "start")  # fmt: skip
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        if (data / "postmaster.pid").exists():
            pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(top, ignore_errors=True)


def new_database(base: str, name: str) -> str:
    port = base.rsplit(":", 1)[1]
    bindir = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
    createdb = Path(bindir.stdout.strip()) / "createdb"
    subprocess.run([str(createdb), "-h", "127.0.0.1", "-p", port, "-U", "postgres", name],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    return f"{base}/{name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--claims", type=int, default=20, help="claims per agent and round")
    parser.add_argument("--rounds", type=int, default=2, help="ABBA rounds over the storages")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        url, sweep_id, claims, go, out = args.worker
        worker(url, sweep_id, int(claims), Path(go), Path(out))
        return
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-claims-") as tmp, postgres() as server:
        work = Path(tmp)
        kinds = ["sqlite", "journal"] + (["postgresql"] if server else [])
        if server is None:
            print("PostgreSQL left out: no server binaries (pg_config --bindir)")
        order = [k for r in range(args.rounds) for k in (kinds if r % 2 == 0 else kinds[::-1])]
        for n, kind in enumerate(order):
            url = {
                "sqlite": f"sqlite:///{work / f'sweeps{n}.db'}",
                "journal": f"journal:{work / f'sweeps{n}.journal'}",
                "postgresql": new_database(server, f"claims{n}") if server else "",
            }[kind]
            got = run(url, args.agents, args.claims, work)
            times.setdefault(kind, []).extend(got)
            print(f"  round {n + 1}: {kind:<10} median {statistics.median(got) * 1e3:7.1f} ms")
    load_after = os.getloadavg()
    base = statistics.median(times["sqlite"])
    print(
        f"claim latency, {args.agents} agents claiming back to back, "
        f"{args.claims} claims each per round, {args.rounds} rounds:"
    )
    print(f"{'storage':<11}{'median ms':>10}{'p90 ms':>9}{'max ms':>9}{'/ SQLite':>10}")
    for kind, got in times.items():
        q = statistics.quantiles(got, n=10)
        med = statistics.median(got)
        print(
            f"{kind:<11}{med * 1e3:>10.1f}{q[-1] * 1e3:>9.1f}{max(got) * 1e3:>9.1f}"
            f"{med / base:>10.2f}"
        )
    print(
        "load average (1, 5, 15 min): before "
        + ", ".join(f"{x:.1f}" for x in load_before)
        + "; after "
        + ", ".join(f"{x:.1f}" for x in load_after)
        + f"; {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
