"""The ``train`` and ``generate`` commands (docs/method.md §9–10)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lpselect.cli.app import FieldsOpt, app, friendly, out
from lpselect.cli.config_options import config_options
from lpselect.config import GenerateConfig, TrainConfig

# each command's help ends with these (typer's epilog)
EXAMPLES_TRAIN = """Examples:
  lpselect train --data hard10.jsonl --out models/hard10
  lpselect train --data hard10.jsonl --out models/hard10 --lora --epochs 3"""
EXAMPLES_GENERATE = """Examples:
  lpselect generate --model models/hard10 --out answers/hard10.jsonl
  lpselect generate --model models/hard10 --out answers/hard10.jsonl \\
      --testsets vicuna,koala --limit 20"""


@app.command("train", epilog=EXAMPLES_TRAIN)
@friendly
@config_options(TrainConfig)
def train_cmd(
    data: Annotated[Path, typer.Option("--data", rich_help_panel="Data", help="The subset to train on (any data "
                                                                              "format).")],
    out_dir: Annotated[Path, typer.Option("--out", rich_help_panel="Output", help="Model folder to write "
                                                                                  "(re-running resumes).")],
    config: TrainConfig,
    force: Annotated[bool, typer.Option("--force", rich_help_panel="Output", help="Discard what --out holds from "
                                                                                  "other inputs or settings.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", rich_help_panel="Output", help="No progress bars.")] = False,
    fields: FieldsOpt = None,
) -> None:
    """Instruction-tune the target model on a subset (same template and loss mask as scoring)."""
    from lpselect.data.formats import parse_fields
    from lpselect.steps.train import train_target

    r = train_target(data, out_dir, config, force=force, progress=not quiet, fields=parse_fields(fields) or None)
    losses = ", ".join(f"epoch {e}: {v:.4f}" for e, v in r.epoch_losses.items())
    resumed = f", resumed at step {r.resumed_from_step}" if r.resumed_from_step else ""
    out.print(f"model: {r.model_dir}  ({r.n_rows} rows, {r.steps} steps{resumed}; loss {losses or '-'}; "
              f"{r.n_prompt_shortened} prompts shortened)")


@app.command("generate", epilog=EXAMPLES_GENERATE)
@friendly
@config_options(GenerateConfig)
def generate_cmd(
    model: Annotated[str, typer.Option("--model", rich_help_panel="Model", help="Model folder from `lpselect "
                                       "train` (or a hub id; 'smollm2-135m-instruct' = the untrained default).")],
    out_path: Annotated[Path, typer.Option("--out", rich_help_panel="Output", help="ANSWERS.jsonl (appended; a "
                                                                                   "re-run completes it).")],
    config: GenerateConfig,
    model_name: Annotated[str | None, typer.Option(rich_help_panel="Output", help="Name written in each line "
                                                                                  "(default: the folder "
                                                                                  "name).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", rich_help_panel="Output", help="No progress bar.")] = False,
) -> None:
    """Answer the evaluation test sets with the training template (re-running skips answered questions)."""
    from lpselect.evaluate.generate import generate_answers

    r = generate_answers(model, out_path, config, model_name=model_name, progress=not quiet)
    speed = f", {r.new_tokens} new tokens, {r.tokens_per_s:.1f} tok/s" if r.n_written else ""
    out.print(f"answers: {r.out_path}  ({r.n_written} written, {r.n_skipped} already there{speed})")

