"""The report's figures (matplotlib, Agg). Each figure's cost stays flat with the run count:
per-run panels are capped at the ``top`` best runs, all runs share one combined panel.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from analysis.judge import Judged
from contract import metrics as M

COLORS = {
    "good": "#2ca02c",
    "overfitting": "#ff7f0e",
    "underfitting": "#1f77b4",
    "diverged": "#d62728",
    "crashed": "#7f7f7f",
    "insufficient": "#bcbd22",
    "pruned": "#9467bd",
}
OTHER = "#000000"  # a verdict without a colour of its own


def color(verdict: str) -> str:
    return COLORS.get(verdict, OTHER)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finite_xy(xs: list[float], ys: list[float]) -> tuple[list[float], list[float]]:
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(y)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _legend(ax, verdicts: set[str], outside: bool = False) -> None:
    from matplotlib.lines import Line2D

    order = [v for v in COLORS if v in verdicts] + sorted(verdicts - set(COLORS))
    handles = [Line2D([], [], color=color(v), label=v) for v in order]
    if handles:
        where = (
            {"loc": "upper left", "bbox_to_anchor": (1.0, 1.0)}
            if outside
            else {"loc": "upper right"}
        )
        ax.legend(handles=handles, fontsize=7, **where)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=80)
    _plt().close(fig)
    return path


def loss_curves(judged: list[Judged], out: Path, top: int) -> Path:
    """Small multiples of train vs val for the best ``top`` runs, plus all runs' val together."""
    from matplotlib.collections import LineCollection

    plt = _plt()
    shown = judged[:top]
    cols = 4
    rows = 1 + math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    combined = axes[0][0]
    combined.set_visible(True)
    segments = [list(zip(*_finite_xy(j.curves.epochs, j.curves.val), strict=True)) for j in judged]
    keep = [(s, color(j.row["verdict"])) for s, j in zip(segments, judged, strict=True) if s]
    if keep:
        combined.add_collection(
            LineCollection([k[0] for k in keep], colors=[k[1] for k in keep], lw=0.8)
        )
        combined.autoscale()
        if all(y > 0 for s, _ in keep for _, y in s):
            combined.set_yscale("log")
    combined.set_title(f"{M.VAL_RECON}, all {len(judged)} runs", fontsize=8)
    _legend(combined, {j.row["verdict"] for j in judged})
    for i, j in enumerate(shown):
        ax = axes[1 + i // cols][i % cols]
        ax.set_visible(True)
        c = color(j.row["verdict"])
        ax.plot(*_finite_xy(j.curves.epochs, j.curves.train), color=c, ls="--", lw=1, label="train")
        ax.plot(*_finite_xy(j.curves.epochs, j.curves.val), color=c, lw=1.5, label="val")
        ax.set_title(
            f"#{j.row['rank']} {j.row['name'][:20]}: {j.row['verdict']}", fontsize=8, color=c
        )
        ax.tick_params(labelsize=6)
        if i == 0:
            ax.legend(fontsize=6)
    fig.suptitle("Training vs validation recon loss per epoch (dashed: train)", fontsize=9)
    # Fixed margins: tight_layout measures every label and costs seconds with many panels.
    fig.subplots_adjust(left=0.06, right=0.98, top=0.93, bottom=0.05, hspace=0.45, wspace=0.3)
    return _save(fig, out / "loss_curves.png")


def _axis_values(values: list[Any]) -> tuple[list[float], list[str] | None, bool]:
    """Numbers plot as they are (log axis past a decade); anything else as categories."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        nums = [float(v) for v in values]
        return nums, None, min(nums) > 0 and max(nums) / min(nums) > 10
    labels = sorted({json.dumps(v) for v in values})
    return [float(labels.index(json.dumps(v))) for v in values], labels, False


def params_vs_loss(judged: list[Judged], params: list[str], out: Path) -> Path | None:
    """Best val loss against each swept hyperparameter, one point per run."""
    scored = [j for j in judged if j.row["best_val_recon_loss"] is not None]
    if not params or not scored:
        return None
    plt = _plt()
    cols = min(3, len(params))
    rows = math.ceil(len(params) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat[len(params) :]:
        ax.set_visible(False)
    for ax, param in zip(axes.flat, params, strict=False):
        have = [j for j in scored if param in j.row["config"]]
        ax.set_xlabel(param, fontsize=8)
        if not have:
            continue
        xs, labels, log = _axis_values([j.row["config"][param] for j in have])
        ax.scatter(xs, [j.row["best_val_recon_loss"] for j in have], s=12,
                   c=[color(j.row["verdict"]) for j in have])  # fmt: skip
        if labels:
            ax.set_xticks(range(len(labels)), labels, fontsize=6, rotation=30)
        if log:
            ax.set_xscale("log")
        ax.set_ylabel(f"best {M.VAL_RECON}", fontsize=7)
        ax.tick_params(labelsize=6)
    _legend(axes.flat[0], {j.row["verdict"] for j in scored})
    fig.subplots_adjust(
        left=0.08, right=0.98, top=0.95, bottom=0.15 / rows, hspace=0.5, wspace=0.35
    )
    return _save(fig, out / "params_vs_loss.png")


def _parallel_axis(values: list[Any]) -> tuple[list[float], list[tuple[float, str]]]:
    """Positions in [0, 1] (NaN where a run lacks the value) and the axis's tick labels."""
    present = [v for v in values if v is not None]
    if not present:
        return [math.nan] * len(values), []
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        nums = [float(v) for v in present]
        log = min(nums) > 0 and max(nums) / min(nums) > 10
        lo, hi = (math.log10(min(nums)), math.log10(max(nums))) if log else (min(nums), max(nums))

        def pos(x: float) -> float:
            x = math.log10(x) if log else x
            return 0.5 if hi == lo else (x - lo) / (hi - lo)

        if len(set(nums)) <= 5:
            ticks = sorted(set(nums))
        else:  # the ends and the middle of the axis
            mid = (lo + hi) / 2
            ticks = [min(nums), 10**mid if log else mid, max(nums)]
        return (
            [math.nan if v is None else pos(float(v)) for v in values],
            [(pos(t), f"{t:.3g}") for t in ticks],
        )
    unique = {json.dumps(v): v for v in present}
    try:  # in value order where values compare ([8, 8] before [16, 16]), else by their text
        labels = sorted(unique, key=lambda k: unique[k])
    except TypeError:
        labels = sorted(unique)
    step = 1 / (len(labels) - 1) if len(labels) > 1 else 0.0
    where = {lbl: 0.5 if len(labels) == 1 else i * step for i, lbl in enumerate(labels)}
    return (
        [math.nan if v is None else where[json.dumps(v)] for v in values],
        [(where[lbl], lbl[:18]) for lbl in labels],
    )


def parallel_coordinates(judged: list[Judged], params: list[str], out: Path) -> Path | None:
    """The sweep chart W&B shows first: one vertical axis per swept hyperparameter and the best
    val loss last, one line per run coloured by its verdict (best runs drawn on top)."""
    from matplotlib.collections import LineCollection

    scored = [j for j in judged if j.row["best_val_recon_loss"] is not None]
    if not params or not scored:
        return None
    scored = scored[::-1]  # worst first, so the best lines end up on top
    names = [*params, f"best {M.VAL_RECON}"]
    columns = [_parallel_axis([j.row["config"].get(p) for j in scored]) for p in params]
    columns.append(_parallel_axis([j.row["best_val_recon_loss"] for j in scored]))
    segments, colors = [], []
    for k, j in enumerate(scored):
        points = [(i, col[0][k]) for i, col in enumerate(columns)]
        # A run without some value breaks its line there instead of dropping to an axis end.
        for a, b in zip(points, points[1:], strict=False):
            if math.isfinite(a[1]) and math.isfinite(b[1]):
                segments.append([a, b])
                colors.append(color(j.row["verdict"]))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(names) + 2), 3.8))
    ax.add_collection(LineCollection(segments, colors=colors, lw=1.0, alpha=0.8))
    for i, (_, ticks) in enumerate(columns):
        ax.axvline(i, color="#888888", lw=0.8, zorder=0)
        for y, label in ticks:
            ax.text(i - 0.04, y, label, fontsize=6, ha="right", va="center")
    ax.set_xlim(-0.4, len(names) - 0.8)
    ax.set_ylim(-0.06, 1.06)
    ax.set_xticks(range(len(names)), names, fontsize=7, rotation=15)
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    ax.set_title(
        f"Swept values against best {M.VAL_RECON} ({len(scored)} runs, coloured by verdict)",
        fontsize=9,
    )
    _legend(ax, {j.row["verdict"] for j in scored}, outside=True)
    fig.subplots_adjust(left=0.07, right=0.84, top=0.9, bottom=0.18)
    return _save(fig, out / "parallel_coordinates.png")


