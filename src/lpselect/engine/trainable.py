"""The model, optimizer and schedule that a training run steps, as the scorer (``score``) and the target
(``train``) both set them up: loaded (LoRA-wrapped when asked), on the device, checkpointed activations,
FSDP-sharded under ``--fsdp`` (else, with several processes, its training forward wrapped in DDP), the
micro-batch budget fixed, and, when resuming, the saved optimizer and schedule states put back. A checkpoint
folder holds ``model/``, ``optimizer.pt`` and ``scheduler.pt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lpselect.config import FineTuneSettings
from lpselect.engine.budget import with_micro_budget
from lpselect.engine.distributed import Workers, data_parallel
from lpselect.engine.lora import load_trainable
from lpselect.engine.models import enable_activation_checkpointing
from lpselect.engine.sharding import load_full_optimizer_state, shard_model
from lpselect.engine.train import make_optimizer
from lpselect.runs.layout import CHECKPOINT_MODEL, CHECKPOINT_OPTIMIZER, CHECKPOINT_SCHEDULER


@dataclass
class Trainable:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer | None
    scheduler: Any
    settings: FineTuneSettings  # the step's config with the micro-batch budget this run uses
    architecture: str  # the loaded model's class name, before FSDP renames it (saved with checkpoints)
    workers: Workers  # with the DDP-wrapped training forward when several processes train without FSDP


def prepare_trainable(source: str, cfg: FineTuneSettings, checkpoint: Path | None, *, device: torch.device,
                      precision: str, total_steps: int, workers: Workers,
                      with_optimizer: bool = True) -> Trainable:
    """Everything before the first optimizer step; ``checkpoint`` is the folder to resume from, or None for a
    fresh start."""
    model = load_trainable(source, cfg, checkpoint / CHECKPOINT_MODEL if checkpoint else None,
                           attn_implementation=cfg.attn_implementation).to(device)
    architecture = type(model).__name__
    if cfg.gradient_checkpointing:
        enable_activation_checkpointing(model, lora=cfg.lora)
    if workers.fsdp:
        shard_model(model)
    settings = with_micro_budget(cfg, cfg.max_tokens_per_micro_batch, model, device, precision,
                                 cfg.gradient_checkpointing, workers)
    if not with_optimizer:
        return Trainable(model, None, None, settings, architecture, workers)
    workers = data_parallel(model, workers, device)
    optimizer, scheduler = make_optimizer(model, settings, total_steps)
    if checkpoint is not None:
        optim_state = torch.load(checkpoint / CHECKPOINT_OPTIMIZER, weights_only=True)
        if workers.fsdp:
            load_full_optimizer_state(model, optimizer, optim_state)
        else:
            optimizer.load_state_dict(optim_state)
        scheduler.load_state_dict(torch.load(checkpoint / CHECKPOINT_SCHEDULER, weights_only=True))
    return Trainable(model, optimizer, scheduler, settings, architecture, workers)

