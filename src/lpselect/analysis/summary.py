"""The numbers behind the HTML report: pure numpy over the score table, clusters and selected ids."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np

from lpselect.core.metrics import learning_percentage, learning_percentage_approx
from lpselect.core.selection import BANDS, MEANING_BANDS, NoSpreadError, literal_band, select

# colour codes 0, 1, 2 of band_codes (its low, mid and high parts, read as a metric whose hard end is low);
# NaN rows are -1
BAND_NAMES = tuple(sorted(MEANING_BANDS, key=lambda band: BANDS.index(literal_band(band, "low"))))


@dataclass
class Histogram:
    """Counts over ``edges``; every finite value is in some bin (values beyond the shown range are counted
    in the edge bins, never dropped), and how many were moved there is kept for the caption."""

    counts: np.ndarray
    edges: np.ndarray
    n_below: int = 0
    n_above: int = 0

    @property
    def total(self) -> int:
        return int(self.counts.sum())


def log_histogram(values: np.ndarray, bins: int = 60, edges: np.ndarray | None = None) -> Histogram:
    """Histogram on log-spaced bins of the positive finite values (perplexities are >= 1)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    if edges is None:
        edges = log_edges(v, bins)
    counts, edges = np.histogram(np.clip(v, edges[0], edges[-1]), bins=edges)
    return Histogram(counts, edges, int((v < edges[0]).sum()), int((v > edges[-1]).sum()))


def log_edges(values: np.ndarray, bins: int) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    if len(v) == 0:
        return np.array([1.0, 10.0])
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo * (1 + 1e-9):
        lo, hi = lo / 1.5, hi * 1.5
    return np.logspace(math.log10(lo), math.log10(hi), bins + 1)


def clipped_histogram(values: np.ndarray, bins: int = 60, quantile: float = 0.005) -> Histogram:
    """Histogram over the [q, 1-q] quantile range: LP's long tails (tiny P0 - Pn) land in the edge bins."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return Histogram(np.zeros(bins, dtype=np.int64), np.linspace(0, 1, bins + 1))
    lo, hi = (float(x) for x in np.quantile(v, [quantile, 1 - quantile]))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(np.clip(v, lo, hi), bins=bins, range=(lo, hi))
    return Histogram(counts, edges, int((v < lo).sum()), int((v > hi).sum()))


def view_range(values: np.ndarray, quantile: float = 0.005) -> tuple[float, float]:
    """Axis limits that show the bulk of the values (scatter plots; histograms use clipped_histogram)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return 0.0, 1.0
    lo, hi = (float(x) for x in np.quantile(v, [quantile, 1 - quantile]))
    pad = (hi - lo) * 0.03 or 0.5
    return lo - pad, hi + pad


def sample_rows(ids: np.ndarray, k: int = 5000, seed: int = 0) -> np.ndarray:
    """At most ``k`` of ``ids``, drawn without replacement with a fixed seed (same picture every time)."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) <= k:
        return ids
    return np.sort(np.random.default_rng(seed).choice(ids, size=k, replace=False))


def metric_series(ppl: np.ndarray) -> dict[str, np.ndarray]:
    """Every meaningful LP(i) and LP_app(i) of a table with epochs 0..n, keyed by display name.

    LP needs n >= 2: with one epoch P(i-1) - P(i) equals P0 - Pn, so LP(1) is 1 for every row."""
    n = ppl.shape[1] - 1
    out: dict[str, np.ndarray] = {}
    if n >= 2:
        out.update({f"LP({i})": learning_percentage(ppl, i) for i in range(1, n + 1)})
    out.update({f"LP_app({i})": learning_percentage_approx(ppl, i) for i in range(1, n + 1)})
    return out


def main_metric(ppl: np.ndarray) -> tuple[str, str, np.ndarray] | None:
    """(metric, display name, values) that rank the report's samples: LP(1), or LP_app(1) with one epoch."""
    n = ppl.shape[1] - 1
    if n >= 2:
        return "lp", "LP(1)", learning_percentage(ppl, 1)
    if n == 1:
        return "lp_app", "LP_app(1)", learning_percentage_approx(ppl, 1)
    return None


