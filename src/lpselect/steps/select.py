"""The select step: read data + scores + clusters, apply the rule of SPEC §8, write the subset and its report."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lpselect import __version__
from lpselect.config import SubsetSpec
from lpselect.core.consensus import consensus_metric
from lpselect.core.metrics import HARD_END, compute_metric, recorded_epochs, spread_problem
from lpselect.core.selection import Selection, literal_band, select
from lpselect.core.trajectory import DEFAULT_K, TrajectorySelection, select_trajectory_from_table
from lpselect.data.formats import Dataset, read_dataset, write_subset
from lpselect.data.provenance import data_fingerprint, recorded_fields, verify_data
from lpselect.errors import InputError, LPSelectError
from lpselect.runs.io import sha256_of, write_json
from lpselect.runs.layout import REPORT_SUFFIX
from lpselect.runs.tables import read_cluster_labels, read_score_table
from lpselect.steps.card import card_target, scorer_of, write_card

log = logging.getLogger(__name__)
SHARE_TOLERANCE = 1.0  # percentage points between --percent and the share taken before a warning


@dataclass
class SubsetResult:
    path: Path
    report_path: Path
    ids: np.ndarray
    report: dict[str, Any]


def select_subset(
    data: str | Path | Dataset,
    scores: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    clusters: str | Path | None = None,
    metric: str = "lp_app",
    epoch: int = 1,
    percent: float = 10,
    band: str = "hardest",
    strategy: str = "cluster",
    order: str = "reference",
    seed: int = 42,
    max_value: float | None = None,
    trajectory_k: int = DEFAULT_K,
    exact: bool = False,
    n: int | None = None,
    fields: dict[str, str] | None = None,
) -> SubsetResult:
    """Write the subset in the input's format, ``<out>.report.json`` with counts, the metric's spread and the
    provenance, and the folder's dataset card (lpselect.steps.card) rebuilt from every report there.

    Strategy ``trajectory`` (S2L) picks by k-means over the loss trajectories (``trajectory_k`` clusters), not
    by the metric or the clusters file; the metric then only describes the selection in the report.

    Several ``scores`` files (runs of the same data, e.g. scorer seeds) rank by their consensus: each row's mean
    rank of the metric across them (lpselect.core.consensus); ``metric_all`` / ``metric_selected`` then describe
    those mean ranks. One file (or a list of one) is the plain metric ranking.

    ``band`` hardest / easiest / middle follows the metric's direction (core.metrics.HARD_END); low / mid / high
    are the literal parts of the ascending ranking. The budget is the paper's parts rule, or exact: ``n`` rows,
    or with ``exact`` round(N p / 100) of the N rows with a value. The share taken is reported, and a warning
    is logged when it is more than a point away from ``percent``.

    ``fields`` maps the data's columns (--fields); without it, the mapping the scores' run recorded is used.
    """
    SubsetSpec(metric=metric, epoch=epoch, percent=percent, band=band, strategy=strategy, order=order, seed=seed,
               max_value=max_value, trajectory_k=trajectory_k, exact=exact, n=n)  # refuses a bad value by name
    literal = literal_band(band, HARD_END[metric]) if strategy != "trajectory" else band
    paths = [scores] if isinstance(scores, str | Path) else list(scores)
    if not paths:
        raise LPSelectError("give at least one scores file")
    dataset = data if isinstance(data, Dataset) else read_dataset(data, fields or recorded_fields(paths[0]))
    if len(paths) > 1 and strategy == "trajectory":
        raise LPSelectError(f"a consensus of {len(paths)} scores files is for metric rankings; strategy "
                            f"'trajectory' (S2L) clusters one run's loss trajectories: give one --scores")
    scores = paths[0]
    # every table must come from these rows (sha256 of the file, else the rows' fingerprint), checked before the
    # tables are read so that other data is refused naming both files, not as a row-count mismatch
    provenance_notes = [note for p in [*paths, *([clusters] if clusters is not None else [])]
                        if (note := verify_data(dataset, p))]
    table = read_score_table(scores, len(dataset))
    values, above = _metric_values(table, scores, metric, epoch, max_value)
    consensus_of, n_nan_per_run = None, None
    if len(paths) > 1:  # rows above max_value are NaN in their run, so NaN in the consensus
        runs = [(values, above)] + [_metric_values(read_score_table(p, len(dataset)), p, metric, epoch, max_value)
                                    for p in paths[1:]]
        n_nan_per_run = [int((~np.isfinite(v)).sum()) for v, _ in runs]
        above = np.logical_or.reduce([a for _, a in runs])
        values = consensus_metric([v for v, _ in runs])
        consensus_of = [_absolute(p) for p in paths]
    n_above_max = int(above.sum())
    n_valid = int(np.isfinite(values).sum())
    total = _exact_total(n, exact, percent, n_valid, strategy, scores)
    traj: TrajectorySelection | None = None
    if strategy == "trajectory":
        traj = _trajectory(table, scores, percent, band=band, max_value=max_value, k=trajectory_k, order=order,
                           seed=seed, budget=n)
        clusters, labels, band_sizes = None, None, None  # S2L clusters the trajectories itself
        sel = Selection(ids=traj.ids, n_parts=0, n_nan=traj.n_nan, per_cluster=traj.per_cluster)
    else:
        labels = read_cluster_labels(clusters, len(dataset)) if clusters is not None else None
        if labels is None and strategy in ("cluster", "clust_rand"):
            raise LPSelectError(f"strategy '{strategy}' needs --clusters: `lpselect cluster --data DATA --out RUN` "
                                "makes RUN/clusters.parquet (or use --strategy global)")
        if strategy in ("cluster", "global") and (
                problem := spread_problem(values, metric, epoch, recorded_epochs(table))):
            raise InputError(scores if len(paths) == 1 else "the scores' consensus", problem)
        sel = select(values, labels, percent, literal, strategy=strategy, order=order, seed=seed, total=total)
        ranking = "global" if labels is None or strategy == "global" else "cluster"
        band_sizes = {b: len(select(values, labels, percent, b, strategy=ranking, total=total).ids)
                      for b in ("low", "mid", "high")} if strategy in ("cluster", "global") else None
    if len(sel.ids) == 0:
        raise LPSelectError(f"no row selected ({n_valid} of {len(dataset)} rows have a value): nothing is written; "
                            "give a larger --percent or --n ROWS")
    path = write_subset(dataset, sel.ids.tolist(), out)
    card = card_target(path)
    share = 100.0 * len(sel.ids) / len(dataset)
    share_note = _share_note(share, percent, n, exact, strategy, sel.n_parts, len(dataset) - n_valid)
    if share_note:
        log.warning("%s", share_note)
    report = {
        "subset_file": path.name,
        "data": _absolute(dataset.path),
        "data_sha256": sha256_of(dataset.path) if dataset.path.exists() else None,
        "fields": dataset.fields or None,  # the mapping the data was read with (--fields)
        "rows_sha256": data_fingerprint(dataset, sel.ids.tolist()),  # the subset's own rows, checked by train
        "provenance_notes": provenance_notes,
        "scores": _absolute(scores) if consensus_of is None else consensus_of,
        "scorer": scorer_of(scores) if consensus_of is None else _consensus_scorer(paths),
        "consensus_of": consensus_of,
        "consensus_n_nan_per_run": n_nan_per_run,
        "lpselect_version": __version__,
        "clusters": _absolute(clusters) if clusters is not None else None,
        "metric": metric,
        "epoch": epoch,
        "percent": percent,
        "band": band,
        "band_literal": literal if strategy != "trajectory" else None,
        "hard_end": HARD_END[metric],
        "budget": "n" if n is not None else ("exact" if exact else ("s2l" if strategy == "trajectory" else "parts")),
        "n_requested": total if total is not None else (traj.budget if traj else None),
        "strategy": strategy,
        "order": order,
        "seed": seed,
        "n_rows": len(dataset),
        "n_selected": len(sel.ids),
        "share_percent": round(share, 4),
        "share_note": share_note,
        "n_nan_left_out": sel.n_nan - n_above_max,
        **{f"n_{k}": v for k, v in dataset.kept_but_counted().items()},
        "max_value": max_value,
        "n_above_max_left_out": n_above_max,
        "n_parts": sel.n_parts if traj is None else None,
        "band_sizes": band_sizes,
        "n_clusters": len(np.unique(labels)) if labels is not None else (len(traj.cluster_sizes) if traj else None),
        "per_cluster": {str(k): v for k, v in sel.per_cluster.items()},
        **_trajectory_report(traj, trajectory_k),
        "metric_all": _describe(values),
        "metric_selected": _describe(values[sel.ids]),
        "card": str(card.path),
        "card_note": card.note,
        "ids": sel.ids.tolist(),  # the rows the subset holds, in its order: what the report shows
    }
    report_path = Path(str(path) + REPORT_SUFFIX)
    write_json(report_path, report)
    write_card(path, card)
    return SubsetResult(path=path, report_path=report_path, ids=sel.ids, report=report)


def _metric_values(table: dict[str, np.ndarray], scores: str | Path, metric: str, epoch: int,
                   max_value: float | None) -> tuple[np.ndarray, np.ndarray]:
    """One run's metric, rows above ``max_value`` set to NaN, and the mask of those rows (counted apart)."""
    try:
        values = compute_metric(metric, table, epoch)
    except ValueError as e:
        raise InputError(scores, str(e)) from None
    above = np.zeros(len(values), dtype=bool)
    if max_value is not None:  # e.g. Cherry LLM's policy for IFD: drop samples with IFD > 1
        above = values > max_value
        values = np.where(above, np.nan, values)
    return values, above


