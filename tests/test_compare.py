"""lpselect.analysis.compare: rank correlations and selection overlaps, against hand computations, an
independent numpy re-statement, and scipy on the reference's raw pickles (docs/method.md §6 numbers)."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import shared_data
from scipy import stats

from lpselect.analysis import runio
from lpselect.analysis.compare import (
    compare_many,
    compare_runs,
    correlation_matrix,
    rank_correlation,
    selection_overlap,
    set_overlap,
)
from lpselect.config import CompareSpec, StabilitySpec
from lpselect.errors import InputError

# ---- independent re-statements (no scipy, no lpselect) ---------------------------------------------------


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties get the mean of the positions they span."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman_numpy(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(average_ranks(x), average_ranks(y))[0, 1])


def kendall_tau_b_numpy(x: np.ndarray, y: np.ndarray) -> float:
    """O(n^2): (concordant - discordant) / sqrt((n0 - ties_x) (n0 - ties_y))."""
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    upper = np.triu(np.ones_like(dx, dtype=bool), k=1)
    s = float((dx * dy)[upper].sum())
    n0 = upper.sum()
    ties_x = float((dx[upper] == 0).sum())
    ties_y = float((dy[upper] == 0).sum())
    return s / math.sqrt((n0 - ties_x) * (n0 - ties_y))


def lp_numpy(ppl: np.ndarray, i: int) -> np.ndarray:
    total = ppl[:, 0] - ppl[:, -1]
    safe = np.where(total == 0, 1.0, total)
    return np.where(total == 0, 0.0, (ppl[:, i - 1] - ppl[:, i]) / safe)


def lp_app_numpy(ppl: np.ndarray, i: int) -> np.ndarray:
    return (ppl[:, i - 1] - ppl[:, i]) / ppl[:, 0]


def hardest_ids(metric: np.ndarray, percent: float) -> set[int]:
    """The global low band: finite rows sorted by (value, id), the first ceil(n / round(100 / p))."""
    ids = np.flatnonzero(np.isfinite(metric))
    ranked = ids[np.lexsort((ids, metric[ids]))]
    k = math.ceil(len(ranked) / round(100 / percent))
    return set(ranked[:k].tolist())


def write_scores(folder: Path, ppl: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cols = {"id": np.arange(len(ppl))} | {f"ppl_{e}": ppl[:, e] for e in range(ppl.shape[1])}
    pq.write_table(pa.table(cols), folder / "scores.parquet")
    return folder


def random_ppl(rng: np.random.Generator, n: int, epochs: int = 3) -> np.ndarray:
    p = [np.exp(rng.normal(2.0, 0.6, n))]
    for _ in range(epochs):
        p.append(p[-1] * rng.uniform(0.4, 0.98, n))
    return np.stack(p, axis=1)


# ---- correlations ------------------------------------------------------------------------------------------


def test_spearman_and_kendall_on_five_items_by_hand():
    # ranks a: 1 2 3 4 5, b: 2 1 4 3 5 -> d = -1 1 -1 1 0, sum d^2 = 4, rho = 1 - 6*4 / (5 * 24) = 0.8;
    # of the 10 pairs, (1,2) and (3,4) are discordant: tau = (8 - 2) / 10 = 0.6
    c = rank_correlation(np.array([1.0, 2, 3, 4, 5]), np.array([20.0, 10, 40, 30, 50]))
    assert c.spearman == pytest.approx(0.8, abs=1e-12)
    assert c.kendall == pytest.approx(0.6, abs=1e-12)
    assert (c.n, c.n_dropped) == (5, 0)


def test_nan_rows_are_dropped_pairwise():
    a = np.array([1.0, np.nan, 2, 3, 4, 7, 5])
    b = np.array([20.0, 1, 10, 40, 30, np.nan, 50])
    c = rank_correlation(a, b)  # leaves the five hand-computed rows above
    assert (c.n, c.n_dropped) == (5, 2)
    assert c.spearman == pytest.approx(0.8, abs=1e-12)
    assert c.kendall == pytest.approx(0.6, abs=1e-12)


def test_ties_agree_with_independent_numpy():
    rng = np.random.default_rng(7)
    a = rng.integers(0, 6, 60).astype(float)  # many ties
    b = a + rng.integers(-3, 4, 60)
    a[[4, 9]] = np.nan
    b[[9, 30]] = np.inf
    keep = np.isfinite(a) & np.isfinite(b)
    c = rank_correlation(a, b)
    assert c.n == int(keep.sum()) == 57
    assert c.spearman == pytest.approx(spearman_numpy(a[keep], b[keep]), abs=1e-12)
    assert c.kendall == pytest.approx(kendall_tau_b_numpy(a[keep], b[keep]), abs=1e-12)


def test_undefined_correlations_are_nan_and_bad_shapes_refused():
    assert math.isnan(rank_correlation(np.ones(5), np.arange(5.0)).spearman)
    assert math.isnan(rank_correlation(np.array([1.0, np.nan]), np.array([1.0, 2.0])).kendall)
    with pytest.raises(ValueError):
        rank_correlation(np.arange(3.0), np.arange(4.0))


def test_correlation_matrix_is_pairwise_scipy():
    rng = np.random.default_rng(3)
    base = rng.normal(size=200)
    metrics = {"x": base + rng.normal(size=200), "y": base + 2 * rng.normal(size=200),
               "z": rng.normal(size=200)}
    metrics["x"][:5] = np.nan
    metrics["y"][3:9] = np.nan
    m = correlation_matrix(metrics)
    assert m.names == ["x", "y", "z"]
    np.testing.assert_array_equal(np.diag(m.values), 1.0)
    np.testing.assert_array_equal(m.values, m.values.T)
    for i, a in enumerate(m.names):
        for j, b in enumerate(m.names):
            if i != j:
                keep = np.isfinite(metrics[a]) & np.isfinite(metrics[b])
                assert m.values[i, j] == pytest.approx(stats.spearmanr(metrics[a][keep], metrics[b][keep])[0])
                assert m.n[i, j] == keep.sum()
    assert m.n[0, 1] == 191  # rows 0..8 missing on one side or the other
    k = correlation_matrix(metrics, "kendall")
    keep = np.isfinite(metrics["x"]) & np.isfinite(metrics["z"])
    assert k.values[0, 2] == pytest.approx(kendall_tau_b_numpy(metrics["x"][keep], metrics["z"][keep]))
    with pytest.raises(ValueError):
        correlation_matrix(metrics, "pearson")


# ---- overlaps ----------------------------------------------------------------------------------------------


def test_set_overlap_by_hand():
    o = set_overlap(np.array([1, 2, 3, 4, 4]), np.array([5, 3, 4]))
    assert (o.n_a, o.n_b, o.n_common) == (4, 3, 2)
    assert o.fraction == 0.5  # 2 of A's 4
    assert o.jaccard == pytest.approx(2 / 5)  # union {1, 2, 3, 4, 5}
    empty = set_overlap(np.array([], dtype=int), np.array([], dtype=int))
    assert math.isnan(empty.fraction) and math.isnan(empty.jaccard)


def test_selection_overlap_global_by_hand():
    # 10 rows, 20 % -> 5 parts of 2; A's two lowest: rows 9 (0.0) and 0 (0.1); B's: rows 0 (0.0) and 2 (0.05)
    a = np.array([0.1, 0.9, 0.2, 0.8, 0.3, 0.7, 0.4, 0.6, 0.5, 0.0])
    b = np.array([0.0, 0.9, 0.05, 0.8, 0.3, 0.7, 0.4, 0.6, 0.5, 0.2])
    ov = selection_overlap(a, b, 20)
    assert (ov.global_.n_a, ov.global_.n_b, ov.global_.n_common) == (2, 2, 1)
    assert ov.global_.fraction == 0.5
    assert ov.global_.jaccard == pytest.approx(1 / 3)
    assert ov.clustered is None and ov.per_cluster == {}
    assert hardest_ids(a, 20) == {0, 9} and hardest_ids(b, 20) == {0, 2}


def test_selection_overlap_per_cluster_by_hand():
    # two clusters of 5; 50 % -> 2 parts; array_split makes the low part of 5 members 3 rows, of 4 members 2
    clusters = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    a = np.array([1.0, 2, 3, 4, 5, 1, 2, 3, 4, 5])  # A: {0, 1, 2} and {5, 6, 7}
    b = np.array([5.0, np.nan, 3, 2, 1, 1, 2, 3, 5, 4])
    # B, cluster 0: scored rows by value 4 (1), 3 (2), 2 (3), 0 (5) -> low part {4, 3}; cluster 1: {5, 6, 7}
    ov = selection_overlap(a, b, 50, clusters)
    c0, c1 = ov.per_cluster[0], ov.per_cluster[1]
    assert (c0.n_a, c0.n_b, c0.n_common) == (3, 2, 0)
    assert (c1.n_a, c1.n_b, c1.n_common) == (3, 3, 3)
    assert (c0.fraction, c0.jaccard, c1.fraction, c1.jaccard) == (0.0, 0.0, 1.0, 1.0)
    assert ov.clustered is not None
    assert (ov.clustered.n_a, ov.clustered.n_b, ov.clustered.n_common) == (6, 5, 3)
    assert ov.clustered.jaccard == pytest.approx(3 / 8)
    assert ov.mean_per_cluster() == (0.5, 0.5)
    # the global ranking ignores the clusters
    assert ov.global_.n_common == len(hardest_ids(a, 50) & hardest_ids(b, 50))
    assert ov.global_.n_a == len(hardest_ids(a, 50)) == 5


def test_per_cluster_overlap_lists_clusters_with_nothing_selected():
    clusters = np.array([3, 3, 7, 7, 7, 9])
    a = np.array([0.1, 0.2, np.nan, np.nan, np.nan, 0.3])
    ov = selection_overlap(a, a, 50, clusters)
    assert sorted(ov.per_cluster) == [3, 7, 9]
    assert (ov.per_cluster[7].n_a, ov.per_cluster[7].n_b) == (0, 0)
    assert math.isnan(ov.per_cluster[7].jaccard)
    assert ov.mean_per_cluster() == (1.0, 1.0)  # the empty cluster is skipped, not counted as 0


# ---- runs on disk ------------------------------------------------------------------------------------------


def test_compare_runs_on_scores_files(tmp_path: Path):
    rng = np.random.default_rng(11)
    pa_ = random_ppl(rng, 400)
    pb = pa_ * rng.uniform(0.8, 1.25, pa_.shape)
    pa_[[5, 17], :] = np.nan
    pb[40, 3] = np.nan  # P3 enters LP(1) through P0 - P3
    ra, rb = write_scores(tmp_path / "a", pa_), write_scores(tmp_path / "b", pb)
    clusters = rng.integers(0, 8, 400)
    pq.write_table(pa.table({"id": np.arange(400), "cluster": clusters}), tmp_path / "clusters.parquet")
    c = compare_runs(ra, rb / "scores.parquet", CompareSpec(metric="lp", epoch=1, percent=10),
                     clusters=tmp_path / "clusters.parquet")
    la, lb = lp_numpy(pa_, 1), lp_numpy(pb, 1)
    keep = np.isfinite(la) & np.isfinite(lb)
    assert keep.sum() == 397
    assert (c.a, c.b, c.n_rows, c.correlation.n) == ("a", "b", 400, 397)
    assert c.correlation.spearman == pytest.approx(stats.spearmanr(la[keep], lb[keep])[0], abs=1e-12)
    assert c.correlation.kendall == pytest.approx(stats.kendalltau(la[keep], lb[keep])[0], abs=1e-12)
    assert c.overlap.global_.n_common == len(hardest_ids(la, 10) & hardest_ids(lb, 10))
    assert len(c.overlap.per_cluster) == 8
    d = c.to_dict()
    json.dumps(d, allow_nan=False)  # NaN-free JSON
    assert d["overlap_global"]["n_common"] == c.overlap.global_.n_common
    # the two sides may use different metrics: LP(2) of a vs LP_app(1) of b
    c2 = compare_runs(ra, rb, CompareSpec(metric="lp", epoch=2, metric_b="lp_app", epoch_b=1))
    lb2 = lp_app_numpy(pb, 1)
    keep = np.isfinite(lp_numpy(pa_, 2)) & np.isfinite(lb2)
    assert c2.correlation.spearman == pytest.approx(stats.spearmanr(lp_numpy(pa_, 2)[keep], lb2[keep])[0])


def test_compare_refuses_what_does_not_fit(tmp_path: Path):
    rng = np.random.default_rng(2)
    ra = write_scores(tmp_path / "a", random_ppl(rng, 50))
    rb = write_scores(tmp_path / "b", random_ppl(rng, 60))
    with pytest.raises(InputError, match="60 rows"):
        compare_runs(ra, rb)
    with pytest.raises(InputError, match="not found"):
        compare_runs(ra, tmp_path / "missing")
    with pytest.raises(InputError, match=r"no scores\.parquet"):
        compare_runs(ra, tmp_path)
    with pytest.raises(InputError, match="epoch"):
        compare_runs(ra, ra, CompareSpec(metric="lp", epoch=4))
    with pytest.raises(InputError, match="at least two"):
        compare_many([ra])


def test_epoch_b_zero_is_epoch_zero(tmp_path: Path):
    """--epoch-b 0 compares P0, not --epoch again (``epoch_b or epoch`` took 0 for unset)."""
    rng = np.random.default_rng(21)
    ppl = random_ppl(rng, 120, epochs=2)
    ra = write_scores(tmp_path / "a", ppl)
    c = compare_runs(ra, ra, CompareSpec(metric="ppl", epoch=2, epoch_b=0))
    expected = stats.spearmanr(ppl[:, 2], ppl[:, 0]).statistic  # scipy on the raw columns
    assert expected < 0.999
    assert (c.epoch_a, c.epoch_b) == (2, 0)
    assert c.correlation.spearman == pytest.approx(expected, abs=1e-12)
    assert c.to_dict()["epoch_b"] == 0
    # unset still means "as the first side"
    assert compare_runs(ra, ra, CompareSpec(metric="ppl", epoch=2)).correlation.spearman == pytest.approx(1.0)


def test_compare_command_epoch_b_zero(tmp_path: Path):
    from typer.testing import CliRunner

    from lpselect.cli import app

    ppl = random_ppl(np.random.default_rng(22), 120, epochs=2)
    ra = write_scores(tmp_path / "a", ppl)
    r = CliRunner().invoke(app, ["compare", str(ra), str(ra), "--metric", "ppl", "--epoch", "2", "--epoch-b", "0",
                                 "--json", str(tmp_path / "c.json")])
    assert r.exit_code == 0, r.output
    expected = stats.spearmanr(ppl[:, 2], ppl[:, 0]).statistic
    assert f"{expected:.4f}" in r.output and "ppl(0)" in r.output
    assert json.loads((tmp_path / "c.json").read_text())["spearman"] == pytest.approx(expected)
    assert "no manifest.json" in r.output  # the tables' origin could not be checked: said, not hidden


def _with_data_record(folder: Path, data: Path, step: str = "score") -> None:
    from lpselect.data.formats import read_dataset
    from lpselect.data.provenance import data_fingerprint
    from lpselect.runs.folder import describe_input

    record = {**describe_input(data), "rows_sha256": data_fingerprint(read_dataset(data))}
    manifest = folder / "manifest.json"
    m = json.loads(manifest.read_text()) if manifest.exists() else {"steps": {}}
    m["steps"][step] = {"inputs": {"data": record}}
    manifest.write_text(json.dumps(m))


def test_compare_refuses_runs_of_other_rows(tmp_path: Path):
    from conftest import alpaca_rows

    from lpselect.errors import RunFolderError

    rows = alpaca_rows(30)
    (tmp_path / "d.json").write_text(json.dumps(rows))
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "shuffled.json").write_text(json.dumps(rows[1:] + rows[:1]))
    rng = np.random.default_rng(5)
    ra, rb, rc = (write_scores(tmp_path / k, random_ppl(rng, 30)) for k in "abc")
    _with_data_record(ra, tmp_path / "d.json")
    _with_data_record(rb, tmp_path / "d.jsonl")  # the same rows in another file: compared
    _with_data_record(rc, tmp_path / "shuffled.json")
    assert compare_runs(ra, rb).notes == []
    with pytest.raises(RunFolderError) as e:
        compare_runs(ra, rc)
    assert str(ra / "scores.parquet") in str(e.value) and str(rc / "scores.parquet") in str(e.value)
    with pytest.raises(RunFolderError):
        compare_many([ra, rb, rc])
    # clusters made from other rows
    pq.write_table(pa.table({"id": np.arange(30), "cluster": np.arange(30) % 3}), rc / "clusters.parquet")
    _with_data_record(rc, tmp_path / "shuffled.json", step="cluster")
    with pytest.raises(RunFolderError, match="different data"):
        compare_runs(ra, rb, clusters=rc / "clusters.parquet")


def test_stability_refuses_runs_of_other_rows(tmp_path: Path):
    from conftest import alpaca_rows

    from lpselect.analysis.stability import stability_runs
    from lpselect.errors import RunFolderError

    rows = alpaca_rows(30)
    (tmp_path / "d.json").write_text(json.dumps(rows))
    (tmp_path / "shuffled.json").write_text(json.dumps(rows[1:] + rows[:1]))
    rng = np.random.default_rng(6)
    ra, rb, rc = (write_scores(tmp_path / k, random_ppl(rng, 30)) for k in "abc")
    _with_data_record(ra, tmp_path / "d.json")
    _with_data_record(rb, tmp_path / "d.json")
    _with_data_record(rc, tmp_path / "shuffled.json")
    assert stability_runs([ra, rb], StabilitySpec(percent=20)).notes == []
    with pytest.raises(RunFolderError) as e:
        stability_runs([ra, rb, rc], StabilitySpec(percent=20))
    assert str(rc / "scores.parquet") in str(e.value)
    write_scores(tmp_path / "own", random_ppl(rng, 30))  # no manifest: a note, not a refusal
    assert "no manifest.json" in stability_runs([ra, tmp_path / "own"], StabilitySpec(percent=20)).to_dict()["notes"][0]


def test_compare_many_matches_pairwise(tmp_path: Path):
    rng = np.random.default_rng(5)
    runs = [write_scores(tmp_path / name, random_ppl(rng, 120)) for name in ("s1", "s2", "s3")]
    m = compare_many(runs, CompareSpec(metric="lp_app", epoch=2))
    assert m.names == ["s1", "s2", "s3"]
    pair = compare_runs(runs[0], runs[2], CompareSpec(metric="lp_app", epoch=2))
    assert m.values[0, 2] == pytest.approx(pair.correlation.spearman)


def test_run_folder_names_are_defined_once():
    """The score job, the run-folder reader and the reference importer all use lpselect.runs.layout's name."""
    from lpselect.interop import reference
    from lpselect.runs import layout
    from lpselect.steps import score as job

    assert job.SCORES is runio.SCORES is reference.SCORES is layout.SCORES == "scores.parquet"


