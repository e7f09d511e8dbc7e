"""The select step: read data, scores and clusters, apply docs/method.md §8, write the subset and its report."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lpselect import __version__
from lpselect.config import SubsetSpec
from lpselect.core.consensus import consensus_metric
from lpselect.core.metrics import HARD_END, compute_metric, recorded_epochs, spread_problem
from lpselect.core.selection import BANDS, Selection, literal_band, select
from lpselect.core.trajectory import TrajectorySelection, select_trajectory_from_table
from lpselect.data.formats import Dataset, read_dataset, write_subset
from lpselect.data.provenance import data_fingerprint, recorded_fields, verify_data
from lpselect.errors import InputError, LPSelectError
from lpselect.runs.io import sha256_of, write_json
from lpselect.runs.layout import EMBEDDINGS, REPORT_SUFFIX
from lpselect.runs.tables import read_cluster_labels, read_score_table
from lpselect.steps.card import card_target, scorer_of, write_card

if TYPE_CHECKING:
    import datasets

log = logging.getLogger(__name__)
SHARE_TOLERANCE = 1.0  # percentage points between --percent and the share taken before a warning
BASELINE_STRATEGIES = ("random", "clust_rand")  # the paper's baselines: the same number of rows, drawn at random


@dataclass
class SubsetResult:
    path: Path
    report_path: Path
    ids: np.ndarray
    report: dict[str, Any]
    source: Dataset | None = field(default=None, repr=False)  # the data the rows were picked from
    dedup: Any = field(default=None, repr=False)  # the --dedup result (steps.dedup.DedupResult), for its baselines

    def dataset(self) -> datasets.Dataset:
        """The selected rows as a ``datasets.Dataset``, in the subset's order with every original column, to hand
        to a trainer without reading the file back."""
        import datasets

        source = self.source
        if source is None:  # e.g. a result built by hand: the subset file holds the rows, in order
            subset = read_dataset(self.path, self.report.get("fields"))
            if subset.file_format == "hf":
                return subset._extra["hf"]
            return datasets.Dataset.from_list(same_columns(subset.records))
        if source.file_format == "hf":
            return source._extra["hf"].select(self.ids.tolist())
        return datasets.Dataset.from_list(same_columns([source.records[i] for i in self.ids]))


def same_columns(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every record with the union of the records' keys (first seen first, a missing one None):
    ``Dataset.from_list`` takes its columns from the first record and would drop a key only later rows have."""
    keys = list(dict.fromkeys(k for record in records for k in record))
    return [{k: record.get(k) for k in keys} for record in records]


@dataclass
class _Ranking:
    """What the rows are ranked by: one run's metric or the consensus of several, rows above max_value NaN."""

    table: dict[str, np.ndarray]  # the first run's score table (trajectory reads it)
    values: np.ndarray
    above: np.ndarray  # rows left out by max_value
    where: str  # the scores file, or "the scores' consensus", for error messages
    n_deduplicated: int = 0  # rows with a value that --dedup removed (counted apart from the NaN rows)
    consensus_of: list[str] | None = None
    n_nan_per_run: list[int] | None = None


def select_subset(data: str | Path | Dataset, scores: str | Path | Sequence[str | Path], out: str | Path,
                  spec: SubsetSpec | None = None, *, clusters: str | Path | None = None,
                  fields: dict[str, str] | None = None) -> SubsetResult:
    """Write the subset ``spec`` describes (default: the method's, ``SubsetSpec()``) in the input's format,
    ``<out>.report.json`` with the selected ids, counts, the metric's spread and the provenance, and the folder's
    dataset card (lpselect.steps.card) rebuilt from every report there.

    Strategy ``trajectory`` (S2L) picks by k-means over the loss trajectories, not by the metric or the clusters
    file; the metric then only describes the selection. Several ``scores`` files (runs of the same data, e.g.
    scorer seeds) rank by their consensus, each row's mean rank (lpselect.core.consensus). ``band`` hardest /
    easiest / middle follows the metric's direction (core.metrics.HARD_END); low / mid / high are literal. With
    ``spec.dedup`` near-duplicates are dropped within each cluster first (lpselect.steps.dedup), so they cannot
    be picked. ``fields`` maps the data's columns (--fields); without it, the scores' run's mapping is used.
    """
    return _select_and_write(data, scores, out, spec or SubsetSpec(), clusters=clusters, fields=fields)


