"""Clustering for diversity (docs/method.md §7): sentence embeddings of each sample, then k-means."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import numpy as np
import pyarrow as pa

from lpselect.config import ClusterConfig, KMeansBackend
from lpselect.data.formats import read_dataset
from lpselect.data.provenance import describe_data, record_fingerprint
from lpselect.data.template import embedding_text
from lpselect.engine.models import check_model, load_embedder, resolve_embedder
from lpselect.errors import LPSelectError
from lpselect.faults import crash_point
from lpselect.runs.folder import RunFolder
from lpselect.runs.io import write_json, write_parquet
from lpselect.runs.layout import (
    CLUSTERS,
    EMBEDDINGS,
    EMBEDDINGS_PARTIAL,
    EMBEDDINGS_PROGRESS,
    PARTIAL_SUFFIX,
    PROGRESS_SUFFIX,
)

if TYPE_CHECKING:
    from lpselect.data.formats import Sample

# Kept across a crash (so not named .*.tmp, which RunFolder.begin_step deletes): the rows embedded so far.
KMEANS_BACKENDS: tuple[str, ...] = get_args(KMeansBackend)
MINIBATCH_SIZE = 4096  # MiniBatchKMeans rows per step: large enough for k=1000 centroids to see data each step
FAISS_SEARCH_ROWS = 65536  # rows assigned per faiss search call, so a memmap is never read whole at once


@dataclass
class ClusterResult:
    clusters_path: Path
    k_requested: int
    k_used: int


def capped_k(n_rows: int, k: int, min_cluster_size: int) -> int:
    """k <= N // min_cluster_size (at least 1): a 10 % band of a 1-member cluster would be all of it."""
    return max(1, min(k, n_rows // min_cluster_size))


def _load_embedder(embedder: str | None, max_seq_length: int) -> Any:
    """The SentenceTransformer, loaded once per run (not per chunk); a missing one is one line, not a traceback."""
    model = load_embedder(embedder)
    model.max_seq_length = max_seq_length
    return model


def embed_to_file(samples: Sequence[Sample], path: str | Path, *, embedder: str | None = None, batch_size: int = 64,
                  max_seq_length: int = 256, chunk_rows: int = 8192, progress: bool = True) -> float:
    """Write the float32 embeddings of ``samples`` to ``path`` (.npy) chunk by chunk, resumably; returns the
    seconds spent loading the embedder (0 when a resumed run had nothing left to encode).

    Never holds all texts or all vectors: the texts of one chunk are built, encoded and written into a memmap
    (``<path>.partial``); after each chunk a small progress file is replaced atomically, so a re-run after a
    crash continues with the first unfinished chunk. ``path`` appears (one rename) only when complete.

    Rows are encoded in the order a one-shot ``SentenceTransformer.encode`` uses (longest text first), batch
    by batch; with ``chunk_rows`` a multiple of ``batch_size`` the batches are exactly that encode's, so the
    file equals the all-at-once result, and padding stays as small as with it.
    """
    path = Path(path)
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    progress_path = path.with_name(path.name + PROGRESS_SUFFIX)
    n = len(samples)
    # the same key and sort as SentenceTransformer.encode: only n ints are kept, not the texts
    order = np.argsort([-len(embedding_text(s)) for s in samples])
    state = {"n_rows": n, "chunk_rows": chunk_rows, "batch_size": batch_size, "max_seq_length": max_seq_length,
             "embedder": resolve_embedder(embedder)}
    done, out = _resume_partial(partial, progress_path, state)

    from tqdm.auto import tqdm

    model, load_s = None, 0.0
    bar = tqdm(total=n, initial=done, unit="rows", desc="embedding", disable=not progress)
    try:
        for start in range(done, n, chunk_rows):
            stop = min(start + chunk_rows, n)
            if model is None:
                t0 = time.perf_counter()
                model = _load_embedder(embedder, max_seq_length)
                load_s = time.perf_counter() - t0
            for b in range(start, stop, batch_size):
                rows = order[b:min(b + batch_size, stop)]
                vecs = model.encode([embedding_text(samples[int(i)]) for i in rows], batch_size=batch_size,
                                    show_progress_bar=False, convert_to_numpy=True)
                if out is None:  # the width is known from the first batch
                    from numpy.lib.format import open_memmap

                    out = open_memmap(partial, mode="w+", dtype=np.float32, shape=(n, vecs.shape[1]))
                out[rows] = vecs
                bar.update(len(rows))
            out.flush()
            write_json(progress_path, {**state, "dim": int(out.shape[1]), "rows_done": stop})
            crash_point(f"embed:{start // chunk_rows}")
    finally:
        bar.close()
    if out is None:  # no rows: nothing to encode (read_dataset refuses empty data; kept for direct calls)
        from numpy.lib.format import open_memmap

        out = open_memmap(partial, mode="w+", dtype=np.float32, shape=(0, 0))
    out.flush()
    del out
    os.replace(partial, path)
    progress_path.unlink(missing_ok=True)
    return load_s


def _resume_partial(partial: Path, progress_path: Path, state: dict[str, Any]) -> tuple[int, np.memmap | None]:
    """(rows already embedded, the open partial memmap) from an interrupted run; (0, None) to start afresh."""
    try:
        saved = json.loads(progress_path.read_text())
        if {k: saved.get(k) for k in state} == state and partial.exists():
            out = np.load(partial, mmap_mode="r+")
            if out.dtype == np.float32 and out.shape == (state["n_rows"], saved["dim"]):
                return min(int(saved["rows_done"]), state["n_rows"]), out
    except (OSError, ValueError, KeyError, TypeError):
        pass
    partial.unlink(missing_ok=True)
    progress_path.unlink(missing_ok=True)
    return 0, None


def _import_faiss() -> Any:
    """faiss is an optional dependency: without it, one line that says how to get it."""
    try:
        import faiss
    except ImportError:
        raise LPSelectError("--kmeans faiss needs the faiss package: pip install faiss-cpu "
                            "(or pip install 'lpselect[faiss]'; a GPU build is used when installed)") from None
    return faiss


def kmeans_backend_name(backend: str = "sklearn") -> str:
    """What the manifest records: sklearn, faiss-cpu, faiss-gpu or minibatch (raises if faiss is missing)."""
    if backend not in KMEANS_BACKENDS:
        raise ValueError(f"kmeans backend must be one of {KMEANS_BACKENDS}, got {backend!r}")
    if backend == "faiss":
        return "faiss-gpu" if _import_faiss().get_num_gpus() > 0 else "faiss-cpu"
    return backend


def kmeans_labels(embeddings: np.ndarray, k: int, seed: int = 42, backend: str = "sklearn") -> np.ndarray:
    """k-means labels (int64, 0..k-1; with faiss/minibatch a cluster may be empty).

    sklearn = scikit-learn KMeans (random_state = seed, as the reference; the default); faiss = faiss.Kmeans
    (20 iterations, GPU build when present; it trains on at most 256 rows per centroid, sampled, and then
    assigns every row); minibatch = scikit-learn MiniBatchKMeans (batches of ``MINIBATCH_SIZE`` rows).
    """
    name = kmeans_backend_name(backend)
    if backend == "sklearn":
        from sklearn.cluster import KMeans

        labels = KMeans(n_clusters=k, random_state=seed, n_init="auto").fit_predict(embeddings)
    elif backend == "minibatch":
        from sklearn.cluster import MiniBatchKMeans

        labels = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3,
                                 batch_size=MINIBATCH_SIZE).fit_predict(embeddings)
    else:
        labels = _faiss_labels(embeddings, k, seed, gpu=name == "faiss-gpu")
    return np.asarray(labels).astype(np.int64)


def _faiss_labels(embeddings: np.ndarray, k: int, seed: int, *, gpu: bool) -> np.ndarray:
    """Train faiss.Kmeans, then assign each row to its nearest centroid (search of the centroid index)."""
    faiss = _import_faiss()
    x = np.ascontiguousarray(embeddings, dtype=np.float32)  # a float32 .npy memmap stays a memmap (no copy)
    n, d = x.shape
    # min_points_per_centroid=1: only silences faiss' "please provide at least 39 points per centroid" (k is
    # already capped by min_cluster_size)
    km = faiss.Kmeans(d, k, niter=20, seed=seed, gpu=gpu, verbose=False, min_points_per_centroid=1)
    km.train(x)
    labels = np.empty(n, dtype=np.int64)
    for start in range(0, n, FAISS_SEARCH_ROWS):
        _, idx = km.index.search(np.ascontiguousarray(x[start:start + FAISS_SEARCH_ROWS]), 1)
        labels[start:start + len(idx)] = idx[:, 0]
    return labels


def cluster(data: str | Path, out: str | Path, config: ClusterConfig | None = None, *, force: bool = False,
            progress: bool = True, fields: dict[str, str] | None = None) -> ClusterResult:
    """Write ``clusters.parquet`` (id, cluster) and the embeddings (reused on a re-run after a crash)."""
    cfg = config or ClusterConfig()
    backend = kmeans_backend_name(cfg.kmeans)  # a missing faiss fails here, before the long embedding
    check_model(resolve_embedder(cfg.embedder))  # so does a mistyped local embedder path
    run = RunFolder(out)
    run.begin_step("cluster", inputs={"data": describe_data(data, fields)}, config=cfg.model_dump(),
                   outputs=[CLUSTERS, EMBEDDINGS, EMBEDDINGS_PARTIAL, EMBEDDINGS_PROGRESS], force=force,
                   defaults=ClusterConfig().model_dump())
    dataset = read_dataset(data, fields)
    record_fingerprint(run, "cluster", dataset)  # what select/report check the data against
    emb_path = run.path / EMBEDDINGS
    if not emb_path.exists():
        t0 = time.perf_counter()
        load_s = embed_to_file(dataset.samples, emb_path, embedder=cfg.embedder, batch_size=cfg.batch_size,
                               max_seq_length=cfg.max_seq_length, chunk_rows=cfg.embed_chunk_rows, progress=progress)
        run.record_time("cluster", "load_embedder", load_s)  # as score records load_model apart from its passes
        run.record_time("cluster", "embed", time.perf_counter() - t0 - load_s)
    crash_point("embedded")
    embeddings = np.load(emb_path, mmap_mode="r")
    k = capped_k(len(dataset), cfg.k, cfg.min_cluster_size)
    with run.timed("cluster", "kmeans"):
        labels = kmeans_labels(embeddings, k, cfg.seed, cfg.kmeans)
    del embeddings
    path = run.path / CLUSTERS
    write_parquet(path, pa.table({"id": np.arange(len(labels), dtype=np.int64), "cluster": labels}))
    sizes = np.bincount(labels, minlength=k)
    run.update_step("cluster", status="complete", k_requested=cfg.k, k_used=k, embedder=resolve_embedder(cfg.embedder),
                    kmeans_backend=backend,
                    counts={"rows": len(labels), "min_size": int(sizes.min()), "max_size": int(sizes.max()),
                            "empty_clusters": int((sizes == 0).sum())})
    return ClusterResult(clusters_path=path, k_requested=cfg.k, k_used=k)
