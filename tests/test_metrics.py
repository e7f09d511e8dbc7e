"""docs/method.md §6: LP(i) = (P(i-1) - P(i)) / (P0 - Pn), 0 where P0 == Pn; LP_app(i) = (P(i-1) - P(i)) / P0.

Expected values are written out by hand; the random-table test re-states the formulas in plain numpy.
"""

from __future__ import annotations

import numpy as np
import pytest

from lpselect.core.metrics import (
    METRICS,
    compute_metric,
    learning_percentage,
    learning_percentage_approx,
)

NAN = float("nan")

# one row per case: P0, P1, P2, P3 (n = 3)
TABLE = [
    [10.0, 6.0, 5.0, 4.0],  # plain: total 6
    [8.0, 8.0, 9.0, 8.0],  # P0 == Pn -> LP 0 at every epoch, LP_app is still defined
    [5.0, 6.0, 4.0, 3.0],  # gets worse first: negative LP(1)
    [1.0, 1.0, 1.0, 1.0],  # the reference's all-1.0 mark: LP 0
    [4.0, 3.0, NAN, 2.0],  # NaN in P2: only the epochs that read P2 become NaN
    [NAN, 3.0, 2.0, 1.0],  # NaN in P0: everything NaN
    [4.0, 3.0, 2.0, NAN],  # NaN in Pn: LP all NaN, LP_app(1), LP_app(2) defined
    [3.0, NAN, 2.0, 3.0],  # P0 == Pn but P1 NaN: LP(1), LP(2) NaN; LP(3) is 0 by the P0 == Pn rule
]

LP = {
    1: [4 / 6, 0.0, -1 / 2, 0.0, 1 / 2, NAN, NAN, NAN],
    2: [1 / 6, 0.0, 1.0, 0.0, NAN, NAN, NAN, NAN],
    3: [1 / 6, 0.0, 1 / 2, 0.0, NAN, NAN, NAN, 0.0],
}
LP_APP = {
    1: [0.4, 0.0, -0.2, 0.0, 0.25, NAN, 0.25, NAN],
    2: [0.1, -1 / 8, 0.4, 0.0, NAN, NAN, 0.25, NAN],
    3: [0.1, 1 / 8, 0.2, 0.0, NAN, NAN, NAN, -1 / 3],
}


def _same(got: np.ndarray, expected: list[float]) -> None:
    got = np.asarray(got)
    assert got.dtype == np.float64
    assert got.shape == (len(expected),)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-15, atol=0)


@pytest.mark.parametrize("epoch", [1, 2, 3])
def test_lp_by_hand(epoch: int) -> None:
    _same(learning_percentage(np.array(TABLE), epoch), LP[epoch])


@pytest.mark.parametrize("epoch", [1, 2, 3])
def test_lp_app_by_hand(epoch: int) -> None:
    _same(learning_percentage_approx(np.array(TABLE), epoch), LP_APP[epoch])


@pytest.mark.parametrize("epoch", [1, 2, 3])
def test_compute_metric_dispatches(epoch: int) -> None:
    assert {"lp", "lp_app"} <= set(METRICS)
    _same(compute_metric("lp", _table(TABLE), epoch), LP[epoch])
    _same(compute_metric("lp_app", _table(TABLE), epoch), LP_APP[epoch])


def _table(ppl) -> dict[str, np.ndarray]:
    """A score table (column -> array) holding the perplexity columns ppl_0 .. ppl_n."""
    arr = np.asarray(ppl, dtype=np.float64)
    return {f"ppl_{e}": arr[:, e] for e in range(arr.shape[1])}


def test_single_row_exact_values() -> None:
    p = np.array([[10.0, 6.0, 5.0, 4.0]])
    assert learning_percentage(p, 1)[0] == 4 / 6
    assert learning_percentage(p, 2)[0] == 1 / 6
    assert learning_percentage_approx(p, 1)[0] == 0.4
    assert learning_percentage_approx(p, 3)[0] == 0.1


def test_lp_sums_to_one_over_epochs_when_p0_differs_from_pn() -> None:
    p = np.array([[10.0, 6.0, 5.0, 4.0], [5.0, 6.0, 4.0, 3.0], [2.0, 2.5, 2.25, 3.0]])
    total = sum(learning_percentage(p, e) for e in (1, 2, 3))
    np.testing.assert_allclose(total, [1.0, 1.0, 1.0], rtol=1e-12)


