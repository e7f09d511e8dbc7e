"""``lpselect show RUN``: the hardest and easiest rows of a run in the terminal, overall and per cluster, with
their metric, instruction and response, without opening the report."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from lpselect.cli.app import app, friendly
from lpselect.errors import LPSelectError

# the help ends with these (typer's epilog)
EXAMPLES_SHOW = """Examples:
  lpselect show runs/dolly
  lpselect show runs/dolly --per-cluster --k 3
  lpselect show runs/dolly --cluster 7 --metric ppl | less -S"""
PIPE_WIDTH = 120  # the width of a line when stdout is not a terminal: fixed, so a pipe or grep sees whole rows


def _echo(line: str) -> None:
    """One line on stdout; a reader that stopped reading (``| head``) ends the command quietly, not as a bug."""
    try:
        typer.echo(line)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        raise typer.Exit(0) from None


def line_width() -> int:
    """The terminal's width; :data:`PIPE_WIDTH` when stdout is not a terminal (never the 80 of a guess)."""
    if sys.stdout.isatty():
        return max(shutil.get_terminal_size().columns, 40)
    return PIPE_WIDTH


@app.command("show", epilog=EXAMPLES_SHOW)
@friendly
def show_cmd(
    ctx: typer.Context,
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="Run folder (scores.parquet, manifest.json, "
                                                                "clusters.parquet if clustered).")],
    metric: Annotated[str | None, typer.Option(help="Metric to rank by (lp, lp_app, ppl, ifd, ...); default: lp "
                                                    "when the run trained 2+ epochs, else lp_app.")] = None,
    epoch: Annotated[int, typer.Option(help="Epoch i of the metric.")] = 1,
    k: Annotated[int, typer.Option("--k", min=1, help="Rows shown at each end (hardest, easiest).")] = 5,
    cluster: Annotated[int | None, typer.Option("--cluster", help="Only this cluster's rows.")] = None,
    per_cluster: Annotated[bool, typer.Option("--per-cluster", help="Also the hardest and easiest rows of "
                                                                    "every cluster.")] = False,
    data: Annotated[Path | None, typer.Option("--data", help="The run's instruction data; default: the file "
                                                             "its manifest.json records.")] = None,
) -> None:
    """Print the hardest and easiest rows of a run (id, metric, instruction → response), one row a line, cut
    to the terminal's width (120 columns when piped). Rows without a value are left out and counted."""
    from lpselect.analysis import runio
    from lpselect.analysis.compare import default_metric
    from lpselect.analysis.show import cut, extremes, row_line
    from lpselect.core.metrics import HARD_END, METRICS
    from lpselect.data.formats import read_dataset
    from lpselect.data.provenance import verify_data, verify_tables
    from lpselect.runs.layout import CLUSTERS

    scores = runio.read_scores(run_dir)
    metric = metric or default_metric(scores)
    if metric not in HARD_END:
        raise LPSelectError(f"--metric {metric}: unknown; expected one of {', '.join(METRICS)}")
    values = runio.metric_values(scores, metric, epoch)
    manifest = runio.read_manifest(scores.path.parent)
    notes: list[str] = []
    if data is not None:
        dataset = read_dataset(data, fields=runio.fields_of(manifest))
    else:
        path = runio.data_path_of(manifest)
        dataset, why = runio.try_read_dataset(path, scores.n_rows, fields=runio.fields_of(manifest))
        if dataset is None:
            raise LPSelectError(f"{run_dir}: cannot show the rows' text: {why}; give the data with --data")
    if len(dataset) != scores.n_rows:
        raise LPSelectError(f"{dataset.path} has {len(dataset)} rows but {scores.path} has {scores.n_rows}: "
                            "not the run's data")
    if note := verify_data(dataset, scores.path):
        notes.append(note)

    labels = None
    clusters_path = scores.path.parent / CLUSTERS
    if per_cluster or cluster is not None:
        if not clusters_path.exists():
            raise LPSelectError(f"{run_dir}: no {CLUSTERS}, so there are no clusters to show (run "
                                "`lpselect cluster` into this folder first)")
        labels = runio.read_clusters(clusters_path, scores.n_rows)
        notes += [n for n in verify_tables([scores.path, clusters_path]) if n not in notes]
        if cluster is not None and cluster not in set(labels.tolist()):
            raise LPSelectError(f"--cluster {cluster}: no such cluster in {clusters_path} (labels "
                                f"{int(labels.min())}..{int(labels.max())})")

    hard_end = HARD_END[metric]
    ex = extremes(values, k, hard_end, labels)
    width = line_width()
    id_width = max(len(str(scores.n_rows - 1)), 2)
    name = f"{metric}({epoch})"

    def rows(title: str, ids: list[int]) -> None:
        _echo(title)
        for i in ids:
            s = dataset.samples[i]
            _echo(row_line(i, float(values[i]), s.instruction, s.output, width, id_width))

    lowest = "lowest" if hard_end == "low" else "highest"
    _echo(cut(f"{name} (hardest = {lowest}), {scores.n_rows:,} rows of {run_dir}; id, value, instruction → "
              "response", width))
    if cluster is None:
        rows(f"hardest {len(ex.hardest)}", ex.hardest)
        rows(f"easiest {len(ex.easiest)}", ex.easiest)
    for c, (hard, easy) in ex.per_cluster.items():
        if cluster is not None and c != cluster:
            continue
        size = int((labels == c).sum()) if labels is not None else 0
        rows(f"cluster {c} ({size:,} rows): hardest {len(hard)}", hard)
        rows(f"cluster {c}: easiest {len(easy)}", easy)
    n_nan = ex.nan_per_cluster.get(cluster, 0) if cluster is not None else ex.n_nan
    where = f"of cluster {cluster} " if cluster is not None else ""
    _echo(f"{n_nan:,} rows {where}without a {name} value (NaN) left out")
    for note in notes:
        _echo(f"note: {note}")
