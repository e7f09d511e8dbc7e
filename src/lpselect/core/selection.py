"""The selection rule of docs/method.md §8: pure numpy over (metric, cluster) arrays, ids are row positions.

Two budgets: the paper's parts rule (each cluster cut into round(100/p) parts, ``total=None``), or an exact
total of rows shared out over the clusters in proportion to their size (largest remainder).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

import numpy as np

from lpselect.config import LiteralBand, MeaningBand, Order, Strategy

BANDS: tuple[str, ...] = get_args(LiteralBand)  # literal: the ordered values, ascending
MEANING_BANDS: tuple[str, ...] = get_args(MeaningBand)  # by the metric's direction (core.metrics.HARD_END)
STRATEGIES: tuple[str, ...] = get_args(Strategy)  # trajectory: lpselect.core.trajectory
ORDERS: tuple[str, ...] = get_args(Order)
CLUSTERED_STRATEGIES = ("cluster", "clust_rand")  # need a cluster assignment
RANKING_STRATEGIES = ("cluster", "global")  # take a band of the ranking by the metric


@dataclass
class Selection:
    """Selected ids in output order, plus what the report needs."""

    ids: np.ndarray
    n_parts: int
    n_nan: int
    per_cluster: dict[int, int]


class NoSpreadError(ValueError):
    """The metric has one value for every ranked row: a ranking by it would be the id order."""


def literal_band(band: str, hard_end: str) -> str:
    """``hardest`` / ``easiest`` / ``middle`` as ``low`` / ``high`` / ``mid`` for a metric whose hard samples
    sit at ``hard_end`` ("low" or "high") of the ascending ranking; a literal band is returned unchanged."""
    if band in BANDS:
        return band
    if band not in MEANING_BANDS:
        raise ValueError(f"band must be one of {MEANING_BANDS + BANDS}, got {band!r}")
    if hard_end not in ("low", "high"):
        raise ValueError(f"hard_end must be 'low' or 'high', got {hard_end!r}")
    easy_end = "high" if hard_end == "low" else "low"
    return {"hardest": hard_end, "easiest": easy_end, "middle": "mid"}[band]


def exact_quotas(sizes: np.ndarray, total: int) -> np.ndarray:
    """``total`` rows shared over clusters of ``sizes`` (in ascending cluster number) in proportion to their
    size: floor(total * n_c / N) each, then one more to the largest remainders, ties by cluster order."""
    sizes = np.asarray(sizes, dtype=np.int64)
    n = int(sizes.sum())
    if not 0 <= total <= n:
        raise ValueError(f"cannot take {total} rows from {n}")
    if n == 0:
        return sizes.copy()
    scaled = sizes * int(total)  # integers: the remainders compare exactly
    quotas, remainders = scaled // n, scaled % n
    extra = int(total - quotas.sum())
    quotas[np.argsort(-remainders, kind="stable")[:extra]] += 1
    return quotas


def band_rows(members: np.ndarray, count: int, band: str) -> np.ndarray:
    """``count`` rows of a ranked cluster: the first (low), the last (high) or the middle ones (mid, starting
    at (n - count) // 2), in ranking order."""
    start = {"low": 0, "high": len(members) - count, "mid": (len(members) - count) // 2}[band]
    return members[start:start + count]


def n_parts(percent: float) -> int:
    """round(100 / p) parts (Python rounding, as the reference)."""
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], got {percent}")
    return max(1, round(100 / percent))


def band_part(members: np.ndarray, parts: int, band: str) -> np.ndarray:
    """numpy array_split into ``parts`` (earlier parts larger); low = first, high = last, mid = parts // 2."""
    pieces = np.array_split(members, parts)
    if band == "low":
        return pieces[0]
    if band == "high":
        return pieces[-1]
    if band == "mid":
        return pieces[parts // 2]
    raise ValueError(f"band must be one of {BANDS}, got {band!r}")


def select(
    metric: np.ndarray,
    clusters: np.ndarray | None,
    percent: float,
    band: str = "low",
    *,
    strategy: str = "cluster",
    order: str = "reference",
    seed: int = 42,
    total: int | None = None,
    quotas: dict[int, int] | None = None,
) -> Selection:
    """Pick ids per docs/method.md §8. NaN (and ±inf) rows are removed before any split and are never selected.

    ``total``: an exact budget instead of the parts rule (each cluster gives its share, :func:`exact_quotas`).
    ``quotas`` (strategy clust_rand): rows to draw from each cluster, e.g. the per-cluster counts of the subset a
    baseline is drawn for, so the baseline matches it cluster by cluster; a cluster not named gives none.
    A ranking (strategies cluster and global) by a metric with no spread is refused (:class:`NoSpreadError`)."""
    metric = np.asarray(metric, dtype=np.float64)
    n = len(metric)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy == "trajectory":  # it clusters loss trajectories, not a metric: another input
        raise ValueError("strategy 'trajectory' selects by loss trajectories: "
                         "use lpselect.core.trajectory.select_trajectory")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if band not in BANDS:
        raise ValueError(f"band must be one of {BANDS}, got {band!r}")
    if strategy in CLUSTERED_STRATEGIES and clusters is None:
        raise ValueError(f"strategy {strategy!r} needs a cluster assignment")
    ids = np.arange(n)
    valid = np.isfinite(metric)  # an inf perplexity gives an inf/NaN metric: no rank to trust
    finite = metric[valid]
    if strategy in RANKING_STRATEGIES and len(finite) > 1 and finite.min() == finite.max():
        raise NoSpreadError(f"the metric is {finite[0]:g} for all {len(finite)} rows with a value: it ranks "
                            "nothing")
    if quotas is not None and strategy != "clust_rand":
        raise ValueError("quotas are per-cluster draw sizes of strategy clust_rand")
    if total is not None and not 0 <= total <= len(finite):
        raise ValueError(f"cannot take {total} rows: {len(finite)} have a value")
    parts = n_parts(percent)
    labels = np.zeros(n, dtype=np.int64) if clusters is None or strategy == "global" else np.asarray(clusters)
    if len(labels) != n:
        raise ValueError(f"{len(labels)} cluster labels for {n} rows")

    # rows ordered by (cluster, metric, id): each cluster's members are a contiguous, ranked run
    ranked = ids[valid][np.lexsort((ids[valid], metric[valid], labels[valid]))]
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    groups = _groups(ranked, labels)
    if quotas is not None:  # given per cluster (a baseline of an existing subset)
        shares = [int(quotas.get(int(labels[m[0]]), 0)) for m in groups]
        if unknown := sorted({c for c, q in quotas.items() if q > 0} - {int(labels[m[0]]) for m in groups}):
            raise ValueError(f"quotas name clusters with no row that has a value: {unknown[:5]}")
        if short := [int(labels[m[0]]) for m, s in zip(groups, shares, strict=True) if s > len(m)]:
            raise ValueError(f"quotas ask more rows than clusters {short[:5]} have with a value")
    elif total is None:  # the parts rule: a cluster's share is its first array_split part
        shares = [len(band_part(m, parts, "low")) for m in groups]
    else:
        shares = exact_quotas(np.array([len(m) for m in groups], dtype=np.int64), total).tolist()
    if strategy == "random":  # same total size as the low parts of the clusters (or the exact total)
        size = sum(shares)
        picked = rng.choice(ids[valid], size=size, replace=False) if size else ids[:0]
        chosen.append(picked[np.lexsort((picked, metric[picked]))])
    else:
        for members, share in zip(groups, shares, strict=True):
            part = band_part(members, parts, band) if total is None else band_rows(members, share, band)
            if strategy == "clust_rand":  # a uniform draw of the size of the cluster's low part
                drawn = rng.choice(members, size=share, replace=False)
                part = drawn[np.lexsort((drawn, metric[drawn]))]
            chosen.append(part)
    out = np.concatenate(chosen) if chosen else ids[:0]
    if order == "original":
        out = np.sort(out)
    per_cluster: dict[int, int] = {}
    if clusters is not None:
        c, counts = np.unique(np.asarray(clusters)[out], return_counts=True)
        per_cluster = {int(k): int(v) for k, v in zip(c, counts, strict=True)}
    return Selection(ids=out.astype(np.int64), n_parts=parts, n_nan=int((~valid).sum()), per_cluster=per_cluster)


def _groups(ranked: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
    """Split ``ranked`` (sorted by cluster first) into its clusters, in ascending cluster number."""
    if len(ranked) == 0:
        return []
    lab = labels[ranked]
    cuts = np.flatnonzero(lab[1:] != lab[:-1]) + 1
    return np.split(ranked, cuts)
