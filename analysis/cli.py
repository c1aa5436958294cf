"""``python -m analysis report SOURCE [--sweep ID] [--out DIR] [--tag] [--<threshold> V ...]``.

SOURCE is one of:
- a folder: every offline (or synced) W&B run under it, read with ``wandb leet inspect --json``;
- ``ENTITY/PROJECT/SWEEP_ID``: the sweep's runs through the W&B public API;
- a local sweep id (8 characters, as ``python -m sweeper create`` prints it): the offline runs of
  that sweep under ``outputs/wandb`` (or ``$WANDB_DIR/wandb``).
"""

from __future__ import annotations

import argparse
import os
import re
import threading
from pathlib import Path

from analysis.diagnose import THRESHOLD_FIELDS, Thresholds
from analysis.wandb_api import DEFAULT_TIMEOUT_S
from contract.errors import ConfigError, UserError

LOCAL_SWEEP_ID = re.compile(r"^[a-z0-9]{8}$")
API_PATH = re.compile(r"^[^/\s]+/[^/\s]+/[^/\s]+$")
DEFAULT_RUNS_DIR = Path("outputs") / "wandb"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="analysis", description="Judge a sweep's runs and write a report."
    )
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("report", help="verdicts, plots and next sweep for one sweep")
    r.add_argument("source", help="folder of runs, ENTITY/PROJECT/SWEEP_ID, or a local sweep id")
    r.add_argument(
        "--sweep", help="only the runs of this sweep id (a folder holding several sweeps)"
    )
    r.add_argument(
        "--out", type=Path, help="report folder (default reports/<sweep id or folder name>)"
    )
    r.add_argument(
        "--storage",
        help="local engine's storage (URL or journal:PATH), for its trial states"
        " (default $SWEEPER_STORAGE or sqlite:///outputs/sweeps.db, as the sweeper)",
    )
    r.add_argument(
        "--tag",
        action="store_true",
        help="W&B source: write each verdict to its run as a tag and as the summary keys"
        " verdict, verdict_reasons and verdict_remedy",
    )
    r.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help="W&B source: seconds to wait for the server to answer a request"
        f" (default {DEFAULT_TIMEOUT_S:g})",
    )
    r.add_argument(
        "--workers", type=int, default=0, help="runs read at once (default 2 x CPUs, at most 16)"
    )
    r.add_argument(
        "--top", type=int, default=12, help="runs drawn one by one in the plots (best first)"
    )
    r.add_argument(
        "--running-window",
        type=float,
        default=120.0,
        help="a run without exit record written within this many seconds is running, else crashed",
    )
    t = r.add_argument_group("thresholds (see analysis/diagnose.py)")
    for name, f in THRESHOLD_FIELDS.items():
        kind = int if f.type in ("int", int) else float
        flags = sorted({f"--{name}", f"--{name.replace('_', '-')}"})
        t.add_argument(
            *flags,
            dest=name,
            type=kind,
            default=f.default,
            help=f"{f.metadata['help']} (default {f.default})",
        )
    return p


def _resolve(source: str, sweep: str | None) -> tuple[str, Path | str, str | None]:
    """("folder", path, sweep) or ("api", path, None)."""
    path = Path(source)
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{source}: not a folder of W&B runs")
        return "folder", path, sweep
    if LOCAL_SWEEP_ID.match(source):
        root = (
            Path(os.environ["WANDB_DIR"]) / "wandb"
            if os.environ.get("WANDB_DIR")
            else DEFAULT_RUNS_DIR
        )
        if not root.is_dir():
            raise UserError(f"{source}: local sweep id, but {root} holds no runs")
        return "folder", root, source
    if API_PATH.match(source):
        if sweep and sweep != source.rsplit("/", 1)[-1]:
            raise UserError(f"--sweep {sweep} contradicts the sweep path {source}")
        return "api", source, None
    raise UserError(
        f"{source}: no such folder, and not ENTITY/PROJECT/SWEEP_ID or a local sweep id"
    )


def _default_out(kind: str, where: Path | str, sweep: str | None) -> Path:
    if sweep:
        return Path("reports") / sweep
    if kind == "api":
        return Path("reports") / str(where).rsplit("/", 1)[-1]
    folder = Path(where).resolve()
    return Path("reports") / (folder.parent.name if folder.name == "wandb" else folder.name)


def _warm_imports() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import optuna.importance  # noqa: F401


def main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    for name in ("workers", "top", "running_window"):
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')}", getattr(args, name), "must be >= 0")
    if not args.timeout > 0:
        raise ConfigError("--timeout", args.timeout, "must be > 0")
    th = Thresholds(**{name: getattr(args, name) for name in THRESHOLD_FIELDS})
    kind, where, sweep = _resolve(args.source, args.sweep)
    if args.tag and kind != "api":
        raise UserError("--tag writes verdicts to W&B runs: use it with ENTITY/PROJECT/SWEEP_ID")
    if args.storage and kind == "api":
        raise UserError("--storage names a local engine's storage: not for a W&B sweep path")

    # Imported here so that a bad argument fails fast, before matplotlib and Optuna load.
    from analysis import judge, report

    out = args.out or _default_out(kind, where, sweep)
    report.check_out(out)
    # The report's heavy imports load while the runs are read (that waits on subprocesses).
    threading.Thread(target=_warm_imports, daemon=True).start()
    handles, local, unreadable = None, [], []
    if kind == "folder":
        from analysis import engine
        from analysis.offline import read_folder

        runs, notes, unreadable = read_folder(Path(where), sweep, args.workers, args.running_window)
        local, more = engine.read_sweeps(
            engine.storage_url(args.storage),
            {r.sweep_id for r in runs if r.sweep_id},
            explicit=args.storage is not None,
        )
        engine.attach(runs, local)
        notes += more
        label = report.sweep_label(runs, local, Path(where).name)
        fetch = report.copy_local
    else:
        from analysis import wandb_api

        runs, handles, unreadable = wandb_api.read_sweep(
            str(where), workers=args.workers or 8, timeout=args.timeout
        )
        notes = []
        entity, project, sweep_id = wandb_api.split_path(str(where))
        label = report.SweepLabel(f"{sweep_id} in {entity}/{project}", sweep_id)
        fetch = wandb_api.media_fetcher(handles)
    for note in notes:
        print(f"note: {note}")
    for u in unreadable:
        print(f"unreadable: {u.source}: {u.reason}")
    judged = judge.judge(runs, th)
    if handles is not None:
        for j in report.triplet_runs(judged)[: report.TRIPLET_RUNS]:
            wandb_api.load_triplet_refs(handles, j.run)
    report.write_report(
        judged, out, label, th, top=args.top, fetch=fetch, engine=local,
        unreadable=unreadable, notes=notes,
    )  # fmt: skip
    if args.tag:
        wandb_api.tag_verdicts(handles, [j.row for j in judged])
    print(report.counts_line([j.row for j in judged], unreadable))
    print(
        f"report: {out / 'report.html'} (also report.md, verdicts.json, verdicts.csv, next_sweep.yaml)"
    )
    return 0
