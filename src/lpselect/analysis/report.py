"""``report.html``: one self-contained page that shows what a run measured and what its subsets picked.

The answer comes first: the first screen holds the subsets (rows, share, clusters hit), the interactive data map
and the hardest and easiest samples with their responses; distributions follow, and the run's configuration and
versions sit collapsed at the end. Reads the run folder (manifest, scores, clusters, subset reports, and the data
when still readable), computes with :mod:`~lpselect.analysis.summary`, draws with
:mod:`~lpselect.analysis.figures` and :mod:`~lpselect.analysis.datamap`. Scatter plots show a fixed-seed sample of
rows; histograms and every number use all rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from lpselect.analysis import datamap, figures, runio, summary
from lpselect.analysis import html as h
from lpselect.analysis.compare import rank_correlation
from lpselect.core.metrics import learning_percentage, learning_percentage_approx
from lpselect.core.selection import select
from lpselect.data.formats import Dataset, Sample
from lpselect.data.provenance import verify_data, verify_tables
from lpselect.errors import LPSelectError
from lpselect.runs.io import atomic_path
from lpselect.runs.layout import CLUSTERS, REPORT

SECTIONS = (
    ("subsets", "Subsets"),
    ("data-map", "Data map"),
    ("extremes", "Hardest and easiest samples"),
    ("subset-details", "Subsets vs the whole set"),
    ("perplexity", "Perplexity per epoch"),
    ("learning-percentage", "LP(i) and LP_app(i)"),
    ("agreement", "LP(1) vs LP_app(1)"),
    ("extreme-numbers", "Hardest and easiest: every number"),
    ("quality", "Missing scores and truncation"),
    ("summary", "Run, configuration and versions"),
)
SECTION_IDS = tuple(i for i, _ in SECTIONS)
FIRST_SCREEN = (("subsets", "data-map"), ("extremes",))  # side by side, before everything else
SCATTER_POINTS = 5000
SUBSET_FIGURES = 8  # subsets beyond this are in the table only, to keep the page light
N_EXTREMES = 10
TEXT_CHARS = 400  # instruction / response in the samples table (3 lines shown; the cell holds the rest)
MAP_SUBSETS = 8  # subsets the map can filter by


@dataclass
class RunData:
    run_dir: Path
    manifest: dict[str, Any]
    scores: runio.ScoresTable
    clusters: np.ndarray | None = None
    dataset: Dataset | None = None
    notes: dict[str, str] = field(default_factory=dict)  # why something is missing, keyed by what
    subsets: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    resolved: list[SubsetRows] | None = None  # the subsets' rows, found once per page by subset_rows_of


@dataclass
class SubsetRows:
    """One subset as the page shows it: its report, its rows (None when they cannot be told) and from where."""

    name: str
    report: dict[str, Any]
    ids: np.ndarray | None
    source: str


def load_run(run_dir: str | Path, subsets: Sequence[str | Path] = ()) -> RunData:
    """Everything the report shows; a missing or unusable optional part becomes a note, not an error.
    ``subsets``: subset files (or folders of them) written outside ``RUN/subsets``, shown too."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise runio.InputError(run_dir, "not a run folder")
    scores = runio.read_scores(run_dir)
    run = RunData(run_dir, runio.read_manifest(run_dir), scores, subsets=runio.subset_reports(run_dir, subsets))
    if (run_dir / CLUSTERS).exists():
        try:
            run.clusters = runio.read_clusters(run_dir / CLUSTERS, scores.n_rows)
        except LPSelectError as e:
            run.notes["clusters"] = f"clusters.parquet not used: {e}"
    else:
        run.notes["clusters"] = "no clusters.parquet in this run"
    run.dataset, why = runio.try_read_dataset(runio.data_path_of(run.manifest), scores.n_rows,
                                              runio.fields_of(run.manifest))
    if why:
        run.notes["data"] = why
    # scores, clusters and the data shown beside them must be of the same rows: refused otherwise
    tables = [scores.path] + ([run_dir / CLUSTERS] if run.clusters is not None else [])
    notes = verify_tables(tables)
    if run.dataset is not None:
        notes += [n for t in tables if (n := verify_data(run.dataset, t)) and n not in notes]
    if notes:
        run.notes["provenance"] = "; ".join(notes)
    return run


