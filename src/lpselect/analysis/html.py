"""HTML pieces for the report. Everything from data is escaped; images are inline data: URIs and the
page carries its own CSS, so the file opens anywhere with no network and no script."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from typing import Any

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; margin-top: 2.2rem; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .85rem; }
th, td { border: 1px solid #ddd; padding: .2rem .5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.text { max-width: 36rem; }
img { max-width: 100%; height: auto; display: block; margin: .6rem 0; }
.note { color: #555; font-size: .9rem; } .warn { color: #a40000; }
nav a { margin-right: 1rem; }
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


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, text_columns: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for j, v in enumerate(row):
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


def section(section_id: str, title: str, parts: Iterable[str]) -> str:
    return f'<section id="{esc(section_id)}"><h2>{esc(title)}</h2>{"".join(parts)}</section>'


def page(title: str, sections: Sequence[tuple[str, str, str]], intro: str = "") -> str:
    """``sections`` are (id, title, html); a navigation bar links to each by id."""
    nav = "".join(f'<a href="#{esc(i)}">{esc(t)}</a>' for i, t, _ in sections)
    body = "".join(s for _, _, s in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{esc(title)}</h1>{intro}<nav>{nav}</nav>{body}</body></html>\n")