def test_compare_command(tmp_path: Path):
    from typer.testing import CliRunner

    from lpselect.cli import app

    rng = np.random.default_rng(9)
    pa_ = random_ppl(rng, 200)
    pb = pa_ * rng.uniform(0.9, 1.1, pa_.shape)
    ra, rb = write_scores(tmp_path / "a", pa_), write_scores(tmp_path / "b", pb)
    runner = CliRunner()
    r = runner.invoke(app, ["compare", str(ra), str(rb), "--json", str(tmp_path / "c.json")])
    assert r.exit_code == 0, r.output
    expected = stats.spearmanr(lp_numpy(pa_, 1), lp_numpy(pb, 1))[0]
    assert f"{expected:.4f}" in r.output
    assert json.loads((tmp_path / "c.json").read_text())["correlation"]["spearman"] == pytest.approx(expected)
    r = runner.invoke(app, ["compare", "--all", str(ra), str(rb), str(ra / "scores.parquet")])
    assert r.exit_code == 0 and f"{expected:.4f}" in r.output and "a'" in r.output
    r = runner.invoke(app, ["compare", str(ra), str(tmp_path / "nope")])
    assert r.exit_code == 2 and "error" in r.output and "nope" in r.output
    r = runner.invoke(app, ["compare", str(ra), str(rb), str(ra)])
    assert r.exit_code == 2 and "exactly two" in r.output
    r = runner.invoke(app, ["--debug", "compare", str(ra), str(tmp_path / "nope")])
    assert isinstance(r.exception, InputError)  # --debug: the traceback, not the one-line message


