"""``select --dedup``: drop near-duplicates before the selection (SemDeDup, Abbas et al. 2023).

``--dedup COSINE`` removes, within each cluster of ``lpselect cluster``, every row whose embedding is at least
COSINE-similar to an earlier kept row of that cluster (rows visited in id order; the rule and its float
handling are in :mod:`lpselect.core.dedup`). ``--dedup exact`` removes every row equal to an earlier row in
every field (the notion of ``Dataset.duplicate_rows``), over the whole data: equal rows are one row wherever
k-means put them. Removed rows are counted in the report with example pairs.

Large clusters are searched with faiss (``IndexFlatIP``, an exact search) when it is installed, else with the
numpy products used for the others; both only propose candidate pairs, decided by the same canonical
similarity, so the kept rows are identical on every path.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from lpselect.core.dedup import BLOCK_ROWS, ClusterDedup, KeptIndex, NumpyKeptIndex, greedy_keep
from lpselect.errors import InputError, LPSelectError

if TYPE_CHECKING:
    from lpselect.data.formats import Sample

LARGE_CLUSTER_ROWS = 20_000  # clusters above this size are searched with faiss when it is importable
FAISS_ONE_THREAD_PAIRS = 1 << 22  # searches of fewer (query, kept) pairs run on one thread
N_EXAMPLES = 5
SNIPPET_CHARS = 80


def parse_dedup(value: str) -> str | float:
    """``exact`` or a cosine similarity in (0, 1] (``--dedup``); anything else is one line."""
    text = str(value).strip()
    if text.lower() == "exact":
        return "exact"
    try:
        threshold = float(text)
    except ValueError:
        threshold = math.nan
    if not (math.isfinite(threshold) and 0.0 < threshold <= 1.0):
        raise InputError("--dedup", f"expected 'exact' or a cosine similarity in (0, 1] such as 0.95, got {text!r}")
    return threshold


def row_text(sample: Sample) -> str:
    """One text per row, equal for two rows exactly when ``Dataset.duplicate_rows`` calls them the same (every
    field, and each turn's role and text), readable in a report: fields joined by `` | `` with ``|`` and ``\\``
    escaped, so no two different rows give the same text."""
    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace("|", "\\|")

    parts = [esc(sample.instruction), esc(sample.input), esc(sample.output)]
    if sample.messages is not None:
        parts += ["turns:"] + [esc(m["role"]) + ": " + esc(m["content"]) for m in sample.messages]
    return " | ".join(parts)


@dataclass
class DedupResult:
    """Which rows survive the deduplication (``keep``, in row order) and what the report says about it."""

    keep: np.ndarray
    mode: str  # "cosine" | "exact"
    threshold: float | None
    n_removed: int
    n_rows: int
    examples: list[dict[str, Any]]
    removed_by: np.ndarray  # per row: the id of the kept row that removed it, -1 when kept
    similarity: np.ndarray  # per row: its similarity to that row (1.0 for exact), NaN when kept
    per_cluster: dict[int, tuple[int, int]] = field(default_factory=dict)  # cluster -> (rows, removed)
    search: dict[str, int] = field(default_factory=dict)  # clusters searched by each path (numpy, faiss)

    def report(self) -> dict[str, Any]:
        """The JSON-able summary for the subset's report."""
        out: dict[str, Any] = {"mode": self.mode, "threshold": self.threshold, "rows": self.n_rows,
                               "removed": self.n_removed, "kept": self.n_rows - self.n_removed}
        if self.mode == "cosine":  # two rows that differ only past the embedder's window look identical
            out["similarity_of"] = ("the embeddings lpselect cluster wrote (each row's text up to the embedder's "
                                    "max_seq_length tokens; the system turn left out)")
        removed = self.similarity[~self.keep]
        if self.mode == "cosine" and len(removed):
            out["removed_similarity"] = {"min": float(removed.min()), "median": float(np.median(removed)),
                                         "max": float(removed.max())}
        hit = {c: v for c, v in self.per_cluster.items() if v[1]}
        if hit:
            worst = max(hit, key=lambda c: (hit[c][1], -c))
            out["clusters_with_removals"] = len(hit)
            out["most_removed"] = {"cluster": worst, "rows": hit[worst][0], "removed": hit[worst][1]}
        if self.search:
            out["search"] = dict(self.search)
        out["examples"] = self.examples
        return out


def dedup_rows(mode: str | float, *, ids: np.ndarray, labels: np.ndarray | None, embeddings: np.ndarray | None,
               texts: Sequence[str], large_cluster_rows: int = LARGE_CLUSTER_ROWS,
               block_rows: int = BLOCK_ROWS) -> DedupResult:
    """Apply ``--dedup`` (a :func:`parse_dedup` value) to N rows: row i has id ``ids[i]``, cluster ``labels[i]``
    (None: one cluster), embedding ``embeddings[i]`` (cosine only; a memmap is read one cluster at a time) and
    text ``texts[i]`` (exact: compared whole, see :func:`row_text`; both: the example snippets)."""
    ids = np.asarray(ids, dtype=np.int64)
    n = len(ids)
    if len(texts) != n or (labels is not None and len(labels) != n):
        raise ValueError(f"ids, labels and texts differ in length: {n}, {None if labels is None else len(labels)}, "
                         f"{len(texts)}")
    if len(np.unique(ids)) != n:
        raise ValueError("ids must be unique")
    labels_arr = np.zeros(n, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    removed_by_row = np.full(n, -1, dtype=np.int64)  # row position of the kept partner
    similarity = np.full(n, np.nan)
    search: dict[str, int] = {}
    if mode == "exact":
        _exact(ids, texts, removed_by_row, similarity)
        threshold = None
    else:
        threshold = float(mode)
        if embeddings is None:
            raise LPSelectError(f"--dedup {threshold}: needs the embeddings written by lpselect cluster "
                                "(embeddings.npy beside clusters.parquet)")
        if len(embeddings) != n:
            raise LPSelectError(f"--dedup {threshold}: the embeddings have {len(embeddings)} rows, the data {n}")
        search = _cosine(threshold, ids, labels_arr, embeddings, removed_by_row, similarity,
                         large_cluster_rows=large_cluster_rows, block_rows=block_rows)
    keep = removed_by_row < 0
    removed_by = np.where(keep, -1, ids[np.maximum(removed_by_row, 0)])
    clusters, sizes = np.unique(labels_arr, return_counts=True)
    removed_counts = np.bincount(np.searchsorted(clusters, labels_arr[~keep]), minlength=len(clusters))
    per_cluster = {int(c): (int(s), int(r)) for c, s, r in zip(clusters, sizes, removed_counts, strict=True)}
    return DedupResult(keep=keep, mode="exact" if threshold is None else "cosine", threshold=threshold,
                       n_removed=int((~keep).sum()), n_rows=n,
                       examples=_examples(ids, texts, removed_by_row, similarity),
                       removed_by=removed_by, similarity=similarity, per_cluster=per_cluster, search=search)


def _exact(ids: np.ndarray, texts: Sequence[str], removed_by_row: np.ndarray, similarity: np.ndarray) -> None:
    """Every row whose text equals an earlier row's (id order) is removed, naming the first such row."""
    first: dict[str, int] = {}
    for row in np.argsort(ids, kind="stable"):
        row = int(row)
        kept = first.setdefault(texts[row], row)
        if kept != row:
            removed_by_row[row] = kept
            similarity[row] = 1.0


def _cosine(threshold: float, ids: np.ndarray, labels: np.ndarray, embeddings: np.ndarray,
            removed_by_row: np.ndarray, similarity: np.ndarray, *, large_cluster_rows: int,
            block_rows: int) -> dict[str, int]:
    """The greedy rule per cluster, rows in id order; returns how many clusters each search path served."""
    order = np.lexsort((ids, labels))  # by cluster, then id
    bounds = np.flatnonzero(np.r_[True, labels[order][1:] != labels[order][:-1], True])
    faiss = _faiss_or_none()
    search = {"numpy": 0, "faiss": 0}
    for lo, hi in itertools.pairwise(bounds.tolist()):
        rows = order[lo:hi]
        x = np.asarray(embeddings[np.sort(rows)], dtype=np.float32)[np.argsort(np.argsort(rows))]
        index: KeptIndex
        if faiss is not None and len(rows) > large_cluster_rows:
            index, path = FaissKeptIndex(faiss, x.shape[1]), "faiss"
        else:
            index, path = NumpyKeptIndex(len(rows), x.shape[1]), "numpy"
        search[path] += 1
        result: ClusterDedup = greedy_keep(x, threshold, index=index, block_rows=block_rows)
        gone = ~result.keep
        removed_by_row[rows[gone]] = rows[result.partner[gone]]
        similarity[rows[gone]] = result.similarity[gone]
    return search


def _faiss_or_none() -> Any:
    """faiss when installed; None means every cluster is searched with numpy (the same result, slower)."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


class FaissKeptIndex:
    """The kept rows of one cluster in a ``faiss.IndexFlatIP`` (exact inner products), searched by radius."""

    def __init__(self, faiss: Any, dim: int):
        self.faiss = faiss
        self.index = faiss.IndexFlatIP(dim)
        self.positions = np.empty(0, dtype=np.int64)

    def add(self, positions: np.ndarray, vectors: np.ndarray) -> None:
        if len(positions):
            self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))
            self.positions = np.concatenate([self.positions, positions])

    def candidates(self, block: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
        if self.index.ntotal == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        query = np.ascontiguousarray(block, dtype=np.float32)
        if len(block) * self.index.ntotal < FAISS_ONE_THREAD_PAIRS:
            threads = self.faiss.omp_get_max_threads()
            self.faiss.omp_set_num_threads(1)  # on a small search, starting the OpenMP team costs more than it
            try:
                lims, _, found = self.index.range_search(query, radius)
            finally:
                self.faiss.omp_set_num_threads(threads)
        else:
            lims, _, found = self.index.range_search(query, radius)
        rows = np.repeat(np.arange(len(block), dtype=np.int64), np.diff(lims).astype(np.int64))
        return rows, self.positions[found]


def _snippet(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS - 1] + "…"


def _examples(ids: np.ndarray, texts: Sequence[str], removed_by_row: np.ndarray,
              similarity: np.ndarray) -> list[dict[str, Any]]:
    """Up to N_EXAMPLES removed rows spread over the similarity range, the least similar first (the pairs
    nearest the threshold show best what it removes); ties by id."""
    removed = np.flatnonzero(removed_by_row >= 0)
    if len(removed) == 0:
        return []
    removed = removed[np.lexsort((ids[removed], similarity[removed]))]
    picks = sorted(set(np.linspace(0, len(removed) - 1, min(N_EXAMPLES, len(removed))).round().astype(int)))
    out = []
    for row in removed[picks]:
        kept = removed_by_row[row]
        out.append({"removed_id": int(ids[row]), "kept_id": int(ids[kept]),
                    "similarity": round(float(similarity[row]), 6),
                    "removed_text": _snippet(texts[row]), "kept_text": _snippet(texts[kept])})
    return out