def select_baseline(data: str | Path | Dataset, scores: str | Path | Sequence[str | Path], out: str | Path,
                    like: str | Path, spec: SubsetSpec, *, clusters: str | Path | None = None,
                    fields: dict[str, str] | None = None, dedup: Any = None) -> SubsetResult:
    """A random baseline of ``like`` (a subset file, or its report): ``spec``'s strategy (random or clust_rand),
    exactly as many rows as ``like`` holds, drawn from the same pool: metric, epoch, max_value, dedup, seed and
    percent come from ``like``'s report (:func:`baseline_spec`). Its report names ``like`` under ``baseline_of``.
    ``dedup``: ``like``'s ``SubsetResult.dedup`` when at hand (lpselect run), reused rather than searched again:
    the same pool gives the same removals."""
    name, baseline, like_budget = baseline_spec(like, spec)
    quotas = like_quotas(like) if baseline.strategy == "clust_rand" and clusters is not None else None
    return _select_and_write(data, scores, out, baseline, clusters=clusters, fields=fields,
                             baseline={"baseline_of": name, "baseline_of_budget": like_budget}, dedup_done=dedup,
                             quotas=quotas)


#: the settings a baseline takes from its subset's report, so both draw from the same rows (seed: its default)
POOL_SETTINGS = ("metric", "epoch", "max_value", "dedup", "seed", "percent")
FREE_SETTINGS = ("seed",)  # given explicitly, it wins: several draws of one baseline


def baseline_spec(like: str | Path, spec: SubsetSpec) -> tuple[str, SubsetSpec, str | None]:
    """The baseline of ``like`` that ``spec`` asks for: its file name, the spec (``like``'s size and
    :data:`POOL_SETTINGS`) and ``like``'s budget rule. A setting ``spec`` was given explicitly
    (``model_fields_set``) that differs from ``like``'s is refused in one line."""
    if spec.strategy not in BASELINE_STRATEGIES:
        raise LPSelectError(f"--like makes a random baseline: give --strategy random or clust_rand, not "
                            f"'{spec.strategy}'")
    name, report = _like_report(like)
    pool = {k: _pool_value(report, k) for k in POOL_SETTINGS
            if k in report and not (k in FREE_SETTINGS and k in spec.model_fields_set)}
    clash = [k for k, v in pool.items() if k in spec.model_fields_set and not _same_setting(k, getattr(spec, k), v)]
    if clash:
        given = ", ".join(f"--{k.replace('_', '-')} {getattr(spec, k)} (it has {pool[k]})" for k in clash)
        raise LPSelectError(f"--like takes the pool of {name} from its report: {given}; leave them out")
    return name, spec.model_copy(update={**pool, "n": len(report["ids"]), "exact": False}), report.get("budget")


def like_quotas(like: str | Path) -> dict[int, int] | None:
    """Rows per k-means cluster of the subset ``like`` (its report's ``per_cluster``), for a clust_rand baseline
    that matches it cluster by cluster; None for an S2L subset, whose clusters are of loss trajectories."""
    _, report = _like_report(like)
    if report.get("strategy") == "trajectory" or not report.get("per_cluster"):
        return None
    return {int(c): int(k) for c, k in report["per_cluster"].items()}


def subset_size(subset: str | Path) -> tuple[str, int]:
    """The file name of a subset and its row count, from its report's ``ids`` (a subset file or its report)."""
    name, report = _like_report(subset)
    return name, len(report["ids"])


