"""The hardest and easiest rows of a run, overall and per cluster (``lpselect show``): which rows, and the one
line each is printed as. Pure functions; the command (:mod:`lpselect.cli.show`) reads the run and prints."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Extremes:
    """Row ids at both ends of a metric's ranking: ``hardest`` first the hardest, ``easiest`` first the easiest;
    ``per_cluster`` maps a cluster label to its (hardest, easiest); ``n_nan`` rows had no value and were left
    out (per cluster in ``nan_per_cluster``)."""

    hardest: list[int]
    easiest: list[int]
    n_nan: int
    per_cluster: dict[int, tuple[list[int], list[int]]] = field(default_factory=dict)
    nan_per_cluster: dict[int, int] = field(default_factory=dict)


def _ends(values: np.ndarray, ids: np.ndarray, k: int, hard_end: str) -> tuple[list[int], list[int]]:
    """(hardest k, easiest k) of ``ids`` by ``values`` (finite ones only), ranked by (value, id) ascending; the
    hard end of that ranking is its start ("low") or its end ("high")."""
    keep = ~np.isnan(values[ids])
    ids = ids[keep]
    order = ids[np.lexsort((ids, values[ids]))]  # by value, then id: ties break the same way every time
    low = [int(i) for i in order[:k]]
    high = [int(i) for i in order[::-1][:k]]
    return (low, high) if hard_end == "low" else (high, low)


def extremes(values: np.ndarray, k: int, hard_end: str, labels: np.ndarray | None = None) -> Extremes:
    """The ``k`` hardest and easiest rows of ``values`` (one per row, NaN = no value), and of each cluster of
    ``labels`` when given. ``hard_end`` is :data:`lpselect.core.metrics.HARD_END` of the metric."""
    if hard_end not in ("low", "high"):
        raise ValueError(f"hard_end must be 'low' or 'high', not {hard_end!r}")
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    values = np.asarray(values, dtype=np.float64)
    all_ids = np.arange(len(values))
    hardest, easiest = _ends(values, all_ids, k, hard_end)
    result = Extremes(hardest, easiest, int(np.isnan(values).sum()))
    if labels is not None:
        labels = np.asarray(labels)
        if len(labels) != len(values):
            raise ValueError(f"{len(labels)} cluster labels for {len(values)} rows")
        for c in sorted(int(c) for c in np.unique(labels)):
            members = all_ids[labels == c]
            result.per_cluster[c] = _ends(values, members, k, hard_end)
            result.nan_per_cluster[c] = int(np.isnan(values[members]).sum())
    return result


def one_line(text: str) -> str:
    """A text as one line: runs of whitespace (newlines, tabs) become one space, and any other control
    character (an escape sequence in the data could clear or retitle the terminal) becomes '�'."""
    return " ".join("".join(c if c.isprintable() or c.isspace() else "\ufffd" for c in text).split())


def cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, an ellipsis marking a cut."""
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"


def row_line(row_id: int, value: float, instruction: str, response: str, width: int, id_width: int = 6) -> str:
    """One printed row: id, metric value, instruction and response, each on one line, cut to ``width``. The
    instruction gets at most half of what is left after id and value, the response the rest."""
    head = f"{row_id:>{id_width}}  {value:>9.4f}  "
    room = max(width - len(head), 0)
    instruction, response = one_line(instruction), one_line(response)
    sep = "  →  "
    if len(instruction) + len(sep) + len(response) <= room:
        return head + instruction + sep + response
    left = min(len(instruction), max((room - len(sep)) // 2, 0))
    return cut(head + cut(instruction, left) + sep + response, width)