def _absolute(path: str | Path) -> str:
    """A path the report can find again from any working directory (a hub id stays as it is)."""
    p = Path(path)
    return str(p.resolve()) if p.exists() else str(path)


def _exact_total(n: int | None, exact: bool, percent: float, n_valid: int, strategy: str,
                 scores: str | Path) -> int | None:
    """The exact row budget (``n``, or round(N p / 100) with ``exact``), or None for the parts rule."""
    if n is not None:
        if n > n_valid:
            raise InputError(scores, f"--n {n} asks for more rows than the {n_valid} with a value")
        return n
    if exact and strategy != "trajectory":  # S2L's budget is already round(N p / 100)
        total = round(n_valid * float(percent) / 100)
        if total == 0 and n_valid:
            raise InputError(scores, f"--exact takes round({n_valid} x {percent:g} / 100) = 0 rows: give a larger "
                                     "--percent, or --n ROWS")
        return total
    return None


def _share_note(share: float, percent: float, n: int | None, exact: bool, strategy: str, parts: int,
                n_without_value: int) -> str | None:
    """Why the share taken is more than a point from ``percent``, or None when it is close (or rows were asked)."""
    if n is not None or abs(share - percent) <= SHARE_TOLERANCE:
        return None
    why = []
    if exact or strategy == "trajectory":
        why.append(f"the exact budget is round(N x {percent:g} / 100) of the N rows with a value")
    else:
        why.append(f"the paper's rule cuts every cluster into round(100/{percent:g}) = {parts} parts (the first "
                   "ones the larger) and takes one, which on small clusters is far from the percentage")
    if n_without_value:
        why.append(f"{n_without_value} rows have no value and are never selected")
    hint = "" if exact or strategy == "trajectory" else "; --exact (or --n ROWS) takes an exact budget"
    return f"took {share:.1f} % of the rows for --percent {percent:g}: {' and '.join(why)}{hint}"


