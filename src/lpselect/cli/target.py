"""The ``train`` and ``generate`` commands (SPEC §9–10); ``register(app)`` adds them to ``lpselect``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from lpselect.cli.app import friendly
from lpselect.cli.options import (
    ATTN_HELP,
    PRECISION_HELP,
    BatchSizeOpt,
    GgufOpt,
    LoraAlphaOpt,
    LoraDropoutOpt,
    LoraOpt,
    LoraROpt,
    LoraTargetsOpt,
    MaxLengthOpt,
    MicroBudgetOpt,
    Precision,
    Truncation,
    results_console,
)

out = results_console()


class _SaveDtype(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


def train_cmd(
    data: Annotated[Path, typer.Option("--data", help="The subset to train on (any data format).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Model folder to write (re-running resumes).")],
    model: Annotated[str | None, typer.Option("--model", help="Target: hub id or local path. Default: "
                                                              "SmolLM2-135M-Instruct (offline).")] = None,
    gguf_file: GgufOpt = None,
    epochs: int = 3,
    max_steps: Annotated[int, typer.Option(help="Stop after N optimizer steps (0 = all epochs).")] = 0,
    lr: float = 2e-5,
    batch_size: BatchSizeOpt = 4,
    grad_accum: int = 8,
    warmup_ratio: float = 0.03,
    weight_decay: float = 0.0,
    max_length: MaxLengthOpt = 512,
    truncation: Annotated[Truncation, typer.Option(help="prompt: shorten the prompt, keep the response; "
                                                         "right: cut from the right.")] = Truncation.prompt,
    seed: int = 42,
    precision: Annotated[Precision, typer.Option(help=PRECISION_HELP)] = Precision.auto,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    max_tokens_per_micro_batch: MicroBudgetOpt = None,
    gradient_checkpointing: Annotated[bool, typer.Option(help="Less memory, more compute.")] = False,
    attn_implementation: Annotated[str | None, typer.Option(help=ATTN_HELP)] = None,
    fsdp: Annotated[bool, typer.Option("--fsdp", help="Under torchrun/accelerate launch: shard weights, "
                                                      "gradients and optimizer state over the processes "
                                                      "(FSDP), for targets that do not fit one GPU.")] = False,
    lora: LoraOpt = False,
    lora_r: LoraROpt = 16,
    lora_alpha: LoraAlphaOpt = 32,
    lora_dropout: LoraDropoutOpt = 0.05,
    lora_target_modules: LoraTargetsOpt = "all-linear",
    save_adapter: Annotated[bool, typer.Option("--save-adapter", help="LoRA: save the adapter only, "
                                                                      "not the merged model.")] = False,
    save_dtype: Annotated[_SaveDtype, typer.Option(help="dtype of the saved weights.")] = _SaveDtype.float32,
    save_steps: Annotated[int, typer.Option(help="Checkpoint every N optimizer steps (and at each epoch end; "
                                                 "0 = epoch ends only).")] = 100,
    keep_checkpoint: Annotated[bool, typer.Option(help="Keep checkpoint/ after the final model is saved.")
                               ] = False,
    force: Annotated[bool, typer.Option("--force", help="Discard what --out holds from other inputs "
                                                        "or settings.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Instruction-tune the target model on a subset (same template and loss mask as scoring)."""
    from lpselect.target import TrainConfig, train_target

    cfg = TrainConfig(model=model, gguf_file=gguf_file, epochs=epochs, max_steps=max_steps, lr=lr,
                      batch_size=batch_size, grad_accum=grad_accum, warmup_ratio=warmup_ratio,
                      weight_decay=weight_decay, max_length=max_length, truncation=truncation.value,
                      seed=seed,
                      precision=precision.value, device=device,
                      max_tokens_per_micro_batch=max_tokens_per_micro_batch,
                      gradient_checkpointing=gradient_checkpointing, fsdp=fsdp, lora=lora,
                      attn_implementation=attn_implementation, lora_r=lora_r,
                      lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                      lora_target_modules=lora_target_modules,
                      save_adapter=save_adapter, save_dtype=save_dtype.value, save_steps=save_steps,
                      keep_checkpoint=keep_checkpoint)
    r = train_target(data, out_dir, cfg, force=force, progress=not quiet)
    losses = ", ".join(f"epoch {e}: {v:.4f}" for e, v in r.epoch_losses.items())
    resumed = f", resumed at step {r.resumed_from_step}" if r.resumed_from_step else ""
    out.print(f"model: {r.model_dir}  ({r.n_rows} rows, {r.steps} steps{resumed}; loss {losses or '-'}; "
              f"{r.n_prompt_shortened} prompts shortened)")


def generate_cmd(
    model: Annotated[str, typer.Option("--model", help="Model folder from `lpselect train` (or a hub id; "
                                                       "'smollm2-135m-instruct' = the untrained default).")],
    out_path: Annotated[Path, typer.Option("--out", help="ANSWERS.jsonl (appended; a re-run completes it).")],
    testsets: Annotated[str, typer.Option(help="Comma-separated: vicuna,koala,wizardlm,sinstruct,lima.")
                        ] = "vicuna,koala,wizardlm,sinstruct,lima",
    testset_dir: Annotated[Path | None, typer.Option(help="Folder of *_test_set.jsonl "
                                                          "(default: $LPSELECT_TESTSET_DIR or "
                                                          "../shared/data/testsets).")] = None,
    max_new_tokens: int = 512,
    temperature: Annotated[float, typer.Option(help="0 = greedy; > 0 = seeded sampling.")] = 0.0,
    seed: int = 42,
    limit: Annotated[int | None, typer.Option(help="At most N questions per test set.")] = None,
    batch_size: Annotated[int, typer.Option(help="Questions per generate call (left padding).")] = 8,
    model_name: Annotated[str | None, typer.Option(help="Name written in each line (default: the folder "
                                                        "name).")] = None,
    precision: Annotated[Precision, typer.Option(help=PRECISION_HELP)] = Precision.auto,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Answer the evaluation test sets with the training template (re-running skips answered questions)."""
    from lpselect.errors import LPSelectError
    from lpselect.evaluate.generate import default_testset_dir, generate_answers, load_testsets

    folder = testset_dir or default_testset_dir()
    if folder is None:
        raise LPSelectError("no test-set folder: pass --testset-dir DIR (or set LPSELECT_TESTSET_DIR)")
    if limit is not None and limit < 1:
        raise LPSelectError("--limit must be at least 1")
    questions = load_testsets(testsets, folder, limit=limit)
    r = generate_answers(model, questions, out_path, max_new_tokens=max_new_tokens, temperature=temperature,
                         seed=seed, batch_size=batch_size, model_name=model_name, precision=precision.value,
                         device=device, progress=not quiet)
    speed = f", {r.new_tokens} new tokens, {r.tokens_per_s:.1f} tok/s" if r.n_written else ""
    out.print(f"answers: {r.out_path}  ({r.n_written} written, {r.n_skipped} already there{speed})")


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``generate`` to ``app``."""
    app.command("train")(friendly(train_cmd))
    app.command("generate")(friendly(generate_cmd))