def write_report(run_dir: str | Path, out: str | Path | None = None, subsets: Sequence[str | Path] = ()) -> Path:
    """Write ``report.html`` (default: in the run folder) and return its path."""
    run = load_run(run_dir, subsets)
    path = Path(out) if out is not None else Path(run_dir) / REPORT
    text = render(run)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def render(run: RunData) -> str:
    builders = {
        "summary": _summary, "perplexity": _perplexity, "learning-percentage": _learning_percentage,
        "agreement": _agreement, "data-map": _data_map, "subsets": _subsets, "extremes": _extremes,
        "subset-details": _subset_details, "extreme-numbers": _extreme_numbers, "quality": _quality,
    }
    run.resolved = subset_rows_of(run)
    sections = [(sid, title, h.section(sid, title, builders[sid](run))) for sid, title in SECTIONS]
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    s = run.scores
    ranking = summary.main_metric(s.ppl)
    facts = [f"{s.n_rows:,} rows", f"{s.n_epochs} trained epoch{'s' if s.n_epochs != 1 else ''}",
             f"{len(np.unique(run.clusters)):,} clusters" if run.clusters is not None else "no clusters",
             f"ranked by {ranking[1]}" if ranking else "no trained epoch"]
    intro = h.note(f"{run.run_dir.resolve()} — {', '.join(facts)} — generated {stamp} by lpselect")
    if "provenance" in run.notes:
        intro += h.note("Data check incomplete: see 'Run, configuration and versions' at the end.", warn=True)
    return h.page(f"lpselect run report: {run.run_dir.resolve().name}", sections, intro, top=FIRST_SCREEN)


def subset_rows_of(run: RunData) -> list[SubsetRows]:
    """The rows of every subset of the run, from the ids each report lists (or, with no subset, the hardest
    10 % computed for the page)."""
    ranking = summary.main_metric(run.scores.ppl)
    if not run.subsets and ranking is not None:
        return [_page_selection(run, *ranking)]
    return [SubsetRows(name, rep, *runio.subset_rows(rep, run.scores.n_rows, run.manifest))
            for name, rep in run.subsets]


