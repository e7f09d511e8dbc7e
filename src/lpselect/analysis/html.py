"""HTML pieces for the report. Everything from data is escaped (text through :func:`esc`, embedded data through
:func:`json_script`); images are inline data: URIs and the page carries its own CSS and its one small script,
so the file opens anywhere with no network."""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: .6rem auto; max-width: 1380px;
       padding: 0 .8rem; color: #222; line-height: 1.35; }
h1 { font-size: 1.25rem; margin: .2rem 0; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .1rem;
  margin-top: 1.8rem; font-size: 1.15rem; }
h3 { font-size: .95rem; margin: .5rem 0 .2rem; }
table { border-collapse: collapse; margin: .3rem 0; font-size: .8rem; }
th, td { border: 1px solid #ddd; padding: .15rem .4rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.text { max-width: 36rem; }
td.clip div { display: -webkit-box; -webkit-line-clamp: 3; -webkit-box-orient: vertical; overflow: hidden;
  white-space: pre-wrap; }
img { max-width: 100%; height: auto; display: block; margin: .6rem 0; }
.note { color: #555; font-size: .82rem; margin: .2rem 0; } .warn { color: #a40000; }
nav { font-size: .85rem; } nav a { margin-right: .8rem; }
.top { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 1.2rem; }
.top h2 { margin-top: .5rem; }
.scroll { max-height: 292px; overflow-y: auto; border-bottom: 1px solid #ddd; }
.scroll table { margin: 0; width: 100%; } .scroll th { position: sticky; top: 0; }
details { margin: .4rem 0; } summary { cursor: pointer; font-weight: 600; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """Numbers in 4 significant digits (thousands separated for ints); other values as text."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return "NaN" if value != value else f"{value:.4g}"
    try:  # numpy scalars
        return fmt(value.item())
    except AttributeError:
        return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, text_columns: Sequence[int] = (),
          clip_columns: Sequence[int] = ()) -> str:
    """``clip_columns``: long text shown in 3 lines (the cell keeps all of it, for copying and searching)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for j, v in enumerate(row):
            if j in clip_columns:
                cells.append(f'<td class="text clip"><div>{esc(fmt(v))}</div></td>')
                continue
            numeric = not isinstance(v, str) and v is not None and j not in text_columns
            cls = "num" if numeric else ("text" if j in text_columns else "")
            cells.append(f'<td class="{cls}">{esc(fmt(v))}</td>' if cls else f"<td>{esc(fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def image(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def note(text: str, warn: bool = False) -> str:
    return f'<p class="{"note warn" if warn else "note"}">{esc(text)}</p>'


def details(summary: str, body: str, *, open_: bool = False) -> str:
    """A collapsed block: what most readers skip (configuration, versions) stays one line until opened."""
    return f"<details{' open' if open_ else ''}><summary>{esc(summary)}</summary>{body}</details>"


def json_script(element_id: str, data: Any) -> str:
    """Data for the page's script, as an inert JSON block. ``<``, ``>`` and ``&`` are written as \\u escapes, so
    no text from the data (an instruction holding ``</script>``) can end the block; NaN becomes null."""
    text = json.dumps(_no_nan(data), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f'<script type="application/json" id="{esc(element_id)}">{text}</script>'


def _no_nan(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(v) for v in value]
    return value


def section(section_id: str, title: str, parts: Iterable[str]) -> str:
    return f'<section id="{esc(section_id)}"><h2>{esc(title)}</h2>{"".join(parts)}</section>'


def page(title: str, sections: Sequence[tuple[str, str, str]], intro: str = "", *,
         top: Sequence[Sequence[str]] = ()) -> str:
    """``sections`` are (id, title, html); a navigation bar links to each by id. ``top``: columns of section
    ids laid side by side first (what the first screen must show); the rest follow in order."""
    nav = "".join(f'<a href="#{esc(i)}">{esc(t)}</a>' for i, t, _ in sections)
    by_id = {i: s for i, _, s in sections}
    placed = {i for column in top for i in column}
    head = ""
    if top:
        columns = "".join("<div>" + "".join(by_id[i] for i in column) + "</div>" for column in top)
        head = f'<div class="top">{columns}</div>'
    body = head + "".join(s for i, _, s in sections if i not in placed)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{esc(title)}</h1>{intro}<nav>{nav}</nav>{body}</body></html>\n")
