"""docs/method.md §8 selection, against an independent plain-Python statement of the rule written here.

The expected ids never come from numpy's array_split or from lpselect: clusters are walked in ascending
number, members sorted by (metric, id), and the part sizes of array_split are re-derived by hand
(``n = q * parts + r``: the first ``r`` parts get ``q + 1`` items, the rest ``q``).
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from lpselect.core.selection import BANDS, Selection, n_parts, select

NAN = float("nan")

# round(100 / p) with Python's round-half-to-even, written out by hand
PARTS = {1: 100, 3: 33, 5: 20, 10: 10, 25: 4, 33: 3, 40: 2, 50: 2, 60: 2, 70: 1, 100: 1,
         12.5: 8, 15: 7, 20: 5}
PERCENTS = [1, 3, 5, 10, 25, 33, 40, 50, 60, 70, 100, 12.5, 15]


# --------------------------------------------------------------------------------------------------
# the independent statement
# --------------------------------------------------------------------------------------------------


def part_sizes(n: int, parts: int) -> list[int]:
    q, r = n // parts, n % parts
    return [q + 1 if k < r else q for k in range(parts)]


def band_index(parts: int, band: str) -> int:
    return {"low": 0, "mid": parts // 2, "high": parts - 1}[band]


def is_nan(x: float) -> bool:
    return isinstance(x, float) and math.isnan(x)


def clusters_of(metric: list[float], labels: list[int]) -> dict[int, list[int]]:
    """cluster -> its non-NaN member ids, sorted by (metric, id)."""
    groups: dict[int, list[int]] = {}
    for i, (m, c) in enumerate(zip(metric, labels, strict=True)):
        if not is_nan(m):
            groups.setdefault(int(c), []).append(i)
    return {c: sorted(ids, key=lambda i: (metric[i], i)) for c, ids in groups.items()}


def expected_part(members: list[int], parts: int, band: str) -> list[int]:
    sizes = part_sizes(len(members), parts)
    k = band_index(parts, band)
    start = sum(sizes[:k])
    return members[start:start + sizes[k]]


def expected_ids(metric: list[float], labels: list[int] | None, percent: float, band: str,
                 order: str = "reference") -> list[int]:
    parts = PARTS[percent]
    labels = [0] * len(metric) if labels is None else labels
    out: list[int] = []
    groups = clusters_of(metric, labels)
    for c in sorted(groups):
        out.extend(expected_part(groups[c], parts, band))
    return sorted(out) if order == "original" else out


def random_case(seed: int, max_size: int = 7) -> tuple[list[float], list[int]]:
    """Clusters of size 0..max_size (size 0 = a label with no member, i.e. gaps), tied values, NaN rows."""
    r = random.Random(seed)
    labels = sorted(r.sample(range(-3, 15), r.randint(1, 7)))
    rows: list[int] = []
    for c in labels:
        rows += [c] * r.randint(0, max_size)
    if not rows:
        rows = [labels[0]]
    r.shuffle(rows)
    values = [0.0, 0.1, 0.1, 0.25, -0.5, 1.0, 0.75, NAN]
    metric = [r.choice(values) if r.random() < 0.6 else round(r.uniform(-1, 1), 3) for _ in rows]
    return metric, rows


def as_list(sel: Selection) -> list[int]:
    assert isinstance(sel.ids, np.ndarray)
    assert sel.ids.dtype == np.int64
    return sel.ids.tolist()


# --------------------------------------------------------------------------------------------------
# the statement itself is right (hand checks of the helper, so a wrong helper cannot hide a bug)
# --------------------------------------------------------------------------------------------------


def test_part_sizes_by_hand() -> None:
    assert part_sizes(7, 3) == [3, 2, 2]
    assert part_sizes(7, 10) == [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]
    assert part_sizes(10, 4) == [3, 3, 2, 2]
    assert part_sizes(0, 2) == [0, 0]
    assert part_sizes(5, 2) == [3, 2]


@pytest.mark.parametrize("percent", sorted(PARTS))
def test_n_parts(percent: float) -> None:
    assert n_parts(percent) == PARTS[percent]


def test_n_parts_uses_round_half_to_even() -> None:
    # 100 / 40 = 2.5 -> 2 (not 3); a cluster of 5 then gives a low part of 3, not 2
    assert n_parts(40) == 2
    sel = select(np.array([0.5, 0.4, 0.3, 0.2, 0.1]), np.zeros(5, dtype=int), 40, "low")
    assert as_list(sel) == [4, 3, 2]


@pytest.mark.parametrize("percent", [0, -5, 100.5, 1000])
def test_percent_out_of_range(percent: float) -> None:
    with pytest.raises(ValueError):
        n_parts(percent)
    with pytest.raises(ValueError):
        select(np.zeros(4), np.zeros(4, dtype=int), percent)


# --------------------------------------------------------------------------------------------------
# fully hand-written examples
# --------------------------------------------------------------------------------------------------

# ids:        0    1    2    3    4    5    6    7    8
HAND_M = [0.5, 0.1, 0.3, 0.1, 0.9, 0.2, 0.7, 0.4, NAN]
HAND_C = [1, 0, 1, 0, 1, 0, 3, 3, 0]  # cluster 2 has no member; id 8 is NaN in cluster 0
# cluster 0: 1 (0.1), 3 (0.1, tie -> by id), 5 (0.2)   | 8 (NaN) left out
# cluster 1: 2 (0.3), 0 (0.5), 4 (0.9)
# cluster 3: 7 (0.4), 6 (0.7)
# 50 % -> 2 parts: sizes 3 -> [2, 1], 2 -> [1, 1]


@pytest.mark.parametrize(
    ("band", "order", "ids"),
    [
        ("low", "reference", [1, 3, 2, 0, 7]),
        ("low", "original", [0, 1, 2, 3, 7]),
        ("high", "reference", [5, 4, 6]),  # had the NaN row counted, cluster 0's high part would be [5, 8]
        ("high", "original", [4, 5, 6]),
        ("mid", "reference", [5, 4, 6]),  # parts // 2 == 1 == the last of 2
    ],
)
def test_hand_example_50_percent(band: str, order: str, ids: list[int]) -> None:
    sel = select(np.array(HAND_M), np.array(HAND_C), 50, band, order=order)
    assert as_list(sel) == ids
    assert sel.n_nan == 1
    assert sel.n_parts == 2


def test_hand_example_per_cluster_counts() -> None:
    sel = select(np.array(HAND_M), np.array(HAND_C), 50, "low")
    assert sel.per_cluster == {0: 2, 1: 2, 3: 1}
    sel = select(np.array(HAND_M), np.array(HAND_C), 50, "high")
    assert sel.per_cluster == {0: 1, 1: 1, 3: 1}


def test_hand_example_global_ignores_clusters() -> None:
    # all 8 finite rows ranked: 1, 3 (0.1 tie), 5 (0.2), 2 (0.3), 7 (0.4), 0 (0.5), 6 (0.7), 4 (0.9)
    m, c = np.array(HAND_M), np.array(HAND_C)
    assert as_list(select(m, c, 50, "low", strategy="global")) == [1, 3, 5, 2]
    assert as_list(select(m, None, 50, "high", strategy="global")) == [7, 0, 6, 4]
    assert as_list(select(m, None, 25, "low", strategy="global")) == [1, 3]  # 4 parts of 2
    assert as_list(select(m, None, 33, "mid", strategy="global", order="original")) == [0, 2, 7]
    assert select(m, None, 50, "low", strategy="global").n_nan == 1


def test_hand_example_seven_members_three_parts() -> None:
    # one cluster of 7, values descending with id: ranked order is 6, 5, 4, 3, 2, 1, 0; 33 % -> [3, 2, 2]
    m = np.array([0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    c = np.full(7, 4)
    assert as_list(select(m, c, 33, "low")) == [6, 5, 4]
    assert as_list(select(m, c, 33, "mid")) == [3, 2]
    assert as_list(select(m, c, 33, "high")) == [1, 0]
    assert as_list(select(m, c, 33, "high", order="original")) == [0, 1]
    # 10 % -> 10 parts of sizes [1]*7 + [0]*3: low = the hardest one, mid = parts[5] = 6th, high = empty
    assert as_list(select(m, c, 10, "low")) == [6]
    assert as_list(select(m, c, 10, "mid")) == [1]
    assert as_list(select(m, c, 10, "high")) == []


def test_hand_example_ties_broken_by_id_not_position_in_cluster() -> None:
    # all values of clusters 2 and 5 equal: the order is pure id order inside them; clusters ascending by
    # number; row 6 (cluster 9, alone) gives the metric its spread
    m = np.array([0, 0, 0, 0, 0, 0, 1.0])
    c = np.array([5, 2, 5, 2, 5, 2, 9])
    assert as_list(select(m, c, 50, "low")) == [1, 3, 0, 2, 6]
    assert as_list(select(m, c, 50, "high")) == [5, 4]  # array_split([6], 2) leaves cluster 9's last part empty


def test_negative_and_large_cluster_numbers_sorted_numerically() -> None:
    m = np.array([0.1, 0.2, 0.3, 0.4])
    c = np.array([10, -1, 2, 100])
    assert as_list(select(m, c, 100, "low")) == [1, 2, 0, 3]


@pytest.mark.parametrize("band", ["low", "high"])
def test_infinite_values_are_left_out_like_nan(band: str) -> None:
    """-inf would otherwise rank hardest (low) and +inf easiest (high): neither is a score to trust."""
    m = np.array([0.4, -np.inf, 0.1, np.inf, 0.3, np.nan])
    sel = select(m, None, 50, band, strategy="global")
    assert sel.n_nan == 3
    # the finite rows sorted ascending: 2 (0.1), 4 (0.3), 0 (0.4); 50 % -> two parts, sizes 2 and 1
    assert set(as_list(sel)) == ({2, 4} if band == "low" else {0})


def test_all_nan_gives_empty_selection() -> None:
    sel = select(np.full(5, np.nan), np.array([0, 0, 1, 1, 2]), 10, "low")
    assert as_list(sel) == []
    assert sel.n_nan == 5
    assert sel.per_cluster == {}


# --------------------------------------------------------------------------------------------------
# the statement on many random small cases: every band, percentage, order, cluster sizes 0..7
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("percent", PERCENTS)
@pytest.mark.parametrize("band", BANDS)
def test_cluster_strategy_matches_statement(percent: float, band: str) -> None:
    checked_nan = checked_empty_cluster = 0
    for seed in range(150):
        metric, labels = random_case(seed)
        m, c = np.array(metric), np.array(labels)
        for order in ("reference", "original"):
            sel = select(m, c, percent, band, order=order)
            exp = expected_ids(metric, labels, percent, band, order)
            assert as_list(sel) == exp, (seed, percent, band, order, metric, labels)
            assert sel.n_parts == PARTS[percent]
            n_nan = sum(is_nan(x) for x in metric)
            assert sel.n_nan == n_nan
            checked_nan += n_nan > 0
            counts: dict[int, int] = {}
            for i in exp:
                counts[labels[i]] = counts.get(labels[i], 0) + 1
            assert sel.per_cluster == counts
        checked_empty_cluster += len(set(labels)) < max(labels) - min(labels) + 1
        assert not any(is_nan(metric[i]) for i in as_list(select(m, c, percent, band)))
    assert checked_nan > 0 and checked_empty_cluster > 0  # the cases do exercise NaN and gaps


@pytest.mark.parametrize("percent", PERCENTS)
@pytest.mark.parametrize("band", BANDS)
def test_global_strategy_matches_statement(percent: float, band: str) -> None:
    for seed in range(60):
        metric, labels = random_case(1000 + seed, max_size=30)
        m = np.array(metric)
        for order in ("reference", "original"):
            exp = expected_ids(metric, None, percent, band, order)
            assert as_list(select(m, None, percent, band, strategy="global", order=order)) == exp
            # clusters given but ignored
            assert as_list(select(m, np.array(labels), percent, band, strategy="global", order=order)) == exp


def test_every_cluster_size_zero_to_seven_every_percent() -> None:
    # one cluster of each size 0..7 (size 0 = label 1 unused), values ascending with a tie
    labels, metric = [], []
    for c, size in enumerate(range(8)):
        for k in range(size):
            labels.append(c)
            metric.append(float(k // 2))  # pairs of ties
    order = list(range(len(labels)))
    random.Random(7).shuffle(order)  # ids are not in cluster order
    labels = [labels[i] for i in order]
    metric = [metric[i] for i in order]
    for percent in PERCENTS:
        for band in BANDS:
            got = as_list(select(np.array(metric), np.array(labels), percent, band))
            assert got == expected_ids(metric, labels, percent, band), (percent, band)


def test_reference_order_is_cluster_then_metric() -> None:
    metric, labels = random_case(99, max_size=40)
    sel = as_list(select(np.array(metric), np.array(labels), 33, "low"))
    keys = [(labels[i], metric[i], i) for i in sel]
    assert keys == sorted(keys)
    assert len(sel) > 5


# --------------------------------------------------------------------------------------------------
# clust_rand and random baselines
# --------------------------------------------------------------------------------------------------


def _big_case(seed: int = 3) -> tuple[list[float], list[int]]:
    r = random.Random(seed)
    labels = [r.randrange(0, 25) for _ in range(1200)]
    metric = [NAN if r.random() < 0.08 else r.choice([0.0, 0.5]) if r.random() < 0.2 else r.random()
              for _ in labels]
    return metric, labels


@pytest.mark.parametrize("percent", [1, 3, 10, 33, 50])
def test_clust_rand_sizes_membership_and_determinism(percent: float) -> None:
    metric, labels = _big_case()
    m, c = np.array(metric), np.array(labels)
    low = expected_ids(metric, labels, percent, "low")
    want: dict[int, int] = {}
    for i in low:
        want[labels[i]] = want.get(labels[i], 0) + 1

    sel = select(m, c, percent, "low", strategy="clust_rand", seed=42)
    got = as_list(sel)
    assert len(got) == len(set(got))
    assert not any(is_nan(metric[i]) for i in got)
    have: dict[int, int] = {}
    for i in got:
        have[labels[i]] = have.get(labels[i], 0) + 1
    assert have == want  # same size per cluster as the low part, and only that cluster's members
    assert sel.per_cluster == want
    assert sel.n_nan == sum(is_nan(x) for x in metric)
    # reference order: cluster by cluster, by ascending metric (ties by id)
    keys = [(labels[i], metric[i], i) for i in got]
    assert keys == sorted(keys)
    # deterministic for a seed, different for another, and not simply the low part
    assert as_list(select(m, c, percent, "low", strategy="clust_rand", seed=42)) == got
    other = as_list(select(m, c, percent, "low", strategy="clust_rand", seed=7))
    assert other != got
    assert got != low
    # original order is the same set, sorted by id
    orig = as_list(select(m, c, percent, "low", strategy="clust_rand", seed=42, order="original"))
    assert orig == sorted(got)


def test_clust_rand_is_uniform_within_cluster() -> None:
    # one cluster of 10: with 10 % the low part is 1 member; across seeds every member should be drawn
    m = np.arange(10, dtype=float)
    c = np.zeros(10, dtype=int)
    drawn = [as_list(select(m, c, 10, "low", strategy="clust_rand", seed=s))[0] for s in range(400)]
    counts = [drawn.count(k) for k in range(10)]
    assert min(counts) > 15, counts  # expected 40 each


def test_clust_rand_small_clusters_take_whole_cluster_when_part_is_whole() -> None:
    # 100 %: one part, the random sample of a whole cluster is the whole cluster
    metric, labels = random_case(5)
    got = as_list(select(np.array(metric), np.array(labels), 100, "low", strategy="clust_rand", seed=1))
    assert got == expected_ids(metric, labels, 100, "low")


@pytest.mark.parametrize("percent", [1, 3, 10, 33])
def test_random_strategy(percent: float) -> None:
    metric, labels = _big_case(11)
    m, c = np.array(metric), np.array(labels)
    n_low = len(expected_ids(metric, labels, percent, "low"))
    sel = select(m, c, percent, "low", strategy="random", seed=42)
    got = as_list(sel)
    assert len(got) == n_low
    assert len(set(got)) == len(got)
    assert all(0 <= i < len(metric) for i in got)
    assert not any(is_nan(metric[i]) for i in got)
    assert sel.n_nan == sum(is_nan(x) for x in metric)
    assert as_list(select(m, c, percent, "low", strategy="random", seed=42)) == got
    assert sorted(as_list(select(m, c, percent, "low", strategy="random", seed=43))) != sorted(got)
    assert as_list(select(m, c, percent, "low", strategy="random", seed=42, order="original")) == sorted(got)
    # not confined to a cluster structure: it crosses the per-cluster low sizes somewhere
    per = {}
    for i in got:
        per[labels[i]] = per.get(labels[i], 0) + 1
    low_per = {}
    for i in expected_ids(metric, labels, percent, "low"):
        low_per[labels[i]] = low_per.get(labels[i], 0) + 1
    assert per != low_per


def test_random_without_clusters_is_global_low_size() -> None:
    metric, _ = _big_case(12)
    n_low = len(expected_ids(metric, None, 10, "low"))
    got = as_list(select(np.array(metric), None, 10, "low", strategy="random", seed=0))
    assert len(got) == n_low
    assert not any(is_nan(metric[i]) for i in got)


# --------------------------------------------------------------------------------------------------
# argument errors
# --------------------------------------------------------------------------------------------------


def test_argument_errors() -> None:
    m, c = np.zeros(4), np.zeros(4, dtype=int)
    with pytest.raises(ValueError, match="band"):
        select(m, c, 10, "hardest")
    with pytest.raises(ValueError, match="strategy"):
        select(m, c, 10, strategy="kmeans")
    with pytest.raises(ValueError, match="order"):
        select(m, c, 10, order="random")
    for strategy in ("cluster", "clust_rand"):
        with pytest.raises(ValueError, match="cluster"):
            select(m, None, 10, strategy=strategy)
    with pytest.raises(ValueError):
        select(m, np.zeros(3, dtype=int), 10)


def test_clust_rand_quotas_draw_each_clusters_given_count():
    """A baseline drawn for an existing subset takes that subset's count from every cluster (hand-made case)."""
    labels = np.array([0] * 19 + [1] * 19 + [2] * 2)
    metric = np.linspace(0.0, 1.0, len(labels))
    metric[5] = np.nan  # a row without a value is never drawn
    quotas = {0: 2, 1: 2, 2: 1}  # what the parts rule's hardest 10 % of these clusters takes
    sel = select(metric, labels, 10, strategy="clust_rand", seed=3, quotas=quotas)
    assert sel.per_cluster == quotas
    assert 5 not in sel.ids.tolist()
    for c in quotas:
        assert set(sel.ids[labels[sel.ids] == c]) <= set(np.flatnonzero(labels == c))
    again = select(metric, labels, 10, strategy="clust_rand", seed=3, quotas=quotas)
    assert again.ids.tolist() == sel.ids.tolist()
    with pytest.raises(ValueError, match="more rows than clusters"):
        select(metric, labels, 10, strategy="clust_rand", quotas={2: 3})
    with pytest.raises(ValueError, match="no row that has a value"):
        select(metric, labels, 10, strategy="clust_rand", quotas={7: 1})
    with pytest.raises(ValueError, match="clust_rand"):
        select(metric, labels, 10, strategy="random", quotas=quotas)
