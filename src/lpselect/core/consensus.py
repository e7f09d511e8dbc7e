"""Consensus of several scorer runs: each row's mean rank of a metric across the runs (pure numpy).

Why: one scorer seed's 10 % LP(1) subset shares only part of its rows with another seed's (docs/benchmarks.md,
"Stability across scorer seeds"); the mean rank over several seeds averages the seed's noise out of the ranking.

The rule (stated once, tested in tests/test_consensus.py):

- Rows where any run's value is NaN or ±inf get a NaN consensus (selection then leaves them out and counts
  them, docs/method.md §8). The remaining M rows, the same in every run, are ranked within each run: ranks
  0 .. M-1, ascending by the metric (rank 0 = lowest value = hardest).
- Ties in a run get the average of the ranks they span (scipy's ``rankdata(method="average") - 1``), so a
  tie never favours the row with the smaller id in one run and carries that into the mean.
- The consensus value is the arithmetic mean of the row's ranks over the runs; lower = harder, as the
  metric. Ties in the consensus are broken by id, by :func:`lpselect.core.selection.select` as for any metric.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def average_ranks(x: np.ndarray) -> np.ndarray:
    """0-based ranks of a finite 1-d array, ascending; tied values share the mean of the ranks they span."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"need a 1-d array, got shape {x.shape}")
    if len(x) == 0:
        return np.zeros(0)
    order = np.argsort(x, kind="stable")
    sx = x[order]
    new_run = np.r_[True, sx[1:] != sx[:-1]]  # True where a run of equal values starts, in sorted order
    starts = np.flatnonzero(new_run)
    ends = np.r_[starts[1:], len(x)] - 1
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = ((starts + ends) / 2.0)[np.cumsum(new_run) - 1]
    return ranks


def consensus_metric(values: Sequence[np.ndarray]) -> np.ndarray:
    """Each row's mean rank across the runs (module docstring: ranks 0..M-1 over the rows finite in every run,
    ties by average rank); NaN where any run has no finite value. ``np.isnan(result).sum()`` is the count."""
    arrays = _check(values)
    keep = np.logical_and.reduce([np.isfinite(v) for v in arrays])
    out = np.full(len(arrays[0]), np.nan)
    if keep.any():
        out[keep] = np.mean([average_ranks(v[keep]) for v in arrays], axis=0)
    return out


def _check(values: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The runs as float arrays of one length (a consensus of runs over different data means nothing)."""
    arrays = [np.asarray(v, dtype=np.float64) for v in values]
    if not arrays:
        raise ValueError("a consensus needs at least one run")
    lengths = {a.shape for a in arrays}
    if len(lengths) != 1 or arrays[0].ndim != 1:
        raise ValueError(f"every run must be a 1-d array of one length, got shapes {[a.shape for a in arrays]}")
    return arrays
