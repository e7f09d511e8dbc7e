"""The pipeline commands (score, plan, cluster, select, run, demo, the reference's pickles, env): each a thin
layer that parses options, calls the Python API and prints results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from lpselect.cli.app import DataOpt, FieldsOpt, ForceOpt, OutRun, QuietOpt, app, friendly, out
from lpselect.cli.config_options import config_options
from lpselect.config import BillConfig, ClusterConfig, ScoreConfig, SubsetSpec
from lpselect.errors import LPSelectError

# each command's help ends with these (typer's epilog; a line ending in a backslash goes on)
EXAMPLES_SCORE = """Examples:
  lpselect score --data dolly.jsonl --out runs/dolly
  lpselect score --data dolly.jsonl --out runs/dolly --epochs 1 --lora
  lpselect score --data qa.jsonl --out runs/qa --fields output=answer"""
EXAMPLES_PLAN = """Examples:
  lpselect plan --data dolly.jsonl
  lpselect plan --data dolly.jsonl --epochs 1 --peak-tflops 989 --gpu H200
  lpselect plan --data dolly.jsonl --target-params 7B --percent 5 --percent 10"""
EXAMPLES_CLUSTER = """Examples:
  lpselect cluster --data dolly.jsonl --out runs/dolly
  lpselect cluster --data dolly.jsonl --out runs/dolly --k 100 --kmeans faiss"""
EXAMPLES_SELECT = """Examples:
  lpselect select --data dolly.jsonl --scores runs/dolly/scores.parquet \\
      --clusters runs/dolly/clusters.parquet --out hard10.jsonl
  lpselect select --data dolly.jsonl --scores runs/dolly/scores.parquet \\
      --strategy global --metric ppl --percent 5 --out ppl5.jsonl
  lpselect select --data dolly.jsonl --scores runs/dolly/scores.parquet \\
      --clusters runs/dolly/clusters.parquet --strategy clust_rand \\
      --like hard10.jsonl --out hard10.clust_rand.jsonl"""
EXAMPLES_RUN = """Examples:
  lpselect run dolly.yaml
  lpselect run dolly.yaml --dry-run
  lpselect run dolly.yaml --set score.epochs=2 --set out=runs/e2"""
EXAMPLES_DEMO = """Examples:
  lpselect demo
  lpselect demo --out runs/demo2 --quiet"""
EXAMPLES_IMPORT_REFERENCE = """Examples:
  lpselect import-reference --pplx epoch-pre.pkl --pplx epoch-1.pkl \\
      --out runs/ref
  lpselect import-reference --pplx epoch-pre.pkl --pplx epoch-1.pkl \\
      --clustering clustering.pkl --out runs/ref"""
EXAMPLES_EXPORT_REFERENCE = """Examples:
  lpselect export-reference --scores runs/dolly/scores.parquet --out pkl
  lpselect export-reference --scores runs/dolly/scores.parquet --out pkl \\
      --clusters runs/dolly/clusters.parquet --data dolly.jsonl"""
EXAMPLES_ENV = """Examples:
  lpselect env
  lpselect env --json"""


@app.command("score", epilog=EXAMPLES_SCORE)
@friendly
@config_options(ScoreConfig)
def score_cmd(
    data: DataOpt,
    out_dir: OutRun,
    config: ScoreConfig,
    seeds: Annotated[str | None, typer.Option(rich_help_panel="Training", help="Several scorer seeds, e.g. "
                                              "42,43,44: one run folder each (OUT/seed-42, ...), P0 computed once; "
                                              "select then takes one --scores per seed for a consensus "
                                              "ranking.")] = None,
    fields: FieldsOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Fine-tune the scorer on all samples; write each sample's perplexity before and after every epoch."""
    from lpselect.data.formats import parse_fields
    from lpselect.steps.score import score

    mapping = parse_fields(fields)
    if seeds is None:
        _print_score(score(data, out_dir, config, force=force, progress=not quiet, fields=mapping))
        return
    from lpselect.steps.seeds import parse_seeds, score_seeds

    try:
        seed_list = parse_seeds(seeds)
    except ValueError as e:  # the user's --seeds
        raise LPSelectError(str(e)) from None
    results = score_seeds(data, out_dir, config, seed_list, force=force, progress=not quiet, fields=mapping)
    for r in results:
        _print_score(r)
    out.print("consensus: lpselect select --data ... " + " ".join(f"--scores {r.scores_path}" for r in results)
              + " --out ...")


