"""The report as a list of sections, built once and rendered twice: Markdown and HTML.

A section holds blocks: text, a bullet list, a table, a figure, a chart, a gallery of images, a
viewer of images. A table cell or a section title may carry a verdict, which HTML colours as the
plots do. Image paths are relative to the report folder: Markdown links them, HTML embeds them
(the page opens offline). A chart is a PNG in Markdown (it still reads on GitHub) and an
interactive plotly chart in HTML; plotly.js is embedded once in the page.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.plots import color


@dataclass(frozen=True)
class Verdict:
    """A verdict in a table cell."""

    name: str

    def __str__(self) -> str:
        return self.name


Cell = str | Verdict


@dataclass
class Text:
    text: str


@dataclass
class Items:
    items: list[str]


@dataclass
class Table:
    head: list[str]
    rows: list[list[Cell]]
    sortable: bool = False  # HTML: a click on a column's head sorts by it
    row_ids: list[str] | None = None  # HTML: the run of each row (the brushed runs filter it)


@dataclass
class Figure:
    caption: str
    path: str


@dataclass
class Gallery:
    caption: str
    images: list[tuple[str, str]]  # (label, path)


@dataclass
class Chart:
    """``spec`` (plotly's data and layout) drawn interactively in HTML; Markdown shows ``path``,
    the PNG of the same figure. Either may be None: that renderer shows nothing."""

    caption: str
    key: str  # names the chart in the page: id "chart-<key>"
    path: str | None
    spec: dict[str, Any] | None


@dataclass
class Viewer:
    """Images to step through with a slider in HTML; Markdown shows ``stills`` side by side."""

    caption: str
    frames: list[tuple[str, str]]  # (label, path), in order
    stills: list[tuple[str, str]]


Block = Text | Items | Table | Figure | Gallery | Chart | Viewer


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)
    level: int = 2
    verdict: str | None = None  # shown after the title: "#1 run-a: good"


# --- Markdown ----------------------------------------------------------------------------------
def _md_cell(cell: Cell) -> str:
    return str(cell).replace("|", "/").replace("\n", " ")


def _md_block(b: Block) -> list[str]:
    if isinstance(b, Text):
        return [b.text, ""]
    if isinstance(b, Items):
        return [f"- {x}" for x in b.items] + [""]
    if isinstance(b, Table):
        lines = ["| " + " | ".join(b.head) + " |", "|" + "---|" * len(b.head)]
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
        return [*lines, ""]
    if isinstance(b, Figure):
        return [f"**{b.caption}**", "", f"![{b.caption}]({b.path})", ""]
    if isinstance(b, Gallery):
        return [f"**{b.caption}**: " + " ".join(f"![{lbl}]({p})" for lbl, p in b.images), ""]
    if isinstance(b, Chart):
        return _md_block(Figure(b.caption, b.path)) if b.path else []
    if isinstance(b, Viewer):
        return _md_block(Gallery(b.caption, b.stills))
    raise TypeError(b)


def to_markdown(title: str, sections: list[Section]) -> str:
    md = [f"# {title}", ""]
    for s in sections:
        heading = f"{s.title}: {s.verdict}" if s.verdict else s.title
        md += ["#" * s.level + " " + heading, ""]
        for b in s.blocks:
            md += _md_block(b)
    return "\n".join(md)


# --- HTML --------------------------------------------------------------------------------------
STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1400px}"
    "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px}"
    "img{max-width:100%}.v{font-weight:bold}"
    ".gallery img,.viewer img{height:96px;image-rendering:pixelated;margin-right:8px}"
    ".viewer img{height:160px}.viewer input{width:320px;vertical-align:middle}"
    "figure{margin:0 0 16px 0}figure.plot figcaption{font-weight:bold;margin-bottom:4px}"
    ".gallery figure{display:inline-block;margin:0 8px 8px 0}"
    ".chart{width:100%;height:440px}.brushed{font-size:13px;color:#333}"
    "table.sortable th{cursor:pointer;user-select:none}"
    "table.sortable th[aria-sort=ascending]::after{content:' \\25B2'}"
    "table.sortable th[aria-sort=descending]::after{content:' \\25BC'}"
)
# Everything the page needs is in the page: no request may leave it, whatever a run's name says.
# plotly.js builds some of its WebGL code at run time (eval) and adds its own style elements.
CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline';"
    " img-src data: blob:; font-src data:; worker-src blob:"
)
# The page's own behaviour: draw each chart from its JSON, list the runs inside the brushed
# ranges of the parallel coordinates (and keep only their rows in the ranking), sort tables,
# step through the triplet viewers. Run strings only ever reach the page as text.
RUNTIME = r"""
(function () {
  "use strict";
  var CONFIG = {displaylogo: false, responsive: true};
  function inside(v, range) {
    if (!range || !range.length) return true;
    var ranges = Array.isArray(range[0]) ? range : [range];
    return ranges.some(function (r) { return v >= r[0] && v <= r[1]; });
  }
  function brushable(gd, runs) {
    var out = document.getElementById(gd.id + "-brushed");
    var table = document.querySelector("table[data-runs]");
    function update() {
      var dims = gd.data[0].dimensions;
      var active = dims.some(function (d) { return d.constraintrange && d.constraintrange.length; });
      var keep = runs.filter(function (r, i) {
        return dims.every(function (d) { return inside(d.values[i], d.constraintrange); });
      });
      var ids = new Set(keep.map(function (r) { return r[0]; }));
      out.dataset.runs = JSON.stringify(keep.map(function (r) { return r[0]; }));
      out.textContent = active
        ? keep.length + " of " + runs.length + " runs in the brushed ranges" +
          (keep.length ? ": " + keep.slice(0, 30).map(function (r) { return r[1]; }).join(", ") +
           (keep.length > 30 ? ", ..." : "") : "") + " (the ranking shows only these)"
        : "Drag along an axis to keep the runs of a range.";
      if (table) {
        table.querySelectorAll("tr[data-run]").forEach(function (tr) {
          tr.hidden = active && !ids.has(tr.dataset.run);
        });
      }
    }
    gd.on("plotly_restyle", update);
    update();
  }
  document.querySelectorAll("div.chart").forEach(function (div) {
    var spec = JSON.parse(document.getElementById(div.id + "-spec").textContent);
    Plotly.newPlot(div, spec.data, spec.layout, CONFIG).then(function (gd) {
      if (spec.runs) brushable(gd, spec.runs);
      div.dataset.drawn = "yes";
    });
  });
  function key(td) {
    var t = td.textContent.trim();
    var n = Number(t);
    return t === "" ? null : isNaN(n) ? t : n;
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.querySelectorAll("th");
    heads.forEach(function (th, col) {
      th.addEventListener("click", function () {
        var up = th.getAttribute("aria-sort") !== "ascending";
        heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", up ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a.cells[col]), y = key(b.cells[col]);
          if (x === null || y === null) return (x === null) - (y === null);
          var c = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0)
                                        : typeof x === "number" ? -1 : 1;
          return up ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
  document.querySelectorAll("div.viewer").forEach(function (viewer) {
    var frames = viewer.querySelectorAll("figure");
    var label = viewer.querySelector("output");
    var slider = viewer.querySelector("input");
    function show(i) {
      frames.forEach(function (f, k) { f.hidden = k !== i; });
      label.textContent = frames[i].dataset.label;
    }
    slider.addEventListener("input", function () { show(Number(slider.value)); });
    show(Number(slider.value));
  });
})();
"""


def _verdict_html(name: str) -> str:
    return f"<span class='v' style='color:{color(name)}'>{html.escape(name)}</span>"


def _html_cell(cell: Cell) -> str:
    if isinstance(cell, Verdict):
        return f"<td>{_verdict_html(cell.name)}</td>"
    return f"<td>{html.escape(cell)}</td>"


def _img(out: Path, path: str, alt: str) -> str:
    data = base64.b64encode((out / path).read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def script_json(value: Any) -> str:
    """JSON to embed in a ``<script>`` element: no ``</script>``, ``<!--`` or entity in it can
    end the element or change how the page parses; JSON.parse reads the same value."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    # json.dumps already writes every non-ASCII character (U+2028 too) as an escape.
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(raw, escaped)
    return text


def _table(b: Table) -> str:
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in b.head)
    ids = b.row_ids or [None] * len(b.rows)
    body = "".join(
        (f'<tr data-run="{e(i)}">' if i is not None else "<tr>")
        + "".join(map(_html_cell, row))
        + "</tr>"
        for row, i in zip(b.rows, ids, strict=True)
    )
    attrs = " class='sortable'" if b.sortable else ""
    attrs += " data-runs='yes'" if b.row_ids else ""
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _chart(b: Chart) -> str:
    if b.spec is None:
        return ""
    e = html.escape
    cid = f"chart-{b.key}"
    height = b.spec["layout"].get("height")
    style = f" style='height:{int(height)}px'" if height else ""
    brushed = f"<p class='brushed' id='{cid}-brushed'></p>" if "runs" in b.spec else ""
    return (
        f"<figure class='plot'><figcaption>{e(b.caption)}</figcaption>"
        f"<div class='chart' id='{cid}' data-kind='{e(b.key)}'{style}></div>{brushed}"
        f"<script type='application/json' id='{cid}-spec'>{script_json(b.spec)}</script>"
        "</figure>"
    )


def _viewer(b: Viewer, out: Path) -> str:
    e = html.escape
    last = len(b.frames) - 1
    frames = "".join(
        f"<figure data-label='{e(lbl)}'>{_img(out, p, lbl)}</figure>" for lbl, p in b.frames
    )
    return (
        f"<div class='viewer'><p><b>{e(b.caption)}</b></p>"
        f"<input type='range' min='0' max='{last}' value='{last}' step='1'"
        f" aria-label='{e(b.caption)}'> <output></output>{frames}</div>"
    )


def _html_block(b: Block, out: Path) -> str:
    e = html.escape
    if isinstance(b, Text):
        return f"<p>{e(b.text)}</p>"
    if isinstance(b, Items):
        return "<ul>" + "".join(f"<li>{e(x)}</li>" for x in b.items) + "</ul>"
    if isinstance(b, Table):
        return _table(b)
    if isinstance(b, Chart):
        return _chart(b)
    if isinstance(b, Viewer):
        return _viewer(b, out)
    if isinstance(b, Figure):
        caption = f"<figcaption>{e(b.caption)}</figcaption>"
        return f"<figure class='plot'>{caption}{_img(out, b.path, b.caption)}</figure>"
    if isinstance(b, Gallery):
        figures = "".join(
            f"<figure>{_img(out, p, lbl)}<figcaption>{e(lbl)}</figcaption></figure>"
            for lbl, p in b.images
        )
        return f"<div class='gallery'><p><b>{e(b.caption)}</b></p>{figures}</div>"
    raise TypeError(b)


def to_html(title: str, sections: list[Section], out: Path, plotly_js: str = "") -> str:
    """The page; ``plotly_js`` (the library's text) is embedded once where a chart needs it."""
    e = html.escape
    h = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">",
        f"<title>{e(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    charts = False
    for s in sections:
        verdict = f": {_verdict_html(s.verdict)}" if s.verdict else ""
        h.append(f"<h{s.level}>{e(s.title)}{verdict}</h{s.level}>")
        h += [_html_block(b, out) for b in s.blocks]
        charts = charts or any(isinstance(b, Chart) and b.spec for b in s.blocks)
    if charts:
        if not plotly_js:
            raise ValueError("the page has charts: pass plotly.js")
        # The library's own text never holds "</script" (checked when the report is written).
        h.append(f"<script>{plotly_js}</script>")
    h.append(f"<script>{RUNTIME}</script>")
    h.append("</body></html>")
    return "\n".join(h)
