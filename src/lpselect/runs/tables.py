"""Reading the tables a run folder holds (scores.parquet, clusters.parquet) as numpy arrays, each checked
against the data it belongs to: ids 0..N-1, the columns the format promises, one error naming file, row and
field otherwise."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from lpselect.core.metrics import stacked
from lpselect.errors import InputError


def read_score_table(path: str | Path, n_rows: int | None = None) -> dict[str, np.ndarray]:
    """Every column of a scores.parquet as numpy arrays, ids checked against the data's row count."""
    table = _read_keyed(path, n_rows, made_by="lpselect score")
    epochs = sorted(int(m.group(1)) for c in table.column_names if (m := re.fullmatch(r"ppl_(\d+)", c)))
    if not epochs or epochs != list(range(len(epochs))):
        raise InputError(path, f"expected columns ppl_0 .. ppl_n, found {table.column_names}")
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def read_ppl_table(path: str | Path, n_rows: int | None = None) -> np.ndarray:
    """The (rows x epochs+1) perplexity table P_0 .. P_n of a scores.parquet."""
    return stacked(read_score_table(path, n_rows), "ppl")


def read_cluster_labels(path: str | Path, n_rows: int | None = None) -> np.ndarray:
    table = _read_keyed(path, n_rows, made_by="lpselect cluster")
    if "cluster" not in table.column_names:
        raise InputError(path, "no 'cluster' column", field="cluster")
    labels = table.column("cluster").to_numpy(zero_copy_only=False)
    if labels.dtype.kind not in "iu":
        raise InputError(path, f"cluster labels must be integers, found {labels.dtype}", field="cluster")
    return labels.astype(np.int64)


def _read_keyed(path: str | Path, n_rows: int | None, *, made_by: str):
    """The table, its ids checked; a missing file is refused naming the command that makes it (``made_by``),
    since it is usually a step not run yet rather than a broken file."""
    if not Path(path).exists():
        raise InputError(path, f"not found: `{made_by}` makes it (in its --out run folder)")
    if Path(path).is_dir():
        raise InputError(path, f"is a folder, not a Parquet file (`{made_by}` writes one into its --out folder)")
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as e:
        raise InputError(path, f"cannot read Parquet: {e}") from None
    if "id" not in table.column_names:
        raise InputError(path, "no 'id' column", field="id")
    ids = table.column("id").to_numpy(zero_copy_only=False)
    expected = np.arange(n_rows if n_rows is not None else len(ids))
    if len(ids) != len(expected) or not np.array_equal(ids, expected):
        bad = _first_mismatch(ids, expected)
        raise InputError(
            path, f"ids do not match the data ({len(ids)} rows for {len(expected)} samples)", row=bad, field="id")
    return table


def _first_mismatch(ids: np.ndarray, expected: np.ndarray) -> int:
    n = min(len(ids), len(expected))
    diff = np.flatnonzero(ids[:n] != expected[:n])
    return int(diff[0]) if len(diff) else n
