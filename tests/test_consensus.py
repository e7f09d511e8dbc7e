"""Consensus of several scorer runs (lpselect.core.consensus), ``select --scores A --scores B ...`` and
``lpselect stability``: mean ranks by hand, selections and overlaps re-computed here with plain numpy and
Python sets (no lpselect.core.selection, no lpselect.analysis.compare in the expected values)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import alpaca_rows
from scipy.stats import rankdata
from typer.testing import CliRunner

from lpselect.analysis.stability import stability_overlaps
from lpselect.cli import app
from lpselect.config import SubsetSpec
from lpselect.core.consensus import average_ranks, consensus_metric
from lpselect.core.selection import select
from lpselect.errors import LPSelectError
from lpselect.steps.select import select_subset

N = 24


# ---- the rule, by hand ----------------------------------------------------------------------------------


def test_mean_rank_by_hand_with_ties() -> None:
    a = np.array([0.5, 0.1, 0.3, 0.1, 0.9])  # rows 1 and 3 tie at the lowest value: ranks 0 and 1 -> 0.5 each
    b = np.array([0.2, 0.4, 0.1, 0.3, 0.5])
    c = np.array([0.7, 0.7, 0.7, 0.1, 0.2])  # rows 0, 1, 2 tie on ranks 2, 3, 4 -> 3 each
    assert average_ranks(a).tolist() == [3, 0.5, 2, 0.5, 4]
    assert average_ranks(b).tolist() == [1, 3, 0, 2, 4]
    assert average_ranks(c).tolist() == [3, 3, 3, 0, 1]
    expected = [(3 + 1 + 3) / 3, (0.5 + 3 + 3) / 3, (2 + 0 + 3) / 3, (0.5 + 2 + 0) / 3, (4 + 4 + 1) / 3]
    np.testing.assert_allclose(consensus_metric([a, b, c]), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(expected, [7 / 3, 13 / 6, 5 / 3, 5 / 6, 3])


def test_average_ranks_match_scipy_on_many_ties() -> None:
    rng = np.random.default_rng(3)
    for _ in range(100):
        x = rng.integers(0, 6, rng.integers(1, 40)).astype(float)
        np.testing.assert_array_equal(average_ranks(x), rankdata(x, method="average") - 1)
    assert average_ranks(np.array([])).shape == (0,)


def test_nan_or_inf_in_any_run_is_nan_and_the_others_rank_among_themselves() -> None:
    a = np.array([0.3, 0.1, np.nan, 0.1, 0.5])
    b = np.array([0.2, 0.4, 0.1, 0.3, np.inf])
    out = consensus_metric([a, b])
    # rows 2 and 4 have no value in one run; rows 0, 1, 3 ranked 0..2: a -> 2, 0.5, 0.5; b -> 0, 2, 1
    assert np.isnan(out).tolist() == [False, False, True, False, True]
    assert int(np.isnan(out).sum()) == 2
    np.testing.assert_allclose(out[[0, 1, 3]], [(2 + 0) / 2, (0.5 + 2) / 2, (0.5 + 1) / 2])
    assert np.isnan(consensus_metric([np.full(3, np.nan), np.ones(3)])).all()


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one run"):
        consensus_metric([])
    with pytest.raises(ValueError, match="one length"):
        consensus_metric([np.zeros(3), np.zeros(4)])


@pytest.mark.parametrize("band", ["low", "mid", "high"])
@pytest.mark.parametrize("order", ["reference", "original"])
def test_consensus_of_identical_runs_is_the_single_run_selection(band: str, order: str) -> None:
    rng = np.random.default_rng(7)
    v = rng.integers(0, 8, 200).astype(float) / 8  # many ties
    v[[3, 50, 51]] = np.nan
    clusters = rng.integers(0, 6, 200)
    for strategy in ("cluster", "global", "clust_rand", "random"):
        single = select(v, clusters, 10, band, strategy=strategy, order=order)
        cons = select(consensus_metric([v, v, v]), clusters, 10, band, strategy=strategy, order=order)
        np.testing.assert_array_equal(cons.ids, single.ids)
        assert cons.n_nan == single.n_nan == 3


# ---- three hand-made runs ---------------------------------------------------------------------------------


def lp_app_values(seed: int) -> np.ndarray:
    """A run's LP_app(1) target values: shared structure plus seed noise, ties, one NaN per run."""
    rng = np.random.default_rng(seed)
    base = np.linspace(0.05, 0.6, N)
    v = np.round(base + rng.normal(0, 0.15, N), 1)  # rounding to 0.1 makes ties
    v[seed % N] = np.nan
    return v


