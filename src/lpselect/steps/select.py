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

    def dataset(self) -> datasets.Dataset:
        """The selected rows as a ``datasets.Dataset``, in the subset's order with every original column, to hand
        to a trainer without reading the file back."""
        import datasets

        source = self.source
        if source is None:  # e.g. a result built by hand: the subset file holds the rows, in order
            subset = read_dataset(self.path, self.report.get("fields"))
            return datasets.Dataset.from_list(subset.records) if subset.file_format != "hf" else subset._extra["hf"]
        if source.file_format == "hf":
            return source._extra["hf"].select(self.ids.tolist())
        return datasets.Dataset.from_list([source.records[i] for i in self.ids])


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
                    fields: dict[str, str] | None = None) -> SubsetResult:
    """A random baseline of ``like`` (a subset file, or its report): ``spec``'s strategy (random or clust_rand)
    and seed, exactly as many rows as ``like`` holds; its report names ``like`` under ``baseline_of``."""
    if spec.strategy not in BASELINE_STRATEGIES:
        raise LPSelectError(f"--like makes a random baseline: give --strategy random or clust_rand, not "
                            f"'{spec.strategy}'")
    name, n = subset_size(like)
    return _select_and_write(data, scores, out, spec.model_copy(update={"n": n, "exact": False}),
                             clusters=clusters, fields=fields, baseline_of=name)


def subset_size(subset: str | Path) -> tuple[str, int]:
    """The file name of a subset and its row count, from its report's ``ids`` (a subset file or its report)."""
    path = Path(subset)
    report = path if path.name.endswith(REPORT_SUFFIX) else Path(str(path) + REPORT_SUFFIX)
    try:
        ids = json.loads(report.read_text(encoding="utf-8")).get("ids")
    except (OSError, ValueError, AttributeError):
        raise InputError(subset, f"no readable {report.name} beside it: --like takes a subset lpselect select "
                                 "wrote") from None
    if not isinstance(ids, list) or not ids:
        raise InputError(report, "lists no selected ids (written by an older lpselect): select it again")
    return report.name[: -len(REPORT_SUFFIX)], len(ids)


def _select_and_write(data: str | Path | Dataset, scores: str | Path | Sequence[str | Path], out: str | Path,
                      spec: SubsetSpec, *, clusters: str | Path | None, fields: dict[str, str] | None,
                      baseline_of: str | None = None) -> SubsetResult:
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
    dedup = _drop_near_duplicates(spec, dataset, ranking, labels, clusters)
    sel, traj, band_sizes = _pick(spec, ranking, labels)
    if len(sel.ids) == 0:
        n_valid = int(np.isfinite(ranking.values).sum())
        raise LPSelectError(f"no row selected ({n_valid} of {len(dataset)} rows have a value): nothing is written; "
                            "give a larger --percent or --n ROWS")
    path = write_subset(dataset, sel.ids.tolist(), out)
    card = card_target(path)
    report = _report(spec, dataset, ranking, sel, traj, path, paths=paths, clusters=clusters, labels=labels)
    report.update(band_sizes=band_sizes, provenance_notes=notes, card=str(card.path), card_note=card.note,
                  dedup=dedup.report() if dedup is not None else None, baseline_of=baseline_of)
    if report["share_note"]:
        log.warning("%s", report["share_note"])
    report_path = Path(str(path) + REPORT_SUFFIX)
    write_json(report_path, report)
    write_card(path, card)
    return SubsetResult(path=path, report_path=report_path, ids=sel.ids, report=report, source=dataset)


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
                          clusters: str | Path | None) -> Any:
    """With ``spec.dedup``: the rows lpselect.steps.dedup removes get no value, so no strategy can pick them."""
    if spec.dedup is None:
        return None
    from lpselect.steps.dedup import dedup_rows, parse_dedup, row_text

    mode = parse_dedup(spec.dedup)
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
    result = dedup_rows(mode, ids=np.arange(len(dataset)), labels=labels, embeddings=embeddings,
                        texts=[row_text(s) for s in dataset.samples])
    removed = ~np.asarray(result.keep, dtype=bool)
    ranking.n_deduplicated = int((removed & np.isfinite(ranking.values)).sum())
    ranking.values = np.where(removed, np.nan, ranking.values)
    return result


def _pick(spec: SubsetSpec, ranking: _Ranking,
          labels: np.ndarray | None) -> tuple[Selection, TrajectorySelection | None, dict[str, int] | None]:
    """The selection, S2L's details (trajectory only) and, for a ranking, the size of each literal band."""
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
    sel = select(values, labels, spec.percent, literal, strategy=spec.strategy, order=spec.order, seed=spec.seed,
                 total=total)
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
        "share_note": _share_note(share, spec, sel.n_parts, len(dataset) - n_valid),
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


def _share_note(share: float, spec: SubsetSpec, parts: int, n_without_value: int) -> str | None:
    """Why the share taken is more than a point from ``percent``, or None when it is close (or rows were asked)."""
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
    hint = "" if exact else "; --exact (or --n ROWS) takes an exact budget"
    return f"took {share:.1f} % of the rows for --percent {percent:g}: {' and '.join(why)}{hint}"


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