def extremes(metric: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Ids of the k hardest (lowest metric, ascending) and k easiest (highest, descending); ties by id."""
    metric = np.asarray(metric, dtype=np.float64)
    ids = np.flatnonzero(np.isfinite(metric))
    v = metric[ids]
    hardest = ids[np.lexsort((ids, v))][:k]
    easiest = ids[np.lexsort((ids, -v))][:k]
    return hardest, easiest


def band_codes(metric: np.ndarray, percent: float = 10) -> np.ndarray:
    """0 = hardest ``percent`` %, 2 = easiest, 1 = the rest, -1 = NaN (global ranking, docs/method.md §8 bands)."""
    metric = np.asarray(metric, dtype=np.float64)
    codes = np.full(len(metric), -1, dtype=np.int64)
    codes[np.isfinite(metric)] = 1
    with contextlib.suppress(NoSpreadError):  # a constant metric has no hardest or easiest rows
        codes[select(metric, None, percent, "low", strategy="global").ids] = 0
        codes[select(metric, None, percent, "high", strategy="global").ids] = 2
    return codes


def quality_counts(ppl: np.ndarray, columns: dict[str, np.ndarray]) -> list[tuple[str, int]]:
    """Rows without a score, per epoch and overall, and the truncation bookkeeping the scores carry."""
    nan = ~np.isfinite(ppl)
    rows: list[tuple[str, int]] = [("rows", len(ppl)),
                                   ("rows with a NaN perplexity (any epoch)", int(nan.any(axis=1).sum()))]
    rows += [(f"NaN in ppl_{e}", int(nan[:, e].sum())) for e in range(ppl.shape[1])]
    if ppl.shape[1] >= 3:
        flat = np.isfinite(ppl[:, 0]) & (ppl[:, 0] == ppl[:, -1])
        rows.append((f"LP set to 0 because P0 == P{ppl.shape[1] - 1}", int(flat.sum())))
    if "truncated" in columns:
        rows.append(("rows truncated (tokens cut > 0)", int((np.asarray(columns["truncated"]) > 0).sum())))
    if "prompt_shortened" in columns:
        shortened = np.asarray(columns["prompt_shortened"]).astype(bool)
        rows.append(("rows with a shortened prompt", int(shortened.sum())))
    if "reference_no_tokens" in columns:
        rows.append(("reference rows 1.0 at every epoch (no response token)",
                     int(np.asarray(columns["reference_no_tokens"]).astype(bool).sum())))
    if "n_scored_tokens" in columns:
        rows.append(("rows with 0 scored tokens", int((np.asarray(columns["n_scored_tokens"]) == 0).sum())))
    return rows


@dataclass
class Coverage:
    n_clusters: int
    n_clusters_hit: int
    share_selected: np.ndarray  # per cluster: selected members / members


def cluster_coverage(selected: np.ndarray, clusters: np.ndarray) -> Coverage:
    labels, index = np.unique(np.asarray(clusters), return_inverse=True)
    sizes = np.bincount(index, minlength=len(labels))
    hit = np.bincount(index[np.asarray(selected, dtype=np.int64)], minlength=len(labels))
    return Coverage(len(labels), int((hit > 0).sum()), hit / sizes)


def category_shares(categories: list[str | None], selected: np.ndarray,
                    top: int = 15) -> list[tuple[str, int, float, int, float]]:
    """(category, rows, share of all, selected rows, share of the subset), largest categories first."""
    cats = np.asarray(["(none)" if c is None else c for c in categories], dtype=object)
    names, index = np.unique(cats, return_inverse=True)
    n_all = np.bincount(index, minlength=len(names))
    n_sel = np.bincount(index[np.asarray(selected, dtype=np.int64)], minlength=len(names))
    order = np.lexsort((names, -n_all))[:top]
    share_all = n_all / max(len(cats), 1)
    share_sel = n_sel / max(len(selected), 1)
    return [(str(names[j]), int(n_all[j]), float(share_all[j]), int(n_sel[j]), float(share_sel[j]))
            for j in order]