def _page_selection(run: RunData, metric: str, label: str, values: np.ndarray) -> SubsetRows:
    """The hardest 10 % by the page's metric (lower is harder for LP and LP_app), per cluster when clustered:
    what the page shows for a run with no subset written."""
    strategy = "cluster" if run.clusters is not None else "global"
    report = {"metric": metric, "epoch": 1, "percent": 10, "band": "low", "strategy": strategy,
              "computed_here": True}
    try:
        ids, source = select(values, run.clusters, 10, "low", strategy=strategy).ids, "computed here"
    except ValueError as e:  # e.g. a metric with no spread ranks nothing
        ids, source = None, f"cannot select: {e}"
    return SubsetRows(f"10_low_{metric}1 (not written: computed for this report)", report, ids, source)


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
        ("data check", run.notes.get("provenance", "the scores (and clusters) match the data's record")),
        ("subsets shown", len(run.subsets)),
        ("ranking metric of this report", ranking[1] if ranking else "none (no trained epoch)"),
    ]
    parts = [h.table(["item", "value"], facts, text_columns=(1,))]
    if "provenance" in run.notes:
        parts.append(h.note(f"Not checked: {run.notes['provenance']}"))
    steps = run.manifest.get("steps") or {}
    if not steps:
        parts.append(h.note("no manifest.json (or no steps in it)"))
    for name, record in steps.items():
        rows = _flatten(record) if isinstance(record, dict) else [("", record)]
        what = sorted({str(r[0]).split(".", 1)[0] for r in rows if "." in str(r[0])})
        label = f"step: {name}" + (f" ({', '.join(what)})" if what else "")
        parts.append(h.details(label, h.table(["field", "value"], rows, text_columns=(1,))))
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
            h.note("docs/method.md §6: on the reference's Alpaca perplexities this is about 0.81 (OPT-350M) to 0.88 "
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
    named = [r for r in (run.resolved or []) if r.ids is not None][:MAP_SUBSETS]
    member = np.zeros(len(x), dtype=np.int64)
    for j, r in enumerate(named):
        member[r.ids] |= 1 << j
    texts = None
    if run.dataset is not None:
        texts = [(datamap.cut(_prompt(run.dataset.samples[i])), datamap.cut(run.dataset.samples[i].output))
                 for i in shown]
    rows = datamap.MapRows(ids=shown, metric=x[shown], ppl=y[shown], band=summary.band_codes(x)[shown],
                           cluster=np.asarray(run.clusters)[shown] if by_cluster else None,
                           subsets=member[shown], texts=texts)
    body, clamped = datamap.render(rows, metric_name=label, ppl_name=f"final perplexity P{run.scores.n_epochs}",
                                   xlim=summary.view_range(x[ok]), subset_names=[r.name for r in named])
    how = "colour: cluster (20 colours, cycled)" if by_cluster else "colour: global 10 % bands of " + label
    sampled = (f"{len(shown):,} of {len(ok):,} rows drawn (a fixed-seed sample, seed 0)" if len(shown) < len(ok)
               else f"all {len(ok):,} rows with a value drawn")
    edge = f"; {clamped:,} beyond the 0.5-99.5 % range sit on the edge" if clamped else ""
    return [h.note(f"Hover a point for its row; click a band, subset or point to filter (click again to clear). "
                   f"Left = hard by {label}; up = still poorly fitted after the last epoch."), body,
            h.note(f"{sampled}{edge}; {how}.")]


def _subsets(run: RunData) -> list[str]:
    """The first-screen table: what each subset holds, in rows, share of the data and clusters reached."""
    resolved = run.resolved or []
    if not resolved:
        return [h.note("No subsets in this run, and no metric to select by (0 epochs).")]
    n = run.scores.n_rows
    rows = []
    for r in resolved:
        rep = r.report
        rule = _rule(rep)
        if r.ids is None:
            share = rep.get("share_percent")
            rows.append((r.name, rule, rep.get("n_selected") if rep.get("n_selected") is not None else "—",
                         f"{share:.1f} %" if isinstance(share, int | float) else "—", "—"))
            continue
        cov = summary.cluster_coverage(r.ids, run.clusters) if run.clusters is not None else None
        rows.append((r.name, rule, len(r.ids), f"{100 * len(r.ids) / max(n, 1):.1f} %",
                     f"{cov.n_clusters_hit:,} / {cov.n_clusters:,}" if cov else "no clusters"))
    parts = [h.table(["subset", "rule", "rows", "share", "clusters hit"], rows, text_columns=(0, 1))]
    if any(r.report.get("computed_here") for r in resolved):
        parts.append(h.note("No subset report in this run: the hardest 10 % is computed for this page "
                            "(lpselect select writes one; lpselect report --subsets finds others)."))
    unknown = [r.name for r in resolved if r.ids is None and not r.report.get("computed_here")]
    if unknown:
        parts.append(h.note(f"Cannot tell which rows {', '.join(unknown)} hold{'s' if len(unknown) == 1 else ''}: "
                            "not shown (see 'rows from' below).", warn=True))
    return parts


def _rule(report: dict[str, Any]) -> str:
    """How a subset was picked, in words: a band of a ranking, or a seeded random draw (a baseline names the
    subset whose size it took)."""
    if report.get("strategy") in ("random", "clust_rand"):
        like = f" of {report['baseline_of']}'s size" if report.get("baseline_of") else ""
        return f"{report['strategy']} draw{like}, seed {report.get('seed')}{_pool_rule(report)}"
    return (f"{report.get('band')} {h.fmt(report.get('percent'))} % by {report.get('metric')}({report.get('epoch')})"
            f"{_pool_rule(report)}")


def _pool_rule(report: dict[str, Any]) -> str:
    """The rows a subset was drawn from, when not all: max_value and --dedup, in words (empty otherwise)."""
    words = []
    if report.get("max_value") is not None:
        words.append(f"rows with {report.get('metric')} above {float(report['max_value']):g} left out")
    dedup = report.get("dedup")
    if isinstance(dedup, dict):
        removed = dedup.get("removed", 0)
        if dedup.get("mode") == "exact":
            words.append(f"after removing {removed} exact duplicates")
        else:
            words.append(f"after removing {removed} near-duplicates (cosine ≥ {float(dedup['threshold']):g})")
    return "".join(", " + w for w in words)


def _subset_details(run: RunData) -> list[str]:
    resolved = run.resolved or []
    if not resolved:
        return [h.note("No subsets in this run, and no metric to select by (0 epochs).")]
    rows, figs = [], []
    tokens = run.scores.columns.get("n_scored_tokens")
    categories = _categories(run.dataset)
    for k, r in enumerate(resolved):
        rep = r.report
        if r.ids is None:
            rows.append((r.name, rep.get("metric"), rep.get("epoch"), rep.get("percent"), rep.get("band"),
                         rep.get("strategy"), rep.get("n_selected"), "—", "—", r.source))
            continue
        cov = summary.cluster_coverage(r.ids, run.clusters) if run.clusters is not None else None
        rows.append((r.name, rep.get("metric"), rep.get("epoch"), rep.get("percent"), rep.get("band"),
                     rep.get("strategy"), rep.get("n_selected"), len(r.ids),
                     f"{cov.n_clusters_hit:,} / {cov.n_clusters:,}" if cov else "", r.source))
        if k < SUBSET_FIGURES:
            png = figures.subset_panels(
                coverage=cov, percent=float(rep["percent"]),
                tokens_all=tokens, tokens_selected=tokens[r.ids] if tokens is not None else None,
                categories=summary.category_shares(categories, r.ids) if categories else None)
            body = h.image(png, f"subset {r.name}") if png else h.note("nothing to compare")
            figs.append(f"<h3>{h.esc(r.name)}</h3>" + body)
    parts = [h.table(["subset", "metric", "epoch", "%", "band", "strategy", "rows (report)", "rows (shown)",
                      "clusters hit", "rows from"], rows, text_columns=(0, 9))]
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
    """The first-screen samples: the rows the metric ranks hardest and easiest, with the response that made them
    so (every number of theirs is in 'extreme-numbers')."""
    ranking = summary.main_metric(run.scores.ppl)
    if ranking is None:
        return [h.note("Needs at least one trained epoch to rank samples.")]
    _, label, values = ranking
    hardest, easiest = summary.extremes(values, N_EXTREMES)
    headers = ["id", label, *(["cluster"] if run.clusters is not None else [])]
    clip: tuple[int, ...] = ()
    if run.dataset is not None:
        headers += ["instruction", "response"]
        clip = (len(headers) - 2, len(headers) - 1)

    def rows(ids: np.ndarray) -> list[list[Any]]:
        out = []
        for i in ids:
            row: list[Any] = [int(i), float(values[i])]
            if run.clusters is not None:
                row.append(int(run.clusters[i]))
            if run.dataset is not None:
                s = run.dataset.samples[i]
                row += [datamap.cut(_prompt(s), TEXT_CHARS), datamap.cut(s.output, TEXT_CHARS)]
            out.append(row)
        return out

    parts = [f"<h3>{N_EXTREMES} hardest (lowest {h.esc(label)})</h3>",
             '<div class="scroll">' + h.table(headers, rows(hardest), clip_columns=clip) + "</div>",
             f"<h3>{N_EXTREMES} easiest (highest {h.esc(label)})</h3>",
             '<div class="scroll">' + h.table(headers, rows(easiest), clip_columns=clip) + "</div>"]
    if "data" in run.notes:
        parts.append(h.note(f"No instruction text: {run.notes['data']}"))
    return parts


def _extreme_numbers(run: RunData) -> list[str]:
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
        headers.append("category")

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
                row.append(run.dataset.samples[i].category or "")
            out.append(row)
        return out

    text_cols = (len(headers) - 1,) if run.dataset is not None else ()
    return [f"<h3>{N_EXTREMES} hardest (lowest {h.esc(label)})</h3>",
            h.table(headers, rows(hardest), text_columns=text_cols),
            f"<h3>{N_EXTREMES} easiest (highest {h.esc(label)})</h3>",
            h.table(headers, rows(easiest), text_columns=text_cols)]


def _quality(run: RunData) -> list[str]:
    parts = [h.table(["count", "rows"], summary.quality_counts(run.scores.ppl, run.scores.columns))]
    score_counts = ((run.manifest.get("steps") or {}).get("score") or {}).get("counts")
    if isinstance(score_counts, dict):
        parts += ["<h3>counts recorded by the score step</h3>",
                  h.table(["count", "value"], list(score_counts.items()))]
    parts.append(h.note("Rows with a NaN metric are never selected (docs/method.md §8); with --truncation right, a row "
                        "left without a response token is NaN (docs/method.md §4)."))
    return parts


# ---- helpers -----------------------------------------------------------------------------------------------


def _prompt(sample: Sample) -> str:
    """What the model was asked: the instruction and its input (chat: the user turns), as one text."""
    return f"{sample.instruction}\n\n{sample.input}" if sample.input.strip() else sample.instruction


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
