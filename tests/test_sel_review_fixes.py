"""Review fixes of the select step: every column in ``SubsetResult.dataset()``, dedup over the selectable rows
only, ``--like`` drawing from its subset's pool, the rule text and share note naming dedup, one file name per
dedup threshold. Expected values are worked out by hand in each test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from lpselect.cli import app
from lpselect.config import RunConfig, SubsetSpec
from lpselect.errors import InputError, LPSelectError
from lpselect.steps.select import select_baseline, select_subset

N = 20


def _rows(n: int = N) -> list[dict[str, str]]:
    return [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(n)]


def _scores(path: Path, p1: np.ndarray) -> Path:
    """A score table of N rows with ppl_0 = 10, so LP_app(1) = 1 - p1 / 10."""
    pq.write_table(pa.table({"id": np.arange(len(p1)), "ppl_0": np.full(len(p1), 10.0), "ppl_1": p1}), path)
    return path


def _rising() -> np.ndarray:
    return 10.0 - np.linspace(1.0, 9.0, N)  # LP_app(1) rises with the id: 0.1 .. 0.9


def _copies(tmp_path: Path) -> Path:
    """Rows 10..14 repeat rows 0..4 in every field."""
    rows = _rows()
    rows[10:15] = [dict(r) for r in rows[0:5]]
    data = tmp_path / "data.json"
    data.write_text(json.dumps(rows))
    return data


# ---------------------------------------------------------------- finding 1: SubsetResult.dataset()


def test_dataset_keeps_a_column_the_first_row_lacks(tmp_path) -> None:
    data = tmp_path / "data.jsonl"
    rows = [{"instruction": "q0", "output": "a0"}, {"instruction": "q1", "input": "ctx1", "output": "a1"},
            {"instruction": "q2", "input": "ctx2", "output": "a2"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    scores = _scores(tmp_path / "scores.parquet", np.array([9.0, 8.0, 7.0]))  # LP_app 0.1, 0.2, 0.3
    r = select_subset(data, scores, tmp_path / "s.jsonl", SubsetSpec(strategy="global", percent=100, exact=True))
    assert r.ids.tolist() == [0, 1, 2]
    by_hand = [{"instruction": "q0", "output": "a0", "input": None}, rows[1], rows[2]]
    assert r.dataset().to_list() == by_hand
    assert r.dataset().column_names == ["instruction", "output", "input"]


# ---------------------------------------------------------------- finding 2: dedup over selectable rows


def test_a_row_above_max_value_removes_no_duplicate(tmp_path) -> None:
    """Rows 0..4 are above max_value 0.9, so never selectable: their copies 10..14 stay, nothing is removed."""
    data = _copies(tmp_path)
    p1 = _rising()
    p1[0:5] = 0.5  # LP_app 0.95 > 0.9
    scores = _scores(tmp_path / "scores.parquet", p1)
    r = select_subset(data, scores, tmp_path / "d.json",
                      SubsetSpec(strategy="global", percent=100, exact=True, max_value=0.9, dedup="exact"))
    assert sorted(r.ids.tolist()) == list(range(5, 20))  # by hand: every row but the 5 above max_value
    assert r.report["dedup"]["removed"] == 0 and r.report["dedup"]["rows"] == 15
    assert r.report["n_above_max_left_out"] == 5


def test_a_row_without_a_value_removes_no_duplicate_but_a_valued_one_does(tmp_path) -> None:
    """Rows 0..2 have no value (NaN), rows 3, 4 have one: of the copies 10..14 only 13 and 14 go."""
    data = _copies(tmp_path)
    p1 = _rising()
    p1[0:3] = np.nan
    scores = _scores(tmp_path / "scores.parquet", p1)
    r = select_subset(data, scores, tmp_path / "d.json",
                      SubsetSpec(strategy="global", percent=100, exact=True, dedup="exact"))
    assert sorted(r.ids.tolist()) == [i for i in range(3, 20) if i not in (13, 14)]
    assert r.report["dedup"]["removed"] == 2 and r.report["n_nan_left_out"] == 3
    assert sorted((e["removed_id"], e["kept_id"]) for e in r.report["dedup"]["examples"]) == [(13, 3), (14, 4)]


# ---------------------------------------------------------------- finding 5: the share note


def test_share_note_names_the_removed_duplicates_apart(tmp_path) -> None:
    """15 rows are left after dedup; the parts rule cuts them into 2 parts, the first the larger: 8 rows."""
    data = _copies(tmp_path)
    scores = _scores(tmp_path / "scores.parquet", _rising())
    r = select_subset(data, scores, tmp_path / "d.json", SubsetSpec(strategy="global", percent=50, dedup="exact"))
    assert len(r.ids) == 8
    note = r.report["share_note"]
    assert note.startswith("took 40.0 % of the rows for --percent 50 (8 of 20 rows; 5 near-duplicates removed "
                           "first)")
    assert "no value" not in note and r.report["n_nan_left_out"] == 0
    exact = select_subset(data, scores, tmp_path / "e.json",
                          SubsetSpec(strategy="global", percent=20, exact=True, dedup="exact"))
    assert len(exact.ids) == 3  # round(15 x 20 / 100): the budget is of the rows left


# ---------------------------------------------------------------- finding 3: --like takes the pool


def test_like_draws_from_the_subsets_pool(tmp_path) -> None:
    data = tmp_path / "data.json"
    data.write_text(json.dumps(_rows()))
    p1 = _rising()
    scores = _scores(tmp_path / "scores.parquet", p1)
    like = select_subset(data, scores, tmp_path / "s" / "h.json",
                         SubsetSpec(strategy="global", percent=25, seed=7, max_value=0.5))
    base = select_baseline(data, scores, tmp_path / "s" / "h.random.json", like.path, SubsetSpec(strategy="random"))
    lp_app = 1 - p1 / 10
    assert len(base.ids) == len(like.ids) and all(lp_app[i] <= 0.5 for i in base.ids)
    rep = base.report
    assert (rep["seed"], rep["max_value"], rep["percent"], rep["metric"], rep["epoch"]) == (7, 0.5, 25, "lp_app", 1)
    assert rep["baseline_of"] == "h.json" and rep["baseline_of_budget"] == "parts"
    with pytest.raises(LPSelectError, match=r"--max-value 0.9 \(it has 0.5\)") as e:
        select_baseline(data, scores, tmp_path / "x.json", like.path, SubsetSpec(strategy="random", max_value=0.9))
    assert "\n" not in str(e.value) and not (tmp_path / "x.json").exists()
    # another draw of the same baseline: a seed given explicitly wins, the pool stays the subset's
    other = select_baseline(data, scores, tmp_path / "s" / "h.random3.json", like.path,
                            SubsetSpec(strategy="random", seed=3))
    assert other.report["seed"] == 3 and len(other.ids) == len(like.ids)
    assert all(lp_app[i] <= 0.5 for i in other.ids)
    # the same value given again is no conflict
    select_baseline(data, scores, tmp_path / "y.json", like.path, SubsetSpec(strategy="random", max_value=0.5))


def test_like_takes_the_dedup_and_the_cli_refuses_a_conflicting_flag(tmp_path) -> None:
    data = _copies(tmp_path)
    scores = _scores(tmp_path / "scores.parquet", _rising())
    like = select_subset(data, scores, tmp_path / "h.json", SubsetSpec(strategy="global", n=15, dedup="exact"))
    base = select_baseline(data, scores, tmp_path / "h.random.json", like.path, SubsetSpec(strategy="random"))
    assert sorted(base.ids.tolist()) == [i for i in range(N) if i not in range(10, 15)]  # 15 of the 15 left
    assert base.report["dedup"]["removed"] == 5
    run = CliRunner().invoke
    common = ["select", "--data", str(data), "--scores", str(scores), "--strategy", "random", "--like",
              str(like.path)]
    r = run(app, [*common, "--metric", "ppl", "--out", str(tmp_path / "c1.json")])
    assert r.exit_code != 0 and "--metric ppl (it has lp_app)" in r.output
    r = run(app, [*common, "--dedup", "1.0", "--out", str(tmp_path / "c2.json")])
    assert r.exit_code != 0 and "--dedup 1.0 (it has exact)" in r.output
    r = run(app, [*common, "--dedup", "exact", "--out", str(tmp_path / "c3.json")])
    assert r.exit_code == 0, r.output
    assert sorted(json.loads(Path(str(tmp_path / "c3.json") + ".report.json").read_text())["ids"]) == sorted(
        base.ids.tolist())


# ---------------------------------------------------------------- findings 4, 6, 8: words and names


def test_rule_text_names_max_value_and_dedup() -> None:
    from lpselect.analysis.report import _rule

    rep = {"strategy": "cluster", "band": "hardest", "percent": 10, "metric": "ifd", "epoch": 1, "max_value": 1.0,
           "dedup": {"mode": "cosine", "threshold": 0.95, "removed": 12}}
    assert _rule(rep) == ("hardest 10 % by ifd(1), rows with ifd above 1 left out, after removing 12 "
                          "near-duplicates (cosine ≥ 0.95)")
    base = {"strategy": "random", "seed": 3, "baseline_of": "h.json", "max_value": None,
            "dedup": {"mode": "exact", "threshold": None, "removed": 2}}
    assert _rule(base) == "random draw of h.json's size, seed 3, after removing 2 exact duplicates"


def test_one_file_name_per_dedup_threshold() -> None:
    from lpselect.steps.pipeline import grid, spec_name

    assert spec_name(SubsetSpec(dedup="0.950"), "t") == spec_name(SubsetSpec(dedup="0.95"), "t")
    assert spec_name(SubsetSpec(dedup="1.0"), "t").endswith("-dedup1")
    assert spec_name(SubsetSpec(dedup="exact"), "t").endswith("-dedupexact")
    cfg = RunConfig.model_validate({"data": "d.json", "out": "o", "select": [{"dedup": "0.95"}, {"dedup": 0.950},
                                                                            {"dedup": "0.950"}]})
    with pytest.raises(InputError, match="same subset"):
        grid(cfg)


def test_cosine_report_says_what_the_similarity_is_of() -> None:
    from lpselect.steps.dedup import dedup_rows

    ids = np.arange(3)
    cosine = dedup_rows(0.9, ids=ids, labels=None, embeddings=np.eye(3, dtype=np.float32), texts=["a", "b", "c"])
    assert "max_seq_length" in cosine.report()["similarity_of"]
    assert "similarity_of" not in dedup_rows("exact", ids=ids, labels=None, embeddings=None,
                                             texts=["a", "b", "c"]).report()


# ---------------------------------------------------------------- finding 7: a run's baselines reuse the dedup


def test_run_baselines_reuse_the_subsets_dedup(tmp_path, monkeypatch) -> None:
    import yaml

    from lpselect.data.formats import read_dataset
    from lpselect.steps import dedup as dedup_step
    from lpselect.steps.pipeline import _select_with_baselines, load_run_config

    data = _copies(tmp_path)
    scores = _scores(tmp_path / "scores.parquet", _rising())
    clusters = tmp_path / "clusters.parquet"
    pq.write_table(pa.table({"id": np.arange(N), "cluster": np.arange(N) % 2}), clusters)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"data": str(data), "out": str(tmp_path / "out"),
                                                       "score": {"model": "m/tiny"}}))
    cfg = load_run_config(tmp_path / "run.yaml")
    calls = []
    real = dedup_step.dedup_rows
    monkeypatch.setattr(dedup_step, "dedup_rows", lambda *a, **k: calls.append(1) or real(*a, **k))
    written = _select_with_baselines(cfg, SubsetSpec(percent=50, dedup="exact"), read_dataset(data), scores,
                                     clusters, tmp_path / "subsets" / "h")
    assert [r.path.name for r in written] == ["h.json", "h.random.json", "h.clust_rand.json"]
    assert len(calls) == 1  # the subset's search only
    for r in written:  # rows 10..14 copy 0..4 (same cluster parity): gone from every draw
        assert r.report["dedup"]["removed"] == 5 and not set(range(10, 15)) & set(r.ids.tolist())


def test_clust_rand_baseline_matches_its_subset_cluster_by_cluster(tmp_path) -> None:
    """Clusters of 9, 9 and 2 rows, the hardest 10 % by the parts rule (10 parts; hard end low for LP_app):
    1, 1 and 1 row (a 2-row cluster's first part holds 1). The baseline takes exactly those counts, where an
    exact total of 3 shared by size would give 2, 1 and 0."""
    data = tmp_path / "data.json"
    data.write_text(json.dumps(_rows()))
    scores = _scores(tmp_path / "scores.parquet", _rising())
    labels = np.array([0] * 9 + [1] * 9 + [2] * 2)
    clusters = tmp_path / "clusters.parquet"
    pq.write_table(pa.table({"id": np.arange(N), "cluster": labels}), clusters)
    like = select_subset(data, scores, tmp_path / "s" / "h.json", SubsetSpec(percent=10), clusters=clusters)
    assert sorted(labels[like.ids].tolist()) == [0, 1, 2]
    base = select_baseline(data, scores, tmp_path / "s" / "h.clust_rand.json", like.path,
                           SubsetSpec(strategy="clust_rand"), clusters=clusters)
    assert sorted(labels[base.ids].tolist()) == [0, 1, 2]
    assert base.report["per_cluster"] == like.report["per_cluster"] == {"0": 1, "1": 1, "2": 1}