def _print_score(r: Any) -> None:
    out.print(f"scores: {r.scores_path}  ({r.n_rows} rows, {r.n_nan} without a score, "
              f"{r.n_truncated} truncated, {r.n_prompt_shortened} with a shortened prompt, "
              f"{r.n_empty_outputs} with an empty output, {r.n_duplicates} duplicates of an earlier row)")


# score options a plan has no use for: it probes in one process and writes nothing
PLAN_IGNORES = ("save_steps", "save_minutes", "keep_checkpoint", "pass_chunk_rows", "fsdp")


@app.command("plan", epilog=EXAMPLES_PLAN)
@friendly
@config_options(ScoreConfig, skip=PLAN_IGNORES)
@config_options(ClusterConfig, only=["embedder", "max_seq_length", "embed_chunk_rows"], into="cluster")
@config_options(BillConfig, into="target")
def plan_cmd(
    ctx: typer.Context,
    data: DataOpt,
    config: ScoreConfig,
    cluster: ClusterConfig,
    target: BillConfig,
    embed: Annotated[bool, typer.Option(rich_help_panel="Clustering", help="Also estimate cluster's sentence "
                                                                           "embedding.")] = True,
    probe_seconds: Annotated[float, typer.Option(rich_help_panel="Estimate", help="Time the probe may spend on "
                                                 "timed units (after two warm-up units per phase; at least two "
                                                 "units each).")] = 20.0,
    peak_tflops: Annotated[float | None, typer.Option(rich_help_panel="Estimate", help="Also estimate for a GPU of "
                                                      "this dense bf16 peak, e.g. 989 (H100/H200 SXM).")] = None,
    gpu: Annotated[str | None, typer.Option(rich_help_panel="Estimate", help="The name of that GPU, for the "
                                                                             "table.")] = None,
    mfu: Annotated[float, typer.Option(rich_help_panel="Estimate", help="Share of --peak-tflops the GPU estimate "
                                                                        "assumes (model FLOPs utilisation).")] = 0.4,
    json_out: Annotated[Path | None, typer.Option("--json", rich_help_panel="Output", help="Also write the plan as "
                                                                                           "JSON.")] = None,
    fields: FieldsOpt = None,
) -> None:
    """Estimate a score job's tokens, FLOPs and wall time per phase on this machine (a short probe), before
    any training. It takes the options of `score` that shape the job's cost, and cluster's embedder. With a
    target (--target-model or --target-params) it also sets the selection's FLOPs against the target training
    each subset saves."""
    from lpselect.data.formats import parse_fields
    from lpselect.steps.bill import price, resolve_target
    from lpselect.steps.plan import plan

    mapping = parse_fields(fields)
    named = resolve_target(target, _given_flags(ctx, ("percent", "target_epochs")))  # before the probe: refused at once
    p = plan(data, config, probe_seconds=probe_seconds, embed=embed, cluster=cluster,
             peak_tflops=peak_tflops, utilisation=mfu, gpu_name=gpu, fields=mapping)
    _print_plan(p)
    bill = price(p, target, named) if named is not None else None
    if bill is not None:
        _print_bill(bill, p, config.max_length)
    if json_out is not None:
        from dataclasses import asdict

        from lpselect.runs.io import write_json

        write_json(json_out, {**p.to_dict(), "bill": asdict(bill) if bill is not None else None})
        out.print(f"plan: {json_out}")


def _print_plan(p: Any) -> None:
    from lpselect.core.costs import format_count, format_seconds

    out.print(f"{p.data}: {p.rows:,} rows, {p.tokens:,} tokens ({p.tokens / max(p.rows, 1):.0f} a row), "
              f"{p.scored_tokens:,} scored\nscorer: {p.model} ({format_count(p.parameters)} parameters), "
              f"{p.device}, {p.precision}; probe: {p.probe_seconds:.0f} s")
    table = Table(title=f"score --epochs {p.epochs}" + (" + cluster's embedding" if any(
        ph.kind == "embed" for ph in p.phases) else ""))
    gpu = p.gpu and f"{p.gpu['name']} {p.gpu['utilisation']:.0%}"
    for col in ["phase", "tokens", "FLOPs", "here", "timed"] + ([gpu] if gpu else []):
        table.add_column(col, justify="left" if col == "phase" else "right")
    for ph in p.phases:
        row = [ph.name, f"{ph.tokens:,}" if ph.tokens is not None else "",
               f"{ph.flops:.2e}" if ph.flops is not None else "", format_seconds(ph.seconds),
               "all" if ph.measured else f"{ph.units_timed}/{ph.units:,}"]
        if gpu:
            row.append(format_seconds(ph.gpu_seconds) if ph.gpu_seconds is not None else "")
        table.add_row(*row)
    gpu_total = [format_seconds(sum(ph.gpu_seconds or 0 for ph in p.phases))] if gpu else []
    table.add_row("total", "", "", format_seconds(p.total_seconds), "", *gpu_total)
    out.print(table)
    out.print("here: estimated on this machine from the timed units (timed/all of them); "
              + (f"{gpu}: at {p.gpu['utilisation']:.0%} of {p.gpu['peak_tflops']:g} TFLOP/s; " if gpu else "")
              + "k-means and the report are not included.")


