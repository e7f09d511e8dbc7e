"""Clustering for diversity (SPEC §7): sentence embeddings of each sample, then k-means."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from lpselect.config import ClusterConfig
from lpselect.data.formats import read_dataset
from lpselect.data.template import embedding_text
from lpselect.io import save_npy, write_parquet
from lpselect.models import resolve_embedder
from lpselect.runs import RunFolder, describe_input

CLUSTERS = "clusters.parquet"
EMBEDDINGS = "embeddings.npy"


@dataclass
class ClusterResult:
    clusters_path: Path
    k_requested: int
    k_used: int


def capped_k(n_rows: int, k: int, min_cluster_size: int) -> int:
    """k <= N // min_cluster_size (at least 1): a 10 % band of a 1-member cluster would be all of it."""
    return max(1, min(k, n_rows // min_cluster_size))


def embed_texts(texts: list[str], embedder: str | None = None, *, batch_size: int = 64, max_seq_length: int = 256,
                progress: bool = True) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(resolve_embedder(embedder), device=None)
    model.max_seq_length = max_seq_length
    return model.encode(texts, batch_size=batch_size, show_progress_bar=progress, convert_to_numpy=True)


def kmeans_labels(embeddings: np.ndarray, k: int, seed: int = 42) -> np.ndarray:
    """scikit-learn k-means (random_state = seed, as the reference); labels are 0..k-1."""
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, random_state=seed, n_init="auto").fit_predict(embeddings).astype(np.int64)


def cluster(data: str | Path, out: str | Path, config: ClusterConfig | None = None, *, force: bool = False,
            progress: bool = True) -> ClusterResult:
    """Write ``clusters.parquet`` (id, cluster) and the embeddings (reused on a re-run after a crash)."""
    cfg = config or ClusterConfig()
    run = RunFolder(out)
    run.begin_step("cluster", inputs={"data": describe_input(data)}, config=cfg.model_dump(),
                   outputs=[CLUSTERS, EMBEDDINGS], force=force, defaults=ClusterConfig().model_dump())
    dataset = read_dataset(data)
    emb_path = run.path / EMBEDDINGS
    if emb_path.exists():
        embeddings = np.load(emb_path)
    else:
        with run.timed("cluster", "embed"):
            embeddings = embed_texts([embedding_text(s) for s in dataset.samples], cfg.embedder,
                                     batch_size=cfg.batch_size, max_seq_length=cfg.max_seq_length,
                                     progress=progress)
        save_npy(emb_path, embeddings.astype(np.float32))
    k = capped_k(len(dataset), cfg.k, cfg.min_cluster_size)
    with run.timed("cluster", "kmeans"):
        labels = kmeans_labels(embeddings, k, cfg.seed)
    path = run.path / CLUSTERS
    write_parquet(path, pa.table({"id": np.arange(len(labels), dtype=np.int64), "cluster": labels}))
    sizes = np.bincount(labels, minlength=k)
    run.update_step("cluster", status="complete", k_requested=cfg.k, k_used=k, embedder=resolve_embedder(cfg.embedder),
                    counts={"rows": len(labels), "min_size": int(sizes.min()), "max_size": int(sizes.max())})
    return ClusterResult(clusters_path=path, k_requested=cfg.k, k_used=k)