# ---- the reference's released perplexities (docs/method.md §6) ------------------------------------------------------


def _raw_pickles(scorer: str) -> np.ndarray:
    folder = shared_data("reference-pplx", f"alpaca-{scorer}")
    cols = []
    for e in ("pre", "1", "2", "3"):
        with open(folder / f"epoch-{e}.pkl", "rb") as f:
            cols.append(np.asarray(pickle.load(f), dtype=np.float64))
    ppl = np.stack(cols, axis=1)
    ppl[np.all(ppl == 1.0, axis=1)] = np.nan  # the reference's no-response-token rows (docs/method.md §11 default)
    return ppl


def _imported(scorer: str, tmp_path: Path) -> Path:
    from lpselect.interop.reference import import_reference

    folder = shared_data("reference-pplx", f"alpaca-{scorer}")
    import_reference([folder / f"epoch-{e}.pkl" for e in ("pre", "1", "2", "3")], tmp_path / scorer)
    return tmp_path / scorer


def test_hardness_transfer_opt350m_to_opt13b(tmp_path: Path):
    small, large = _raw_pickles("opt-350m"), _raw_pickles("opt-13b")
    c = compare_runs(_imported("opt-350m", tmp_path), _imported("opt-13b", tmp_path),
                     CompareSpec(metric="lp", epoch=1, percent=10))
    ls, ll = lp_numpy(small, 1), lp_numpy(large, 1)
    keep = np.isfinite(ls) & np.isfinite(ll)
    assert c.correlation.n == keep.sum() == 52_001  # the one all-1.0 row (the same in both files) dropped
    assert c.correlation.spearman == pytest.approx(stats.spearmanr(ls[keep], ll[keep])[0], abs=1e-12)
    assert c.correlation.kendall == pytest.approx(stats.kendalltau(ls[keep], ll[keep])[0], abs=1e-12)
    assert c.correlation.spearman == pytest.approx(0.79, abs=0.01)  # docs/method.md §6
    assert c.overlap.global_.n_common == len(hardest_ids(ls, 10) & hardest_ids(ll, 10))
    assert c.overlap.global_.n_a == len(hardest_ids(ls, 10))