def _given_flags(ctx: typer.Context, names: tuple[str, ...]) -> set[str]:
    """The flags among ``names`` (parameter names) given on the command line or by environment, not defaulted:
    a value equal to the default was still asked for."""
    sources = {n: ctx.get_parameter_source(n) for n in names}
    return {"--" + n.replace("_", "-") for n, source in sources.items()
            if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")}


def _flops(x: float) -> str:
    """3.33e8, -2.1e16: a FLOP count in few characters (three significant digits)."""
    mantissa, exponent = f"{x:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _print_bill(b: Any, p: Any, max_length: int | None) -> None:
    from lpselect.core.costs import format_count, format_seconds

    gpu = p.gpu and f"{p.gpu['name']} {p.gpu['utilisation']:.0%}"
    on_gpu = f", {format_seconds(b.selection_gpu_seconds)} on {gpu}" if gpu else ""
    size = (f"{format_count(b.target_parameters)} total, {format_count(b.target_active_parameters)} active per "
            f"token; {b.ratio:.1f}x the scorer's" if b.target_active_parameters < b.target_parameters else
            f"{format_count(b.target_parameters)} parameters = {b.ratio:.1f}x the scorer's")
    out.print(f"target: {b.target} ({size}), {b.target_epochs} epochs; selection: {_flops(b.selection_flops)} "
              f"FLOPs{on_gpu}", markup=False, highlight=False)
    from rich import box

    # no vertical rules: nine columns fit 80 characters
    table = Table(title="the bill: the target's training on all rows and on each subset", box=box.SIMPLE_HEAD,
                  show_edge=False, pad_edge=False, collapse_padding=True)
    gpu_cols = ["GPU time", "GPU time saved"] if gpu else []
    for col in ["subset", "rows", "tokens", "FLOPs", "saved", "net", "pays", *gpu_cols]:
        table.add_column(col, justify="left" if col == "subset" else "right")
    table.add_row("all", f"{b.rows:,}", f"{b.tokens:,}", _flops(b.full_flops), "", "", "",
                  *([format_seconds(b.full_gpu_seconds), ""] if gpu else []))
    for s in b.subsets:
        row = [f"{s.percent:g} %", f"{s.rows:,}", f"{s.tokens:,.0f}", _flops(s.target_flops),
               _flops(s.saved_flops), _flops(s.net_flops), "yes" if s.pays else "no"]
        if gpu:
            row += [format_seconds(s.target_gpu_seconds), format_seconds(s.saved_gpu_seconds)]
        table.add_row(*row)
    out.print(table)
    n_is = "active parameters per token" if b.target_active_parameters < b.target_parameters else "parameters"
    cut = f"each row cut at --max-length {max_length}" if max_length else "rows not cut"
    out.print(f"FLOPs: {4 if b.target_lora else 6}·N x tokens x {b.target_epochs} epochs, N the target's {n_is}; "
              f"tokens counted with the scorer's tokenizer, {cut} (a target with another tokenizer counts other "
              "tokens; one trained with a longer max length trains more). A subset's tokens are estimated: its rows "
              "(round(rows x p / 100), as select --exact; the paper's parts rule takes a little more) x the mean "
              f"tokens a row ({b.mean_tokens_per_row:.0f}). saved: all rows minus the subset; net: saved minus "
              "the selection (score's passes and epochs; cluster's embedding not counted); pays: net > 0, for one "
              "training of the target; with score --seeds s1,s2,... the selection costs that many times its FLOPs."
              + (f" GPU time: at {gpu}." if gpu else ""), markup=False, highlight=False)
    if b.warning:
        out.print(f"warning: {b.warning}", markup=False, highlight=False)


@app.command("cluster", epilog=EXAMPLES_CLUSTER)
@friendly
@config_options(ClusterConfig)
def cluster_cmd(
    data: DataOpt,
    out_dir: OutRun,
    config: ClusterConfig,
    fields: FieldsOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Embed every sample (all-MiniLM-L6-v2) and cluster the embeddings with k-means."""
    from lpselect.data.formats import parse_fields
    from lpselect.steps.cluster import cluster

    r = cluster(data, out_dir, config, force=force, progress=not quiet, fields=parse_fields(fields))
    out.print(f"clusters: {r.clusters_path}  (k used: {r.k_used}, asked: {r.k_requested})")


@app.command("select", epilog=EXAMPLES_SELECT)
@friendly
@config_options(SubsetSpec, only=["metric", "epoch", "percent", "exact", "n", "band", "strategy", "order", "seed",
                                  "max_value", "trajectory_k", "dedup"])
def select_cmd(
    ctx: typer.Context,
    data: DataOpt,
    scores: Annotated[list[Path], typer.Option("--scores", metavar="<path>", rich_help_panel="Data",
                                               help="scores.parquet from `lpselect score`; repeat it to rank by the "
                                                    "mean rank across runs (e.g. scorer seeds).")],
    out_path: Annotated[Path, typer.Option("--out", rich_help_panel="Output", help="Subset file, written in the "
                                                                                   "input's format.")],
    config: SubsetSpec,
    clusters: Annotated[Path | None, typer.Option("--clusters", rich_help_panel="Data", help="clusters.parquet "
                                                  "(needed by strategies cluster, clust_rand).")] = None,
    like: Annotated[Path | None, typer.Option("--like", metavar="SUBSET", rich_help_panel="Selection",
                                              help="A random baseline of this subset (its .report.json beside it): "
                                                   "--strategy random or clust_rand, exactly as many rows (clust_rand: "
                                                   "as many from each cluster), from the same pool: --metric, "
                                                   "--epoch, --max-value, --dedup and --percent come from its "
                                                   "report (a different one given is refused); --seed too, "
                                                   "unless given.")] = None,
    fields: FieldsOpt = None,
) -> None:
    """Keep one band of every cluster, ranked by a metric (docs/method.md §8); write the subset, report, card."""
    from lpselect.data.formats import parse_fields
    from lpselect.steps.select import select_baseline, select_subset

    mapping = parse_fields(fields) or None
    if like is None:
        r = select_subset(data, scores, out_path, config, clusters=clusters, fields=mapping)
    elif config.n is not None:
        raise LPSelectError("--like takes the size from the subset's report: leave --n out")
    else:  # only the settings given on the command line: the others come from the subset's report
        r = select_baseline(data, scores, out_path, like, _given_only(ctx, config), clusters=clusters, fields=mapping)
    out.print(f"subset: {r.path}  ({r.report['n_selected']} of {r.report['n_rows']} rows = "
              f"{r.report['share_percent']:.1f} %; {r.report['n_nan_left_out']} without a score left out)\n"
              f"report: {r.report_path}\n"
              f"card:   {r.report['card']}" + (f"  ({r.report['card_note']})" if r.report["card_note"] else ""))
    if r.report["baseline_of"]:
        out.print(f"baseline of {r.report['baseline_of']}: {r.report['strategy']}, seed {r.report['seed']}",
                  markup=False, highlight=False)
    if r.report["dedup"]:
        out.print(f"dedup: {r.report['dedup']['removed']} of {r.report['dedup']['rows']} rows removed before "
                  "selecting (see the report)", markup=False, highlight=False)
    for note in r.report["provenance_notes"]:
        out.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)


def _given_only(ctx: typer.Context, config: SubsetSpec) -> SubsetSpec:
    """``config`` with only the flags given on the command line set (``model_fields_set``), so select_baseline
    can tell a setting the user chose from a default."""
    def given(name: str) -> bool:
        source = ctx.get_parameter_source(name)
        return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")

    return SubsetSpec(**{name: getattr(config, name) for name in SubsetSpec.model_fields if given(name)})


@app.command("run", epilog=EXAMPLES_RUN)
@friendly
def run_cmd(
    config: Annotated[Path, typer.Argument(help="YAML run config (see docs: data, out, score, cluster, select).")],
    sets: Annotated[list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help="Override a key of the "
                                                   "config, e.g. --set score.epochs=2 (repeatable; the value is "
                                                   "YAML).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and the steps it would "
                                                            "run, and stop.")] = False,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Run score -> cluster -> select (a grid of metrics x epochs x percents x bands) into one run folder.
    Relative data and out paths in the file are resolved against the file's folder."""
    from lpselect.steps.pipeline import dry_run as plan_steps
    from lpselect.steps.pipeline import load_run_config, run_pipeline

    cfg = load_run_config(config, sets=sets or [])
    if dry_run:
        for line in plan_steps(cfg):
            out.print(line, markup=False, highlight=False, soft_wrap=True)
        return
    _print_run(run_pipeline(cfg, force=force, progress=not quiet))


@app.command("demo", epilog=EXAMPLES_DEMO)
@friendly
def demo_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="Run folder.")] = Path("runs/demo"),
    quiet: QuietOpt = False,
) -> None:
    """The whole pipeline offline on the bundled demo data with SmolLM2-135M-Instruct."""
    from lpselect.demo import run_demo

    r, preview = run_demo(out_dir, progress=not quiet)
    _print_run(r)
    table = Table(title="hardest selected samples (lowest LP_app(1)), first 10")
    for col in ("id", "category", "LP_app(1)", "P0", "P1", "instruction"):
        table.add_column(col, overflow="fold")
    for row in preview:
        table.add_row(*row)
    out.print(table)