def _like_report(subset: str | Path) -> tuple[str, dict[str, Any]]:
    """The file name of a subset and its report (a subset file or its report), which must list its ids."""
    path = Path(subset)
    report_path = path if path.name.endswith(REPORT_SUFFIX) else Path(str(path) + REPORT_SUFFIX)
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        ids = report.get("ids")
    except (OSError, ValueError, AttributeError):
        raise InputError(subset, f"no readable {report_path.name} beside it: --like takes a subset lpselect "
                                 "select wrote") from None
    if not isinstance(ids, list) or not ids:
        raise InputError(report_path, "lists no selected ids (written by an older lpselect): select it again")
    return report_path.name[: -len(REPORT_SUFFIX)], report


def _pool_value(report: dict[str, Any], key: str) -> Any:
    """A pool setting as a SubsetSpec takes it; a report records dedup as what it did (mode, threshold)."""
    value = report[key]
    if key != "dedup" or value is None:
        return value
    return "exact" if value.get("mode") == "exact" else f"{float(value['threshold']):g}"


def _same_setting(key: str, a: Any, b: Any) -> bool:
    """Equal settings, ``dedup`` compared as parsed (0.95 is 0.950)."""
    if key == "dedup" and a is not None and b is not None:
        from lpselect.steps.dedup import parse_dedup

        return parse_dedup(a) == parse_dedup(b)
    if isinstance(a, int | float) and isinstance(b, int | float):
        return float(a) == float(b)
    return a == b


def _select_and_write(data: str | Path | Dataset, scores: str | Path | Sequence[str | Path], out: str | Path,
                      spec: SubsetSpec, *, clusters: str | Path | None, fields: dict[str, str] | None,
                      baseline: dict[str, Any] | None = None, dedup_done: Any = None,
                      quotas: dict[int, int] | None = None) -> SubsetResult:
    """Read, rank, drop near-duplicates, pick and write: the steps of :func:`select_subset`."""
    paths = [scores] if isinstance(scores, str | Path) else list(scores)
    _check_spec(spec, paths)
    dataset = data if isinstance(data, Dataset) else read_dataset(data, fields or recorded_fields(paths[0]))
    # every table must come from these rows (sha256 of the file, else the rows' fingerprint), checked before the
    # tables are read so that other data is refused naming both files, not as a row-count mismatch
    notes = [note for p in [*paths, *([clusters] if clusters is not None else [])] if (note := verify_data(dataset, p))]
    ranking = _ranking(paths, len(dataset), spec)
    trajectory = spec.strategy == "trajectory"  # S2L clusters the loss trajectories itself
    labels = read_cluster_labels(clusters, len(dataset)) if clusters is not None and not trajectory else None
    dedup = _drop_near_duplicates(spec, dataset, ranking, labels, clusters, dedup_done)
    sel, traj, band_sizes = _pick(spec, ranking, labels, quotas)
    if len(sel.ids) == 0:
        n_valid = int(np.isfinite(ranking.values).sum())
        raise LPSelectError(f"no row selected ({n_valid} of {len(dataset)} rows have a value): nothing is written; "
                            "give a larger --percent or --n ROWS")
    path = write_subset(dataset, sel.ids.tolist(), out)
    card = card_target(path)
    report = _report(spec, dataset, ranking, sel, traj, path, paths=paths, clusters=clusters, labels=labels)
    report.update(band_sizes=band_sizes, provenance_notes=notes, card=str(card.path), card_note=card.note,
                  dedup=dedup.report() if dedup is not None else None,
                  **(baseline or {"baseline_of": None, "baseline_of_budget": None}))
    if report["share_note"]:
        log.warning("%s", report["share_note"])
    report_path = Path(str(path) + REPORT_SUFFIX)
    write_json(report_path, report)
    write_card(path, card)
    return SubsetResult(path=path, report_path=report_path, ids=sel.ids, report=report, source=dataset,
                        dedup=dedup)


def _check_spec(spec: SubsetSpec, paths: Sequence[str | Path]) -> None:
    """Refuse the combinations the rule cannot serve, before reading any table."""
    if not paths:
        raise LPSelectError("give at least one scores file")
    if len(paths) > 1 and spec.strategy == "trajectory":
        raise LPSelectError(f"a consensus of {len(paths)} scores files is for metric rankings; strategy "
                            f"'trajectory' (S2L) clusters one run's loss trajectories: give one --scores")
    if spec.dedup is not None and spec.strategy == "trajectory":
        raise LPSelectError("--dedup drops rows before a metric ranking; strategy 'trajectory' (S2L) samples the "
                            "loss trajectories: leave --dedup out")


