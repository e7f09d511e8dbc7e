"""Do two scorers call the same samples hard? Rank correlation of their metrics and overlap of their subsets.

The paper's claim rests on this "hardness transfer": LP(1) of a 350M scorer ranks Alpaca about like a 13B
scorer does (docs/method.md §6). The functions above the I/O line are pure (arrays in, numbers out); ``compare_runs``
and ``compare_many`` read run folders and call them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np
from scipy import stats

from lpselect.analysis import runio
from lpselect.config import CompareSpec, CorrelationMethod
from lpselect.core.metrics import HARD_END, recorded_epochs
from lpselect.core.selection import BANDS, MEANING_BANDS, literal_band, select
from lpselect.data.provenance import verify_tables
from lpselect.errors import InputError, LPSelectError

CORRELATION_METHODS: tuple[str, ...] = get_args(CorrelationMethod)


@dataclass(frozen=True)
class Correlation:
    """Spearman rho and Kendall tau-b over the rows where both values are finite."""

    spearman: float
    kendall: float
    n: int
    n_dropped: int


@dataclass(frozen=True)
class Overlap:
    """Two id sets: ``fraction`` = |A∩B| / |A| (the share of A that B keeps too), ``jaccard`` = |A∩B| / |A∪B|.

    A set may hold fewer ids than the other when the two metrics have NaN on different rows."""

    n_a: int
    n_b: int
    n_common: int

    @property
    def fraction(self) -> float:
        return self.n_common / self.n_a if self.n_a else math.nan

    @property
    def jaccard(self) -> float:
        union = self.n_a + self.n_b - self.n_common
        return self.n_common / union if union else math.nan


@dataclass
class SelectionOverlap:
    """Overlap of two metrics' selections: ranked globally, and per cluster (the method) when clustered."""

    percent: float
    band: str
    global_: Overlap
    clustered: Overlap | None = None
    per_cluster: dict[int, Overlap] = field(default_factory=dict)

    def mean_per_cluster(self) -> tuple[float, float]:
        """Mean overlap fraction and Jaccard over clusters (clusters with nothing selected are skipped)."""
        if not self.per_cluster:
            return math.nan, math.nan
        frac = np.array([o.fraction for o in self.per_cluster.values()])
        jac = np.array([o.jaccard for o in self.per_cluster.values()])
        return _nanmean(frac), _nanmean(jac)


@dataclass
class CorrelationMatrix:
    names: list[str]
    method: str
    values: np.ndarray  # k x k, 1 on the diagonal
    n: np.ndarray  # k x k rows used per pair
    notes: list[str] = field(default_factory=list)  # what could not be checked about the runs' data
    metric: str = ""  # the metric compared (compare_many resolves the default)


