"""The bill of ``lpselect plan``: the selection's FLOPs against the target training it saves.

The target's parameter count is read without its weights: from its config, the model built on PyTorch's meta
device (shapes, no memory), so a 70B target is counted in seconds; a GGUF file's tensors are counted from its
header. The arithmetic is :func:`lpselect.core.costs.bill`.

A mixture-of-experts target (its config names a number of experts and how many a token uses) is priced on its
active parameters: a token's FLOPs go through the router's top-k experts only, so the active count is the total
less (experts - active) x one expert's parameters, one expert being the parameters under an ``experts`` module
divided by the number of experts (dense layers and shared experts, outside such a module, count in full).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lpselect.config import BillConfig
from lpselect.core.costs import Bill, bill, parse_count
from lpselect.engine.models import check_model, hub_options, model_not_found, resolve_model
from lpselect.errors import LPSelectError
from lpselect.steps.plan import CostPlan

#: config keys of a mixture of experts: the number of routed experts, and how many of them a token uses
_EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts", "num_routed_experts")
_ACTIVE_KEYS = ("num_experts_per_tok", "num_experts_per_token", "moe_topk", "moe_top_k", "top_k_experts")


@dataclass(frozen=True)
class TargetSize:
    """A target's parameters: all of them, and those a token goes through (fewer in a mixture of experts)."""

    total: int
    active: int
    experts: int | None = None  # routed experts, None for a dense model
    active_experts: int | None = None


def target_parameters(name_or_path: str) -> int:
    """The parameters of a causal LM (hub id, folder, or a .gguf file), tied weights counted once, as the
    scorer's are in a plan; every expert of a mixture of experts."""
    return target_size(name_or_path).total


def target_size(name_or_path: str) -> TargetSize:
    """The total and active parameters of a causal LM (hub id, folder, or a .gguf file), from its config on the
    meta device or from a GGUF header."""
    name, gguf_file = resolve_model(name_or_path)
    if gguf_file is not None:
        return _gguf_size(Path(name) / gguf_file, name_or_path)
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
    total = sum(p.numel() for p in model.parameters())  # parameters() counts tied weights once
    routing = moe_routing(config)
    if routing is None:
        return TargetSize(total, total)
    experts, active = routing
    inactive = (experts - active) * _per_expert_parameters(model, experts, name)
    return TargetSize(total, total - inactive, experts, active)


def moe_routing(config: Any) -> tuple[int, int] | None:
    """(routed experts, experts a token uses) from a transformers config (its text config for a multimodal
    one), or None for a dense model."""
    config = getattr(config, "get_text_config", lambda: config)()

    def first(keys: tuple[str, ...]) -> int | None:
        values = [getattr(config, k, None) for k in keys]
        return next((int(v) for v in values if isinstance(v, int) and not isinstance(v, bool) and v > 0), None)

    experts, active = first(_EXPERT_KEYS), first(_ACTIVE_KEYS)
    if experts is None or experts <= 1:
        return None
    if active is None or active > experts:
        raise LPSelectError(f"target model: its config has {experts} experts but no valid number a token uses "
                            f"({' / '.join(_ACTIVE_KEYS)}): give --target-params with its active parameters")
    return experts, active


def _per_expert_parameters(model: Any, experts: int, name: str) -> int:
    """One routed expert's parameters, over all layers: every parameter under a module named ``experts`` (a
    list of expert MLPs, or fused tensors whose first dimension is the expert) divided by the experts."""
    named = {q: m for q, m in model.named_modules() if q.rsplit(".", 1)[-1] == "experts"}
    modules = [m for q, m in named.items() if not any(q.startswith(outer + ".") for outer in named)]  # outermost
    in_experts = sum(p.numel() for m in modules for p in m.parameters())
    if not modules or in_experts % experts:
        raise LPSelectError(f"target model '{name}': its config has {experts} experts but its modules do not "
                            f"hold {experts} equal experts under an 'experts' module: give --target-params with "
                            "its active parameters")
    return in_experts // experts


def _gguf_size(path: Path, given: str) -> TargetSize:
    """A GGUF file's parameters: the elements of the tensors it stores (a tied output layer is not stored); of a
    mixture of experts (``{arch}.expert_count`` and ``expert_used_count`` in its header), the routed experts'
    tensors (llama.cpp's ``*_exps``, the expert their first dimension; shared experts are ``*_shexp``) count
    ``expert_used_count / expert_count`` of their size as active."""
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
    total = sum(int(t.n_elements) for t in reader.tensors)

    def header(key: str) -> int | None:
        field = reader.fields.get(key)
        return None if field is None else int(field.contents())

    arch = reader.fields.get("general.architecture")
    prefix = arch.contents() if arch is not None else ""
    experts, active = header(f"{prefix}.expert_count"), header(f"{prefix}.expert_used_count")
    if not experts or experts <= 1 or not active:
        return TargetSize(total, total)
    in_experts = sum(int(t.n_elements) for t in reader.tensors if "_exps." in t.name)
    if in_experts == 0 or in_experts % experts or active > experts:
        raise LPSelectError(f"{path}: its header has {experts} experts, {active} a token, but its tensors do not "
                            f"hold {experts} equal experts (*_exps): give --target-params with its active parameters")
    return TargetSize(total, total - (experts - active) * (in_experts // experts), experts, active)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def resolve_target(cfg: BillConfig, given: Collection[str] = ()) -> tuple[str, TargetSize] | None:
    """The target's name and size, or None when no target is given: its other settings must then be neither
    ``given`` on the command line (flag names) nor changed from their defaults, or they would be ignored without
    a word. Called before the plan's probe, so a missing target model is refused at once."""
    if cfg.target_params is not None:
        n = parse_count(cfg.target_params)
        return cfg.target_params, TargetSize(n, n)
    if cfg.target_model is not None:
        return cfg.target_model, target_size(cfg.target_model)
    default = BillConfig()
    stray = [flag for flag, field in (("--percent", "percent"), ("--target-epochs", "target_epochs"))
             if flag in given or getattr(cfg, field) != getattr(default, field)]
    if stray:
        raise LPSelectError(f"{' and '.join(stray)} {'need' if len(stray) > 1 else 'needs'} --target-model or "
                            "--target-params")
    return None


def price(plan: CostPlan, cfg: BillConfig, target: tuple[str, TargetSize]) -> Bill:
    """The bill of ``plan``'s selection (every FLOP of its score job) for ``target`` (name, size) trained as
    ``cfg`` says, at the plan's GPU settings when it has them: the target's FLOPs on its active parameters."""
    name, size = target
    gpu = plan.gpu or {}
    return bill(selection_flops=sum(ph.flops for ph in plan.phases if ph.flops is not None),
                scorer_parameters=plan.parameters, target_parameters=size.total, active_parameters=size.active,
                rows=plan.rows, tokens=plan.tokens, epochs=cfg.target_epochs, percents=cfg.percent, target=name,
                peak_tflops=gpu.get("peak_tflops"), utilisation=gpu.get("utilisation", 0.4))