def _consensus_scorer(paths: Sequence[str | Path]) -> str:
    """The scorers of a consensus (each from its run's manifest), each named once, in the order given."""
    names = list(dict.fromkeys(scorer_of(p) for p in paths))
    return f"consensus of {len(paths)} score files: {', '.join(names)}"


def _trajectory(table: dict[str, np.ndarray], scores: str | Path, percent: float, *, band: str,
                max_value: float | None, k: int, order: str, seed: int, budget: int | None) -> TrajectorySelection:
    """S2L selection, refusing the options that only make sense for a metric ranking (they would be ignored)."""
    if max_value is not None:
        raise LPSelectError("--max-value filters by the metric, but strategy 'trajectory' does not rank by one")
    if band not in ("hardest", "low"):
        raise LPSelectError(f"strategy 'trajectory' has no bands (S2L samples every trajectory cluster at random); "
                            f"got band '{band}': leave it at the default")
    try:
        return select_trajectory_from_table(table, percent, k=k, order=order, seed=seed, budget=budget)
    except ValueError as e:
        raise InputError(scores, str(e)) from None


def _trajectory_report(traj: TrajectorySelection | None, k: int) -> dict[str, object]:
    """The trajectory fields of a report (None for the other strategies, so every report has the same keys)."""
    return {
        "trajectory_k": k if traj else None,
        "trajectory_k_used": traj.k_used if traj else None,
        "trajectory_columns": traj.columns if traj else None,
        "trajectory_budget": traj.budget if traj else None,
        "trajectory_cluster_sizes": {str(c): n for c, n in traj.cluster_sizes.items()} if traj else None,
    }


def _describe(v: np.ndarray) -> dict[str, float | int | None]:
    finite = v[np.isfinite(v)]
    if len(finite) == 0:
        return {"n": 0}
    q = np.quantile(finite, [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
    return {"n": len(finite), "mean": float(finite.mean()), "std": float(finite.std()),
            **{k: float(x) for k, x in zip(("min", "p10", "p25", "median", "p75", "p90", "max"), q, strict=True)}}
