"""The report's interactive charts: plotly figure specs (data and layout, plain JSON-able dicts)
drawn in report.html by the plotly.js that ships in plotly's wheel.

The specs are written by hand rather than through plotly's Python figure classes: those
validate every attribute and cost seconds with a few hundred traces; plotly.js reads the same
dicts. Every string that comes from a run (names, config values, reasons) is escaped for
plotly, which turns some tags in text (``<a href>``, ``<b>``, ``<br>``...) into live markup and
decodes entities back into plain characters. Per-run traces are capped at the ``top`` best runs
as the PNG figures are; charts over every run draw one trace per verdict.
"""

from __future__ import annotations

import html
import json
import math
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from analysis.judge import Judged
from analysis.plots import COLORS, color
from contract import metrics as M

FONT = {"size": 11}


def plotly_js() -> str:
    """The minified plotly.js bundled in plotly's wheel (found without importing plotly)."""
    spec = find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("plotly is not installed (pip install plotly)")
    path = Path(next(iter(spec.submodule_search_locations)), "package_data", "plotly.min.js")
    js = path.read_text(encoding="utf-8")
    if "</script" in js.lower():  # it would end the page's <script> element early
        raise ValueError(f"{path} holds '</script': cannot embed it in a page")
    return js


def text(value: Any) -> str:
    """A run's string as plotly shows it literally: tags stay text, entities stay as typed."""
    return html.escape(value if isinstance(value, str) else json.dumps(value), quote=False)


def _num(x: Any) -> float | None:
    """A finite number rounded for the page (5 significant digits), or None (a gap)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(f"{x:.5g}")


def _label(j: Judged) -> str:
    return text(f"#{j.row['rank']} {j.row['name']}")


def _verdicts(judged: list[Judged]) -> list[str]:
    present = {j.row["verdict"] for j in judged}
    return [v for v in COLORS if v in present] + sorted(present - set(COLORS))


def _layout(title: str, **more: Any) -> dict[str, Any]:
    return {
        "title": {"text": title, "font": {"size": 13}},
        "font": FONT,
        "margin": {"l": 60, "r": 20, "t": 40, "b": 50},
        "hovermode": "closest",
        **more,
    }


def _joined(runs: list[tuple[Judged, list[float | None], list[float | None]]]):
    """One trace's x, y and per-point run label for many runs: runs apart by a gap (None)."""
    xs: list[Any] = []
    ys: list[Any] = []
    who: list[Any] = []
    for j, x, y in runs:
        if xs:
            xs.append(None)
            ys.append(None)
            who.append(None)
        xs += x
        ys += y
        who += [j.row["run_id"]] * len(x)
    return xs, ys, who


def _lines_by_verdict(judged: list[Judged], values, name, hover: str) -> list[dict[str, Any]]:
    """One line trace per verdict holding every run of that verdict (``_joined``), for the
    per-epoch ``values(j)`` of the runs that have any; ``name(verdict, n)`` labels it and
    ``{verdict}`` in ``hover`` becomes the verdict."""
    names = {j.row["run_id"]: _label(j) for j in judged}
    data = []
    for verdict in _verdicts(judged):
        runs = []
        for j in judged:
            numbers = [_num(v) for v in values(j)] if j.row["verdict"] == verdict else []
            if any(v is not None for v in numbers):
                runs.append((j, j.curves.epochs, numbers))
        if not runs:
            continue
        xs, ys, who = _joined(runs)
        data.append({
            "type": "scatter", "mode": "lines", "name": text(name(verdict, len(runs))),
            "x": xs, "y": ys, "customdata": who,
            "text": [names[w] if w else None for w in who],
            "line": {"color": color(verdict), "width": 1},
            "hovertemplate": hover.replace("{verdict}", text(verdict)),
        })  # fmt: skip
    return data