@app.command("import-reference", epilog=EXAMPLES_IMPORT_REFERENCE)
@friendly
def import_reference_cmd(
    pplx: Annotated[list[Path], typer.Option("--pplx", metavar="<path>", rich_help_panel="Data",
                                             help="epoch-pre.pkl epoch-1.pkl ... in epoch order (repeat the "
                                                  "option).")],
    out_dir: OutRun,
    clustering: Annotated[Path | None, typer.Option("--clustering", rich_help_panel="Data", help="The reference's "
                                                                                                "clustering "
                                                                                                "pickle.")] = None,
    keep_reference_ones: Annotated[bool, typer.Option("--keep-reference-ones", rich_help_panel="Data",
                                                      help="Keep rows that are 1.0 at every epoch as values (the "
                                                           "reference's behaviour) instead of NaN.")] = False,
) -> None:
    """Convert the reference implementation's pickles into scores.parquet / clusters.parquet."""
    from lpselect.interop.reference import import_reference

    r = import_reference(list(pplx), out_dir, clustering=clustering, keep_reference_ones=keep_reference_ones)
    out.print(f"scores: {r.scores_path}  ({r.n_rows} rows, {r.n_no_token_rows} marked 1.0 at every epoch"
              f"{' kept' if keep_reference_ones else ' -> NaN'})" + (f"\nclusters: {r.clusters_path}"
                                                                    if r.clusters_path else ""))