def test_lp_vs_lp_app_opt350m(tmp_path: Path):
    ppl = _raw_pickles("opt-350m")
    run = _imported("opt-350m", tmp_path)
    c = compare_runs(run, run, CompareSpec(metric="lp", epoch=1, metric_b="lp_app", epoch_b=1))
    lp, lpa = lp_numpy(ppl, 1), lp_app_numpy(ppl, 1)
    keep = np.isfinite(lp) & np.isfinite(lpa)
    assert c.correlation.spearman == pytest.approx(stats.spearmanr(lp[keep], lpa[keep])[0], abs=1e-12)
    assert c.correlation.spearman == pytest.approx(0.81, abs=0.01)  # docs/method.md §6


def test_compare_json_has_the_documented_flat_keys(tmp_path: Path):
    """README: `compare --json` writes spearman, kendall, overlap_fraction, jaccard and n at the top level;
    they equal the nested `correlation` / `overlap_global` blocks and a plain scipy / by-hand recomputation."""
    from typer.testing import CliRunner

    from lpselect.cli import app

    rng = np.random.default_rng(21)
    pa_ = random_ppl(rng, 300)
    pb = pa_ * rng.uniform(0.7, 1.4, pa_.shape)
    pa_[[3, 99], :] = np.nan  # rows without a score are dropped pairwise from n and from the selections
    ra, rb = write_scores(tmp_path / "a", pa_), write_scores(tmp_path / "b", pb)
    out = tmp_path / "cmp.json"
    r = CliRunner().invoke(app, ["compare", str(ra), str(rb), "--metric", "lp", "--epoch", "1",
                                 "--percent", "10", "--json", str(out)])
    assert r.exit_code == 0, r.output
    d = json.loads(out.read_text())
    for flat, (block, key) in {"spearman": ("correlation", "spearman"), "kendall": ("correlation", "kendall"),
                               "n": ("correlation", "n"), "overlap_fraction": ("overlap_global", "fraction"),
                               "jaccard": ("overlap_global", "jaccard")}.items():
        assert flat in d, flat
        assert d[flat] == d[block][key], flat

    la, lb = lp_numpy(pa_, 1), lp_numpy(pb, 1)
    keep = np.isfinite(la) & np.isfinite(lb)
    assert d["n"] == int(keep.sum()) == 298
    assert d["spearman"] == pytest.approx(stats.spearmanr(la[keep], lb[keep]).statistic, abs=1e-12)
    assert d["kendall"] == pytest.approx(stats.kendalltau(la[keep], lb[keep]).statistic, abs=1e-12)
    sel_a, sel_b = hardest_ids(la, 10), hardest_ids(lb, 10)
    common = len(sel_a & sel_b)
    assert 0 < common < len(sel_a)  # a real partial overlap, not a degenerate 0 or 1
    assert d["overlap_fraction"] == pytest.approx(common / len(sel_a))
    assert d["jaccard"] == pytest.approx(common / len(sel_a | sel_b))
    assert d["overlap_global"] == {"n_a": len(sel_a), "n_b": len(sel_b), "n_common": common,
                                   "fraction": d["overlap_fraction"], "jaccard": d["jaccard"]}


