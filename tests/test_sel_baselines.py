"""Issue 23/24 around select: a subset's report carries its ids, random baselines of exactly a subset's size
(``--like``, and beside every subset of ``lpselect run``), near-duplicate removal before the selection, and
``SubsetResult.dataset()``. Expected values are written out by hand or with plain numpy, never by calling the
selection code under test."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from lpselect.cli import app
from lpselect.config import RunConfig, SubsetSpec
from lpselect.errors import LPSelectError
from lpselect.runs.layout import EMBEDDINGS
from lpselect.steps.pipeline import _select_with_baselines, dry_run, load_run_config
from lpselect.steps.select import SubsetResult, select_baseline, select_subset

N, K = 30, 3


def _rows(n: int = N) -> list[dict[str, str]]:
    return [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(n)]


@pytest.fixture
def run(tmp_path: Path) -> tuple[Path, Path, Path]:
    """data.json, scores.parquet (LP_app(1) = 1 - P1/P0 strictly ascending with the id) and clusters.parquet
    (cluster = id % 3) in one folder, as score and cluster write them."""
    data = tmp_path / "data.json"
    data.write_text(json.dumps(_rows()))
    p0 = np.full(N, 10.0)
    p1 = 10.0 - np.linspace(1.0, 9.0, N)  # LP_app(1) = (p0 - p1) / p0 rises with the id
    pq.write_table(pa.table({"id": np.arange(N), "ppl_0": p0, "ppl_1": p1}), tmp_path / "scores.parquet")
    pq.write_table(pa.table({"id": np.arange(N), "cluster": np.arange(N) % K}), tmp_path / "clusters.parquet")
    return data, tmp_path / "scores.parquet", tmp_path / "clusters.parquet"


def test_report_lists_the_ids_in_the_subsets_order(run, tmp_path) -> None:
    data, scores, clusters = run
    r = select_subset(data, scores, tmp_path / "s" / "low.json", SubsetSpec(percent=20), clusters=clusters)
    report = json.loads(r.report_path.read_text())
    # by hand: 10 rows a cluster cut into 5 parts, the lowest 2 of each, cluster by cluster, ascending LP_app
    assert report["ids"] == [0, 3, 1, 4, 2, 5]
    written = json.loads(r.path.read_text())
    assert written == [_rows()[i] for i in report["ids"]]


@pytest.mark.parametrize("strategy", ["random", "clust_rand"])
def test_like_takes_the_size_of_a_subset(run, tmp_path, strategy) -> None:
    data, scores, clusters = run
    hard = select_subset(data, scores, tmp_path / "s" / "hard.json", SubsetSpec(percent=30, exact=True, seed=7),
                         clusters=clusters)
    assert len(hard.ids) == 9  # round(30 x 30 / 100)
    base = select_baseline(data, scores, tmp_path / "s" / f"hard.{strategy}.json", hard.path,
                           SubsetSpec(strategy=strategy, seed=7), clusters=clusters)
    report = json.loads(base.report_path.read_text())
    assert len(base.ids) == len(report["ids"]) == 9 == len(json.loads(base.path.read_text()))
    assert report["baseline_of"] == "hard.json" and report["strategy"] == strategy and report["seed"] == 7
    assert len(set(report["ids"])) == 9
    if strategy == "clust_rand":  # 9 rows over three clusters of 10: 3 from each
        assert sorted(np.bincount(np.asarray(report["ids"]) % K).tolist()) == [3, 3, 3]
    # the same through the CLI, from the subset's report (its seed too)
    out = tmp_path / "cli" / f"hard.{strategy}.json"
    r = CliRunner().invoke(app, ["select", "--data", str(data), "--scores", str(scores), "--clusters",
                                 str(clusters), "--strategy", strategy, "--like", str(hard.path), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert len(json.loads(out.read_text())) == 9 and f"baseline of hard.json: {strategy}, seed 7" in r.output


def test_like_refuses_a_ranking_strategy_and_a_subset_without_report(run, tmp_path) -> None:
    data, scores, clusters = run
    hard = select_subset(data, scores, tmp_path / "hard.json", SubsetSpec(percent=30), clusters=clusters)
    with pytest.raises(LPSelectError, match="--strategy random or clust_rand"):
        select_baseline(data, scores, tmp_path / "x.json", hard.path, SubsetSpec(strategy="cluster"),
                        clusters=clusters)
    lone = tmp_path / "lone.json"
    lone.write_text("[]")
    with pytest.raises(LPSelectError, match=r"no readable lone\.json\.report\.json") as e:
        select_baseline(data, scores, tmp_path / "y.json", lone, SubsetSpec(strategy="random"))
    assert "\n" not in str(e.value)
    old = json.loads(hard.report_path.read_text())
    old.pop("ids")
    hard.report_path.write_text(json.dumps(old))
    with pytest.raises(LPSelectError, match="select it again"):
        select_baseline(data, scores, tmp_path / "z.json", hard.path, SubsetSpec(strategy="random"))
    r = CliRunner().invoke(app, ["select", "--data", str(data), "--scores", str(scores), "--strategy", "global",
                                 "--like", str(hard.path), "--out", str(tmp_path / "w.json")])
    assert r.exit_code != 0 and "--strategy random or clust_rand" in r.output


def _config(tmp_path: Path, **extra: object) -> RunConfig:
    body = {"data": str(tmp_path / "data.json"), "out": str(tmp_path / "out"), "score": {"model": "m/tiny"},
            "select": [{"percents": [20]}, {"percents": [50], "strategy": "random"}], **extra}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(body))
    return load_run_config(path)


def test_run_writes_both_baselines_of_exactly_the_subsets_size_and_seed(run, tmp_path) -> None:
    data, scores, clusters = run
    cfg = _config(tmp_path)
    assert cfg.baselines is True
    sub = SubsetSpec(percent=20, seed=5)
    written = _select_with_baselines(cfg, sub, _dataset(data), scores, clusters, tmp_path / "subsets" / "hard")
    names = [r.path.name for r in written]
    assert names == ["hard.json", "hard.random.json", "hard.clust_rand.json"]
    subset = written[0]
    assert len(subset.ids) == 6  # the parts rule, by hand: 2 of each cluster of 10
    for base, strategy in zip(written[1:], ("random", "clust_rand"), strict=True):
        assert len(base.ids) == len(subset.ids)
        report = json.loads(base.report_path.read_text())
        assert (report["strategy"], report["seed"], report["baseline_of"]) == (strategy, 5, "hard.json")
    card = (tmp_path / "subsets" / "README.md").read_text()
    assert all(f"config_name: {n[:-5]}" in card for n in names)  # one config each, none clashing


def test_baselines_false_writes_none(run, tmp_path) -> None:
    data, scores, clusters = run
    cfg = _config(tmp_path, baselines=False)
    written = _select_with_baselines(cfg, SubsetSpec(percent=20), _dataset(data), scores, clusters,
                                     tmp_path / "subsets" / "hard")
    assert [r.path.name for r in written] == ["hard.json"]
    assert not any("(baseline:" in line for line in dry_run(cfg))
    assert _config(tmp_path).baselines is True  # rewrites run.yaml without the key
    assert load_run_config(tmp_path / "run.yaml", sets=["baselines=false"]).baselines is False


def test_dry_run_lists_the_baselines_of_ranked_subsets_only(run, tmp_path) -> None:
    lines = [line for line in dry_run(_config(tmp_path)) if line.startswith("select:")]
    assert len(lines) == 4  # the ranked subset and its two baselines, the random subset alone
    assert lines[1].endswith(".random.* (baseline: random, the same size and seed)")
    assert lines[2].endswith(".clust_rand.* (baseline: clust_rand, the same size and seed)")
    assert "-random.*" in lines[3] and "(baseline:" not in lines[3]
    no_clusters = _config(tmp_path, cluster=None)
    baselines = [line for line in dry_run(no_clusters) if "(baseline:" in line]
    assert len(baselines) == 1 and baselines[0].endswith("(baseline: random, the same size and seed)")


def _dataset(path: Path):
    from lpselect.data.formats import read_dataset

    return read_dataset(path)


# ---------------------------------------------------------------- SubsetResult.dataset()


def test_dataset_returns_the_selected_rows_in_order(run, tmp_path) -> None:
    data, scores, clusters = run
    r = select_subset(data, scores, tmp_path / "s.json", SubsetSpec(percent=20), clusters=clusters)
    ds = r.dataset()
    assert ds.to_list() == [_rows()[i] for i in [0, 3, 1, 4, 2, 5]]
    again = SubsetResult(path=r.path, report_path=r.report_path, ids=r.ids, report=r.report)  # no source kept
    assert again.dataset().to_list() == ds.to_list()


# ---------------------------------------------------------------- near-duplicate removal (wiring)


@dataclass
class _FakeDedup:
    keep: np.ndarray

    @property
    def n_removed(self) -> int:
        return int((~self.keep).sum())

    def report(self) -> dict:
        return {"n_removed": self.n_removed}


@pytest.fixture
def fake_dedup(monkeypatch):
    """lpselect.steps.dedup with a fixed rule: drop rows 0, 1 and 2 (the three lowest LP_app, one a cluster),
    recording what it was given."""
    calls: list[dict] = []
    module = types.ModuleType("lpselect.steps.dedup")

    def parse_dedup(value: str):
        return "exact" if value == "exact" else float(value)

    def dedup_rows(mode, *, ids, labels, embeddings, texts):
        calls.append({"mode": mode, "ids": ids, "labels": labels, "embeddings": embeddings, "texts": texts})
        keep = np.ones(len(ids), dtype=bool)
        keep[[0, 1, 2]] = False
        return _FakeDedup(keep)

    module.parse_dedup, module.dedup_rows, module.row_text = parse_dedup, dedup_rows, lambda s: s.instruction
    monkeypatch.setitem(sys.modules, "lpselect.steps.dedup", module)
    return calls


@pytest.mark.parametrize("strategy", ["cluster", "global", "random", "clust_rand"])
def test_rows_dedup_removes_are_never_selected(run, tmp_path, fake_dedup, strategy) -> None:
    data, scores, clusters = run
    np.save(tmp_path / EMBEDDINGS, np.eye(N, 4, dtype=np.float32))
    r = select_subset(data, scores, tmp_path / "s" / "d.json", SubsetSpec(percent=20, strategy=strategy,
                                                                            dedup="0.95"), clusters=clusters)
    assert not {0, 1, 2} & set(r.ids.tolist())
    if strategy == "cluster":  # by hand: each cluster now starts at its 2nd row: 3, 6 / 4, 7 / 5, 8
        assert r.ids.tolist() == [3, 6, 4, 7, 5, 8]
    call = fake_dedup[0]
    assert call["mode"] == 0.95 and call["ids"].tolist() == list(range(N))
    assert call["labels"].tolist() == (np.arange(N) % K).tolist()
    assert len(call["embeddings"]) == N and len(call["texts"]) == N
    assert call["embeddings"][np.arange(N)].shape == (N, 4)
    report = json.loads(r.report_path.read_text())
    assert report["dedup"] == {"n_removed": 3} and report["n_nan_left_out"] == 0


def test_exact_dedup_needs_no_embeddings_and_a_threshold_does(run, tmp_path, fake_dedup) -> None:
    data, scores, clusters = run
    r = select_subset(data, scores, tmp_path / "e.json", SubsetSpec(percent=20, strategy="global", dedup="exact"))
    assert fake_dedup[0]["mode"] == "exact" and fake_dedup[0]["embeddings"] is None
    assert not {0, 1, 2} & set(r.ids.tolist())
    with pytest.raises(LPSelectError, match="embeddings") as e:
        select_subset(data, scores, tmp_path / "t.json", SubsetSpec(dedup="0.9"), clusters=clusters)
    assert "\n" not in str(e.value) and not (tmp_path / "t.json").exists()


def test_dedup_setting_reads_yaml_numbers_and_is_in_the_file_name(tmp_path) -> None:
    from lpselect.steps.pipeline import spec_name

    cfg = RunConfig.model_validate({"data": "d.json", "out": "o", "select": [{"dedup": 0.95}]})
    sub = cfg.select[0].subsets()[0]
    assert sub.dedup == "0.95" and spec_name(sub, "tiny").endswith("-dedup0.95")


def test_exact_duplicates_are_never_selected_with_the_real_rule(tmp_path) -> None:
    """lpselect.steps.dedup itself: rows 10..14 repeat rows 0..4 and rank hardest of all; the copies are gone
    from every selection, the first occurrences stay selectable."""
    rows = _rows(20)
    rows[10:15] = [dict(r) for r in rows[0:5]]
    data = tmp_path / "data.json"
    data.write_text(json.dumps(rows))
    p1 = 10.0 - np.linspace(1.0, 9.0, 20)
    p1[10:15] = 9.5  # LP_app 0.05: lower than every other row
    pq.write_table(pa.table({"id": np.arange(20), "ppl_0": np.full(20, 10.0), "ppl_1": p1}),
                   tmp_path / "scores.parquet")
    r = select_subset(data, tmp_path / "scores.parquet", tmp_path / "d.json",
                      SubsetSpec(strategy="global", n=5, dedup="exact"))
    assert r.ids.tolist() == [0, 1, 2, 3, 4]  # without dedup: 10..14
    assert r.report["dedup"]["removed"] == 5 and r.report["n_nan_left_out"] == 0
    json.dumps(r.report)  # the report is JSON-able as written
    cli = CliRunner().invoke(app, ["select", "--data", str(data), "--scores", str(tmp_path / "scores.parquet"),
                                   "--strategy", "global", "--n", "5", "--dedup", "exact", "--out",
                                   str(tmp_path / "cli.json")])
    assert cli.exit_code == 0, cli.output
    assert "dedup: 5 of 20 rows removed" in cli.output
    assert [r["instruction"] for r in json.loads((tmp_path / "cli.json").read_text())] == [f"q{i}" for i in range(5)]


def test_cosine_dedup_reads_the_embeddings_beside_the_clusters(run, tmp_path) -> None:
    """Rows 3 and 6 get row 0's embedding (cluster 0); the real rule drops them, so the hardest 2 of cluster 0
    become 0 and 9 (by hand)."""
    data, scores, clusters = run
    emb = np.eye(N, dtype=np.float32)
    emb[[3, 6]] = emb[0]
    np.save(tmp_path / EMBEDDINGS, emb)
    r = select_subset(data, scores, tmp_path / "c.json", SubsetSpec(percent=20, dedup="0.99"), clusters=clusters)
    assert r.ids.tolist()[:2] == [0, 9] and not {3, 6} & set(r.ids.tolist())
    assert r.report["dedup"]["removed"] == 2


def test_the_run_report_shows_a_baseline_as_a_random_draw_with_its_subsets_ids(run, tmp_path) -> None:
    from lpselect.analysis.report import write_report

    data, scores, clusters = run
    hard = select_subset(data, scores, tmp_path / "subsets" / "hard.json", SubsetSpec(percent=20), clusters=clusters)
    select_baseline(data, scores, tmp_path / "subsets" / "hard.random.json", hard.path,
                    SubsetSpec(strategy="random"), clusters=clusters)
    html = write_report(tmp_path).read_text()
    assert "random draw of hard.json" in html and "seed 42" in html
    assert "hardest 20 % by lp_app(1)" in html  # the ranked subset keeps its rule