def write_run(folder: Path, seed: int, clusters: np.ndarray | None = None) -> Path:
    """scores.parquet with P0 = 10 and P1 = 10 (1 - v), so LP_app(1) = (P0 - P1) / P0 is about v."""
    folder.mkdir(parents=True, exist_ok=True)
    v = lp_app_values(seed)
    p0 = np.full(N, 10.0)
    p1 = p0 * (1 - v)
    pq.write_table(pa.table({"id": np.arange(N), "ppl_0": p0, "ppl_1": p1}), folder / "scores.parquet")
    if clusters is not None:
        pq.write_table(pa.table({"id": np.arange(N), "cluster": clusters}), folder / "clusters.parquet")
    return folder / "scores.parquet"


def metric_of(scores: Path) -> np.ndarray:
    """LP_app(1) of a written run, by the formula (not lpselect.core.metrics)."""
    t = pq.read_table(scores)
    p0, p1 = t.column("ppl_0").to_numpy(), t.column("ppl_1").to_numpy()
    return (p0 - p1) / p0


def mean_rank_independent(runs: list[np.ndarray]) -> np.ndarray:
    """rank = (# smaller) + (# equal - 1) / 2 over the rows finite in every run; NaN elsewhere."""
    keep = np.all([np.isfinite(r) for r in runs], axis=0)
    out = np.full(len(runs[0]), np.nan)
    ranks = []
    for r in runs:
        x = r[keep]
        ranks.append([(x < xi).sum() + ((x == xi).sum() - 1) / 2 for xi in x])
    out[keep] = np.mean(ranks, axis=0)
    return out