def val_all(judged: list[Judged]) -> dict[str, Any] | None:
    """Every run's validation loss, one trace per verdict: the legend hides or isolates one."""
    data = _lines_by_verdict(
        judged,
        lambda j: j.curves.val,
        lambda verdict, n: f"{verdict} ({n})",
        "%{text}<br>epoch %{x}<br>" + M.VAL_RECON + " %{y:.4g}<extra>{verdict}</extra>",
    )
    if not data:
        return None
    return {
        "data": data,
        "layout": _layout(
            f"{M.VAL_RECON}, all {len(judged)} runs (legend: click hides a verdict,"
            " double-click keeps only it)",
            xaxis={"title": {"text": M.EPOCH}},
            yaxis={"title": {"text": M.VAL_RECON}, "type": _loss_axis(data)},
        ),
    }


def _loss_axis(data: list[dict[str, Any]]) -> str:
    ys = [y for d in data for y in d["y"] if y is not None]
    return "log" if ys and min(ys) > 0 and max(ys) / min(ys) > 10 else "linear"


def _eval_train(j: Judged) -> tuple[list[float], list[float | None]]:
    """The train loss measured the validation way, per epoch, where the run logged it."""
    rows = [r for r in j.run.val if _num(r.get(M.TRAIN_EVAL_RECON)) is not None]
    return [int(r[M.EPOCH]) for r in rows], [_num(r[M.TRAIN_EVAL_RECON]) for r in rows]


def per_run(judged: list[Judged], top: int) -> dict[str, Any] | None:
    """Train vs validation of the ``top`` best runs that logged an epoch; a run's traces share
    its legend entry (click hides the run, double-click keeps only it)."""
    shown = [j for j in judged if j.curves.epochs][:top]
    if not shown:
        return None
    data = []
    for j in shown:
        c, run_id = color(j.row["verdict"]), j.row["run_id"]
        who = _label(j)
        series = [
            ("val", j.curves.epochs, [_num(v) for v in j.curves.val], "solid", True),
            ("train", j.curves.epochs, [_num(v) for v in j.curves.train], "dash", False),
        ]
        eval_x, eval_y = _eval_train(j)
        if eval_x:
            series.append(("train, measured as val", eval_x, eval_y, "dot", False))
        for what, x, y, dash, legend in series:
            data.append({
                "type": "scatter", "mode": "lines+markers", "x": x, "y": y, "meta": run_id,
                "name": f"{who}: {text(j.row['verdict'])}", "legendgroup": run_id,
                "showlegend": legend, "line": {"color": c, "dash": dash, "width": 1.5},
                "marker": {"size": 4},
                "hovertemplate": f"{who}<br>{what}<br>epoch %{{x}}<br>%{{y:.4g}}<extra></extra>",
            })  # fmt: skip
    return {
        "data": data,
        "layout": _layout(
            f"Training (dashed; dotted: {M.TRAIN_EVAL_RECON}) vs validation (solid),"
            f" best {len(shown)} of {len(judged)} runs",
            xaxis={"title": {"text": M.EPOCH}},
            yaxis={"title": {"text": "recon loss"}, "type": _loss_axis(data)},
            legend={"font": {"size": 10}},
        ),
    }