def time_per_epoch(judged: list[Judged], out: Path) -> Path | None:
    """All runs' time_per_epoch on one panel; flagged slow epochs marked."""
    from matplotlib.collections import LineCollection

    segments = [
        list(zip(*_finite_xy(j.curves.epochs, j.curves.times), strict=True)) for j in judged
    ]
    if not any(segments):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3))
    keep = [(s, color(j.row["verdict"])) for s, j in zip(segments, judged, strict=True) if s]
    ax.add_collection(LineCollection([k[0] for k in keep], colors=[k[1] for k in keep], lw=0.8))
    slow = [(s["epoch"], s["time_per_epoch"]) for j in judged for s in j.row["slow_epochs"]]
    if slow:
        ax.scatter(
            *zip(*slow, strict=True), marker="x", color="black", s=25, label="slow epoch", zorder=3
        )
        ax.legend(fontsize=7)
    ax.autoscale()
    ax.set_xlabel(M.EPOCH)
    ax.set_ylabel(f"{M.TIME_PER_EPOCH} (s)")
    ax.set_title("Time per epoch (x: slowdowns)", fontsize=9)
    fig.tight_layout()
    return _save(fig, out / "time_per_epoch.png")


def ranking(judged: list[Judged], out: Path, top: int) -> Path | None:
    scored = [j for j in judged if j.row["best_val_recon_loss"] is not None][:top]
    if not scored:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(scored) + 1))
    names = [f"#{j.row['rank']} {j.row['name'][:24]}" for j in scored]
    ax.barh(names[::-1], [j.row["best_val_recon_loss"] for j in scored][::-1],
            color=[color(j.row["verdict"]) for j in scored][::-1])  # fmt: skip
    ax.set_xlabel(f"best {M.VAL_RECON}")
    ax.tick_params(labelsize=7)
    ax.set_title(f"Ranking (best {len(scored)} of {len(judged)} runs)", fontsize=9)
    _legend(ax, {j.row["verdict"] for j in scored})
    fig.tight_layout()
    return _save(fig, out / "ranking.png")


def importance_bars(importances: dict[str, float], out: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(importances) + 1))
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names], color="#555555")
    ax.set_xlabel("fANOVA importance")
    ax.tick_params(labelsize=8)
    fig.tight_layout()
    return _save(fig, out / "importance.png")
