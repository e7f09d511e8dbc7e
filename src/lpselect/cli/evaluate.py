"""The evaluation commands ``judge`` and ``winrate`` (SPEC §10), added to the main app by :func:`register`."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer


class Backend(str, Enum):
    openai = "openai"
    local = "local"


class ReviewFormat(str, Enum):
    own = "own"
    cherry = "cherry"


def _make_backend(backend: Backend, judge_model: str, *, base_url: str, api_key_env: str, temperature: float,
                  max_tokens: int, timeout: float, max_retries: int, device: str, console):
    """The judge: an OpenAI-compatible endpoint (key from the environment only) or a local transformers model."""
    if backend is Backend.local:
        from lpselect.evaluate.local import LocalChat

        return LocalChat(judge_model, max_new_tokens=max_tokens, device=device)
    from lpselect.evaluate.client import OpenAIChatClient

    key = os.environ.get(api_key_env)
    if not key:
        console.print(f"[yellow]warning:[/] ${api_key_env} is not set: requests go without a key")
    return OpenAIChatClient(judge_model, base_url=base_url, api_key=key, temperature=temperature,
                            max_tokens=max_tokens, timeout=timeout, max_retries=max_retries)


def register(app: typer.Typer) -> None:
    """Add ``judge`` and ``winrate`` to ``app``."""
    from lpselect.cli.app import console, friendly, out
    from lpselect.evaluate.reviews import model_labels

    @app.command("judge")
    @friendly
    def judge_cmd(
        a: Annotated[Path, typer.Option("--a", help="Answers of model A (JSONL: testset, id, question, "
                                                    "answer, model).")],
        b: Annotated[Path, typer.Option("--b", help="Answers of model B, same questions.")],
        judge_model: Annotated[str, typer.Option("--judge-model", help="Model name at the endpoint, or "
                                                                       "a model path (--backend local).")],
        out_path: Annotated[Path, typer.Option("--out", help="Reviews file (JSONL) to write.")],
        backend: Annotated[Backend, typer.Option(help="openai: an OpenAI-compatible endpoint; local: "
                                                      "a transformers chat model.")] = Backend.openai,
        base_url: Annotated[str, typer.Option(help="Endpoint root; requests go to "
                                                   "{base-url}/chat/completions.")] = "https://api.openai.com/v1",
        api_key_env: Annotated[str, typer.Option(help="Name of the environment variable holding the API key "
                                                      "(the key itself is never written anywhere).")]
            = "OPENAI_API_KEY",
        concurrency: Annotated[int, typer.Option(help="Requests in flight at most.")] = 4,
        max_retries: Annotated[int, typer.Option(help="Retries of a request on 429/5xx/timeouts/connection "
                                                      "errors (exponential backoff, Retry-After).")] = 6,
        parse_retries: Annotated[int, typer.Option(help="Extra requests when a reply's first line has no two "
                                                        "grades; then it counts as unparsed.")] = 2,
        timeout: Annotated[float, typer.Option(help="Seconds per request.")] = 120.0,
        temperature: float = 0.0,
        max_tokens: Annotated[int, typer.Option(help="Most tokens of a judge reply.")] = 512,
        cache_dir: Annotated[Path | None, typer.Option("--cache", help="Reply cache folder (default: <out "
                                                                       "stem>.cache next to --out).")] = None,
        device: Annotated[str, typer.Option(help="Device of the local judge: auto, cpu, cuda ...")] = "auto",
        quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    ) -> None:
        """Ask a judge to grade A's and B's answers to every question, in both orders; write the reviews."""
        from lpselect.core.tally import tally
        from lpselect.evaluate.judge import judge_files
        from lpselect.evaluate.report import report_table
        from lpselect.evaluate.reviews import tally_rows

        chat = _make_backend(backend, judge_model, base_url=base_url, api_key_env=api_key_env,
                             temperature=temperature, max_tokens=max_tokens, timeout=timeout,
                             max_retries=max_retries, device=device, console=console)
        r = judge_files(a, b, out_path, chat, cache_dir=cache_dir, concurrency=concurrency,
                        parse_retries=parse_retries, progress=not quiet)
        out.print(f"reviews: {r.path}  ({len(r.reviews)} questions, {r.n_unparsed} unparsed, "
                  f"{r.n_failed} failed (rerun to ask them again); "
                  f"{r.stats.requests_sent} requests sent, {r.stats.cache_hits} replies from the cache)")
        label_a, label_b = model_labels(r.reviews, None, None)
        out.print(report_table(tally(tally_rows(r.reviews)), label_a, label_b))

    @app.command("eval")
    @friendly
    def eval_cmd(
        model_a: Annotated[str, typer.Option("--a", help="Model A folder (e.g. trained on the subset).")],
        model_b: Annotated[str, typer.Option("--b", help="Model B folder (e.g. trained on all data).")],
        judge_model: Annotated[str, typer.Option("--judge-model", help="Judge model name at the endpoint, or "
                                                                       "a model path (--backend local).")],
        out_dir: Annotated[Path, typer.Option("--out", help="Folder for answers, reviews and the tally "
                                                            "(re-running resumes every step).")],
        testsets: Annotated[str, typer.Option(help="Comma-separated test sets.")]
            = "vicuna,koala,wizardlm,sinstruct,lima",
        testset_dir: Annotated[Path | None, typer.Option(help="Folder of *_test_set.jsonl files "
                                                              "(default ../shared/data/testsets).")] = None,
        limit: Annotated[int | None, typer.Option(help="At most this many questions per test set.")] = None,
        max_new_tokens: int = 512,
        backend: Backend = Backend.openai,
        base_url: str = "https://api.openai.com/v1",
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 4,
        device: str = "auto",
        quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
    ) -> None:
        """Generate both models' answers, judge them pairwise in both orders, and print the win rate."""
        from lpselect.evaluate.pipeline import evaluate_models
        from lpselect.evaluate.report import report_table

        chat = _make_backend(backend, judge_model, base_url=base_url, api_key_env=api_key_env, temperature=0.0,
                             max_tokens=512, timeout=120.0, max_retries=6, device=device, console=console)
        r = evaluate_models(model_a, model_b, chat, out_dir, testsets=testsets, testset_dir=testset_dir, limit=limit,
                            max_new_tokens=max_new_tokens, device=device, concurrency=concurrency,
                            progress=not quiet)
        out.print(report_table(r.tally, r.label_a, r.label_b))
        out.print(f"answers: {r.answers_a}, {r.answers_b}\nreviews: {r.judged.path}  ({r.judged.n_unparsed} "
                  f"unparsed, {r.judged.n_failed} failed: rerun to ask them again)\n"
                  f"tally:   {r.winrate_json}, {r.winrate_png}")

    @app.command("winrate")
    @friendly
    def winrate_cmd(
        reviews: Annotated[list[Path], typer.Argument(help="Review files (one per test set, or any mix).")],
        fmt: Annotated[ReviewFormat, typer.Option("--format", help="own: `lpselect judge` JSONL; cherry: the "
                                                                   "Cherry-LLM study's *_reviews_*.json.")]
            = ReviewFormat.own,
        plot: Annotated[Path | None, typer.Option("--plot", help="Write a stacked-bar chart (PNG).")] = None,
        json_path: Annotated[Path | None, typer.Option("--json", help="Write the tally as JSON.")] = None,
        label_a: Annotated[str | None, typer.Option(help="Name of model A in the table and chart.")] = None,
        label_b: Annotated[str | None, typer.Option(help="Name of model B in the table and chart.")] = None,
    ) -> None:
        """Wins / ties / losses of A against B per test set and overall, and WR = (W - L) / N + 1."""
        from lpselect.core.tally import tally
        from lpselect.evaluate.report import report_json, report_table
        from lpselect.evaluate.reviews import read_reviews, tally_rows
        from lpselect.runs.io import write_json

        rows = read_reviews(reviews, fmt.value)
        name_a, name_b = model_labels(rows, label_a, label_b)
        report = tally(tally_rows(rows))
        out.print(report_table(report, name_a, name_b))
        if json_path is not None:
            write_json(json_path, report_json(report, name_a, name_b))
            out.print(f"json: {json_path}")
        if plot is not None:
            from lpselect.evaluate.plot import plot_tally

            out.print(f"plot: {plot_tally(report, plot, name_a, name_b)}")
