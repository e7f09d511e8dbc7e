"""``lpselect show``'s choice of rows (issue 22 item 5): the hardest and easiest ids, overall and per cluster,
against a plain-Python statement, and the one line each row is printed as."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from lpselect.analysis.show import cut, extremes, row_line


def statement(values: list[float], k: int, hard_end: str, members: list[int] | None = None) -> tuple[list, list]:
    """Sort the rows with a value by (metric, id) ascending; the hard end 'low' is the first k (hardest) and the
    last k reversed (easiest); 'high' the other way round."""
    ids = [i for i in (members if members is not None else range(len(values))) if not math.isnan(values[i])]
    order = sorted(ids, key=lambda i: (values[i], i))
    first, last = order[:k], order[::-1][:k]
    return (first, last) if hard_end == "low" else (last, first)


@pytest.mark.parametrize("hard_end", ["low", "high"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ids_overall_and_per_cluster_follow_the_statement(hard_end: str, seed: int) -> None:
    rng = random.Random(seed)
    n, k = 37, 4
    values = [rng.choice([0.1, 0.2, 0.3, math.nan]) if rng.random() < 0.5 else rng.random() for _ in range(n)]
    labels = [rng.randrange(3) for _ in range(n)]
    ex = extremes(np.array(values), k, hard_end, np.array(labels))
    assert (ex.hardest, ex.easiest) == statement(values, k, hard_end)
    assert ex.n_nan == sum(math.isnan(v) for v in values)
    assert sorted(ex.per_cluster) == sorted(set(labels))
    for c, (hard, easy) in ex.per_cluster.items():
        members = [i for i in range(n) if labels[i] == c]
        assert (hard, easy) == statement(values, k, hard_end, members)
        assert ex.nan_per_cluster[c] == sum(math.isnan(values[i]) for i in members)


def test_ties_break_by_id_and_nan_rows_are_left_out() -> None:
    values = np.array([0.5, np.nan, 0.5, 0.1, 0.9])
    ex = extremes(values, 2, "low")
    assert ex.hardest == [3, 0]  # 0.1, then the tie 0.5 (ids 0 and 2) by id
    assert ex.easiest == [4, 2]  # 0.9, then the tie from the other end: id 2 before id 0
    assert ex.n_nan == 1 and ex.per_cluster == {}
    high = extremes(values, 2, "high")
    assert (high.hardest, high.easiest) == ([4, 2], [3, 0])


def test_fewer_rows_than_k_gives_every_row() -> None:
    ex = extremes(np.array([0.3, 0.1]), 5, "low", np.array([0, 0]))
    assert ex.hardest == [1, 0] and ex.easiest == [0, 1] and ex.per_cluster[0] == ([1, 0], [0, 1])


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="hard_end"):
        extremes(np.array([1.0]), 1, "middle")
    with pytest.raises(ValueError, match="labels"):
        extremes(np.array([1.0, 2.0]), 1, "low", np.array([0]))


def test_a_row_is_one_line_cut_to_the_width() -> None:
    line = row_line(7, 0.25, "Say\nhello  twice", "hello\thello", 80, id_width=3)
    assert line == "  7     0.2500  Say hello twice  →  hello hello"
    long = row_line(12, -1.5, "q" * 200, "a" * 200, 60, id_width=3)
    assert len(long) == 60 and "\n" not in long and long.endswith("…")
    assert long.startswith(" 12    -1.5000  q") and "→  a" in long  # the response is shown too, not only the question
    assert cut("abc", 3) == "abc" and cut("abcd", 3) == "ab…"


def test_control_characters_of_the_data_never_reach_the_terminal() -> None:
    from lpselect.analysis.show import one_line

    assert one_line("hi \x1b[2J\x1b]0;pwned\x07 there\n\tnext") == "hi \ufffd[2J\ufffd]0;pwned\ufffd there next"
