"""The report's interactive data map: one inline SVG circle per drawn row, the rows' numbers and texts as an inert
JSON block, and one small inline script (tooltip on hover; filters by band, cluster and subset). No plotting
library and no network, so the page opens from disk; text reaches the page only through ``textContent``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lpselect.analysis import html as h
from lpselect.analysis.summary import BAND_NAMES

WIDTH, HEIGHT = 640, 330
LEFT, RIGHT, TOP, BOTTOM = 52, 10, 8, 36
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
           "#dbdb8d", "#9edae5")  # tab20, cycled over clusters
BAND_COLOURS = ("#d62728", "#bdbdbd", "#1f77b4")  # hardest, middle, easiest
TIP_CHARS = 200  # instruction and response in the tooltip; the page stays small at 5,000 drawn rows

STYLE = """
.map { position: relative; }
.map svg { width: 100%; height: auto; display: block; background: #fff; }
.map circle { fill-opacity: .7; stroke: none; cursor: pointer; }
.map circle:hover { stroke: #000; stroke-width: 1.5; fill-opacity: 1; }
.map .axis { stroke: #888; } .map text { font-size: 11px; fill: #444; }
.filters { font-size: .8rem; margin: .2rem 0; display: flex; flex-wrap: wrap; gap: .3rem; align-items: center; }
.filters button { font-size: .78rem; padding: .05rem .45rem; border: 1px solid #bbb; background: #f7f7f7;
  border-radius: 3px; cursor: pointer; }
.filters button.on { background: #333; color: #fff; border-color: #333; }
.filters select { font-size: .78rem; max-width: 11rem; }
.tip { position: absolute; z-index: 5; max-width: 26rem; background: #fffff4; border: 1px solid #999;
  padding: .3rem .45rem; font-size: .78rem; box-shadow: 0 2px 6px rgba(0,0,0,.25); pointer-events: none;
  white-space: pre-wrap; }
.tip b { display: block; }
"""

SCRIPT = """
(function () {
  var d = JSON.parse(document.getElementById('map-data').textContent);
  var svg = document.getElementById('map-svg'), tip = document.getElementById('map-tip');
  var count = document.getElementById('map-count'), sel = document.getElementById('map-cluster');
  var dots = svg.querySelectorAll('circle'), f = {band: null, cluster: null, subset: null};
  function show() {
    var n = 0;
    for (var i = 0; i < dots.length; i++) {
      var k = +dots[i].getAttribute('data-k');
      var ok = (f.band === null || d.band[k] === f.band) && (f.cluster === null || d.cluster[k] === f.cluster) &&
               (f.subset === null || (d.subsets[k] >> f.subset) % 2 === 1);
      dots[i].style.display = ok ? '' : 'none';
      n += ok ? 1 : 0;
    }
    count.textContent = n.toLocaleString('en') + ' of ' + dots.length.toLocaleString('en') + ' drawn points shown';
    document.querySelectorAll('.filters button').forEach(function (b) {
      var key = b.getAttribute('data-filter'), v = b.getAttribute('data-value');
      b.classList.toggle('on', v === '' ? f[key] === null : f[key] === +v);
    });
    if (sel) { sel.value = f.cluster === null ? '' : String(f.cluster); }
  }
  document.querySelectorAll('.filters button').forEach(function (b) {
    b.addEventListener('click', function () {
      var key = b.getAttribute('data-filter'), v = b.getAttribute('data-value');
      f[key] = (v === '' || f[key] === +v) ? null : +v;
      show();
    });
  });
  if (sel) {
    sel.addEventListener('change', function () { f.cluster = sel.value === '' ? null : +sel.value; show(); });
  }
  function line(label, text) {
    var p = document.createElement('div'), b = document.createElement('b');
    b.textContent = label; p.appendChild(b); p.appendChild(document.createTextNode(text)); tip.appendChild(p);
  }
  svg.addEventListener('mouseover', function (e) {
    if (e.target.tagName.toLowerCase() !== 'circle') { return; }
    var k = +e.target.getAttribute('data-k');
    tip.textContent = '';
    var head = document.createElement('div');
    head.className = 'tip-head';
    head.textContent = 'row ' + d.id[k] + (d.cluster[k] === null ? '' : ' \\u00b7 cluster ' + d.cluster[k]) +
      ' \\u00b7 ' + d.band_names[d.band[k]] + ' \\u00b7 ' + d.metric_name + ' ' + d.metric[k] + ' \\u00b7 ' +
      d.ppl_name + ' ' + d.ppl[k];
    tip.appendChild(head);
    if (d.text) { line('instruction', d.text[k][0]); line('response', d.text[k][1]); }
    var box = svg.parentNode.getBoundingClientRect(), r = e.target.getBoundingClientRect();
    var x = r.left - box.left + 10, y = r.top - box.top + 10;
    tip.hidden = false;
    if (x + tip.offsetWidth > box.width) { x = Math.max(0, r.left - box.left - tip.offsetWidth - 10); }
    tip.style.left = x + 'px'; tip.style.top = y + 'px';
  });
  svg.addEventListener('mouseout', function (e) {
    if (e.target.tagName.toLowerCase() === 'circle') { tip.hidden = true; }
  });
  svg.addEventListener('click', function (e) {
    if (e.target.tagName.toLowerCase() !== 'circle') { return; }
    var c = d.cluster[+e.target.getAttribute('data-k')];
    if (c === null) { return; }
    f.cluster = f.cluster === c ? null : c;
    show();
  });
  show();
})();
"""


@dataclass
class MapRows:
    """What the map draws, for the drawn rows only (parallel arrays)."""

    ids: np.ndarray
    metric: np.ndarray
    ppl: np.ndarray  # final perplexity, > 0
    band: np.ndarray  # 0 hardest, 1 middle, 2 easiest (summary.band_codes)
    cluster: np.ndarray | None
    subsets: np.ndarray  # bit j set: the row is in subset j
    texts: list[tuple[str, str]] | None  # (instruction, response), already cut to TIP_CHARS


def cut(text: str, limit: int = TIP_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo
    if span <= 0:
        return [lo]
    step = 10 ** math.floor(math.log10(span / n))
    step *= next(m for m in (1, 2, 5, 10) if span / (step * m) <= n)
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(int((hi - first) / step) + 1)]


def render(rows: MapRows, *, metric_name: str, ppl_name: str, xlim: tuple[float, float],
           subset_names: Sequence[str]) -> tuple[str, int]:
    """The map's HTML (filters, SVG, tooltip, data, script) and how many points sit clamped at an edge."""
    n = len(rows.ids)
    logy = np.log10(rows.ppl)
    ylo, yhi = (float(v) for v in np.quantile(logy, [0.005, 0.995])) if n else (0.0, 1.0)
    pad = (yhi - ylo) * 0.04 or 0.25
    ylo, yhi = ylo - pad, yhi + pad
    xlo, xhi = xlim
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    xs = np.clip(rows.metric, xlo, xhi)
    ys = np.clip(logy, ylo, yhi)
    clamped = int(((xs != rows.metric) | (ys != logy)).sum())
    px = LEFT + (xs - xlo) / (xhi - xlo) * pw
    py = TOP + (yhi - ys) / (yhi - ylo) * ph
    colour = rows.cluster % len(PALETTE) if rows.cluster is not None else rows.band
    palette = PALETTE if rows.cluster is not None else BAND_COLOURS
    radius = 2.4 if n > 2000 else 3.5
    dots = "".join(f'<circle data-k="{k}" cx="{px[k]:.1f}" cy="{py[k]:.1f}" r="{radius}" '
                   f'fill="{palette[int(colour[k])]}"/>' for k in range(n))
    axes = [f'<line class="axis" x1="{LEFT}" y1="{TOP + ph}" x2="{LEFT + pw}" y2="{TOP + ph}"/>',
            f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + ph}"/>']
    for t in _ticks(xlo, xhi):
        x = LEFT + (t - xlo) / (xhi - xlo) * pw
        axes.append(f'<text x="{x:.1f}" y="{TOP + ph + 14}" text-anchor="middle">{t:.3g}</text>')
    for e in range(math.floor(ylo), math.ceil(yhi) + 1):
        for m in (1, 2, 5):
            v = e + math.log10(m)
            if ylo <= v <= yhi:
                y = TOP + (yhi - v) / (yhi - ylo) * ph
                axes.append(f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{10 ** v:.3g}</text>')
    axes.append(f'<text x="{LEFT + pw / 2}" y="{HEIGHT - 4}" text-anchor="middle">{h.esc(metric_name)} '
                "(left = harder)</text>")
    axes.append(f'<text transform="translate(12,{TOP + ph / 2}) rotate(-90)" text-anchor="middle">'
                f"{h.esc(ppl_name)} (log)</text>")
    svg = (f'<svg id="map-svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="data map">'
           f'{"".join(axes)}<g>{dots}</g></svg>')

    buttons = ['<span>band:</span>', _button("band", "", "all")]
    buttons += [_button("band", str(code), f"{name} 10 %" if code != 1 else name)
                for code, name in enumerate(BAND_NAMES)]
    if subset_names:
        buttons += ['<span>subset:</span>', _button("subset", "", "all")]
        buttons += [_button("subset", str(j), name) for j, name in enumerate(subset_names)]
    if rows.cluster is not None:
        labels, sizes = np.unique(rows.cluster, return_counts=True)
        options = "".join(f'<option value="{int(c)}">{int(c)} ({int(s):,})</option>'
                          for c, s in zip(labels, sizes, strict=True))
        buttons += ['<label>cluster: <select id="map-cluster"><option value="">all</option>'
                    f"{options}</select></label>"]
    buttons.append('<span id="map-count" class="note"></span>')
    data = {
        "id": rows.ids.tolist(), "metric": [float(f"{v:.4g}") for v in rows.metric],
        "ppl": [float(f"{v:.4g}") for v in rows.ppl], "band": rows.band.tolist(),
        "cluster": rows.cluster.tolist() if rows.cluster is not None else [None] * n,
        "subsets": rows.subsets.tolist(), "text": rows.texts, "metric_name": metric_name, "ppl_name": ppl_name,
        "band_names": [f"{name} 10 %" if code != 1 else name for code, name in enumerate(BAND_NAMES)],
    }
    body = (f"<style>{STYLE}</style>"
            f'<div class="filters">{"".join(buttons)}</div>'
            f'<div class="map">{svg}<div id="map-tip" class="tip" hidden></div></div>'
            f"{h.json_script('map-data', data)}<script>{SCRIPT}</script>")
    return body, clamped


def _button(key: str, value: str, label: str) -> str:
    return f'<button type="button" data-filter="{key}" data-value="{h.esc(value)}">{h.esc(label)}</button>'
