"""The select step: read data + scores + clusters, apply the rule of SPEC §8, write the subset and its report."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from lpselect.data.formats import Dataset, read_dataset, write_subset
from lpselect.errors import InputError, LPSelectError
from lpselect.io import write_json
from lpselect.metrics import compute_metric, stacked
from lpselect.selection import select


@dataclass
class SubsetResult:
    path: Path
    report_path: Path
    ids: np.ndarray
    report: dict[str, Any]


def read_score_table(path: str | Path, n_rows: int | None = None) -> dict[str, np.ndarray]:
    """Every column of a scores.parquet as numpy arrays, ids checked against the data's row count."""
    table = _read_keyed(path, n_rows)
    epochs = sorted(int(m.group(1)) for c in table.column_names if (m := re.fullmatch(r"ppl_(\d+)", c)))
    if not epochs or epochs != list(range(len(epochs))):
        raise InputError(path, f"expected columns ppl_0 .. ppl_n, found {table.column_names}")
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def read_ppl_table(path: str | Path, n_rows: int | None = None) -> np.ndarray:
    """The (rows x epochs+1) perplexity table P_0 .. P_n of a scores.parquet."""
    return stacked(read_score_table(path, n_rows), "ppl")


def read_cluster_labels(path: str | Path, n_rows: int | None = None) -> np.ndarray:
    table = _read_keyed(path, n_rows)
    if "cluster" not in table.column_names:
        raise InputError(path, "no 'cluster' column", field="cluster")
    labels = table.column("cluster").to_numpy(zero_copy_only=False)
    if labels.dtype.kind not in "iu":
        raise InputError(path, f"cluster labels must be integers, found {labels.dtype}", field="cluster")
    return labels.astype(np.int64)


def _read_keyed(path: str | Path, n_rows: int | None):
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


def select_subset(
    data: str | Path | Dataset,
    scores: str | Path,
    out: str | Path,
    *,
    clusters: str | Path | None = None,
    metric: str = "lp_app",
    epoch: int = 1,
    percent: float = 10,
    band: str = "low",
    strategy: str = "cluster",
    order: str = "reference",
    seed: int = 42,
    max_value: float | None = None,
) -> SubsetResult:
    """Write the subset in the input's format plus ``<out>.report.json`` with counts and the metric's spread."""
    dataset = data if isinstance(data, Dataset) else read_dataset(data)
    table = read_score_table(scores, len(dataset))
    try:
        values = compute_metric(metric, table, epoch)
    except ValueError as e:
        raise InputError(scores, str(e)) from None
    n_above_max = 0
    if max_value is not None:  # e.g. Cherry LLM's policy for IFD: drop samples with IFD > 1
        above = values > max_value
        n_above_max = int(above.sum())
        values = np.where(above, np.nan, values)
    labels = read_cluster_labels(clusters, len(dataset)) if clusters is not None else None
    if labels is None and strategy in ("cluster", "clust_rand"):
        raise LPSelectError(f"strategy '{strategy}' needs a clusters file (or use strategy 'global')")
    sel = select(values, labels, percent, band, strategy=strategy, order=order, seed=seed)
    ranking = "global" if labels is None or strategy == "global" else "cluster"
    band_sizes = {b: len(select(values, labels, percent, b, strategy=ranking).ids) for b in ("low", "mid", "high")}
    path = write_subset(dataset, sel.ids.tolist(), out)
    report = {
        "data": str(dataset.path),
        "scores": str(scores),
        "clusters": str(clusters) if clusters is not None else None,
        "metric": metric,
        "epoch": epoch,
        "percent": percent,
        "band": band,
        "strategy": strategy,
        "order": order,
        "seed": seed,
        "n_rows": len(dataset),
        "n_selected": len(sel.ids),
        "n_nan_left_out": sel.n_nan - n_above_max,
        **{f"n_{k}": v for k, v in dataset.kept_but_counted().items()},
        "max_value": max_value,
        "n_above_max_left_out": n_above_max,
        "n_parts": sel.n_parts,
        "band_sizes": band_sizes,
        "n_clusters": len(np.unique(labels)) if labels is not None else None,
        "per_cluster": {str(k): v for k, v in sel.per_cluster.items()},
        "metric_all": _describe(values),
        "metric_selected": _describe(values[sel.ids]),
    }
    report_path = Path(str(path) + ".report.json")
    write_json(report_path, report)
    return SubsetResult(path=path, report_path=report_path, ids=sel.ids, report=report)


def _describe(v: np.ndarray) -> dict[str, float | int | None]:
    finite = v[np.isfinite(v)]
    if len(finite) == 0:
        return {"n": 0}
    q = np.quantile(finite, [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
    return {"n": len(finite), "mean": float(finite.mean()), "std": float(finite.std()),
            **{k: float(x) for k, x in zip(("min", "p10", "p25", "median", "p75", "p90", "max"), q, strict=True)}}