def test_defaults_work_on_one_epoch_runs_and_lp_of_one_is_refused(tmp_path: Path):
    """LP(1) of a run of one epoch is (P0-P1)/(P0-P1) = 1 on every row: the default becomes LP_app(1), and an
    explicit lp is refused with what to use (not a Spearman of NaN)."""
    rng = np.random.default_rng(4)
    p = random_ppl(rng, 80)[:, :2]  # P0, P1: one epoch
    q = p * rng.uniform(0.9, 1.1, p.shape)
    ra, rb = write_scores(tmp_path / "a", p), write_scores(tmp_path / "b", q)
    c = compare_runs(ra, rb)
    assert (c.metric_a, c.metric_b) == ("lp_app", "lp_app")
    la, lb = (p[:, 0] - p[:, 1]) / p[:, 0], (q[:, 0] - q[:, 1]) / q[:, 0]
    assert c.correlation.spearman == pytest.approx(stats.spearmanr(la, lb)[0], abs=1e-12)
    assert compare_many([ra, rb]).metric == "lp_app"
    with pytest.raises(InputError, match=r"lp\(1\) is 1 for every row .*--metric lp_app"):
        compare_runs(ra, rb, CompareSpec(metric="lp", epoch=1))
    three = write_scores(tmp_path / "c", random_ppl(rng, 80))
    assert compare_runs(three, three).metric_a == "lp"  # the paper's LP(1) where there are epochs for it
