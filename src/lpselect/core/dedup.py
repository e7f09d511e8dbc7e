"""Near-duplicate removal inside one cluster (SemDeDup, Abbas et al. 2023): pure numpy.

The rule: rows are visited in the order given (the caller sorts them by id); a row is removed when its cosine
similarity to an earlier *kept* row is ``>= threshold``; otherwise it is kept. A removed row never removes
another one, so the result depends only on the order and the threshold.

Float error at the threshold. The decision uses one canonical similarity per pair: both vectors are divided by
their norms in float64, the products of their components are summed along the row with numpy's pairwise sum,
and the sum is rounded to ``SIMILARITY_DECIMALS`` decimals (:func:`pair_similarity`). That value does not depend
on which other rows are in the batch, so every search path decides a pair the same way; the rounding, far
coarser than the float64 sum's error and far finer than any threshold a user types, puts a pair whose cosine
is the threshold up to float error at the threshold, and two identical (or parallel) embeddings at exactly 1.
Fast float32 matrix products (numpy or faiss) only propose candidate pairs, with a margin below the threshold
(:func:`filter_margin`) larger than their worst rounding error; each candidate is then decided by the
canonical value with ``>=``. A zero vector has similarity 0 with every row, so
it is always kept and never removes another row.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Protocol

import numpy as np

SIMILARITY_DECIMALS = 12
BLOCK_ROWS = 1024  # rows decided together: one float32 product against the kept rows per block
KEPT_CHUNK_ROWS = 8192  # kept rows per product in the numpy search, so a block's product stays small


def filter_margin(dim: int) -> float:
    """How far below the threshold the float32 search looks, so it never misses a pair the canonical float64
    similarity puts at or above it: a float32 dot product of two unit vectors is off by at most about
    ``(dim + 2) * 2**-24`` (the sum's rounding plus the two roundings of the normalised vectors); twice that,
    plus a floor, is used."""
    return 2.0 * (dim + 2) * 2.0**-24 + 1e-6


def unit_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float32, float64) copies of ``x`` with each row divided by its float64 norm; zero rows stay zero."""
    x64 = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x64).all():
        raise ValueError("embeddings contain NaN or infinite values")
    norms = np.sqrt(np.einsum("ij,ij->i", x64, x64))
    norms[norms == 0] = 1.0
    unit64 = x64 / norms[:, None]
    return unit64.astype(np.float32), unit64


def pair_similarity(unit64: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The canonical cosine similarity of each pair (a[k], b[k]) of rows of ``unit64`` (see module docstring)."""
    return np.round((unit64[a] * unit64[b]).sum(axis=1), SIMILARITY_DECIMALS)


class KeptIndex(Protocol):
    """The kept rows so far, searchable: each search path (numpy here, faiss in lpselect.steps.dedup)."""

    def add(self, positions: np.ndarray, vectors: np.ndarray) -> None:
        """Add kept rows (their positions in the cluster and float32 unit vectors)."""

    def candidates(self, block: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
        """Pairs (block row, kept position) whose float32 inner product is above ``radius`` (a superset of the
        pairs to decide; extra pairs are harmless)."""


class NumpyKeptIndex:
    """Kept rows in one preallocated float32 buffer, searched by matrix products in chunks."""

    def __init__(self, capacity: int, dim: int):
        self.vectors = np.empty((capacity, dim), dtype=np.float32)
        self.positions = np.empty(capacity, dtype=np.int64)
        self.size = 0

    def add(self, positions: np.ndarray, vectors: np.ndarray) -> None:
        n = len(positions)
        self.vectors[self.size:self.size + n] = vectors
        self.positions[self.size:self.size + n] = positions
        self.size += n

    def candidates(self, block: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
        rows, kept = [], []
        for start in range(0, self.size, KEPT_CHUNK_ROWS):
            stop = min(start + KEPT_CHUNK_ROWS, self.size)
            q, k = np.nonzero(block @ self.vectors[start:stop].T >= radius)
            rows.append(q)
            kept.append(self.positions[start + k])
        if not rows:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        return np.concatenate(rows), np.concatenate(kept)


@dataclass
class ClusterDedup:
    """Per row of one cluster (in visiting order): kept or not, and for a removed row its most similar earlier
    kept row (position in the cluster; ties go to the earlier row) with that similarity."""

    keep: np.ndarray
    partner: np.ndarray
    similarity: np.ndarray


def greedy_keep(x: np.ndarray, threshold: float, *, index: KeptIndex | None = None,
                block_rows: int = BLOCK_ROWS) -> ClusterDedup:
    """The rule of the module docstring over the rows of ``x`` in their order (one cluster)."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    unit32, unit64 = unit_rows(x)
    m, dim = unit32.shape
    index = index if index is not None else NumpyKeptIndex(m, dim)
    radius = threshold - filter_margin(dim)
    out = ClusterDedup(keep=np.zeros(m, dtype=bool), partner=np.full(m, -1, dtype=np.int64),
                       similarity=np.full(m, np.nan))
    for start in range(0, m, block_rows):
        stop = min(start + block_rows, m)
        block = unit32[start:stop]
        q, k = index.candidates(block, radius)
        _record_best(out, start + q, k, pair_similarity(unit64, start + q, k), threshold)
        _decide_within_block(out, unit64, block, start, radius, threshold)
        kept = start + np.flatnonzero(out.keep[start:stop])
        index.add(kept, unit32[kept])
    return out


def _record_best(out: ClusterDedup, rows: np.ndarray, partners: np.ndarray, sims: np.ndarray,
                 threshold: float) -> None:
    """Mark rows with a kept partner at or above the threshold removed; keep the best partner of each."""
    hit = sims >= threshold
    rows, partners, sims = rows[hit], partners[hit], sims[hit]
    if len(rows) == 0:
        return
    order = np.lexsort((partners, -sims, rows))  # by row, then most similar, then earliest partner
    rows, partners, sims = rows[order], partners[order], sims[order]
    first = np.ones(len(rows), dtype=bool)
    first[1:] = rows[1:] != rows[:-1]
    out.partner[rows[first]] = partners[first]
    out.similarity[rows[first]] = sims[first]


def _decide_within_block(out: ClusterDedup, unit64: np.ndarray, block: np.ndarray, start: int, radius: float,
                         threshold: float) -> None:
    """Rows not removed by earlier blocks are kept unless an earlier kept row of the same block removes them;
    rows are settled in order, each after every row before it."""
    removed_before = out.partner[start:start + len(block)] >= 0
    local_keep = ~removed_before
    i, j = np.nonzero(np.triu(block @ block.T >= radius, k=1))  # i < j: i is earlier
    if len(i):
        sims = pair_similarity(unit64, start + i, start + j)
        hit = sims >= threshold
        i, j, sims = i[hit], j[hit], sims[hit]
        order = np.lexsort((i, j))
        i, j, sims = i[order], j[order], sims[order]
        bounds = np.flatnonzero(np.r_[True, j[1:] != j[:-1], True])
        for lo, hi in itertools.pairwise(bounds.tolist()):
            row = int(j[lo])
            alive = local_keep[i[lo:hi]]
            if not alive.any():
                continue
            best = lo + int(np.argmax(np.where(alive, sims[lo:hi], -np.inf)))  # first max = earliest row
            if removed_before[row] and sims[best] <= out.similarity[start + row]:
                continue  # already removed by an earlier block's row at least as similar (and earlier)
            local_keep[row] = False
            out.partner[start + row] = start + int(i[best])
            out.similarity[start + row] = sims[best]
    out.keep[start:start + len(block)] = local_keep
