"""The selection rule of SPEC §8: pure numpy over (metric, cluster) arrays, ids are row positions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BANDS = ("low", "mid", "high")
STRATEGIES = ("cluster", "global", "clust_rand", "random", "trajectory")  # trajectory: lpselect.core.trajectory
ORDERS = ("reference", "original")


@dataclass
class Selection:
    """Selected ids in output order, plus what the report needs."""

    ids: np.ndarray
    n_parts: int
    n_nan: int
    per_cluster: dict[int, int]


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
) -> Selection:
    """Pick ids per SPEC §8. NaN (and ±inf) rows are removed before any split and are never selected."""
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
    if strategy in ("cluster", "clust_rand") and clusters is None:
        raise ValueError(f"strategy {strategy!r} needs a cluster assignment")
    ids = np.arange(n)
    valid = np.isfinite(metric)  # an inf perplexity gives an inf/NaN metric: no rank to trust
    parts = n_parts(percent)
    labels = np.zeros(n, dtype=np.int64) if clusters is None or strategy == "global" else np.asarray(clusters)
    if len(labels) != n:
        raise ValueError(f"{len(labels)} cluster labels for {n} rows")

    # rows ordered by (cluster, metric, id): each cluster's members are a contiguous, ranked run
    ranked = ids[valid][np.lexsort((ids[valid], metric[valid], labels[valid]))]
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    if strategy == "random":  # same total size as the low parts of the clusters
        size = sum(len(band_part(m, parts, "low")) for m in _groups(ranked, labels))
        picked = rng.choice(ids[valid], size=size, replace=False) if size else ids[:0]
        chosen.append(picked[np.lexsort((picked, metric[picked]))])
    else:
        for members in _groups(ranked, labels):
            part = band_part(members, parts, band)
            if strategy == "clust_rand":  # a uniform draw of the size of the cluster's low part
                drawn = rng.choice(members, size=len(band_part(members, parts, "low")), replace=False)
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