def _ranking(paths: Sequence[str | Path], n_rows: int, spec: SubsetSpec) -> _Ranking:
    """The metric of one run, or the consensus (mean rank) of several; rows above max_value are NaN in their
    run, so NaN in the consensus."""
    table = read_score_table(paths[0], n_rows)
    values, above = _metric_values(table, paths[0], spec.metric, spec.epoch, spec.max_value)
    if len(paths) == 1:
        return _Ranking(table, values, above, str(paths[0]))
    runs = [(values, above)] + [_metric_values(read_score_table(p, n_rows), p, spec.metric, spec.epoch,
                                               spec.max_value) for p in paths[1:]]
    return _Ranking(table, consensus_metric([v for v, _ in runs]), np.logical_or.reduce([a for _, a in runs]),
                    "the scores' consensus", consensus_of=[_absolute(p) for p in paths],
                    n_nan_per_run=[int((~np.isfinite(v)).sum()) for v, _ in runs])


def _drop_near_duplicates(spec: SubsetSpec, dataset: Dataset, ranking: _Ranking, labels: np.ndarray | None,
                          clusters: str | Path | None, done: Any = None) -> Any:
    """With ``spec.dedup``: the rows lpselect.steps.dedup removes get no value, so no strategy can pick them.
    Only the rows with a value (after max_value) take part: a row that can never be picked removes nothing.
    ``done``: the result of the same dedup over the same pool (a baseline's subset), applied as it is."""
    if spec.dedup is None:
        return None
    from lpselect.steps.dedup import dedup_rows, parse_dedup, row_text

    mode = parse_dedup(spec.dedup)
    pool = np.flatnonzero(np.isfinite(ranking.values))
    if done is not None and len(done.keep) == len(pool) and (done.threshold or "exact") == mode:
        return _apply_dedup(ranking, pool, done)
    embeddings = None
    if mode != "exact":
        where = Path(clusters).parent / EMBEDDINGS if clusters is not None else None
        if where is None or not where.is_file():
            raise LPSelectError(f"--dedup {spec.dedup} compares the embeddings `lpselect cluster` writes beside "
                                f"clusters.parquet ({where or 'give --clusters'}): none found; --dedup exact needs "
                                "none")
        embeddings = np.load(where, mmap_mode="r")
        if len(embeddings) != len(dataset):
            raise InputError(where, f"{len(embeddings)} rows, but the data has {len(dataset)}: not its embeddings")
    result = dedup_rows(mode, ids=pool, labels=labels[pool] if labels is not None else None,
                        embeddings=_RowsOf(embeddings, pool) if embeddings is not None else None,
                        texts=[row_text(dataset.samples[i]) for i in pool])
    return _apply_dedup(ranking, pool, result)


def _apply_dedup(ranking: _Ranking, pool: np.ndarray, result: Any) -> Any:
    """The rows of ``pool`` that ``result`` does not keep get no value (counted in ``n_deduplicated``)."""
    removed = np.zeros(len(ranking.values), dtype=bool)
    removed[pool[~np.asarray(result.keep, dtype=bool)]] = True
    ranking.n_deduplicated = int(removed.sum())
    ranking.values = np.where(removed, np.nan, ranking.values)
    return result


class _RowsOf:
    """Some rows of an array (a memmap stays on disk): position k is row ``rows[k]``."""

    def __init__(self, array: np.ndarray, rows: np.ndarray):
        self.array, self.rows = array, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, positions: np.ndarray) -> np.ndarray:
        return np.asarray(self.array[self.rows[positions]])


