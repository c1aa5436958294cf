"""``python -m sweeper validate|create|agent|status``: sweep files and the local engine.

  validate FILE...                     check sweep files (exit 2 and one line per problem)
  create FILE [--name N] [--storage U] create (or reopen, by --name) a local sweep; prints its id
         [--from OLD_ID [--from-storage U]]   seeded with OLD_ID's finished trials that fit
         [--max-retries N] [--heartbeat S] [--grace S]   how its agents handle faults
  agent ID [--count N] [--storage U]   run trials until the sweep's budget is spent
  status ID [--storage U]              trials by state, and the best so far

Storage: ``--storage URL`` or ``$SWEEPER_STORAGE``, default ``sqlite:///outputs/sweeps.db``
(one machine); ``journal:PATH`` (a file in a folder that several machines share), or
``postgresql://...`` or ``mysql+pymysql://...`` (a database server), for agents on several
machines.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from contract.errors import UserError


def store_defaults(name: str) -> float:
    from sweeper import store

    return getattr(store, name)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sweeper",
        description="Validate W&B sweep files and run them on the embedded local engine.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    validate = sub.add_parser("validate", help="check sweep files before launching anything")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.add_argument(
        "--local",
        action="store_true",
        help="also fail on what only the local engine cannot run (otherwise a warning)",
    )
    create = sub.add_parser("create", help="create a local sweep and print its id")
    create.add_argument("file", metavar="FILE")
    create.add_argument("--name", help="reopen the sweep of this name if its file is unchanged")
    create.add_argument(
        "--max-retries",
        type=int,
        default=store_defaults("MAX_RETRIES"),
        metavar="N",
        help="retries of a trial that was lost (its agent died) or preempted (exit 75); the "
        "next fault ends it as FAIL (default %(default)s)",
    )
    create.add_argument(
        "--heartbeat",
        type=float,
        default=store_defaults("HEARTBEAT_INTERVAL"),
        metavar="SECONDS",
        help="seconds between an agent's heartbeats for its trial (default %(default)g)",
    )
    create.add_argument(
        "--grace",
        type=float,
        default=store_defaults("GRACE_PERIOD"),
        metavar="SECONDS",
        help="agents on other hosts take over a trial whose heartbeat is older than this "
        "(default %(default)g); on the owner's host a live owner always keeps its trial",
    )
    create.add_argument(
        "--from",
        dest="old",
        metavar="OLD_ID",
        help="start warm: the finished trials of this local sweep that fall inside the new "
        "space seed it (they count toward run_cap, as W&B counts prior runs)",
    )
    create.add_argument(
        "--from-storage",
        metavar="URL",
        help="where OLD_ID lives (default: the new sweep's storage)",
    )
    agent = sub.add_parser("agent", help="run trials of a local sweep")
    agent.add_argument("sweep_id", metavar="ID")
    agent.add_argument("--count", type=int, help="stop after this many trials")
    agent.add_argument(
        "--no-fork-server",
        action="store_true",
        help="start every trial as a cold subprocess (slower start, same behaviour)",
    )
    status = sub.add_parser("status", help="show a local sweep's trials and best result")
    status.add_argument("sweep_id", metavar="ID")
    for p in (create, agent, status):
        p.add_argument(
            "--storage",
            metavar="URL",
            help="sqlite:///FILE, journal:PATH (a shared folder), postgresql://... or "
            "mysql+pymysql://... (default: $SWEEPER_STORAGE, else sqlite:///outputs/sweeps.db)",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "validate":
        return _validate(args.files, args.local)
    if args.command == "create":
        from sweeper.store import Settings

        settings = Settings(args.heartbeat, args.grace, args.max_retries).check()
        if args.from_storage and not args.old:
            raise UserError("--from-storage names where --from OLD_ID lives: give --from too")
        return _create(args.file, args.name, args.storage, settings, args.old, args.from_storage)
    if args.command == "agent":
        return _agent(args.sweep_id, args.count, args.storage, not args.no_fork_server)
    return _status(args.sweep_id, args.storage)


def _validate(files: list[str], local: bool) -> int:
    from sweeper.space import local_problems
    from sweeper.validate import load_file, validate_sweep

    failed = False
    for path in files:
        cfg, problems = load_file(path)
        if cfg is not None:
            problems = validate_sweep(cfg, path)
        warnings = local_problems(cfg, path) if cfg is not None and not problems else []
        for line in problems:
            print(line, file=sys.stderr)
        for line in warnings:
            print(line if local else f"warning (local engine only): {line}", file=sys.stderr)
        failed = failed or bool(problems) or (local and bool(warnings))
        if not problems and not (local and warnings):
            print(f"{path}: ok")
    return 2 if failed else 0


def _create(path, name, storage, settings, old_id=None, old_storage=None) -> int:
    from sweeper.space import build_space, local_problems
    from sweeper.store import create_sweep, load_sweep, open_store
    from sweeper.validate import load_file, validate_sweep

    cfg, problems = load_file(path)
    if cfg is not None:
        problems = validate_sweep(cfg, path) or local_problems(cfg, path)
    if problems:
        for line in problems[:-1]:
            print(line, file=sys.stderr)
        raise UserError(problems[-1])
    store = open_store(storage)
    seeds, said = None, []
    if old_id:
        from sweeper import warm

        old_store = _existing_store(old_storage) if old_storage else store
        old = load_sweep(old_store, old_id)
        space, _ = build_space(cfg.get("parameters") or {}, path)

        def seeds(sweep_id: str) -> list:
            trials, line = warm.plan(cfg, space, old, sweep_id)
            said.append(line)
            return trials

        # The plan's bad input (a budget the seeds would spend) is found before anything is made.
        warm.plan(cfg, space, old, "the new sweep")
    sweep_id = create_sweep(store, Path(path).read_text(), cfg, path, name, settings, seeds)
    for line in said:
        print(line, file=sys.stderr)
    print(sweep_id)
    return 0


def _existing_store(url: str):
    """Open the storage of an old sweep, creating nothing where there is none."""
    from sweeper.store import journal_path, open_store, sqlite_path

    path = journal_path(url) or sqlite_path(url)
    if path is not None and not path.is_file():
        raise UserError(f"--from-storage {url}: no such file")
    return open_store(url)


def _agent(sweep_id: str, count: int | None, storage: str | None, fork: bool) -> int:
    from sweeper.agent import Agent
    from sweeper.store import load_sweep, open_store

    if count is not None and count < 1:
        raise UserError(f"--count={count}: must be >= 1")
    store = open_store(storage)
    sweep = load_sweep(store, sweep_id)
    return Agent(store, sweep, count, fork=fork).run()


def _status(sweep_id: str, storage: str | None) -> int:
    from optuna.trial import TrialState

    from sweeper import warm
    from sweeper.agent import print_best
    from sweeper.store import load_sweep, open_store, sweep_done, tally

    store = open_store(storage)
    sweep = load_sweep(store, sweep_id)
    t = tally(sweep)
    states = "  ".join(f"{s.name} {len(t.by_state(s))}" for s in TrialState)
    retries = sum(1 for x in t.trials if "retry_of" in x.user_attrs)
    seeded = sum(1 for x in t.trials if warm.describe(x))
    print(f"sweep {sweep.id} ({sweep.name}) in {store.url}")
    engine = sweep.settings
    print(
        f"method {sweep.cfg.get('method')}, budget {sweep.budget}, "
        f"metric {sweep.metric} ({sweep.goal}); max_retries {engine.max_retries}, "
        f"heartbeat {engine.heartbeat:g} s, grace {engine.grace:g} s"
    )
    print(f"trials: {states}  (retries {retries}, seeded {seeded}, counted {len(t.counted)})")
    print("finished" if sweep_done(sweep) else "not finished")
    for trial in t.trials:
        attrs = trial.user_attrs
        value = f"{trial.values[0]:.6g}" if trial.values else "-"
        note = attrs.get("reason") or attrs.get("lost") or attrs.get("void") or ""
        if "retry_of" in attrs:
            note = f"retry of {attrs['retry_of']} {note}".strip()
        note = warm.describe(trial) or note
        print(
            f"  trial {trial.number:>3} {trial.state.name:<8} run {attrs.get('run_id', '-'):<8} "
            f"{value:>10}  {note}".rstrip()
        )
    print_best(sweep)
    return 0