def _dimension(label: str, values: list[Any]) -> dict[str, Any]:
    """One parallel-coordinates axis: numbers as they are (log10 past a decade, labelled with
    the values), anything else (lists such as ``channels``, strings, a run lacking the key)
    as labelled categories."""
    label = text(label)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric and all(math.isfinite(v) for v in values):
        nums = [float(v) for v in values]
        if min(nums) > 0 and max(nums) / min(nums) > 10:
            ticks = sorted(set(nums)) if len(set(nums)) <= 8 else _decades(nums)
            return {
                "label": label + " (log)", "values": [_num(math.log10(v)) for v in nums],
                "tickvals": [_num(math.log10(t)) for t in ticks],
                "ticktext": [f"{t:.3g}" for t in ticks],
            }  # fmt: skip
        dim: dict[str, Any] = {"label": label, "values": [_num(v) for v in nums]}
        if len(set(nums)) <= 8:
            dim["tickvals"] = sorted({_num(v) for v in nums})
            dim["ticktext"] = [f"{t:.4g}" for t in dim["tickvals"]]
        return dim
    keys = {json.dumps(v, sort_keys=True): v for v in values}
    try:  # in value order where values compare ([8, 8] before [16, 16]), else by their text
        order = sorted(keys, key=lambda k: (keys[k] is None, keys[k]))
    except TypeError:
        order = sorted(keys)
    where = {k: i for i, k in enumerate(order)}
    return {
        "label": label,
        "values": [where[json.dumps(v, sort_keys=True)] for v in values],
        "tickvals": list(range(len(order))),
        "ticktext": ["(unset)" if keys[k] is None else text(keys[k])[:24] for k in order],
        "range": [-0.5, len(order) - 0.5] if len(order) > 1 else [-1, 1],
    }


def _decades(nums: list[float]) -> list[float]:
    lo, hi = math.floor(math.log10(min(nums))), math.ceil(math.log10(max(nums)))
    return [10.0**e for e in range(lo, hi + 1)]


def parallel(judged: list[Judged], params: list[str]) -> dict[str, Any] | None:
    """W&B's sweep chart: an axis per swept hyperparameter and the best val loss, a line per run
    coloured by verdict; dragging along an axis keeps the runs of that range (the page lists
    them and filters the ranking table)."""
    scored = [j for j in judged if j.row["best_val_recon_loss"] is not None]
    if not params or not scored:
        return None
    verdicts = _verdicts(scored)
    k = len(verdicts)
    scale = []
    for i, v in enumerate(verdicts):  # one flat band per verdict: a discrete colour scale
        scale += [[i / k, color(v)], [(i + 1) / k, color(v)]]
    dims = [_dimension(p, [j.row["config"].get(p) for j in scored]) for p in params]
    dims.append(_dimension(f"best {M.VAL_RECON}", [j.row["best_val_recon_loss"] for j in scored]))
    return {
        "data": [
            {
                "type": "parcoords",
                "dimensions": dims,
                "line": {
                    "color": [verdicts.index(j.row["verdict"]) for j in scored],
                    "colorscale": scale,
                    "cmin": -0.5,
                    "cmax": k - 0.5,
                    "showscale": True,
                    "colorbar": {
                        "tickvals": list(range(k)),
                        "ticktext": [text(v) for v in verdicts],
                        "title": {"text": "verdict"},
                        "thickness": 12,
                    },
                },
                "labelangle": -15,
                "labelside": "bottom",
            }
        ],  # fmt: skip
        "layout": _layout(
            f"Swept values against best {M.VAL_RECON}, {len(scored)} runs (drag along an axis"
            " to keep a range; click the range to clear it)",
            margin={"l": 70, "r": 40, "t": 60, "b": 60},
        ),
        # The page's own key: which run each line is, for the list of the brushed runs (shown
        # as page text, not by plotly: not escaped for plotly).
        "runs": [[j.row["run_id"], f"#{j.row['rank']} {j.row['name']}"] for j in scored],
    }