@app.command("export-reference", epilog=EXAMPLES_EXPORT_REFERENCE)
@friendly
def export_reference_cmd(
    scores: Annotated[Path, typer.Option("--scores", rich_help_panel="Data", help="scores.parquet")],
    out_dir: Annotated[Path, typer.Option("--out", rich_help_panel="Output", help="Folder for epoch-pre.pkl, "
                                                                                  "epoch-1.pkl, ...")],
    clusters: Annotated[Path | None, typer.Option("--clusters", rich_help_panel="Data", help="clusters.parquet -> "
                                                                                             "clustering.pkl")] = None,
    data: Annotated[Path | None, typer.Option("--data", rich_help_panel="Data", help="Data, for the clustering's "
                                                                                     "embed_sentence.")] = None,
) -> None:
    """Write scores (and clusters) back in the reference implementation's pickle format."""
    from lpselect.interop.reference import export_reference

    for p in export_reference(scores, out_dir, clusters=clusters, data=data):
        out.print(str(p))


@app.command("env", epilog=EXAMPLES_ENV)
def env_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead.")] = False,
) -> None:
    """Versions, device, CPU features, threads, the precision auto picks and the offline models: paste it into
    a bug report."""
    import json

    from lpselect.environment import environment

    info = environment()
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo("Copy-and-paste the text below in your bug report.\n")
    for key, value in info.items():
        typer.echo(f"- {key}: {value}")


def _print_run(r: Any) -> None:
    out.print(f"run folder: {r.run_dir}\nscores:     {r.scores_path}")
    if r.clusters_path:
        out.print(f"clusters:   {r.clusters_path}")
    for s in r.subsets:
        out.print(f"subset:     {s.path}  ({s.report['n_selected']} of {s.report['n_rows']} rows = "
                  f"{s.report['share_percent']:.1f} %)")
    if r.report_path:
        out.print(f"report:     {r.report_path}")