def low_band_independent(values: np.ndarray, percent: float, clusters: np.ndarray | None = None) -> list[int]:
    """docs/method.md §8 by hand: per cluster (ascending), finite rows by (value, id), first part of round(100/p)."""
    parts = round(100 / percent)
    labels = np.zeros(len(values), dtype=int) if clusters is None else clusters
    out: list[int] = []
    for c in sorted(set(labels.tolist())):
        members = sorted((float(values[i]), i) for i in range(len(values))
                         if labels[i] == c and np.isfinite(values[i]))
        size = -(-len(members) // parts)  # array_split: the first part is the ceiling
        out += [i for _, i in members[:size]]
    return out


@pytest.fixture
def three_runs(tmp_path: Path) -> tuple[Path, list[Path]]:
    data = tmp_path / "data.json"
    data.write_text(json.dumps(alpaca_rows(N)))
    return data, [write_run(tmp_path / f"s{s}", s) for s in (42, 43, 44)]


def test_select_subset_with_three_score_files_ranks_by_the_consensus(three_runs, tmp_path) -> None:
    data, scores = three_runs
    runs = [metric_of(s) for s in scores]
    cons = mean_rank_independent(runs)
    expected = low_band_independent(cons, 25)
    assert 0 < len(expected) < N
    assert expected != low_band_independent(runs[0], 25)  # the test would not see a consensus otherwise
    r = select_subset(data, scores, tmp_path / "out" / "c.json",
                      SubsetSpec(metric="lp_app", percent=25, strategy="global"))
    assert r.ids.tolist() == expected
    assert [x["instruction"] for x in json.loads(r.path.read_text())] == \
        [alpaca_rows(N)[i]["instruction"] for i in expected]
    rep = json.loads(r.report_path.read_text())
    assert rep["consensus_of"] == [str(s) for s in scores] == rep["scores"]
    assert rep["consensus_n_nan_per_run"] == [1, 1, 1]
    assert rep["n_nan_left_out"] == int(np.isnan(cons).sum()) == 3
    assert rep["scorer"].startswith("consensus of 3 score files")


def test_select_subset_consensus_within_clusters(three_runs, tmp_path) -> None:
    data, scores = three_runs
    clusters = np.arange(N) % 3
    cpath = tmp_path / "clusters.parquet"
    pq.write_table(pa.table({"id": np.arange(N), "cluster": clusters}), cpath)
    cons = mean_rank_independent([metric_of(s) for s in scores])
    r = select_subset(data, scores, tmp_path / "out" / "c.json", SubsetSpec(metric="lp_app", percent=25),
                      clusters=cpath)
    assert r.ids.tolist() == low_band_independent(cons, 25, clusters)


def test_one_score_file_is_todays_selection(three_runs, tmp_path) -> None:
    data, scores = three_runs
    a = select_subset(data, scores[0], tmp_path / "a" / "x.json", SubsetSpec(percent=25, strategy="global"))
    b = select_subset(data, [scores[0]], tmp_path / "b" / "x.json", SubsetSpec(percent=25, strategy="global"))
    assert a.ids.tolist() == b.ids.tolist() == low_band_independent(metric_of(scores[0]), 25)
    assert a.report["consensus_of"] is None and a.report["scores"] == str(scores[0])
    assert {k: v for k, v in a.report.items() if k not in ("card",)} == \
        {k: v for k, v in b.report.items() if k not in ("card",)}
    twice = select_subset(data, [scores[0], scores[0]], tmp_path / "c" / "x.json",
                          SubsetSpec(percent=25, strategy="global"))
    assert twice.ids.tolist() == a.ids.tolist()


def test_cli_select_repeats_scores(three_runs, tmp_path) -> None:
    data, scores = three_runs
    args = ["select", "--data", str(data), "--strategy", "global", "--percent", "25"]
    r = CliRunner().invoke(app, [*args, "--scores", str(scores[0]), "--out", str(tmp_path / "one" / "s.json")])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "one" / "s.json.report.json").read_text())
    assert rep["consensus_of"] is None and rep["scores"] == str(scores[0])
    many = [x for s in scores for x in ("--scores", str(s))]
    r = CliRunner().invoke(app, [*args, *many, "--out", str(tmp_path / "many" / "s.json")])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "many" / "s.json.report.json").read_text())
    assert rep["consensus_of"] == [str(s) for s in scores]
    cons = mean_rank_independent([metric_of(s) for s in scores])
    rows = json.loads((tmp_path / "many" / "s.json").read_text())
    expected = [alpaca_rows(N)[i]["instruction"] for i in low_band_independent(cons, 25)]
    assert [x["instruction"] for x in rows] == expected


def test_trajectory_refuses_a_consensus(three_runs, tmp_path) -> None:
    data, scores = three_runs
    with pytest.raises(LPSelectError, match=r"consensus .* metric rankings"):
        select_subset(data, scores, tmp_path / "t.json", SubsetSpec(strategy="trajectory", metric="ppl", epoch=0))


# ---- lpselect stability ------------------------------------------------------------------------------------


def overlap_numbers(a: list[int], b: list[int]) -> tuple[int, int, int, float, float]:
    sa, sb = set(a), set(b)
    return len(sa), len(sb), len(sa & sb), len(sa & sb) / len(sa), len(sa & sb) / len(sa | sb)


