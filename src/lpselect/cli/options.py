"""Choice types of the CLI options, shared by every command module."""

from __future__ import annotations

import os
from enum import Enum
from typing import Annotated

import typer
from rich.console import Console

from lpselect.metrics import METRICS
from lpselect.selection import BANDS, ORDERS, STRATEGIES


class Truncation(str, Enum):
    prompt = "prompt"
    right = "right"


def _choices(name: str, values: tuple[str, ...]) -> type[Enum]:
    """A CLI choice type made from the values the library itself accepts (one list to keep up to date)."""
    return Enum(name, [(v, v) for v in values], type=str)  # type: ignore[return-value]


Metric = _choices("Metric", METRICS)
Band = _choices("Band", BANDS)
Strategy = _choices("Strategy", STRATEGIES)
Order = _choices("Order", ORDERS)


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


PRECISION_HELP = ("auto: bf16 where the hardware computes it natively (a CUDA GPU with bf16, a CPU with AMX-BF16 or "
                  "AVX512-BF16), fp32 elsewhere (`lpselect env` shows the choice).")
ATTN_HELP = ("Attention kernel passed to transformers: sdpa, flash_attention_2 (variable-length attention "
             "on padded batches; needs the flash-attn package and a GPU), eager. Default: transformers' choice.")


ScorerOpt = Annotated[str | None, typer.Option("--model", help="Scorer: hub id or local path. "
                                                             "Default: SmolLM2-135M-Instruct (offline).")]
GgufOpt = Annotated[str | None, typer.Option("--gguf-file", help="GGUF file inside --model.")]
MaxLengthOpt = Annotated[int, typer.Option(help="Tokens per sample after truncation.")]
BatchSizeOpt = Annotated[int, typer.Option(help="Per-device micro-batch.")]
PrecisionOpt = Annotated[Precision, typer.Option(help=PRECISION_HELP)]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")]
PassBudgetOpt = Annotated[int, typer.Option(help="Padded-token budget of a scoring batch (0 = auto: CPU 2048, "
                                                 "CUDA 16384).")]
MicroBudgetOpt = Annotated[int | None, typer.Option(
    help="Padded-token budget of a training micro-batch (the update is the same for any budget; 0 = --batch-size "
         "rows). Default: CPU 2048; CUDA as large as the free memory allows, at most 16384.")]
LoraOpt = Annotated[bool, typer.Option("--lora", help="Train LoRA adapters (peft) instead of every weight.")]
LoraROpt = Annotated[int, typer.Option("--lora-r", help="LoRA rank.")]
LoraAlphaOpt = Annotated[int, typer.Option("--lora-alpha", help="LoRA scaling alpha.")]
LoraDropoutOpt = Annotated[float, typer.Option("--lora-dropout", help="Dropout on the LoRA path.")]
LoraTargetsOpt = Annotated[str, typer.Option("--lora-target-modules",
                                             help="'all-linear' or comma-separated module names.")]


def results_console() -> Console:
    """Where commands print their result lines: under torchrun/accelerate only rank 0 prints them."""
    return Console(quiet=os.environ.get("RANK", "0") != "0")
