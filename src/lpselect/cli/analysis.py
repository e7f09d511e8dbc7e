"""``lpselect compare``, ``lpselect stability`` and ``lpselect report``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lpselect.cli.app import app, friendly, out
from lpselect.cli.config_options import config_options
from lpselect.config import CompareSpec, StabilitySpec
from lpselect.errors import LPSelectError

# each command's help ends with these (typer's epilog)
EXAMPLES_COMPARE = """Examples:
  lpselect compare runs/smollm runs/qwen
  lpselect compare runs/dolly runs/dolly --metric lp --metric-b lp_app
  lpselect compare runs/s42 runs/s43 runs/s44 --all --method kendall"""
EXAMPLES_STABILITY = """Examples:
  lpselect stability runs/s42 runs/s43 runs/s44
  lpselect stability runs/s42 runs/s43 --percent 5 --json stability.json"""
EXAMPLES_REPORT = """Examples:
  lpselect report runs/dolly
  lpselect report runs/dolly --subsets picked/ --out dolly.html"""


@app.command("compare", epilog=EXAMPLES_COMPARE)
@friendly
@config_options(CompareSpec, only=["metric", "epoch", "metric_b", "epoch_b", "percent", "band", "method"],
                into="spec")
def compare_cmd(
    ctx: typer.Context,
    runs: Annotated[list[Path], typer.Argument(metavar="RUN_OR_SCORES...", help="Two run folders or "
                                                    "scores.parquet files (with --all: two or more).")],
    spec: CompareSpec,
    clusters: Annotated[Path | None, typer.Option("--clusters", help="clusters.parquet (or a run folder): "
                                                                     "adds the per-cluster overlap.")] = None,
    all_runs: Annotated[bool, typer.Option("--all", help="Print the correlation matrix of all the runs "
                                                         "given.")] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the numbers here.")] = None,
) -> None:
    """How far two scorers agree: rank correlation of a metric and overlap of the selections it makes."""
    from lpselect.analysis.compare import compare_many, compare_runs
    from lpselect.runs.io import write_json

    if all_runs:
        m = compare_many(runs, spec)
        table = Table(title=f"{spec.method} of {m.metric}({spec.epoch}) between runs (NaN rows dropped per pair)")
        table.add_column("")
        for name in m.names:
            table.add_column(name, justify="right")
        for i, name in enumerate(m.names):
            table.add_row(name, *(_num(v) for v in m.values[i]))
        out.print(table)
        _print_notes(m.notes)
        if json_path is not None:
            write_json(json_path, {"metric": m.metric, "epoch": spec.epoch, "method": spec.method, "names": m.names,
                                   "values": [[_json_num(v) for v in row] for row in m.values],
                                   "n": m.n.tolist(), "notes": m.notes})
        return
    if len(runs) != 2:
        raise LPSelectError(f"give exactly two runs to compare (got {len(runs)}); use --all for a matrix")
    c = compare_runs(runs[0], runs[1], spec, clusters=clusters)
    table = Table(title=f"{c.a}: {c.metric_a}({c.epoch_a})  vs  {c.b}: {c.metric_b}({c.epoch_b})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    cor = c.correlation
    table.add_row("rows compared", f"{cor.n:,} of {c.n_rows:,} ({cor.n_dropped:,} with a NaN dropped)")
    table.add_row("Spearman rho", _num(cor.spearman))
    table.add_row("Kendall tau-b", _num(cor.kendall))
    ov = c.overlap
    sel = f"{ov.band} {ov.percent:g} %"
    for label, o in ((f"{sel}, global ranking", ov.global_), (f"{sel}, per-cluster selection", ov.clustered)):
        if o is not None:
            table.add_row(f"{label}: |A|, |B|, |A∩B|", f"{o.n_a:,}, {o.n_b:,}, {o.n_common:,}")
            table.add_row(f"{label}: overlap |A∩B|/|A|", _num(o.fraction))
            table.add_row(f"{label}: Jaccard", _num(o.jaccard))
    if ov.per_cluster:
        frac, jac = ov.mean_per_cluster()
        table.add_row(f"{sel}: mean over {len(ov.per_cluster):,} clusters, overlap / Jaccard",
                      f"{_num(frac)} / {_num(jac)}")
    out.print(table)
    _print_notes(c.notes)
    if json_path is not None:
        write_json(json_path, c.to_dict())


@app.command("stability", epilog=EXAMPLES_STABILITY)
@friendly
@config_options(StabilitySpec, only=["metric", "epoch", "percent", "band"], into="spec")
def stability_cmd(
    ctx: typer.Context,
    runs: Annotated[list[Path], typer.Argument(metavar="RUN...", help="Two or more run folders (or "
                                                                       "scores.parquet files) of the same data.")],
    spec: StabilitySpec,
    clusters: Annotated[Path | None, typer.Option("--clusters", help="clusters.parquet (or a run folder) for "
                                                                     "every run; default: each run's own "
                                                                     "clusters.parquet, else global "
                                                                     "ranking.")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the numbers here.")] = None,
) -> None:
    """How much a selection depends on the run: overlap of every pair of runs' subsets, and of the consensus
    subset (mean rank across the runs) with each run."""
    from lpselect.analysis.stability import mean_overlap, stability_runs
    from lpselect.runs.io import write_json

    s = stability_runs(runs, spec, clusters=clusters)
    rule = "per cluster" if s.consensus_clusters else "global ranking"
    table = Table(title=f"{spec.band} {spec.percent:g} % by {spec.metric}({spec.epoch}), {rule}: overlap of the "
                        f"selections ({s.n_rows:,} rows)")
    for col, justify in (("A", "left"), ("B", "left"), ("|A|", "right"), ("|B|", "right"), ("|A∩B|", "right"),
                         ("|A∩B|/|A|", "right"), ("Jaccard", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    ov = s.overlaps
    rows = [(s.runs[i], s.runs[j], o) for (i, j), o in ov.pairs.items()]
    rows += [("consensus", s.runs[i], o) for i, o in enumerate(ov.consensus)]
    for k, (a, b, o) in enumerate(rows):
        table.add_row(a, b, f"{o.n_a:,}", f"{o.n_b:,}", f"{o.n_common:,}", _num(o.fraction), _num(o.jaccard),
                      end_section=k == len(ov.pairs) - 1)
    out.print(table)
    pair, cons = mean_overlap(list(ov.pairs.values())), mean_overlap(ov.consensus)
    nan = ", ".join(f"{name} {n:,}" for name, n in zip(s.runs, ov.n_nan, strict=True))
    out.print(f"mean over pairs: overlap {_num(pair['fraction'])}, Jaccard {_num(pair['jaccard'])}; consensus vs "
              f"each run: overlap {_num(cons['fraction'])}, Jaccard {_num(cons['jaccard'])}\n"
              f"rows without a value (never selected): {nan}; consensus {ov.consensus_n_nan:,}")
    _print_notes(s.notes)
    if json_path is not None:
        write_json(json_path, s.to_dict())


@app.command("report", epilog=EXAMPLES_REPORT)
@friendly
def report_cmd(
    ctx: typer.Context,
    run_dir: Annotated[Path, typer.Argument(help="Run folder (scores.parquet, manifest.json, ...).")],
    out_path: Annotated[Path | None, typer.Option("--out", help="HTML file to write "
                                                                "(default RUN_DIR/report.html).")] = None,
    subsets: Annotated[list[Path] | None, typer.Option(
        "--subsets", help="A subset written outside RUN_DIR/subsets (the subset file, its "
                                          ".report.json, or a folder of them); repeat for more.")] = None,
) -> None:
    """Write one self-contained HTML page: subsets, data map and hardest/easiest samples first, then
    distributions, agreement and the run's configuration."""
    from lpselect.analysis.report import write_report

    out.print(f"report: {write_report(run_dir, out_path, subsets or ())}", markup=False, highlight=False,
              soft_wrap=True)


def _print_notes(notes: list[str]) -> None:
    """What could not be checked about the tables' data (e.g. imported reference scores): said, not hidden."""
    for note in notes:
        out.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)


def _num(v: float) -> str:
    return "NaN" if math.isnan(v) else f"{v:.4f}"


def _json_num(v: float) -> float | None:
    return None if math.isnan(v) else float(v)
