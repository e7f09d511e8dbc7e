"""Strategy ``trajectory`` (S2L): k-means on loss trajectories, then the balanced fill, checked by hand.

The trajectories are three far-apart groups of sizes 2, 5 and 13 in log-perplexity space, so the clusters
are known without k-means; the picks per cluster are written out from the rule (ascending size, each
min(size, floor(remaining / clusters left))), never taken from lpselect.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import alpaca_rows
from pydantic import ValidationError
from typer.testing import CliRunner

from lpselect.cli import app
from lpselect.config import SelectSpec, SubsetSpec
from lpselect.core.selection import STRATEGIES, select
from lpselect.core.trajectory import (
    balanced_fill,
    loss_trajectory,
    select_trajectory,
    select_trajectory_from_table,
    trajectory_budget,
    trajectory_columns,
)
from lpselect.errors import LPSelectError
from lpselect.steps.select import select_subset

NAN = float("nan")
CENTRES = {"small": (0.5, 0.3, 0.2), "mid": (3.0, 2.0, 1.5), "large": (6.0, 5.5, 5.0)}  # ln P0, ln P1, ln P2
SIZES = {"small": 2, "mid": 5, "large": 13}


def groups_case(seed: int = 0, extra_rows: list[tuple[float, float, float]] = ()) -> tuple[np.ndarray, dict]:
    """(rows x 3) log-ppl trajectories of the three groups, rows shuffled; group -> its row ids."""
    r = random.Random(seed)
    rows = [(g, tuple(c + r.uniform(-0.05, 0.05) for c in CENTRES[g])) for g in SIZES for _ in range(SIZES[g])]
    rows += [("nan", t) for t in extra_rows]
    r.shuffle(rows)
    members: dict[str, list[int]] = {}
    for i, (g, _) in enumerate(rows):
        members.setdefault(g, []).append(i)
    return np.array([t for _, t in rows], dtype=np.float64), members


def score_table(traj: np.ndarray, online: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """A score table as scores.parquet holds it: perplexities = exp(mean token loss)."""
    table = {"id": np.arange(len(traj))}
    table.update({f"ppl_{e}": np.exp(traj[:, e]) for e in range(traj.shape[1])})
    if online is not None:
        table.update({f"ppl_online_{e + 1}": np.exp(online[:, e]) for e in range(online.shape[1])})
    return table


def fill_counts(sizes: dict[int, int], budget: int) -> dict[int, int]:
    """The rule in plain Python: clusters by (size, id), each min(size, remaining // clusters left)."""
    remaining, out = budget, {}
    order = sorted(sizes, key=lambda c: (sizes[c], c))
    for j, c in enumerate(order):
        take = min(sizes[c], remaining // (len(order) - j))
        out[c] = take
        remaining -= take
    return out


# ----------------------------------------------------------------------------------- the fill alone


def test_fill_of_sizes_2_5_13_with_budget_9() -> None:
    labels = np.array([7] * 13 + [3] * 2 + [5] * 5)  # ids chosen so that size order != id order
    got = balanced_fill(labels, 9, np.random.default_rng(0))
    # ascending size: 2 (id 3) -> min(2, 9 // 3 = 3) = 2; 5 (id 5) -> min(5, 7 // 2 = 3) = 3; 13 -> min(13, 4) = 4
    assert len(got) == 9 and len(set(got.tolist())) == 9
    assert labels[got].tolist() == [3, 3, 5, 5, 5, 7, 7, 7, 7]  # visiting order, cluster by cluster
    for c in (3, 5, 7):
        block = got[labels[got] == c]
        assert block.tolist() == sorted(block.tolist())  # ascending position within a cluster


def test_fill_ties_go_by_cluster_id() -> None:
    labels = np.array([1, 1, 1, 0, 0, 0] + [2] * 10)
    got = balanced_fill(labels, 5, np.random.default_rng(0))
    # sizes 3, 3, 10: cluster 0 first (tie by id) -> min(3, 5 // 3 = 1) = 1; cluster 1 -> min(3, 4 // 2) = 2; 2 -> 2
    assert labels[got].tolist() == [0, 1, 1, 2, 2]


def test_fill_takes_whole_small_clusters_and_the_rest_from_the_last() -> None:
    labels = np.array([0] + [1] * 2 + [2] * 30)
    got = balanced_fill(labels, 20, np.random.default_rng(1))
    # 1 -> min(1, 20 // 3 = 6) = 1; 2 -> min(2, 19 // 2 = 9) = 2; 30 -> min(30, 17 // 1) = 17
    assert np.bincount(labels[got]).tolist() == [1, 2, 17]


@pytest.mark.parametrize("case", range(40))
def test_fill_matches_the_plain_statement(case: int) -> None:
    r = random.Random(case)
    sizes = {c: r.randint(1, 12) for c in r.sample(range(50), r.randint(1, 8))}
    labels = np.array([c for c, n in sizes.items() for _ in range(n)])
    np.random.default_rng(case).shuffle(labels)
    budget = r.randint(0, len(labels))
    got = balanced_fill(labels, budget, np.random.default_rng(case))
    assert len(set(got.tolist())) == len(got) == budget  # floor + ascending sizes: the budget is always met
    counts = {c: int((labels[got] == c).sum()) for c in sizes}
    assert counts == fill_counts(sizes, budget)


def test_fill_budget_above_the_rows_takes_every_row() -> None:
    labels = np.array([0, 0, 1])
    assert sorted(balanced_fill(labels, 10, np.random.default_rng(0)).tolist()) == [0, 1, 2]
    assert balanced_fill(np.array([], dtype=np.int64), 3, np.random.default_rng(0)).tolist() == []
    with pytest.raises(ValueError, match="budget"):
        balanced_fill(labels, -1, np.random.default_rng(0))


def test_fill_draws_are_uniform_within_a_cluster() -> None:
    labels = np.array([0] * 4 + [1] * 40)
    hits = np.zeros(4)
    for s in range(2000):  # cluster 0 gives min(4, 2 // 2) = 1 row each time
        got = balanced_fill(labels, 2, np.random.default_rng(s))
        hits[got[labels[got] == 0]] += 1
    assert hits.sum() == 2000 and hits.min() > 400  # ~500 each


# ----------------------------------------------------------------------------------- k-means + fill


def test_budget_is_round_of_p_percent_of_valid_rows() -> None:
    assert trajectory_budget(20, 45) == 9
    assert trajectory_budget(52002, 10) == 5200
    assert trajectory_budget(5, 10) == 0  # round(0.5) = 0 (half to even)
    assert trajectory_budget(15, 10) == 2  # round(1.5) = 2
    with pytest.raises(ValueError):
        trajectory_budget(10, 0)


@pytest.mark.parametrize("order", ["reference", "original"])
def test_three_obvious_groups(order: str) -> None:
    traj, members = groups_case()
    sel = select_trajectory(traj, 45, k=3, seed=42, order=order)  # B = round(20 * 0.45) = 9
    # k-means finds the three groups: one label per group, three different labels
    group_label = {g: set(sel.labels[ids].tolist()) for g, ids in members.items()}
    assert all(len(v) == 1 for v in group_label.values())
    assert len({next(iter(v)) for v in group_label.values()}) == 3
    # picks: small 2 (all), mid 3, large 4
    picked = sel.ids.tolist()
    assert len(picked) == len(set(picked)) == 9 == sel.budget
    per_group = {g: [i for i in picked if i in ids] for g, ids in members.items()}
    assert {g: len(v) for g, v in per_group.items()} == {"small": 2, "mid": 3, "large": 4}
    assert sorted(per_group["small"]) == sorted(members["small"])
    if order == "reference":  # smallest cluster first, ascending id within each
        assert picked == sorted(per_group["small"]) + sorted(per_group["mid"]) + sorted(per_group["large"])
    else:
        assert picked == sorted(picked)
    assert sel.n_nan == 0 and sel.k_used == 3 and sorted(sel.cluster_sizes.values()) == [2, 5, 13]
    assert sorted(sel.per_cluster.values()) == [2, 3, 4]


def test_seeded_draws() -> None:
    traj, _ = groups_case()
    base = select_trajectory(traj, 45, k=3, seed=42).ids.tolist()
    assert select_trajectory(traj, 45, k=3, seed=42).ids.tolist() == base
    others = [select_trajectory(traj, 45, k=3, seed=s).ids.tolist() for s in (43, 44, 45)]
    assert any(sorted(o) != sorted(base) for o in others)


def test_nan_rows_are_left_out_and_counted() -> None:
    bad = [(NAN, 1.0, 1.0), (1.0, NAN, 1.0), (1.0, 1.0, math.inf)]
    traj, members = groups_case(seed=3, extra_rows=bad)
    for s in range(5):
        sel = select_trajectory(traj, 45, k=3, seed=s)
        assert sel.n_nan == 3
        assert not set(sel.ids.tolist()) & set(members["nan"])
        assert len(sel.ids) == 9  # B from the 20 valid rows, not 23
        assert (sel.labels[members["nan"]] == -1).all()


def test_k_is_capped_at_the_valid_rows() -> None:
    traj, _ = groups_case()
    sel = select_trajectory(traj, 50, k=100, seed=0)
    assert sel.k_used == 20 and sel.k_requested == 100 and len(sel.ids) == 10
    # 20 singleton clusters, B = 10: floor(10 / m) is 0 until m = 10 clusters are left, so the last ten give one
    assert sorted(sel.cluster_sizes.values()) == [1] * 20 and sum(sel.per_cluster.values()) == 10


def test_duplicate_trajectories_leave_clusters_empty_without_failing() -> None:
    traj = np.array([[1.0, 0.5]] * 6 + [[3.0, 2.0]] * 6)
    sel = select_trajectory(traj, 50, k=5, seed=0)
    assert sel.k_used == 5 and len(sel.cluster_sizes) == 2 and sorted(sel.per_cluster.values()) == [3, 3]


def test_no_valid_row_selects_nothing() -> None:
    sel = select_trajectory(np.full((4, 3), NAN), 50, k=3)
    assert sel.ids.tolist() == [] and sel.n_nan == 4 and sel.budget == 0


def test_trajectory_columns_order_and_online_losses() -> None:
    traj, members = groups_case()
    online = traj[:, 1:] + 0.1  # online losses close to the passes'
    table = score_table(traj, online)
    table["ppl_resp_1"] = np.ones(len(traj))  # not part of a trajectory
    assert trajectory_columns(table) == ["ppl_0", "ppl_1", "ppl_2", "ppl_online_1", "ppl_online_2"]
    x, columns = loss_trajectory(table)
    np.testing.assert_allclose(x, np.column_stack([traj, online]))
    assert columns == trajectory_columns(table)
    # an online column with nothing recorded is skipped, one NaN in a recorded one leaves the row out
    table["ppl_online_2"] = np.full(len(traj), NAN)
    assert trajectory_columns(table) == ["ppl_0", "ppl_1", "ppl_2", "ppl_online_1"]
    table["ppl_online_1"] = table["ppl_online_1"].copy()
    table["ppl_online_1"][members["large"][0]] = NAN
    sel = select_trajectory_from_table(table, 45, k=3, seed=0)
    assert sel.n_nan == 1 and members["large"][0] not in sel.ids.tolist()
    assert sel.columns == ["ppl_0", "ppl_1", "ppl_2", "ppl_online_1"]


def test_select_refuses_trajectory_and_the_choices_list_it() -> None:
    assert "trajectory" in STRATEGIES
    with pytest.raises(ValueError, match="select_trajectory"):
        select(np.zeros(4), None, 50, strategy="trajectory")
    with pytest.raises(ValueError, match="order"):
        select_trajectory(np.zeros((4, 2)), 50, order="shuffled")


def test_run_config_accepts_trajectory_k() -> None:
    spec = SelectSpec(strategy="trajectory", trajectory_k=7)
    assert spec.trajectory_k == 7 and SelectSpec().trajectory_k == 100
    with pytest.raises(ValidationError, match="trajectory_k"):
        SelectSpec(strategy="trajectory", trajectory_k=0)


# ----------------------------------------------------------------------------------- end to end


@pytest.fixture
def scored(tmp_path: Path) -> tuple[Path, Path, dict]:
    """23 Alpaca rows (3 without a finite trajectory) and their scores.parquet with online losses."""
    traj, members = groups_case(seed=5, extra_rows=[(NAN, 1.0, 1.0), (1.0, NAN, 1.0), (2.0, 2.0, NAN)])
    data = tmp_path / "data.json"
    data.write_text(json.dumps(alpaca_rows(len(traj)), indent=2))
    online = np.where(np.isfinite(traj[:, 1:]), traj[:, 1:] + 0.2, NAN)
    table = score_table(traj, online)
    run = tmp_path / "run"
    run.mkdir()
    pq.write_table(pa.table(table), run / "scores.parquet")
    return data, run / "scores.parquet", members


def test_select_subset_trajectory_end_to_end(scored, tmp_path) -> None:
    data, scores, members = scored
    out = tmp_path / "subsets" / "45_traj.json"
    r = select_subset(data, scores, out,
                      SubsetSpec(strategy="trajectory", trajectory_k=3, percent=45, metric="ppl", epoch=0))
    rep = json.loads(r.report_path.read_text())
    assert rep["strategy"] == "trajectory" and rep["trajectory_k"] == 3 and rep["trajectory_k_used"] == 3
    assert rep["n_selected"] == 9 and rep["n_nan_left_out"] == 3 and rep["trajectory_budget"] == 9
    assert rep["trajectory_columns"] == ["ppl_0", "ppl_1", "ppl_2", "ppl_online_1", "ppl_online_2"]
    assert sorted(rep["per_cluster"].values()) == [2, 3, 4] and rep["n_clusters"] == 3
    assert rep["band_sizes"] is None and rep["n_parts"] is None
    ids = r.ids.tolist()
    assert {g: sum(i in ids for i in m) for g, m in members.items()} == {"small": 2, "mid": 3, "large": 4, "nan": 0}
    rows = alpaca_rows(23)
    assert json.loads(out.read_text()) == [rows[i] for i in ids]
    assert rep["ids"] == ids  # what the run report shows


def test_select_subset_trajectory_refuses_band_and_max_value(scored, tmp_path) -> None:
    data, scores, _ = scored
    with pytest.raises(LPSelectError, match="no bands"):
        select_subset(data, scores, tmp_path / "a.json",
                      SubsetSpec(strategy="trajectory", band="high", metric="ppl", epoch=0))
    with pytest.raises(LPSelectError, match="max-value"):
        select_subset(data, scores, tmp_path / "b.json",
                      SubsetSpec(strategy="trajectory", max_value=1.0, metric="ppl", epoch=0))


def test_cli_select_trajectory(scored, tmp_path) -> None:
    data, scores, members = scored
    out = tmp_path / "cli.json"
    args = ["select", "--data", data, "--scores", scores, "--out", out, "--strategy", "trajectory",
            "--trajectory-k", "3", "--percent", "45", "--metric", "lp_app", "--epoch", "1", "--seed", "7",
            "--order", "original"]
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    assert "9 of 23 rows = 39.1 %; 3 without a score left out" in " ".join(r.output.split())  # rich may wrap lines
    rep = json.loads(Path(str(out) + ".report.json").read_text())
    assert rep["seed"] == 7 and rep["order"] == "original" and sorted(rep["per_cluster"].values()) == [2, 3, 4]
    got = json.loads(out.read_text())
    rows = alpaca_rows(23)
    ids = [rows.index(g) for g in got]
    assert ids == sorted(ids) and set(members["small"]) <= set(ids)
