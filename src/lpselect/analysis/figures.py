"""The report's figures, each returned as PNG bytes. matplotlib's object API only (no pyplot state), so it
runs headless and in threads; the numbers come from :mod:`lpselect.analysis.summary`."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lpselect.analysis.summary import (
    BAND_NAMES,
    Coverage,
    Histogram,
    clipped_histogram,
    log_edges,
    log_histogram,
)

DPI = 100
BAND_COLOURS = ("#d62728", "#bdbdbd", "#1f77b4")  # hardest, middle, easiest


def to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _stairs(ax: Axes, h: Histogram, label: str, density: bool = False, **kw: object) -> None:
    counts = h.counts / max(h.total, 1) if density else h.counts
    ax.stairs(counts, h.edges, label=label, **kw)


def perplexity_histograms(ppl: np.ndarray) -> bytes:
    """One step histogram per epoch on shared log-spaced bins, so the shift to lower perplexity is visible."""
    edges = log_edges(ppl.ravel(), 80)
    fig = Figure(figsize=(9, 4))
    ax = fig.add_subplot()
    for e in range(ppl.shape[1]):
        h = log_histogram(ppl[:, e], edges=edges)
        _stairs(ax, h, f"P{e} (n={h.total:,})", linewidth=1.5)
    ax.set_xscale("log")
    ax.set_xlabel("perplexity (log scale)")
    ax.set_ylabel("rows")
    ax.legend(fontsize=8)
    return to_png(fig)


def metric_histograms(series: Mapping[str, np.ndarray]) -> bytes:
    """A grid of LP(i) / LP_app(i) histograms; the 0.5 % tails are counted in the edge bins (see titles)."""
    names = list(series)
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig = Figure(figsize=(4 * cols, 3 * rows))
    for k, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, k + 1)
        h = clipped_histogram(series[name])
        _stairs(ax, h, name, fill=True, alpha=0.6)
        ax.set_title(f"{name}  n={h.total:,}  (edge bins hold {h.n_below:,} / {h.n_above:,} tail rows)",
                     fontsize=8)
        ax.set_xlabel(name)
        ax.set_ylabel("rows")
    fig.tight_layout()
    return to_png(fig)


def scatter(x: np.ndarray, y: np.ndarray, *, xlabel: str, ylabel: str, title: str,
            xlim: tuple[float, float], ylim: tuple[float, float] | None = None) -> bytes:
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    ax.scatter(x, y, s=3, alpha=0.35, linewidths=0, color="#1f77b4", rasterized=True)
    ax.set_xlim(*xlim)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    return to_png(fig)


def data_map(x: np.ndarray, y: np.ndarray, colour: np.ndarray, *, by_cluster: bool, xlabel: str,
             ylabel: str, title: str, xlim: tuple[float, float]) -> bytes:
    """x: the ranking metric, y: final perplexity (log), colour: cluster (cycled palette) or band."""
    fig = Figure(figsize=(8, 5.5))
    ax = fig.add_subplot()
    size = 4 if len(x) > 2000 else 12  # small runs: fewer, larger points
    if by_cluster:
        ax.scatter(x, y, c=np.asarray(colour) % 20, cmap=colormaps["tab20"], vmin=0, vmax=19, s=size,
                   alpha=0.6, linewidths=0, rasterized=True)
    else:
        for code, (name, col) in enumerate(zip(BAND_NAMES, BAND_COLOURS, strict=True)):
            m = np.asarray(colour) == code
            label = name if code == 1 else f"{name} 10 %"
            ax.scatter(x[m], y[m], s=size, alpha=0.6, linewidths=0, color=col, label=label, rasterized=True)
        ax.legend(fontsize=8, markerscale=3)
    ax.set_yscale("log")
    ax.set_xlim(*xlim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    return to_png(fig)


def subset_panels(*, coverage: Coverage | None, percent: float, tokens_all: np.ndarray | None,
                  tokens_selected: np.ndarray | None,
                  categories: Sequence[tuple[str, int, float, int, float]] | None) -> bytes | None:
    """Up to three panels: share of each cluster selected, scored-token counts, category shares."""
    panels = [p for p, ok in (("coverage", coverage is not None), ("tokens", tokens_all is not None),
                              ("categories", bool(categories))) if ok]
    if not panels:
        return None
    fig = Figure(figsize=(5 * len(panels), 3.8))
    for k, panel in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        if panel == "coverage" and coverage is not None:
            edges = np.linspace(0, 1, 41)
            counts, _ = np.histogram(coverage.share_selected, bins=edges)
            ax.stairs(counts, edges, fill=True, alpha=0.6)
            ax.axvline(percent / 100, color="k", linestyle="--", linewidth=1, label=f"{percent:g} %")
            ax.set_xlabel("share of the cluster selected")
            ax.set_ylabel("clusters")
            ax.set_title(f"{coverage.n_clusters_hit:,} of {coverage.n_clusters:,} clusters represented",
                         fontsize=9)
            ax.legend(fontsize=8)
        elif panel == "tokens" and tokens_all is not None and tokens_selected is not None:
            edges = log_edges(np.maximum(tokens_all, 1), 50)
            _stairs(ax, log_histogram(np.maximum(tokens_all, 1), edges=edges), "all rows", density=True)
            _stairs(ax, log_histogram(np.maximum(tokens_selected, 1), edges=edges), "selected", density=True)
            ax.set_xscale("log")
            ax.set_xlabel("scored tokens per row (log)")
            ax.set_ylabel("share of rows")
            ax.legend(fontsize=8)
        elif categories:
            names = [c[0] for c in categories][::-1]
            pos = np.arange(len(names))
            ax.barh(pos + 0.2, [c[2] for c in categories][::-1], height=0.4, label="all rows")
            ax.barh(pos - 0.2, [c[4] for c in categories][::-1], height=0.4, label="selected")
            ax.set_yticks(pos, names, fontsize=7)
            ax.set_xlabel("share")
            ax.legend(fontsize=8)
    fig.tight_layout()
    return to_png(fig)


def heatmap(names: Sequence[str], values: np.ndarray, title: str) -> bytes:
    """A correlation matrix with its numbers written in the cells."""
    k = len(names)
    fig = Figure(figsize=(1.1 * k + 2.5, 1.0 * k + 1.5))
    ax = fig.add_subplot()
    im = ax.imshow(values, cmap="viridis", vmin=np.nanmin(values), vmax=1.0)
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    for i in range(k):
        for j in range(k):
            v = values[i, j]
            ax.text(j, i, "—" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if v < (np.nanmin(values) + 1) / 2 else "black")
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return to_png(fig)
