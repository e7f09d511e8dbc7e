"""The bill of ``lpselect plan``: the selection's FLOPs against the target training it saves.

The target's parameter count is read without its weights: from its config, the model built on PyTorch's meta
device (shapes, no memory), so a 70B target is counted in seconds; a GGUF file's tensors are counted from its
header. The arithmetic is :func:`lpselect.core.costs.bill`.
"""

from __future__ import annotations

from pathlib import Path

from lpselect.config import BillConfig
from lpselect.core.costs import Bill, bill, parse_count
from lpselect.engine.models import check_model, hub_options, model_not_found, resolve_model
from lpselect.errors import LPSelectError
from lpselect.steps.plan import CostPlan


def target_parameters(name_or_path: str) -> int:
    """The parameters of a causal LM (hub id, folder, or a .gguf file), tied weights counted once, as the
    scorer's are in a plan."""
    name, gguf_file = resolve_model(name_or_path)
    if gguf_file is not None:
        return _gguf_parameters(Path(name) / gguf_file, name_or_path)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    check_model(name)
    try:
        config = AutoConfig.from_pretrained(name, **hub_options(name))
    except OSError as e:
        raise model_not_found(name, e) from None
    except ValueError as e:  # a config.json without a model type transformers knows
        raise LPSelectError(f"target model '{name}': {_first_line(e)}") from None
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except ValueError as e:  # e.g. an encoder's config: no causal LM of that kind
        raise LPSelectError(f"target model '{name}' is not a causal LM transformers can build: "
                            f"{_first_line(e)}") from None
    return sum(p.numel() for p in model.parameters())  # parameters() counts tied weights once


def _gguf_parameters(path: Path, given: str) -> int:
    """A GGUF file's parameters: the elements of the tensors it stores (a tied output layer is not stored)."""
    if not path.is_file():
        raise LPSelectError(f"target model '{given}' not found: no GGUF file {path.resolve()}")
    try:
        from gguf import GGUFReader
    except ImportError:
        raise LPSelectError(f"{path}: counting a GGUF file's parameters needs the package gguf (pip install gguf), "
                            "or give --target-params") from None
    try:
        reader = GGUFReader(path)
    except (ValueError, OSError) as e:
        raise LPSelectError(f"{path} is not a GGUF file it can read: {_first_line(e)}") from None
    return sum(int(t.n_elements) for t in reader.tensors)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def resolve_target(cfg: BillConfig) -> tuple[str, int] | None:
    """The target's name and parameter count, or None when no target is given (its other settings must then be
    left at their defaults, or they would be ignored without a word). Called before the plan's probe, so a
    missing target model is refused at once."""
    if cfg.target_params is not None:
        return cfg.target_params, parse_count(cfg.target_params)
    if cfg.target_model is not None:
        return cfg.target_model, target_parameters(cfg.target_model)
    if cfg != BillConfig():
        raise LPSelectError("--target-epochs and --percent price the target's training: give --target-model or "
                            "--target-params too")
    return None


def price(plan: CostPlan, cfg: BillConfig, target: tuple[str, int]) -> Bill:
    """The bill of ``plan``'s selection (every FLOP of its score job) for ``target`` (name, parameters) trained
    as ``cfg`` says, at the plan's GPU settings when it has them."""
    name, n_target = target
    gpu = plan.gpu or {}
    return bill(selection_flops=sum(ph.flops for ph in plan.phases if ph.flops is not None),
                scorer_parameters=plan.parameters, target_parameters=n_target, rows=plan.rows, tokens=plan.tokens,
                epochs=cfg.target_epochs, percents=cfg.percent, target=name, peak_tflops=gpu.get("peak_tflops"),
                utilisation=gpu.get("utilisation", 0.4))
