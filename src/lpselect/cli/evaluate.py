"""The evaluation commands ``judge``, ``eval`` and ``winrate`` (docs/method.md §10)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lpselect.cli.app import app, friendly, out
from lpselect.cli.config_options import config_options
from lpselect.config import GenerateConfig, JudgeConfig, ReviewFormat

#: the generation settings ``eval`` takes (greedy answers: no temperature or seed)
EVAL_GENERATION = ("testsets", "testset_dir", "limit", "max_new_tokens", "batch_size", "precision", "device")
# each command's help ends with these (typer's epilog; a line ending in a backslash goes on)
EXAMPLES_JUDGE = """Examples:
  lpselect judge --a answers/hard10.jsonl --b answers/all.jsonl \\
      --judge-model gpt-4o --out reviews.jsonl
  lpselect judge --a answers/hard10.jsonl --b answers/all.jsonl \\
      --backend local --judge-model models/judge --out reviews.jsonl"""
EXAMPLES_EVAL = """Examples:
  lpselect eval --a models/hard10 --b models/all --judge-model gpt-4o \\
      --out eval/hard10
  lpselect eval --a models/hard10 --b models/all --out eval/local \\
      --backend local --judge-model models/judge --device cuda"""
EXAMPLES_WINRATE = """Examples:
  lpselect winrate eval/hard10/reviews.jsonl
  lpselect winrate cherry/*_reviews_*.json --format cherry --plot wr.png"""


@app.command("judge", epilog=EXAMPLES_JUDGE)
@friendly
@config_options(JudgeConfig)
def judge_cmd(
    a: Annotated[Path, typer.Option("--a", rich_help_panel="Data", help="Answers of model A (JSONL: testset, "
                                                                        "id, question, answer, model).")],
    b: Annotated[Path, typer.Option("--b", rich_help_panel="Data", help="Answers of model B, same "
                                                                        "questions.")],
    judge_model: Annotated[str, typer.Option("--judge-model", rich_help_panel="Judge", help="Model name at the "
                                             "endpoint, or a model path (--backend local).")],
    out_path: Annotated[Path, typer.Option("--out", rich_help_panel="Output", help="Reviews file (JSONL) to "
                                                                                   "write.")],
    config: JudgeConfig,
    cache_dir: Annotated[Path | None, typer.Option("--cache", rich_help_panel="Output", help="Reply cache "
                                                   "folder (default: <out stem>.cache next to --out).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", rich_help_panel="Output", help="No progress bar.")] = False,
) -> None:
    """Ask a judge to grade A's and B's answers to every question, in both orders; write the reviews."""
    from lpselect.core.tally import tally
    from lpselect.evaluate.judge import build_judge, judge_files
    from lpselect.evaluate.report import report_table
    from lpselect.evaluate.reviews import model_labels, tally_rows

    chat = build_judge(config, judge_model)
    r = judge_files(a, b, out_path, chat, cache_dir=cache_dir, concurrency=config.concurrency,
                    parse_retries=config.parse_retries, progress=not quiet)
    out.print(f"reviews: {r.path}  ({len(r.reviews)} questions, {r.n_unparsed} unparsed, "
              f"{r.n_failed} failed (rerun to ask them again); "
              f"{r.stats.requests_sent} requests sent, {r.stats.cache_hits} replies from the cache)")
    label_a, label_b = model_labels(r.reviews, None, None)
    out.print(report_table(tally(tally_rows(r.reviews)), label_a, label_b))


@app.command("eval", epilog=EXAMPLES_EVAL)
@friendly
@config_options(JudgeConfig, skip=("device",), into="judging")
@config_options(GenerateConfig, only=EVAL_GENERATION, into="generation")
def eval_cmd(
    model_a: Annotated[str, typer.Option("--a", rich_help_panel="Model", help="Model A folder (e.g. trained on "
                                                                              "the subset).")],
    model_b: Annotated[str, typer.Option("--b", rich_help_panel="Model", help="Model B folder (e.g. trained on "
                                                                              "all data).")],
    judge_model: Annotated[str, typer.Option("--judge-model", rich_help_panel="Judge", help="Judge model name "
                                             "at the endpoint, or a model path (--backend local).")],
    out_dir: Annotated[Path, typer.Option("--out", rich_help_panel="Output", help="Folder for answers, reviews "
                                          "and the tally (re-running resumes every step).")],
    generation: GenerateConfig,
    judging: JudgeConfig,
    quiet: Annotated[bool, typer.Option("--quiet", rich_help_panel="Output", help="No progress bars.")] = False,
) -> None:
    """Generate both models' answers, judge them pairwise in both orders, and print the win rate
    (a local judge runs on --device too)."""
    from lpselect.evaluate.judge import build_judge
    from lpselect.evaluate.pipeline import evaluate_models
    from lpselect.evaluate.report import report_table

    chat = build_judge(judging.model_copy(update={"device": generation.device}), judge_model)
    r = evaluate_models(model_a, model_b, chat, out_dir, generation, concurrency=judging.concurrency,
                        parse_retries=judging.parse_retries, progress=not quiet)
    out.print(report_table(r.tally, r.label_a, r.label_b))
    out.print(f"answers: {r.answers_a}, {r.answers_b}\nreviews: {r.judged.path}  ({r.judged.n_unparsed} "
              f"unparsed, {r.judged.n_failed} failed: rerun to ask them again)\n"
              f"tally:   {r.winrate_json}, {r.winrate_png}")


@app.command("winrate", epilog=EXAMPLES_WINRATE)
@friendly
def winrate_cmd(
    reviews: Annotated[list[Path], typer.Argument(help="Review files (one per test set, or any mix).")],
    fmt: Annotated[ReviewFormat, typer.Option("--format", rich_help_panel="Data", help="own: `lpselect judge` "
                                              "JSONL; cherry: the Cherry-LLM study's *_reviews_*.json.")]
        = "own",
    plot: Annotated[Path | None, typer.Option("--plot", rich_help_panel="Output", help="Write a stacked-bar "
                                                                                       "chart (PNG).")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", rich_help_panel="Output", help="Write the tally as "
                                                                                            "JSON.")] = None,
    label_a: Annotated[str | None, typer.Option(rich_help_panel="Output", help="Name of model A in the table "
                                                                               "and chart.")] = None,
    label_b: Annotated[str | None, typer.Option(rich_help_panel="Output", help="Name of model B in the table "
                                                                               "and chart.")] = None,
) -> None:
    """Wins / ties / losses of A against B per test set and overall, and WR = (W - L) / N + 1."""
    from lpselect.core.tally import tally
    from lpselect.evaluate.report import report_json, report_table
    from lpselect.evaluate.reviews import model_labels, read_reviews, tally_rows
    from lpselect.runs.io import write_json

    rows = read_reviews(reviews, fmt)
    name_a, name_b = model_labels(rows, label_a, label_b)
    report = tally(tally_rows(rows))
    out.print(report_table(report, name_a, name_b))
    if json_path is not None:
        write_json(json_path, report_json(report, name_a, name_b))
        out.print(f"json: {json_path}")
    if plot is not None:
        from lpselect.evaluate.plot import plot_tally

        out.print(f"plot: {plot_tally(report, plot, name_a, name_b)}")