def _pick(spec: SubsetSpec, ranking: _Ranking, labels: np.ndarray | None, quotas: dict[int, int] | None = None
          ) -> tuple[Selection, TrajectorySelection | None, dict[str, int] | None]:
    """The selection, S2L's details (trajectory only) and, for a ranking, the size of each literal band.
    ``quotas``: a clust_rand baseline's rows per cluster (those of the subset it is drawn for)."""
    n_valid = int(np.isfinite(ranking.values).sum())
    total = _exact_total(spec, n_valid, ranking.where)
    if spec.strategy == "trajectory":
        traj = _trajectory(ranking.table, ranking.where, spec)
        return Selection(ids=traj.ids, n_parts=0, n_nan=traj.n_nan, per_cluster=traj.per_cluster), traj, None
    if labels is None and spec.strategy in ("cluster", "clust_rand"):
        raise LPSelectError(f"strategy '{spec.strategy}' needs --clusters: `lpselect cluster --data DATA --out RUN` "
                            "makes RUN/clusters.parquet (or use --strategy global)")
    values = ranking.values
    if spec.strategy in ("cluster", "global") and (
            problem := spread_problem(values, spec.metric, spec.epoch, recorded_epochs(ranking.table))):
        raise InputError(ranking.where, problem)
    literal = literal_band(spec.band, HARD_END[spec.metric])
    try:
        sel = select(values, labels, spec.percent, literal, strategy=spec.strategy, order=spec.order,
                     seed=spec.seed, total=None if quotas else total, quotas=quotas or None)
    except ValueError as e:
        if quotas is None:
            raise
        raise LPSelectError(f"the baseline cannot match its subset cluster by cluster: {e} (another clusters "
                            "file, or other data?)") from None
    if spec.strategy not in ("cluster", "global"):
        return sel, None, None
    ranked = "global" if labels is None or spec.strategy == "global" else "cluster"
    return sel, None, {b: len(select(values, labels, spec.percent, b, strategy=ranked, total=total).ids)
                       for b in BANDS}


def _report(spec: SubsetSpec, dataset: Dataset, ranking: _Ranking, sel: Selection, traj: TrajectorySelection | None,
            path: Path, *, paths: Sequence[str | Path], clusters: str | Path | None,
            labels: np.ndarray | None) -> dict[str, Any]:
    """The subset's report: what was asked, what was taken (the ids, in the subset's order) and from what."""
    trajectory = spec.strategy == "trajectory"
    values, n_above_max = ranking.values, int(ranking.above.sum())
    n_valid = int(np.isfinite(values).sum())
    share = 100.0 * len(sel.ids) / len(dataset)
    total = _exact_total(spec, n_valid, ranking.where)
    budget = "n" if spec.n is not None else ("exact" if spec.exact else ("s2l" if trajectory else "parts"))
    n_clusters = len(np.unique(labels)) if labels is not None else (len(traj.cluster_sizes) if traj else None)
    return {
        "subset_file": path.name,
        "data": _absolute(dataset.path),
        "data_sha256": sha256_of(dataset.path) if dataset.path.exists() else None,
        "fields": dataset.fields or None,  # the mapping the data was read with (--fields)
        "rows_sha256": data_fingerprint(dataset, sel.ids.tolist()),  # the subset's own rows, checked by train
        "scores": _absolute(paths[0]) if ranking.consensus_of is None else ranking.consensus_of,
        "scorer": scorer_of(paths[0]) if ranking.consensus_of is None else _consensus_scorer(paths),
        "consensus_of": ranking.consensus_of,
        "consensus_n_nan_per_run": ranking.n_nan_per_run,
        "lpselect_version": __version__,
        "clusters": _absolute(clusters) if clusters is not None and not trajectory else None,
        "metric": spec.metric,
        "epoch": spec.epoch,
        "percent": spec.percent,
        "band": spec.band,
        "band_literal": literal_band(spec.band, HARD_END[spec.metric]) if not trajectory else None,
        "hard_end": HARD_END[spec.metric],
        "budget": budget,
        "n_requested": total if total is not None else (traj.budget if traj else None),
        "strategy": spec.strategy,
        "order": spec.order,
        "seed": spec.seed,
        "n_rows": len(dataset),
        "n_selected": len(sel.ids),
        "share_percent": round(share, 4),
        "share_note": _share_note(share, spec, sel.n_parts, len(dataset) - n_valid - ranking.n_deduplicated,
                                  (len(sel.ids), len(dataset), ranking.n_deduplicated)),
        "n_nan_left_out": sel.n_nan - n_above_max - ranking.n_deduplicated,
        **{f"n_{k}": v for k, v in dataset.kept_but_counted().items()},
        "max_value": spec.max_value,
        "n_above_max_left_out": n_above_max,
        "n_parts": sel.n_parts if traj is None else None,
        "n_clusters": n_clusters,
        "per_cluster": {str(k): v for k, v in sel.per_cluster.items()},
        **_trajectory_report(traj, spec.trajectory_k),
        "metric_all": _describe(values),
        "metric_selected": _describe(values[sel.ids]),
        "ids": sel.ids.tolist(),  # the rows the subset holds, in its order: what report, compare and train read
    }


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


