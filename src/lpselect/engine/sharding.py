"""FSDP (PyTorch's ``fully_shard``) for models whose weights, gradients and AdamW state do not fit one device.

Each decoder layer and then the whole model become FSDP units: a rank keeps 1/world of every parameter,
gradient and optimizer state, and gathers a layer's weights only while it runs. Gradients are reduce-scattered
as a *sum* (divide factor 1), because lpselect's loss is already normalised by the scored tokens of the whole
optimizer step across all ranks (see ``engine/distributed.py``): the update equals the single-process one.

FSDP's gathers are collective, so every rank must run the same number of forward/backward calls; ranks with
fewer micro-batches in a step run zero-weight ones (``engine/train.py``). Full (unsharded) state dicts are
gathered to rank 0's CPU for saving, so the files are ordinary Hugging Face folders and torch state dicts.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from lpselect.errors import LPSelectError


def shard_model(model: torch.nn.Module) -> torch.nn.Module:
    """Wrap every decoder layer (the model's ``_no_split_modules`` classes), then the root, with fully_shard."""
    from torch.distributed.fsdp import FSDPModule, fully_shard

    layer_classes = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in layer_classes]
    if not layers:
        raise LPSelectError(f"--fsdp: cannot find the decoder layers of {type(model).__name__} "
                            "(its _no_split_modules is empty)")
    for layer in layers:
        fully_shard(layer)
    fully_shard(model)
    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.set_gradient_divide_factor(1.0)
            m.set_force_sum_reduction_for_comms(True)  # a plain SUM (gloo has no pre-multiplied sum)
    return model


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded weights on rank 0's CPU (empty on other ranks). Collective: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The unsharded optimizer state on rank 0's CPU (empty on other ranks). Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                              state: dict[str, Any]) -> None:
    """Load a state saved by :func:`full_optimizer_state`: every rank keeps its own shard. Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, optim_state_dict=state,
                             options=StateDictOptions(full_state_dict=True))


def gather_for_saving(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, fsdp: bool
                      ) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any] | None]:
    """Under FSDP, the full model and optimizer states on rank 0 (collective: every rank calls it); else None."""
    if not fsdp:
        return None, None
    return full_model_state(model), full_optimizer_state(model, optimizer) if optimizer is not None else None


def save_model(model: torch.nn.Module, folder: Path, state: dict[str, torch.Tensor] | None,
               architecture: str) -> None:
    """``save_pretrained``; or, with a gathered FSDP ``state``, that state as safetensors beside the config."""
    if state is None:
        model.save_pretrained(folder)
        return
    from huggingface_hub import save_torch_state_dict

    folder.mkdir(parents=True, exist_ok=True)
    save_torch_state_dict(state, folder)
    config = copy.deepcopy(model.config)
    config.architectures = [architecture]  # not the FSDP wrapper's class name
    config.save_pretrained(folder)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(folder)
