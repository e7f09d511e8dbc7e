"""docs/method.md §8 (2026-12-03): bands by meaning, the exact budget, the refusal of a metric with no spread, and the
share taken. Expected values come from hand examples and from a plain-Python statement written here (exact
fractions for the largest-remainder shares), never from lpselect."""

from __future__ import annotations

import json
import math
import random
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lpselect.config import SubsetSpec
from lpselect.core.selection import NoSpreadError, exact_quotas, literal_band, select
from lpselect.errors import LPSelectError
from lpselect.steps.select import select_subset

# docs/metrics.md's table, written out: where the hard samples are in the ascending ranking
HARD_IS_LOW = {"lp", "lp_app", "confidence", "lp_online"}
HARD_IS_HIGH = {"ppl", "ifd", "variability"}


# ---------------------------------------------------------------- the independent statement


def statement_quotas(sizes: list[int], total: int) -> list[int]:
    """Largest remainder with exact fractions: floor(total n_c / N), then +1 by descending remainder, ties by
    ascending cluster order."""
    n = sum(sizes)
    shares = [Fraction(total * s, n) for s in sizes]
    base = [math.floor(q) for q in shares]
    left = total - sum(base)
    order = sorted(range(len(sizes)), key=lambda i: (-(shares[i] - base[i]), i))
    for i in order[:left]:
        base[i] += 1
    return base


def statement_exact(metric: list[float], clusters: list[int], total: int, band: str) -> list[int]:
    """Clusters ascending; members by (metric, id); each gives its quota from the band's end (mid: centred)."""
    valid = [i for i in range(len(metric)) if not math.isnan(metric[i])]
    labels = sorted({clusters[i] for i in valid})
    members = [sorted((i for i in valid if clusters[i] == c), key=lambda i: (metric[i], i)) for c in labels]
    quotas = statement_quotas([len(m) for m in members], total)
    out: list[int] = []
    for m, q in zip(members, quotas, strict=True):
        if band == "low":
            out += m[:q]
        elif band == "high":
            out += m[len(m) - q:]
        else:
            start = (len(m) - q) // 2
            out += m[start:start + q]
    return out


# ---------------------------------------------------------------- exact budget


def test_quotas_by_hand() -> None:
    # sizes 5, 3, 2 and 3 rows: 1.5, 0.9, 0.6 -> floors 1, 0, 0; the two largest remainders (.9, .6) get one
    assert exact_quotas(np.array([5, 3, 2]), 3).tolist() == [1, 1, 1]
    # 4 rows: 2.0, 1.2, 0.8 -> floors 2, 1, 0; the one row left goes to the remainder .8
    assert exact_quotas(np.array([5, 3, 2]), 4).tolist() == [2, 1, 1]
    # a tie (0.5, 0.5) goes to the lower cluster number
    assert exact_quotas(np.array([2, 2]), 1).tolist() == [1, 0]
    assert exact_quotas(np.array([7, 1]), 8).tolist() == [7, 1]
    assert exact_quotas(np.array([7, 1]), 0).tolist() == [0, 0]


def test_quotas_match_the_statement_on_random_sizes() -> None:
    rng = random.Random(3)
    for _ in range(300):
        sizes = [rng.randint(1, 40) for _ in range(rng.randint(1, 12))]
        total = rng.randint(0, sum(sizes))
        got = exact_quotas(np.array(sizes), total).tolist()
        assert got == statement_quotas(sizes, total), (sizes, total)
        assert sum(got) == total and all(0 <= q <= s for q, s in zip(got, sizes, strict=True))


@pytest.mark.parametrize("band", ["low", "mid", "high"])
def test_exact_total_matches_the_statement(band: str) -> None:
    rng = random.Random(11)
    for _ in range(60):
        n = rng.randint(2, 80)
        metric = [rng.choice([0.1, 0.2, 0.3]) if rng.random() < 0.3 else rng.random() for _ in range(n)]
        metric = [math.nan if rng.random() < 0.1 else v for v in metric]
        clusters = [rng.randint(0, 6) for _ in range(n)]
        finite = [v for v in metric if not math.isnan(v)]
        if len(set(finite)) < 2:
            continue
        total = rng.randint(0, len(finite))
        got = select(np.array(metric), np.array(clusters), 10, band, total=total).ids.tolist()
        assert got == statement_exact(metric, clusters, total, band)
        assert len(got) == total


def test_exact_total_random_strategies_take_the_same_counts() -> None:
    rng = np.random.default_rng(0)
    metric, clusters = rng.random(90), rng.integers(0, 5, 90)
    shares = statement_quotas([int((clusters == c).sum()) for c in range(5)], 17)
    drawn = select(metric, clusters, 10, "low", strategy="clust_rand", total=17, seed=3).ids
    assert [int((clusters[drawn] == c).sum()) for c in range(5)] == shares
    assert len(select(metric, clusters, 10, "low", strategy="random", total=17).ids) == 17


def test_a_total_beyond_the_rows_with_a_value_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot take 4 rows: 3 have a value"):
        select(np.array([0.1, 0.2, math.nan, 0.3]), None, 10, "low", strategy="global", total=4)