def finite_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two arrays restricted to rows where both are finite (NaN rows dropped pairwise)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two 1-d arrays of one length, got shapes {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def rank_correlation(a: np.ndarray, b: np.ndarray,
                     methods: Sequence[str] = CORRELATION_METHODS) -> Correlation:
    """Spearman and Kendall tau-b (scipy); NaN when fewer than 2 rows remain or one side is constant."""
    x, y = finite_pairs(a, b)
    n_dropped = len(np.asarray(a)) - len(x)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:  # undefined; scipy would warn and return NaN
        return Correlation(math.nan, math.nan, len(x), n_dropped)
    rho = float(stats.spearmanr(x, y).statistic) if "spearman" in methods else math.nan
    tau = float(stats.kendalltau(x, y, variant="b").statistic) if "kendall" in methods else math.nan
    return Correlation(rho, tau, len(x), n_dropped)


def set_overlap(a_ids: np.ndarray, b_ids: np.ndarray) -> Overlap:
    a = np.unique(np.asarray(a_ids, dtype=np.int64))
    b = np.unique(np.asarray(b_ids, dtype=np.int64))
    return Overlap(len(a), len(b), len(np.intersect1d(a, b, assume_unique=True)))


def selection_overlap(metric_a: np.ndarray, metric_b: np.ndarray, percent: float,
                      clusters: np.ndarray | None = None, band: str = "low",
                      band_b: str | None = None) -> SelectionOverlap:
    """Select the (literal) band of each metric with :func:`lpselect.core.selection.select` and compare the id
    sets; ``band_b`` is the second side's band when it differs (a metric of the other direction)."""
    metric_a = np.asarray(metric_a, dtype=np.float64)
    metric_b = np.asarray(metric_b, dtype=np.float64)
    if metric_a.shape != metric_b.shape:
        raise ValueError(f"metrics have {len(metric_a)} and {len(metric_b)} rows")
    band_b = band if band_b is None else band_b
    g_a = select(metric_a, None, percent, band, strategy="global").ids
    g_b = select(metric_b, None, percent, band_b, strategy="global").ids
    result = SelectionOverlap(percent=percent, band=band, global_=set_overlap(g_a, g_b))
    if clusters is None:
        return result
    clusters = np.asarray(clusters)
    c_a = select(metric_a, clusters, percent, band, strategy="cluster").ids
    c_b = select(metric_b, clusters, percent, band_b, strategy="cluster").ids
    result.clustered = set_overlap(c_a, c_b)
    result.per_cluster = per_cluster_overlap(c_a, c_b, clusters)
    return result


def per_cluster_overlap(a_ids: np.ndarray, b_ids: np.ndarray, clusters: np.ndarray) -> dict[int, Overlap]:
    """Overlap of A and B inside every cluster (all clusters, also those where nothing was selected)."""
    labels, index = np.unique(np.asarray(clusters), return_inverse=True)
    k = len(labels)
    a = np.unique(np.asarray(a_ids, dtype=np.int64))
    b = np.unique(np.asarray(b_ids, dtype=np.int64))
    common = np.intersect1d(a, b, assume_unique=True)
    n_a, n_b, n_c = (np.bincount(index[ids], minlength=k) for ids in (a, b, common))
    return {int(labels[j]): Overlap(int(n_a[j]), int(n_b[j]), int(n_c[j])) for j in range(k)}


def correlation_matrix(metrics: Mapping[str, np.ndarray], method: str = "spearman") -> CorrelationMatrix:
    """Pairwise rank correlation of every pair of scorers (NaN rows dropped per pair)."""
    if method not in CORRELATION_METHODS:
        raise ValueError(f"method must be one of {CORRELATION_METHODS}, got {method!r}")
    names = list(metrics)
    k = len(names)
    values = np.eye(k)
    counts = np.zeros((k, k), dtype=np.int64)
    for i in range(k):
        counts[i, i] = int(np.isfinite(np.asarray(metrics[names[i]], dtype=np.float64)).sum())
        for j in range(i + 1, k):
            c = rank_correlation(metrics[names[i]], metrics[names[j]], methods=(method,))
            values[i, j] = values[j, i] = c.spearman if method == "spearman" else c.kendall
            counts[i, j] = counts[j, i] = c.n
    return CorrelationMatrix(names, method, values, counts)


def _nanmean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else math.nan


# ---- I/O: run folders in, the numbers above out --------------------------------------------------------


@dataclass
class Comparison:
    """Everything ``lpselect compare`` prints for two runs."""

    a: str
    b: str
    metric_a: str
    epoch_a: int
    metric_b: str
    epoch_b: int
    n_rows: int
    correlation: Correlation
    overlap: SelectionOverlap
    notes: list[str] = field(default_factory=list)  # what could not be checked about the tables' data

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes null). The flat headline keys (``spearman``, ``kendall``, ``n``,
        ``overlap_fraction``, ``jaccard``) repeat values of the nested ``correlation`` and ``overlap_global``
        blocks, so a script can read the usual numbers without knowing the nesting (docs/guide.md documents both)."""
        ov = self.overlap
        mean_frac, mean_jac = ov.mean_per_cluster()
        cor = self.correlation
        return _clean({
            "a": self.a, "b": self.b,
            "metric_a": self.metric_a, "epoch_a": self.epoch_a,
            "metric_b": self.metric_b, "epoch_b": self.epoch_b,
            "n_rows": self.n_rows,
            "spearman": cor.spearman, "kendall": cor.kendall, "n": cor.n,
            "overlap_fraction": ov.global_.fraction, "jaccard": ov.global_.jaccard,
            "correlation": vars(self.correlation),
            "percent": ov.percent, "band": ov.band,
            "overlap_global": _overlap_dict(ov.global_),
            "overlap_clustered": _overlap_dict(ov.clustered) if ov.clustered else None,
            "per_cluster_mean": {"fraction": mean_frac, "jaccard": mean_jac} if ov.per_cluster else None,
            "per_cluster": [{"cluster": c, **_overlap_dict(o)} for c, o in ov.per_cluster.items()],
            "notes": self.notes,
        })


def default_metric(*tables: runio.ScoresTable) -> str:
    """LP (the paper's) when every run trained two epochs or more; LP_app otherwise, since LP(1) of a one-epoch
    run is 1 on every row."""
    return "lp" if all(recorded_epochs(t.table) >= 2 for t in tables) else "lp_app"


def side_band(band: str, metric: str) -> str:
    """The literal band a (possibly meaning) band is for this metric; an unknown band is one line."""
    if band not in BANDS + MEANING_BANDS:
        raise LPSelectError(f"--band must be one of {', '.join(MEANING_BANDS + BANDS)}, got {band!r}")
    if metric not in HARD_END:
        return band if band in BANDS else "low"  # an unknown metric is refused when it is read
    return literal_band(band, HARD_END[metric])


def compare_runs(a: str | Path, b: str | Path, spec: CompareSpec | None = None, *,
                 clusters: str | Path | None = None) -> Comparison:
    """Compare two runs (folders or scores.parquet files) on one metric (``spec.metric``, default:
    :func:`default_metric`); ``spec.metric_b``/``spec.epoch_b`` let the two sides differ (e.g. LP(1) vs LP_app(1)
    of the same run). ``clusters`` adds the per-cluster overlap. The band hardest / easiest / middle follows each
    side's metric direction."""
    spec = spec or CompareSpec()
    sa, sb = runio.read_scores(a), runio.read_scores(b)
    metric = spec.metric or default_metric(sa, sb)
    if sa.n_rows != sb.n_rows:
        raise InputError(sb.path, f"{sb.n_rows} rows, but {sa.path} has {sa.n_rows}: not the same data")
    notes = verify_tables([sa.path, sb.path] + ([runio.resolve_clusters(clusters)] if clusters is not None else []))
    # None means "as the first side"; 0 is an epoch (P0-based metrics) and must not fall back
    metric_b = metric if spec.metric_b is None else spec.metric_b
    epoch_b = spec.epoch if spec.epoch_b is None else spec.epoch_b
    va = runio.metric_values(sa, metric, spec.epoch)
    vb = runio.metric_values(sb, metric_b, epoch_b)
    labels = runio.read_clusters(clusters, sa.n_rows) if clusters is not None else None
    return Comparison(runio.run_label(a), runio.run_label(b), metric, spec.epoch, metric_b, epoch_b, sa.n_rows,
                      rank_correlation(va, vb),
                      selection_overlap(va, vb, spec.percent, labels, side_band(spec.band, metric),
                                        side_band(spec.band, metric_b)), notes)


def compare_many(runs: Sequence[str | Path], spec: CompareSpec | None = None) -> CorrelationMatrix:
    """The correlation matrix (``spec.method``) of one metric (``spec.metric``, default: :func:`default_metric`)
    over several runs of the same data."""
    spec = spec or CompareSpec()
    if len(runs) < 2:
        raise InputError(", ".join(map(str, runs)) or "runs", "give at least two runs to compare")
    metrics: dict[str, np.ndarray] = {}
    paths: list[Path] = []
    n_rows = None
    tables = [runio.read_scores(r) for r in runs]
    metric = spec.metric or default_metric(*tables)
    for r, scores in zip(runs, tables, strict=True):
        if n_rows is not None and scores.n_rows != n_rows:
            raise InputError(scores.path, f"{scores.n_rows} rows, but the first run has {n_rows}")
        n_rows = scores.n_rows
        name = runio.run_label(r)
        while name in metrics:  # two folders of one name: keep both columns
            name += "'"
        metrics[name] = runio.metric_values(scores, metric, spec.epoch)
        paths.append(scores.path)
    matrix = correlation_matrix(metrics, spec.method)
    matrix.notes = verify_tables(paths)
    matrix.metric = metric
    return matrix


def _overlap_dict(o: Overlap) -> dict[str, Any]:
    return {"n_a": o.n_a, "n_b": o.n_b, "n_common": o.n_common, "fraction": o.fraction, "jaccard": o.jaccard}


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj
