"""``report.html``: one self-contained page that shows what a run measured and what its subsets picked.

Reads the run folder (manifest, scores, clusters, subset reports, and the data when still readable),
computes with :mod:`~lpselect.analysis.summary`, draws with :mod:`~lpselect.analysis.figures`. Scatter plots
show a fixed-seed sample of rows; histograms and every number use all rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from lpselect.analysis import figures, runio, summary
from lpselect.analysis import html as h
from lpselect.analysis.compare import rank_correlation
from lpselect.core.metrics import learning_percentage, learning_percentage_approx
from lpselect.data.formats import Dataset
from lpselect.errors import LPSelectError
from lpselect.runs.io import atomic_path
from lpselect.runs.layout import CLUSTERS, REPORT

SECTIONS = (
    ("summary", "Run summary"),
    ("perplexity", "Perplexity per epoch"),
    ("learning-percentage", "LP(i) and LP_app(i)"),
    ("agreement", "LP(1) vs LP_app(1)"),
    ("data-map", "Data map"),
    ("subsets", "Selected subsets vs the whole set"),
    ("extremes", "Hardest and easiest samples"),
    ("quality", "Missing scores and truncation"),
)
SECTION_IDS = tuple(i for i, _ in SECTIONS)
SCATTER_POINTS = 5000
SUBSET_FIGURES = 8  # subsets beyond this are in the table only, to keep the page light
N_EXTREMES = 10
TEXT_CHARS = 200


@dataclass
class RunData:
    run_dir: Path
    manifest: dict[str, Any]
    scores: runio.ScoresTable
    clusters: np.ndarray | None = None
    dataset: Dataset | None = None
    notes: dict[str, str] = field(default_factory=dict)  # why something is missing, keyed by what
    subsets: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def load_run(run_dir: str | Path) -> RunData:
    """Everything the report shows; a missing or unusable optional part becomes a note, not an error."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise runio.InputError(run_dir, "not a run folder")
    scores = runio.read_scores(run_dir)
    run = RunData(run_dir, runio.read_manifest(run_dir), scores, subsets=runio.subset_reports(run_dir))
    if (run_dir / CLUSTERS).exists():
        try:
            run.clusters = runio.read_clusters(run_dir / CLUSTERS, scores.n_rows)
        except LPSelectError as e:
            run.notes["clusters"] = f"clusters.parquet not used: {e}"
    else:
        run.notes["clusters"] = "no clusters.parquet in this run"
    run.dataset, why = runio.try_read_dataset(runio.data_path_of(run.manifest), scores.n_rows)
    if why:
        run.notes["data"] = why
    return run


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.html`` (default: in the run folder) and return its path."""
    run = load_run(run_dir)
    path = Path(out) if out is not None else Path(run_dir) / REPORT
    text = render(run)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def render(run: RunData) -> str:
    builders = {
        "summary": _summary, "perplexity": _perplexity, "learning-percentage": _learning_percentage,
        "agreement": _agreement, "data-map": _data_map, "subsets": _subsets, "extremes": _extremes,
        "quality": _quality,
    }
    sections = [(sid, title, h.section(sid, title, builders[sid](run))) for sid, title in SECTIONS]
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    intro = h.note(f"{run.run_dir.resolve()} — generated {stamp} by lpselect")
    return h.page(f"lpselect run report: {run.run_dir.resolve().name}", sections, intro)


# ---- sections: each returns a list of HTML parts ----------------------------------------------------------


def _summary(run: RunData) -> list[str]:
    s = run.scores
    ranking = summary.main_metric(s.ppl)
    facts: list[tuple[str, Any]] = [
        ("run folder", str(run.run_dir.resolve())),
        ("scores", str(s.path)),
        ("rows", s.n_rows),
        ("epochs recorded", f"P0 .. P{s.n_epochs} ({s.n_epochs} trained)"),
        ("clusters", f"{len(np.unique(run.clusters)):,}" if run.clusters is not None else "none"),
        ("data", str(runio.data_path_of(run.manifest) or "unknown")),
        ("subsets in the run", len(run.subsets)),
        ("ranking metric of this report", ranking[1] if ranking else "none (no trained epoch)"),
    ]
    parts = [h.table(["item", "value"], facts, text_columns=(1,))]
    steps = run.manifest.get("steps") or {}
    if not steps:
        parts.append(h.note("no manifest.json (or no steps in it)"))
    for name, record in steps.items():
        rows = _flatten(record) if isinstance(record, dict) else [("", record)]
        parts.append(f"<h3>step: {h.esc(name)}</h3>" + h.table(["field", "value"], rows, text_columns=(1,)))
    return parts


def _perplexity(run: RunData) -> list[str]:
    ppl = run.scores.ppl
    rows = []
    for e in range(ppl.shape[1]):
        v = ppl[:, e][np.isfinite(ppl[:, e])]
        stats = (float(v.mean()), *np.quantile(v, [0.0, 0.5, 1.0]).tolist()) if len(v) else (math.nan,) * 4
        rows.append((f"P{e}", len(v), *stats))
    return [h.image(figures.perplexity_histograms(ppl), "perplexity distributions per epoch"),
            h.note("Every finite perplexity is counted (log-spaced bins shared by all epochs)."),
            h.table(["epoch", "rows with a value", "mean", "min", "median", "max"], rows)]


def _learning_percentage(run: RunData) -> list[str]:
    n = run.scores.n_epochs
    if n == 0:
        return [h.note("Only P0 was recorded (0 epochs): LP and LP_app need at least one trained epoch.")]
    series = summary.metric_series(run.scores.ppl)
    parts = []
    if n == 1:
        parts.append(h.note("One trained epoch: LP(1) = (P0 - P1) / (P0 - P1) is 1 for every row, so only "
                            "LP_app(1) is shown (LP needs n >= 2)."))
    rows = []
    for name, v in series.items():
        f = v[np.isfinite(v)]
        q = np.quantile(f, [0.1, 0.5, 0.9]).tolist() if len(f) else [math.nan] * 3
        rows.append((name, len(f), len(v) - len(f), *q))
    parts += [h.image(figures.metric_histograms(series), "LP and LP_app distributions"),
              h.note("Lower = harder. The 0.5 % tails are counted in the edge bins (titles say how many)."),
              h.table(["metric", "rows", "NaN rows", "p10", "median", "p90"], rows)]
    return parts


def _agreement(run: RunData) -> list[str]:
    ppl = run.scores.ppl
    if run.scores.n_epochs < 2:
        return [h.note(f"Needs at least 2 trained epochs (this run has {run.scores.n_epochs}): with fewer, "
                       "LP(1) is not defined as a ranking.")]
    lp, lpa = learning_percentage(ppl, 1), learning_percentage_approx(ppl, 1)
    c = rank_correlation(lp, lpa)
    both = np.flatnonzero(np.isfinite(lp) & np.isfinite(lpa))
    shown = summary.sample_rows(both, SCATTER_POINTS)
    png = figures.scatter(lp[shown], lpa[shown], xlabel="LP(1)", ylabel="LP_app(1)",
                          title=f"Spearman {c.spearman:.3f}, Kendall tau-b {c.kendall:.3f} (n={c.n:,}; "
                                f"{len(shown):,} points drawn)",
                          xlim=summary.view_range(lp[both]), ylim=summary.view_range(lpa[both]))
    return [h.image(png, "LP(1) vs LP_app(1)"),
            h.table(["Spearman", "Kendall tau-b", "rows", "rows dropped (NaN)"],
                    [(c.spearman, c.kendall, c.n, c.n_dropped)]),
            h.note("SPEC §6: on the reference's Alpaca perplexities this is about 0.81 (OPT-350M) to 0.88 "
                   "(Llama-2-7B). Axes show the 0.5-99.5 % range.")]


def _data_map(run: RunData) -> list[str]:
    ranking = summary.main_metric(run.scores.ppl)
    if ranking is None:
        return [h.note("Needs at least one trained epoch.")]
    _, label, x = ranking
    ppl = run.scores.ppl
    y = ppl[:, -1]
    ok = np.flatnonzero(np.isfinite(x) & np.isfinite(y) & (y > 0))
    shown = summary.sample_rows(ok, SCATTER_POINTS)
    by_cluster = run.clusters is not None
    colour = run.clusters if by_cluster else summary.band_codes(x)
    how = "colour: cluster (20 colours, cycled)" if by_cluster else "colour: global 10 % bands of " + label
    png = figures.data_map(x[shown], y[shown], np.asarray(colour)[shown], by_cluster=by_cluster, xlabel=label,
                           ylabel=f"final perplexity P{run.scores.n_epochs} (log)",
                           title=f"{len(shown):,} of {len(ok):,} rows drawn (fixed seed); {how}",
                           xlim=summary.view_range(x[ok]))
    return [h.image(png, "data map"),
            h.note(f"Left = hard by {label}; up = still poorly fitted after the last epoch. "
                   f"{len(shown):,} of {len(ok):,} rows drawn (fixed seed); {how}.")]


def _subsets(run: RunData) -> list[str]:
    ranking = summary.main_metric(run.scores.ppl)
    reports = list(run.subsets)
    parts: list[str] = []
    if not reports:
        if ranking is None:
            return [h.note("No subsets in this run, and no metric to select by (0 epochs).")]
        strategy = "cluster" if run.clusters is not None else "global"
        reports = [(f"10_low_{ranking[0]}1 (not written: computed for this report)",
                    {"metric": ranking[0], "epoch": 1, "percent": 10, "band": "low", "strategy": strategy,
                     "clusters": "run" if run.clusters is not None else None})]
        parts.append(h.note("No subsets/*.report.json in this run: showing the hardest 10 % by "
                            f"{ranking[1]} ({strategy} ranking) instead."))
    rows, figs = [], []
    tokens = run.scores.columns.get("n_scored_tokens")
    categories = _categories(run.dataset)
    for k, (name, rep) in enumerate(reports):
        try:
            ids = summary.recompute_selection(run.scores.table, run.clusters, rep)
        except (ValueError, KeyError, TypeError) as e:
            rows.append((name, rep.get("metric"), rep.get("epoch"), rep.get("percent"), rep.get("band"),
                         rep.get("strategy"), rep.get("n_selected"), None, f"cannot recompute: {e}"))
            continue
        cov = summary.cluster_coverage(ids, run.clusters) if run.clusters is not None else None
        expected = rep.get("n_selected")
        check = "" if expected is None or expected == len(ids) else "differs from the report: scores changed?"
        rows.append((name, rep.get("metric"), rep.get("epoch"), rep.get("percent"), rep.get("band"),
                     rep.get("strategy"), expected, len(ids),
                     check or (f"{cov.n_clusters_hit:,} / {cov.n_clusters:,}" if cov else "")))
        if k < SUBSET_FIGURES:
            png = figures.subset_panels(
                coverage=cov, percent=float(rep["percent"]),
                tokens_all=tokens, tokens_selected=tokens[ids] if tokens is not None else None,
                categories=summary.category_shares(categories, ids) if categories else None)
            body = h.image(png, f"subset {name}") if png else h.note("nothing to compare")
            figs.append(f"<h3>{h.esc(name)}</h3>" + body)
    parts.append(h.table(["subset", "metric", "epoch", "%", "band", "strategy", "rows (report)",
                          "rows (recomputed)", "clusters hit / check"], rows, text_columns=(0, 8)))
    missing = [run.notes[k] for k in ("clusters", "data") if k in run.notes]
    if tokens is None:
        missing.append("no n_scored_tokens column (e.g. imported reference scores)")
    if not categories:
        missing.append("no per-category share: the data has no category field or is not readable")
    parts += figs
    if missing:
        parts.append(h.note("; ".join(missing)))
    return parts


def _extremes(run: RunData) -> list[str]:
    ranking = summary.main_metric(run.scores.ppl)
    if ranking is None:
        return [h.note("Needs at least one trained epoch to rank samples.")]
    metric, label, values = ranking
    ppl = run.scores.ppl
    other = learning_percentage_approx(ppl, 1) if metric == "lp" else None
    hardest, easiest = summary.extremes(values, N_EXTREMES)
    headers = ["id", label, *(["LP_app(1)"] if other is not None else []),
               *(f"P{e}" for e in range(ppl.shape[1]))]
    cols = run.scores.columns
    if "n_scored_tokens" in cols:
        headers.append("scored tokens")
    if run.clusters is not None:
        headers.append("cluster")
    if run.dataset is not None:
        headers += ["category", "instruction"]

    def rows(ids: np.ndarray) -> list[list[Any]]:
        out = []
        for i in ids:
            row: list[Any] = [int(i), float(values[i]), *([float(other[i])] if other is not None else []),
                              *(float(p) for p in ppl[i])]
            if "n_scored_tokens" in cols:
                row.append(int(cols["n_scored_tokens"][i]))
            if run.clusters is not None:
                row.append(int(run.clusters[i]))
            if run.dataset is not None:
                s = run.dataset.samples[i]
                text = s.instruction if len(s.instruction) <= TEXT_CHARS else s.instruction[:TEXT_CHARS] + "…"
                row += [s.category or "", text]
            out.append(row)
        return out

    text_cols = (len(headers) - 2, len(headers) - 1) if run.dataset is not None else ()
    parts = [f"<h3>{N_EXTREMES} hardest (lowest {h.esc(label)})</h3>",
             h.table(headers, rows(hardest), text_columns=text_cols),
             f"<h3>{N_EXTREMES} easiest (highest {h.esc(label)})</h3>",
             h.table(headers, rows(easiest), text_columns=text_cols)]
    if "data" in run.notes:
        parts.append(h.note(f"No instruction text: {run.notes['data']}"))
    return parts


def _quality(run: RunData) -> list[str]:
    parts = [h.table(["count", "rows"], summary.quality_counts(run.scores.ppl, run.scores.columns))]
    score_counts = ((run.manifest.get("steps") or {}).get("score") or {}).get("counts")
    if isinstance(score_counts, dict):
        parts += ["<h3>counts recorded by the score step</h3>",
                  h.table(["count", "value"], list(score_counts.items()))]
    parts.append(h.note("Rows with a NaN metric are never selected (SPEC §8); with --truncation right, a row "
                        "left without a response token is NaN (SPEC §4)."))
    return parts


# ---- helpers -----------------------------------------------------------------------------------------------


def _categories(dataset: Dataset | None) -> list[str | None] | None:
    if dataset is None or not any(s.category for s in dataset.samples):
        return None
    return [s.category for s in dataset.samples]


def _flatten(record: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested manifest fields as dotted keys; long lists shortened, so a step is one readable table."""
    out: list[tuple[str, Any]] = []
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out += _flatten(value, name + ".")
        elif isinstance(value, list) and 0 < len(value) <= 6 and all(isinstance(v, dict) for v in value):
            for i, v in enumerate(value):
                out += _flatten(v, f"{name}.{i}.")
        elif isinstance(value, list) and len(value) > 6:
            out.append((name, f"[{len(value)} items] " + ", ".join(map(str, value[:3])) + ", …"))
        else:
            out.append((name, value if isinstance(value, str | int | float) else str(value)))
    return out