def test_p0_equals_pn_gives_zero_not_nan_or_inf() -> None:
    p = np.array([[7.0, 3.0, 9.0, 7.0], [2.0, 2.0, 2.0, 2.0]])
    for e in (1, 2, 3):
        got = learning_percentage(p, e)
        assert np.array_equal(got, [0.0, 0.0]), (e, got)


def test_pn_is_the_last_column() -> None:
    # n = 1: LP(1) = (P0 - P1) / (P0 - P1) = 1 where they differ, 0 where equal
    p = np.array([[5.0, 3.0], [5.0, 5.0], [3.0, 5.0]])
    _same(learning_percentage(p, 1), [1.0, 0.0, 1.0])
    _same(learning_percentage_approx(p, 1), [0.4, 0.0, -2 / 3])
    # n = 2: the denominator is P0 - P2, not P0 - P1
    p = np.array([[10.0, 8.0, 6.0]])
    _same(learning_percentage(p, 1), [0.5])
    _same(learning_percentage(p, 2), [0.5])


def test_lower_is_harder_ordering() -> None:
    # a sample learned mostly in epoch 1 (easy) has a higher LP(1) than one learned late (hard)
    easy = [10.0, 4.0, 3.5, 3.0]
    hard = [10.0, 9.5, 6.0, 3.0]
    lp = learning_percentage(np.array([easy, hard]), 1)
    assert lp[0] > lp[1]


def test_input_not_modified_and_lists_accepted() -> None:
    p = np.array(TABLE)
    before = p.copy()
    learning_percentage(p, 1)
    learning_percentage_approx(p, 2)
    np.testing.assert_array_equal(p, before)
    _same(learning_percentage([[10, 6, 5, 4]], 1), [4 / 6])  # ints are fine


@pytest.mark.parametrize("fn", [learning_percentage, learning_percentage_approx])
@pytest.mark.parametrize("epoch", [0, -1, 4, 10])
def test_epoch_out_of_range(fn, epoch: int) -> None:
    with pytest.raises(ValueError, match="epoch"):
        fn(np.array(TABLE), epoch)


@pytest.mark.parametrize("epoch", [0, 4])
def test_compute_metric_epoch_out_of_range(epoch: int) -> None:
    for name in ("lp", "lp_app"):
        with pytest.raises(ValueError, match="epoch"):
            compute_metric(name, _table(TABLE), epoch)


@pytest.mark.parametrize("fn", [learning_percentage, learning_percentage_approx])
@pytest.mark.parametrize("shape", [(5,), (5, 1), (2, 3, 4)])
def test_bad_shapes(fn, shape) -> None:
    with pytest.raises(ValueError):
        fn(np.ones(shape), 1)


def test_unknown_metric() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        compute_metric("nonsense", _table(TABLE), 1)


@pytest.mark.parametrize("n_epochs", [1, 2, 3, 5])
def test_random_table_against_plain_numpy(n_epochs: int) -> None:
    rng = np.random.default_rng(1234 + n_epochs)
    rows = 2000
    p = rng.uniform(1.0, 30.0, size=(rows, n_epochs + 1))
    p = np.round(p, 1)  # coarse values so that P0 == Pn happens by chance too
    same = rng.random(rows) < 0.05
    p[same, -1] = p[same, 0]  # forced P0 == Pn
    holes = rng.random(p.shape) < 0.02
    p[holes] = np.nan
    assert np.any(same) and np.any(holes)

    for e in range(1, n_epochs + 1):
        step = p[:, e - 1] - p[:, e]
        total = p[:, 0] - p[:, n_epochs]
        with np.errstate(divide="ignore", invalid="ignore"):
            lp = np.where(total == 0, 0.0, step / total)
            lp_app = step / p[:, 0]
        lp[np.isnan(step) | np.isnan(total)] = np.nan
        np.testing.assert_array_equal(learning_percentage(p, e), lp)
        np.testing.assert_array_equal(learning_percentage_approx(p, e), lp_app)
        np.testing.assert_array_equal(compute_metric("lp", _table(p), e), lp)
        np.testing.assert_array_equal(compute_metric("lp_app", _table(p), e), lp_app)
        # the forced P0 == Pn rows with finite steps are exactly 0
        ok = same & ~np.isnan(step) & ~np.isnan(total)
        assert np.all(learning_percentage(p, e)[ok] == 0.0)
