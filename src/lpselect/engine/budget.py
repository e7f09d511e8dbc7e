"""How many padded tokens one training micro-batch may hold.

The optimizer step is the same for any micro-batch budget (the loss is normalised by the step's scored
tokens), so the budget only trades memory for speed. A CPU runs best with cache-sized micro-batches
(``CPU_MICRO_BUDGET``). A GPU is launch-bound on small ones (docs/benchmarks.md has the figures), so on CUDA the
budget is what the free memory allows, up to ``GPU_MICRO_BUDGET_CAP``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from lpselect.config import FineTuneSettings
    from lpselect.engine.distributed import Workers

CPU_MICRO_BUDGET = 2048
GPU_MICRO_BUDGET_CAP = 16384
GPU_MICRO_BUDGET_FLOOR = 512
UNKNOWN_SHAPE_BUDGET = 4096  # a model whose config names no layer count / width / vocabulary


def micro_budget_from_memory(free_bytes: int, trainable_params: int, *, layers: int, hidden: int, vocab: int,
                             bf16: bool, checkpointing: bool, share: float = 0.6) -> int:
    """Padded tokens per micro-batch that fit ``share`` of the memory left once gradients and AdamW state exist.

    Per token and layer a transformer keeps about 34 bytes per hidden unit of 16-bit activations for backward
    (Korthikanti et al. 2022, without the attention-score term that SDPA/flash kernels never store); fp32
    doubles it. Gradient checkpointing keeps only each layer's input (one hidden vector) plus one layer being
    recomputed. The scored positions add fp32 logits and their gradient (8 bytes per vocabulary entry).
    Gradients and AdamW's two moments (fp32, 12 bytes per trainable parameter) are allocated at the first step.
    The result is a multiple of 256 between the floor (512) and the cap (16384).
    """
    width = 2 if bf16 else 4
    full_layer = 17 * width * hidden
    per_token = (layers * width * hidden + full_layer) if checkpointing else layers * full_layer
    per_token += 8 * vocab
    left = free_bytes - 12 * trainable_params
    budget = int(share * left / per_token) // 256 * 256
    return max(GPU_MICRO_BUDGET_FLOOR, min(GPU_MICRO_BUDGET_CAP, budget))


def _local_numel(p: torch.Tensor) -> int:
    """Elements this process holds (an FSDP-sharded DTensor reports the global size)."""
    return p.to_local().numel() if hasattr(p, "to_local") else p.numel()


def auto_micro_budget(model: torch.nn.Module, device: torch.device, *, precision: str, checkpointing: bool) -> int:
    """The micro-batch budget for ``model`` on ``device`` (call after the model is on it, before the first step)."""
    if device.type != "cuda":
        return CPU_MICRO_BUDGET
    cfg = model.config
    cfg = getattr(cfg, "text_config", None) or cfg
    shape = [getattr(cfg, k, None) for k in ("num_hidden_layers", "hidden_size", "vocab_size")]
    if not all(isinstance(v, int) and v > 0 for v in shape):
        return UNKNOWN_SHAPE_BUDGET
    free, _ = torch.cuda.mem_get_info(device)
    trainable = sum(_local_numel(p) for p in model.parameters() if p.requires_grad)
    layers, hidden, vocab = shape
    return micro_budget_from_memory(free, trainable, layers=layers, hidden=hidden, vocab=vocab,
                                    bf16=precision == "bf16", checkpointing=checkpointing)


def with_micro_budget(settings: FineTuneSettings, requested: int | None, model: torch.nn.Module,
                      device: torch.device, precision: str, checkpointing: bool,
                      workers: Workers) -> FineTuneSettings:
    """``settings`` with the micro-batch budget the user asked for, or (``requested`` None) the automatic one,
    the same on every rank (FSDP's collective calls depend on it)."""
    if requested is not None:
        return settings.model_copy(update={"max_tokens_per_micro_batch": requested})
    budget = auto_micro_budget(model, device, precision=precision, checkpointing=checkpointing)
    return settings.model_copy(update={"max_tokens_per_micro_batch": workers.smallest(budget)})
