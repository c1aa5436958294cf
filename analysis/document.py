"""The report as a list of sections, built once and rendered twice: Markdown and HTML.

A section holds blocks: text, a bullet list, a table, a figure, a gallery of images. A table
cell or a section title may carry a verdict, which HTML colours as the plots do. Image paths are
relative to the report folder: Markdown links them, HTML embeds them (the page opens offline).
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass
class Figure:
    caption: str
    path: str


@dataclass
class Gallery:
    caption: str
    images: list[tuple[str, str]]  # (label, path)


Block = Text | Items | Table | Figure | Gallery


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
    ".gallery img{height:96px;image-rendering:pixelated;margin-right:8px}"
    "figure{margin:0 0 16px 0}figure.plot figcaption{font-weight:bold;margin-bottom:4px}"
    ".gallery figure{display:inline-block;margin:0 8px 8px 0}"
)


def _verdict_html(name: str) -> str:
    return f"<span class='v' style='color:{color(name)}'>{html.escape(name)}</span>"


def _html_cell(cell: Cell) -> str:
    if isinstance(cell, Verdict):
        return f"<td>{_verdict_html(cell.name)}</td>"
    return f"<td>{html.escape(cell)}</td>"


def _img(out: Path, path: str, alt: str) -> str:
    data = base64.b64encode((out / path).read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _html_block(b: Block, out: Path) -> str:
    e = html.escape
    if isinstance(b, Text):
        return f"<p>{e(b.text)}</p>"
    if isinstance(b, Items):
        return "<ul>" + "".join(f"<li>{e(x)}</li>" for x in b.items) + "</ul>"
    if isinstance(b, Table):
        head = "".join(f"<th>{e(c)}</th>" for c in b.head)
        body = "".join("<tr>" + "".join(map(_html_cell, row)) + "</tr>" for row in b.rows)
        return f"<table><tr>{head}</tr>{body}</table>"
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


def to_html(title: str, sections: list[Section], out: Path) -> str:
    e = html.escape
    h = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    for s in sections:
        verdict = f": {_verdict_html(s.verdict)}" if s.verdict else ""
        h.append(f"<h{s.level}>{e(s.title)}{verdict}</h{s.level}>")
        h += [_html_block(b, out) for b in s.blocks]
    h.append("</body></html>")
    return "\n".join(h)
