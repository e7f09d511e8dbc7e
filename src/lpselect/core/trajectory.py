"""Strategy ``trajectory`` (S2L, docs/method.md §8): cluster the scorer's per-sample loss trajectories, sample evenly.

Yang et al., "SmallToLarge (S2L): Scalable Data Selection for Fine-tuning Large Language Models by Summarizing
Training Trajectories of Small Models" (NeurIPS 2024). Pure numpy over a score table (column name -> array);
scikit-learn's KMeans is imported inside :func:`trajectory_labels` only. docs/metrics.md states the rule.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from lpselect.config import SubsetSpec
from lpselect.core.selection import ORDERS

DEFAULT_K: int = SubsetSpec.model_fields["trajectory_k"].default  # S2L's number of trajectory clusters


@dataclass
class TrajectorySelection:
    """Selected ids in output order, plus what the report needs."""

    ids: np.ndarray
    n_nan: int  # rows left out: a NaN/inf anywhere in their trajectory
    budget: int  # B = round(N_valid * percent / 100)
    k_requested: int
    k_used: int  # min(k, N_valid)
    columns: list[str]  # the score columns of the trajectory, in order
    labels: np.ndarray  # trajectory cluster of every row, -1 for rows left out
    cluster_sizes: dict[int, int]  # non-empty clusters only
    per_cluster: dict[int, int]  # rows picked per trajectory cluster


def trajectory_columns(table: Mapping[str, np.ndarray]) -> list[str]:
    """``ppl_0 .. ppl_n``, then the online training losses ``ppl_online_1 ..`` where recorded.

    An online column with no finite value at all (nothing was recorded) is skipped, so it cannot leave every
    row out. Column order does not change Euclidean k-means; it is fixed for the report.
    """
    def numbered(prefix: str) -> list[str]:
        found = sorted((int(m.group(1)), c) for c in table if (m := re.fullmatch(rf"{prefix}_(\d+)", c)))
        return [c for _, c in found]

    online = [c for c in numbered("ppl_online")
              if np.isfinite(np.asarray(table[c], dtype=np.float64)).any()]
    return numbered("ppl") + online


def loss_trajectory(table: Mapping[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """(rows x T) mean token losses ln(ppl) of :func:`trajectory_columns`, and those column names."""
    columns = trajectory_columns(table)
    if not columns:
        raise ValueError("the scores have no ppl_0 .. ppl_n columns: nothing to build a loss trajectory from")
    ppl = np.column_stack([np.asarray(table[c], dtype=np.float64) for c in columns])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(ppl), columns


def trajectory_budget(n_valid: int, percent: float) -> int:
    """B = round(N_valid * p / 100) (Python rounding, half to even): p % of the rows with a finite trajectory."""
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], got {percent}")
    return round(n_valid * float(percent) / 100)


def trajectory_labels(trajectory: np.ndarray, k: int, seed: int) -> np.ndarray:
    """KMeans(n_clusters=min(k, N), random_state=seed, n_init="auto") labels of finite trajectories."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    x = np.asarray(trajectory, dtype=np.float64)
    if len(x) == 0:
        return np.zeros(0, dtype=np.int64)
    with warnings.catch_warnings():  # fewer distinct trajectories than k: some clusters stay empty (reported)
        warnings.simplefilter("ignore", ConvergenceWarning)
        km = KMeans(n_clusters=min(k, len(x)), random_state=seed, n_init="auto").fit(x)
    return km.labels_.astype(np.int64)


def balanced_fill(labels: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """S2L's balanced rule: positions into ``labels`` picked for a budget of ``budget`` rows.

    Clusters are visited in ascending size (ties by cluster id); each gives min(its size, floor(remaining
    budget / clusters not yet visited)) members drawn uniformly without replacement; the remaining budget
    drops by what was taken. The last cluster may take all that remains, so exactly min(budget, N) rows are
    picked. Output: cluster by cluster in visiting order, ascending position within a cluster.
    """
    labels = np.asarray(labels)
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    pos = np.argsort(labels, kind="stable")
    clusters, starts, sizes = np.unique(labels[pos], return_index=True, return_counts=True)
    visit = np.lexsort((clusters, sizes))  # ascending size, then ascending cluster id
    remaining = int(budget)
    picked: list[np.ndarray] = []
    for j, i in enumerate(visit):
        members = pos[starts[i]:starts[i] + sizes[i]]
        take = min(int(sizes[i]), remaining // (len(visit) - j))  # floor, as S2L's ``n // (K - j)``
        picked.append(np.sort(rng.choice(members, size=take, replace=False)))
        remaining -= take
    return np.concatenate(picked).astype(np.int64) if picked else np.zeros(0, dtype=np.int64)


def select_trajectory(
    trajectory: np.ndarray,
    percent: float,
    *,
    k: int = DEFAULT_K,
    order: str = "reference",
    seed: int = 42,
    columns: list[str] | None = None,
    budget: int | None = None,
) -> TrajectorySelection:
    """S2L selection over a (rows x T) loss-trajectory matrix; rows with any non-finite value are left out.

    ``order``: ``reference`` = the fill's order (clusters by ascending size, ties by id; rows by ascending id
    within a cluster, as S2L concatenates its per-cluster draws); ``original`` = ascending id. ``budget``: a
    row count instead of ``percent`` % of the rows with a finite trajectory.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    x = np.asarray(trajectory, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"trajectory must be (rows x points), got shape {x.shape}")
    valid = np.isfinite(x).all(axis=1)
    ids = np.flatnonzero(valid)
    if budget is None:
        budget = trajectory_budget(len(ids), percent)
    elif not 0 <= budget <= len(ids):
        raise ValueError(f"cannot take {budget} rows: {len(ids)} have a finite loss trajectory")
    valid_labels = trajectory_labels(x[valid], k, seed)
    out = ids[balanced_fill(valid_labels, budget, np.random.default_rng(seed))]
    if order == "original":
        out = np.sort(out)
    labels = np.full(len(x), -1, dtype=np.int64)
    labels[valid] = valid_labels
    c, n = np.unique(valid_labels, return_counts=True)
    pc, pn = np.unique(labels[out], return_counts=True)
    return TrajectorySelection(
        ids=out.astype(np.int64), n_nan=int((~valid).sum()), budget=budget, k_requested=k,
        k_used=min(k, len(ids)), columns=list(columns or []), labels=labels,
        cluster_sizes={int(a): int(b) for a, b in zip(c, n, strict=True)},
        per_cluster={int(a): int(b) for a, b in zip(pc, pn, strict=True)},
    )


def select_trajectory_from_table(table: Mapping[str, np.ndarray], percent: float, *, k: int = DEFAULT_K,
                                 order: str = "reference", seed: int = 42,
                                 budget: int | None = None) -> TrajectorySelection:
    """:func:`select_trajectory` on the loss trajectory of a score table (as read from scores.parquet)."""
    x, columns = loss_trajectory(table)
    return select_trajectory(x, percent, k=k, order=order, seed=seed, columns=columns, budget=budget)
