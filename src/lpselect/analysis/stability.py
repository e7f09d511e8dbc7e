"""How much of a subset is the data and how much the scorer's seed: overlap of the selections of several runs.

Each pair of runs is compared (|A∩B|/|A| and Jaccard), and so is the consensus subset (lpselect.core.consensus: the
rows' mean rank across the runs) with each single run: if the consensus is stable, it overlaps every run more
than the runs overlap each other. Selection is :func:`lpselect.core.selection.select`, overlap is
:func:`lpselect.analysis.compare.set_overlap`; :func:`stability_overlaps` is pure, :func:`stability_runs`
reads run folders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lpselect.analysis import runio
from lpselect.analysis.compare import Overlap, _clean, _overlap_dict, set_overlap, side_band
from lpselect.config import StabilitySpec
from lpselect.core.consensus import consensus_metric
from lpselect.core.selection import select
from lpselect.data.provenance import verify_tables
from lpselect.errors import InputError, LPSelectError
from lpselect.runs.layout import CLUSTERS


@dataclass
class StabilityOverlaps:
    """Pairwise overlaps ``pairs[(i, j)]`` (i < j; A = run i) and ``consensus[i]`` (A = the consensus subset)."""

    pairs: dict[tuple[int, int], Overlap]
    consensus: list[Overlap]
    consensus_ids: np.ndarray
    n_nan: list[int]
    consensus_n_nan: int


def _band_ids(values: np.ndarray, labels: np.ndarray | None, percent: float, band: str) -> np.ndarray:
    """The band of docs/method.md §8: per cluster with labels, else the global ranking."""
    return select(values, labels, percent, band, strategy="global" if labels is None else "cluster").ids


def stability_overlaps(values: Sequence[np.ndarray], labels: Sequence[np.ndarray | None], percent: float,
                       band: str = "low", consensus_labels: np.ndarray | None = None) -> StabilityOverlaps:
    """Select each run's band (its own cluster labels, or globally) and the consensus's band
    (``consensus_labels``), then overlap every pair of runs and the consensus with every run."""
    if len(values) < 2:
        raise ValueError(f"stability needs at least two runs, got {len(values)}")
    if len(labels) != len(values):
        raise ValueError(f"{len(labels)} cluster assignments for {len(values)} runs")
    ids = [_band_ids(v, lab, percent, band) for v, lab in zip(values, labels, strict=True)]
    cons = consensus_metric(values)
    cons_ids = _band_ids(cons, consensus_labels, percent, band)
    k = len(values)
    return StabilityOverlaps(
        pairs={(i, j): set_overlap(ids[i], ids[j]) for i in range(k) for j in range(i + 1, k)},
        consensus=[set_overlap(cons_ids, ids[i]) for i in range(k)],
        consensus_ids=cons_ids,
        n_nan=[int((~np.isfinite(np.asarray(v, dtype=np.float64))).sum()) for v in values],
        consensus_n_nan=int(np.isnan(cons).sum()),
    )


# ---- I/O: run folders in, the numbers above out --------------------------------------------------------


@dataclass
class Stability:
    """Everything ``lpselect stability`` prints."""

    runs: list[str]
    scores: list[str]
    clusters: list[str | None]
    consensus_clusters: str | None
    metric: str
    epoch: int
    percent: float
    band: str
    n_rows: int
    overlaps: StabilityOverlaps
    notes: list[str] = field(default_factory=list)  # what could not be checked about the tables' data

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes null); pairs name runs by their label (``runs``), as the table does."""
        ov = self.overlaps
        pairs = [{"a": self.runs[i], "b": self.runs[j], **_overlap_dict(o)} for (i, j), o in ov.pairs.items()]
        cons = [{"a": "consensus", "b": self.runs[i], **_overlap_dict(o)} for i, o in enumerate(ov.consensus)]
        return _clean({
            "runs": self.runs, "scores": self.scores, "clusters": self.clusters,
            "consensus_clusters": self.consensus_clusters,
            "metric": self.metric, "epoch": self.epoch, "percent": self.percent, "band": self.band,
            "n_rows": self.n_rows, "n_nan": dict(zip(self.runs, ov.n_nan, strict=True)),
            "consensus_n_nan": ov.consensus_n_nan, "consensus_n_selected": len(ov.consensus_ids),
            "pairs": pairs, "consensus": cons,
            "mean_pair": mean_overlap(list(ov.pairs.values())), "mean_consensus": mean_overlap(ov.consensus),
            "notes": self.notes,
        })


def stability_runs(runs: Sequence[str | Path], spec: StabilitySpec | None = None, *,
                   clusters: str | Path | None = None) -> Stability:
    """Read the runs (folders or scores.parquet files of one data) and compute :func:`stability_overlaps` of
    ``spec``'s selections (default: the hardest 10 % by LP_app(1)).

    Clusters: ``clusters`` for every run; else each run's own clusters.parquet (all runs must have one, or
    none: a per-cluster selection against a global one would measure the rule, not the seed); the consensus
    uses the first run's assignment. Without any, every selection is the global ranking."""
    if len(runs) < 2:
        raise InputError(", ".join(map(str, runs)) or "runs", "give at least two runs")
    spec = spec or StabilitySpec()
    metric, epoch, percent, band = spec.metric, spec.epoch, spec.percent, spec.band
    literal = side_band(band, metric)
    tables = [runio.read_scores(r) for r in runs]
    n_rows = tables[0].n_rows
    for t in tables[1:]:
        if t.n_rows != n_rows:
            raise InputError(t.path, f"{t.n_rows} rows, but {tables[0].path} has {n_rows}: not the same data")
    values = [runio.metric_values(t, metric, epoch) for t in tables]
    if clusters is not None:
        cluster_paths: list[Path | None] = [runio.resolve_clusters(clusters)] * len(tables)
    else:
        cluster_paths = [p if (p := t.path.parent / CLUSTERS).exists() else None for t in tables]
        missing = [str(r) for r, p in zip(runs, cluster_paths, strict=True) if p is None]
        if missing and len(missing) < len(runs):
            raise LPSelectError(f"{', '.join(missing)} have no {CLUSTERS} but the other runs do: give "
                                f"--clusters FILE to select every run within one assignment")
    # every run, and every clusters file, must come from the same rows (a clusters file once)
    notes = verify_tables([t.path for t in tables] + list(dict.fromkeys(p for p in cluster_paths if p is not None)))
    labels = [runio.read_clusters(p, n_rows) if p is not None else None for p in cluster_paths]
    names: list[str] = []
    for r in runs:  # two folders of one name: keep both apart
        name = runio.run_label(r)
        while name in names:
            name += "'"
        names.append(name)
    return Stability(
        runs=names, scores=[str(t.path) for t in tables],
        clusters=[str(p) if p is not None else None for p in cluster_paths],
        consensus_clusters=str(cluster_paths[0]) if cluster_paths[0] is not None else None,
        metric=metric, epoch=epoch, percent=percent, band=band, n_rows=n_rows,
        overlaps=stability_overlaps(values, labels, percent, literal, consensus_labels=labels[0]), notes=notes)


def mean_overlap(overlaps: Sequence[Overlap]) -> dict[str, float]:
    """Mean overlap fraction and Jaccard (NaN ones, from empty selections, skipped)."""
    frac = np.array([o.fraction for o in overlaps], dtype=np.float64)
    jac = np.array([o.jaccard for o in overlaps], dtype=np.float64)
    return {k: float(np.mean(x[np.isfinite(x)])) if np.isfinite(x).any() else float("nan")
            for k, x in (("fraction", frac), ("jaccard", jac))}