def params_vs_loss(judged: list[Judged], params: list[str]) -> dict[str, Any] | None:
    """Best val loss against each swept value: a panel per hyperparameter, a trace per verdict."""
    scored = [j for j in judged if j.row["best_val_recon_loss"] is not None]
    if not params or not scored:
        return None
    cols = min(3, len(params))
    rows = math.ceil(len(params) / cols)
    layout = _layout(
        f"Best {M.VAL_RECON} against each swept hyperparameter",
        grid={"rows": rows, "columns": cols, "pattern": "independent", "ygap": 0.45},
        height=260 * rows + 80,
        showlegend=True,
    )
    data = []
    verdicts = _verdicts(scored)
    for n, param in enumerate(params, 1):
        have = [j for j in scored if param in j.row["config"]]
        values = [j.row["config"][param] for j in have]
        numeric = values and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
        )
        axis: dict[str, Any] = {"title": {"text": text(param)}}
        if numeric:
            nums = [float(v) for v in values]
            if min(nums) > 0 and max(nums) / min(nums) > 10:
                axis["type"] = "log"
        else:
            keys = {json.dumps(v, sort_keys=True): v for v in values}
            try:
                order = sorted(keys, key=lambda k: (keys[k] is None, keys[k]))
            except TypeError:
                order = sorted(keys)
            axis.update(
                type="category", categoryorder="array", categoryarray=[text(k) for k in order]
            )
        suffix = "" if n == 1 else str(n)
        layout[f"xaxis{suffix}"] = axis
        layout[f"yaxis{suffix}"] = {"title": {"text": "best val" if n % cols == 1 else ""}}
        for verdict in verdicts:
            mine = [j for j in have if j.row["verdict"] == verdict]
            if not mine:
                continue
            xs = [
                _num(v) if numeric else text(json.dumps(v, sort_keys=True))
                for v in (j.row["config"][param] for j in mine)
            ]
            data.append({
                "type": "scatter", "mode": "markers", "x": xs,
                "y": [_num(j.row["best_val_recon_loss"]) for j in mine],
                "customdata": [j.row["run_id"] for j in mine],
                "text": [_label(j) for j in mine], "name": text(verdict),
                "legendgroup": verdict, "showlegend": n == 1,
                "marker": {"color": color(verdict), "size": 7},
                "xaxis": f"x{suffix}", "yaxis": f"y{suffix}",
                "hovertemplate": "%{text}<br>" + text(param) + " %{x}<br>best %{y:.4g}"
                "<extra>" + text(verdict) + "</extra>",
            })  # fmt: skip
    return {"data": data, "layout": layout}


def time_per_epoch(judged: list[Judged]) -> dict[str, Any] | None:
    """Every run's time per epoch, a trace per verdict; the flagged slowdowns marked."""
    data = _lines_by_verdict(
        judged,
        lambda j: j.curves.times,
        lambda verdict, n: verdict,
        "%{text}<br>epoch %{x}<br>%{y:.3g} s<extra></extra>",
    )
    if not data:
        return None
    slow = [(j, s) for j in judged for s in j.row["slow_epochs"]]
    if slow:
        data.append({
            "type": "scatter", "mode": "markers", "name": text(f"slowdown ({len(slow)})"),
            "x": [s["epoch"] for _, s in slow], "y": [_num(s["time_per_epoch"]) for _, s in slow],
            "customdata": [j.row["run_id"] for j, _ in slow],
            "text": [f"{_label(j)}: {s['x_median']:.1f}x the median" for j, s in slow],
            "marker": {"symbol": "x", "size": 10, "color": "black"},
            "hovertemplate": "%{text}<br>epoch %{x}<br>%{y:.3g} s<extra>slowdown</extra>",
        })  # fmt: skip
    return {
        "data": data,
        "layout": _layout(
            f"{M.TIME_PER_EPOCH} (x: slowdowns)",
            xaxis={"title": {"text": M.EPOCH}},
            yaxis={"title": {"text": "seconds"}},
        ),
    }


def importance_bars(importances: dict[str, float]) -> dict[str, Any]:
    names = list(importances)[::-1]
    return {
        "data": [
            {
                "type": "bar",
                "orientation": "h",
                "x": [_num(importances[n]) for n in names],
                "y": [text(n) for n in names],
                "marker": {"color": "#555555"},
                "hovertemplate": "%{y}: %{x:.3f}<extra></extra>",
            }
        ],  # fmt: skip
        "layout": _layout(
            "fANOVA importance", height=60 + 28 * len(names), margin={"l": 140, "t": 40}
        ),
    }