# ---------------------------------------------------------------- bands by meaning


@pytest.mark.parametrize("metric", sorted(HARD_IS_LOW | HARD_IS_HIGH))
def test_bands_by_meaning_follow_each_metrics_direction(metric: str) -> None:
    from lpselect.core.metrics import HARD_END

    hard = "low" if metric in HARD_IS_LOW else "high"
    easy = "high" if hard == "low" else "low"
    assert literal_band("hardest", HARD_END[metric]) == hard
    assert literal_band("easiest", HARD_END[metric]) == easy
    assert literal_band("middle", HARD_END[metric]) == "mid"
    for literal in ("low", "mid", "high"):  # the literal bands keep their meaning
        assert literal_band(literal, HARD_END[metric]) == literal


# ---------------------------------------------------------------- no spread


def test_a_constant_metric_ranks_nothing() -> None:
    m = np.array([1.0, 1.0, math.nan, 1.0])
    for strategy in ("cluster", "global"):
        with pytest.raises(NoSpreadError, match="1 for all 3 rows"):
            select(m, np.zeros(4, dtype=int), 50, "low", strategy=strategy)
    # the random baselines do not rank by it: still allowed
    assert len(select(m, np.zeros(4, dtype=int), 50, "low", strategy="random").ids) == 2


# ---------------------------------------------------------------- select_subset end to end


