"""How to start the next sweep warm, in one line of the report.

Local sweeps: ``python -m sweeper create next_sweep.yaml --from ID`` (the engine picks the
trials that fit). W&B: ``wandb sweep --prior_run ID ...``, listing only the finished runs whose
values fall inside the new space, since W&B's bayes ignores the others (wandb/wandb#2586).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from analysis.records import FINISHED

# Run-config keys that say where things are: a run moved elsewhere is still the same run.
LOCATION_KEYS = {"output_dir", "data_dir", "datalist", "cache_dir", "perceptual_weights_path"}


def fitting_runs(cfg: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The finished runs whose configuration lies inside the next sweep's space."""
    from contract.config import DEFAULTS
    from sweeper.space import build_space
    from sweeper.warm import fit

    space, problems = build_space(cfg.get("parameters") or {}, "next_sweep.yaml")
    if problems:
        return []
    out = []
    for row in rows:
        if row.get("state") != FINISHED or row.get("best_val_recon_loss") is None:
            continue
        if row.get("engine_state") not in (None, "COMPLETE"):
            continue
        config = {
            k: v
            for k, v in (row.get("config") or {}).items()
            if k in DEFAULTS and k not in LOCATION_KEYS
        }
        if fit(space, config)[0] is not None:
            out.append(row)
    return out


def lines(
    cfg: dict[str, Any], rows: list[dict[str, Any]], file: Path, local: list[tuple[str, str]]
) -> list[str]:
    """The command that starts ``file`` warm: ``local`` = (sweep id, storage URL) of the local
    engine's sweeps, when the runs came from it."""
    fits = fitting_runs(cfg, rows)
    if local:
        from sweeper.store import DEFAULT_STORAGE

        sweep_id, url = local[0]
        storage = "" if url == DEFAULT_STORAGE else f" --storage {url}"
        return [
            f"start it warm: python -m sweeper create {file} --from {sweep_id}{storage} "
            f"({len(fits)} finished runs fit its space; they count toward its run_cap)"
        ]
    if not fits:
        return ["start it warm: no finished run fits its space (nothing to pass as --prior_run)"]
    where = ""
    path = (fits[0].get("sources") or [""])[0].split("/")
    if len(path) == 3:
        where = f" --entity {path[0]} --project {path[1]}"
    priors = " ".join(f"--prior_run {r['run_id']}" for r in fits)
    left = len([r for r in rows if r.get("state") == FINISHED]) - len(fits)
    return [
        f"start it warm: wandb sweep{where} {priors} {file} ({len(fits)} finished runs fit its "
        f"space, {left} do not and W&B's bayes would ignore them)"
    ]