def test_stability_cli_prints_the_set_arithmetic(three_runs, tmp_path) -> None:
    _, scores = three_runs
    runs = [s.parent for s in scores]
    values = [metric_of(s) for s in scores]
    picked = [low_band_independent(v, 25) for v in values]
    cons = low_band_independent(mean_rank_independent(values), 25)
    r = CliRunner().invoke(app, ["stability", *map(str, runs), "--percent", "25", "--json", str(tmp_path / "s.json")],
                           env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    got = json.loads((tmp_path / "s.json").read_text())
    assert got["runs"] == ["s42", "s43", "s44"] and got["consensus_clusters"] is None
    pairs = [(0, 1), (0, 2), (1, 2)]
    for (i, j), p in zip(pairs, got["pairs"], strict=True):
        n_a, n_b, n_c, frac, jac = overlap_numbers(picked[i], picked[j])
        assert (p["a"], p["b"], p["n_a"], p["n_b"], p["n_common"]) == (got["runs"][i], got["runs"][j], n_a, n_b, n_c)
        assert p["fraction"] == pytest.approx(frac) and p["jaccard"] == pytest.approx(jac)
        row = [ln for ln in lines if f"│ {got['runs'][i]} " in ln and f"│ {got['runs'][j]} " in ln]
        assert len(row) == 1, r.output
        assert f"{frac:.4f}" in row[0] and f"{jac:.4f}" in row[0] and f" {n_c} " in row[0]
    for i, c in enumerate(got["consensus"]):
        n_a, n_b, n_c, frac, jac = overlap_numbers(cons, picked[i])
        assert (c["a"], c["n_a"], c["n_b"], c["n_common"]) == ("consensus", n_a, n_b, n_c)
        assert c["fraction"] == pytest.approx(frac) and c["jaccard"] == pytest.approx(jac)
        row = [ln for ln in lines if "consensus" in ln and f"│ {got['runs'][i]} " in ln]
        assert len(row) == 1 and f"{frac:.4f}" in row[0] and f"{jac:.4f}" in row[0], r.output
    assert got["mean_pair"]["fraction"] == pytest.approx(
        np.mean([overlap_numbers(picked[i], picked[j])[3] for i, j in pairs]))
    assert got["n_nan"] == {"s42": 1, "s43": 1, "s44": 1} and got["consensus_n_nan"] == 3


def test_stability_uses_each_runs_clusters_or_the_given_file(tmp_path) -> None:
    clusters = np.arange(N) % 4
    runs = [write_run(tmp_path / f"r{s}", s, clusters).parent for s in (42, 43, 44)]
    values = [metric_of(r / "scores.parquet") for r in runs]
    out = tmp_path / "s.json"
    r = CliRunner().invoke(app, ["stability", *map(str, runs), "--percent", "25", "--json", str(out)])
    assert r.exit_code == 0, r.output
    got = json.loads(out.read_text())
    assert got["consensus_clusters"] == str(runs[0] / "clusters.parquet")
    a, b = low_band_independent(values[0], 25, clusters), low_band_independent(values[1], 25, clusters)
    assert got["pairs"][0]["n_common"] == len(set(a) & set(b))
    cons = low_band_independent(mean_rank_independent(values), 25, clusters)
    assert got["consensus"][2]["n_common"] == len(set(cons) & set(low_band_independent(values[2], 25, clusters)))

    (runs[1] / "clusters.parquet").unlink()  # mixed: one run would be ranked globally
    r = CliRunner().invoke(app, ["stability", *map(str, runs)])
    assert r.exit_code == 2 and "--clusters" in r.output
    r = CliRunner().invoke(app, ["stability", *map(str, runs), "--percent", "25", "--clusters", str(runs[0]),
                                 "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["pairs"][0]["n_common"] == len(set(a) & set(b))
    r = CliRunner().invoke(app, ["stability", str(runs[0])])
    assert r.exit_code == 2 and "at least two" in r.output


def test_stability_overlaps_of_identical_runs_are_one() -> None:
    v = np.linspace(0, 1, 50)
    s = stability_overlaps([v, v], [None, None], 10)
    assert [o.fraction for o in s.pairs.values()] == [1.0]
    assert [o.jaccard for o in s.consensus] == [1.0, 1.0]


def test_consensus_report_lists_the_rows_it_ranked(three_runs, tmp_path) -> None:
    """lpselect report shows a subset by its report's ids: for a consensus, the rows the mean rank picked, which
    no single run's scores would give again."""
    data, scores = three_runs
    r = select_subset(data, scores, tmp_path / "out" / "c.json",
                      SubsetSpec(metric="lp_app", percent=25, strategy="global"))
    expected = low_band_independent(mean_rank_independent([metric_of(s) for s in scores]), 25)
    assert json.loads(r.report_path.read_text())["ids"] == expected