def _run(tmp_path: Path, columns: dict[str, np.ndarray], n_clusters: int = 3) -> tuple[Path, Path, Path]:
    n = len(next(iter(columns.values())))
    data = tmp_path / "data.json"
    data.write_text(json.dumps([{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(n)]))
    scores = tmp_path / "scores.parquet"
    pq.write_table(pa.table({"id": np.arange(n), **columns}), scores)
    clusters = tmp_path / "clusters.parquet"
    pq.write_table(pa.table({"id": np.arange(n), "cluster": np.arange(n) % n_clusters}), clusters)
    return data, scores, clusters


def test_hardest_ifd_is_the_high_end_and_the_report_says_so(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    n = 60
    ppl0 = np.exp(rng.uniform(0.5, 2.0, n))
    resp = np.exp(rng.uniform(0.5, 2.0, n))
    data, scores, clusters = _run(tmp_path, {"ppl_0": ppl0, "ppl_resp_0": resp})
    r = select_subset(data, scores, tmp_path / "s.json", SubsetSpec(metric="ifd", epoch=0, percent=10),
                      clusters=clusters)
    ifd = np.log(ppl0) / np.log(resp)
    labels = np.arange(n) % 3
    expected = []  # per cluster the top ceil(20 / 10) = 2 IFD values, in ascending order
    for c in range(3):
        members = sorted(np.flatnonzero(labels == c).tolist(), key=lambda i: (ifd[i], i))
        expected += members[-2:]
    assert r.ids.tolist() == expected
    assert r.report["band"] == "hardest" and r.report["band_literal"] == "high" and r.report["hard_end"] == "high"
    assert r.report["metric_selected"]["mean"] > r.report["metric_all"]["mean"]
    lp = select_subset(data, scores, tmp_path / "p.json", SubsetSpec(metric="ppl", epoch=0, percent=10, band="low"),
                       clusters=clusters)  # literal: the lowest perplexities, whatever the direction
    assert lp.report["band_literal"] == "low" and lp.report["metric_selected"]["max"] < np.median(ppl0)


def test_lp_of_a_one_epoch_run_is_refused_with_what_to_do(tmp_path: Path) -> None:
    p0 = np.linspace(5, 9, 12)
    data, scores, clusters = _run(tmp_path, {"ppl_0": p0, "ppl_1": p0 - 1})
    with pytest.raises(LPSelectError, match=r"lp\(1\) is 1 for every row.*--metric lp_app"):
        select_subset(data, scores, tmp_path / "s.json", SubsetSpec(metric="lp", epoch=1), clusters=clusters)
    assert not (tmp_path / "s.json").exists()
    # rows with P0 == P1 make LP(1) 0 there and 1 elsewhere: still no ranking (the rest would go by id)
    p1 = p0 - 1
    p1[[3, 7]] = p0[[3, 7]]
    data, scores, clusters = _run(tmp_path, {"ppl_0": p0, "ppl_1": p1})
    with pytest.raises(LPSelectError, match=r"lp\(1\) is 1 for every row"):
        select_subset(data, scores, tmp_path / "s.json", SubsetSpec(metric="lp", epoch=1, strategy="global"),
                      clusters=clusters)


def test_the_share_is_reported_and_a_far_one_is_warned(tmp_path: Path, caplog) -> None:
    p0 = np.linspace(5, 9, 60)
    data, scores, clusters = _run(tmp_path, {"ppl_0": p0, "ppl_1": p0 - np.linspace(0, 1, 60)}, n_clusters=30)
    # 30 clusters of 2 rows: round(100/40) = 2 parts and round(100/60) = 2 parts both take 1 row a cluster
    for percent in (40, 60):
        with caplog.at_level("WARNING", logger="lpselect"):
            r = select_subset(data, scores, tmp_path / f"{percent}.json", SubsetSpec(percent=percent),
                              clusters=clusters)
        assert r.report["n_selected"] == 30 and r.report["share_percent"] == 50.0
        assert f"took 50.0 % of the rows for --percent {percent}" in r.report["share_note"]
        assert any("--exact" in rec.getMessage() for rec in caplog.records)
    exact = select_subset(data, scores, tmp_path / "x.json", SubsetSpec(percent=40, exact=True), clusters=clusters)
    assert exact.report["n_selected"] == 24 and exact.report["share_note"] is None  # round(60 * 0.4)
    rows = select_subset(data, scores, tmp_path / "n.json", SubsetSpec(n=7), clusters=clusters)
    assert rows.report["n_selected"] == 7 and rows.report["budget"] == "n"
    assert json.loads((tmp_path / "n.json").read_text()) == [
        {"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in rows.ids]
    with pytest.raises(LPSelectError, match="--n 61 asks for more rows than the 60"):
        select_subset(data, scores, tmp_path / "m.json", SubsetSpec(n=61), clusters=clusters)


def test_the_report_holds_the_ids_in_subset_order(tmp_path: Path) -> None:
    p0 = np.linspace(5, 9, 30)
    data, scores, clusters = _run(tmp_path, {"ppl_0": p0, "ppl_1": p0 - np.cos(np.arange(30))})
    r = select_subset(data, scores, tmp_path / "s.json", SubsetSpec(percent=20), clusters=clusters)
    report = json.loads(r.report_path.read_text())
    rows = json.loads((tmp_path / "s.json").read_text())
    assert [int(row["instruction"][1:]) for row in rows] == report["ids"]


# ---------------------------------------------------------------- run's grid (docs/method.md §8 baselines, file names)


def _config(select: list[dict], cluster: bool = True):
    from lpselect.config import RunConfig

    return RunConfig.model_validate({"data": "d.json", "out": "run", "score": {"model": "m/opt-350m", "ifd": True},
                                     "cluster": {} if cluster else None, "select": select})


def test_without_clusters_a_baseline_is_never_a_ranking(caplog) -> None:
    from lpselect.steps.pipeline import grid, spec_name

    with caplog.at_level("WARNING", logger="lpselect"):
        subs = grid(_config([{"strategy": "clust_rand"}, {"strategy": "cluster"}], cluster=False))
    assert [s.strategy for s in subs] == ["random", "global"]
    assert "clust_rand becomes random" in caplog.text
    assert [spec_name(s, "opt-350m") for s in subs] == ["10_low_lp_app1-opt-350m-random",
                                                       "10_low_lp_app1-opt-350m-global"]


def test_grid_entries_that_differ_get_different_files_and_equal_ones_are_refused() -> None:
    from lpselect.steps.pipeline import grid, spec_name

    subs = grid(_config([{"strategy": "clust_rand"}, {"strategy": "clust_rand", "seed": 43},
                         {"order": "original"}, {"max_value": 1.0, "metrics": ["ifd"], "epochs": [0]},
                         {"exact": True}, {"n": 500}, {"metrics": ["ifd"], "epochs": [0]},
                         {"strategy": "trajectory", "trajectory_k": 50}]))
    assert [spec_name(s, "opt-350m") for s in subs] == [
        "10_low_lp_app1-opt-350m-clust_rand", "10_low_lp_app1-opt-350m-clust_rand-seed43",
        "10_low_lp_app1-opt-350m-original", "10_high_ifd0-opt-350m-max1", "10exact_low_lp_app1-opt-350m",
        "n500_low_lp_app1-opt-350m", "10_high_ifd0-opt-350m", "10_low_lp_app1-opt-350m-trajectory-k50"]
    with pytest.raises(LPSelectError, match="two select entries give the same subset 10_low_lp_app1-opt-350m"):
        grid(_config([{"percents": [10]}, {"percents": [10], "seed": 7}]))  # the seed moves no ranking


def test_an_exact_budget_of_no_row_is_refused_and_a_far_exact_share_says_why(tmp_path: Path) -> None:
    p0 = np.linspace(5, 9, 30)
    data, scores, clusters = _run(tmp_path, {"ppl_0": p0, "ppl_1": p0 - np.linspace(0, 1, 30)})
    with pytest.raises(LPSelectError, match=r"round\(30 x 1 / 100\) = 0 rows"):  # 0.3 rounds to 0
        select_subset(data, scores, tmp_path / "s.json", SubsetSpec(percent=1, exact=True), clusters=clusters)
    assert not (tmp_path / "s.json").exists()
    r = select_subset(data, scores, tmp_path / "t.json", SubsetSpec(percent=5, exact=True), clusters=clusters)
    assert r.report["n_selected"] == 2  # round(1.5) = 2 (half to even): 6.7 %, more than a point from 5
    assert "the exact budget is round(N x 5 / 100)" in r.report["share_note"]