def _exact_total(spec: SubsetSpec, n_valid: int, where: str) -> int | None:
    """The exact row budget (``n``, or round(N p / 100) with ``exact``), or None for the parts rule."""
    if spec.n is not None:
        if spec.n > n_valid:
            raise InputError(where, f"--n {spec.n} asks for more rows than the {n_valid} with a value")
        return spec.n
    if spec.exact and spec.strategy != "trajectory":  # S2L's budget is already round(N p / 100)
        total = round(n_valid * float(spec.percent) / 100)
        if total == 0 and n_valid:
            raise InputError(where, f"--exact takes round({n_valid} x {spec.percent:g} / 100) = 0 rows: give a "
                                    "larger --percent, or --n ROWS")
        return total
    return None


def _share_note(share: float, spec: SubsetSpec, parts: int, n_without_value: int,
                counts: tuple[int, int, int]) -> str | None:
    """Why the share taken is more than a point from ``percent``, or None when it is close (or rows were asked).
    ``counts``: rows taken, rows of the data, near-duplicates --dedup removed (named apart from the rows without
    a value: the budget is of the rows left after both)."""
    percent = spec.percent
    if spec.n is not None or abs(share - percent) <= SHARE_TOLERANCE:
        return None
    exact = spec.exact or spec.strategy == "trajectory"
    why = []
    if exact:
        why.append(f"the exact budget is round(N x {percent:g} / 100) of the N rows with a value")
    else:
        why.append(f"the paper's rule cuts every cluster into round(100/{percent:g}) = {parts} parts (the first "
                   "ones the larger) and takes one, which on small clusters is far from the percentage")
    if n_without_value:
        why.append(f"{n_without_value} rows have no value and are never selected")
    taken, n_rows, n_deduplicated = counts
    removed = f"; {n_deduplicated} near-duplicates removed first" if n_deduplicated else ""
    hint = "" if exact else "; --exact (or --n ROWS) takes an exact budget"
    return (f"took {share:.1f} % of the rows for --percent {percent:g} ({taken} of {n_rows} rows{removed}): "
            f"{' and '.join(why)}{hint}")


def _consensus_scorer(paths: Sequence[str | Path]) -> str:
    """The scorers of a consensus (each from its run's manifest), each named once, in the order given."""
    names = list(dict.fromkeys(scorer_of(p) for p in paths))
    return f"consensus of {len(paths)} score files: {', '.join(names)}"


def _trajectory(table: dict[str, np.ndarray], where: str, spec: SubsetSpec) -> TrajectorySelection:
    """S2L selection, refusing the options that only make sense for a metric ranking (they would be ignored)."""
    if spec.max_value is not None:
        raise LPSelectError("--max-value filters by the metric, but strategy 'trajectory' does not rank by one")
    if spec.band not in ("hardest", "low"):
        raise LPSelectError(f"strategy 'trajectory' has no bands (S2L samples every trajectory cluster at random); "
                            f"got band '{spec.band}': leave it at the default")
    try:
        return select_trajectory_from_table(table, spec.percent, k=spec.trajectory_k, order=spec.order,
                                            seed=spec.seed, budget=spec.n)
    except ValueError as e:
        raise InputError(where, str(e)) from None


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
