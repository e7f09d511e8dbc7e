"""LoRA (peft) for the scorer and the target: train small adapters instead of every weight.

Both steps share the settings (:class:`lpselect.config.FineTuneSettings`) and these helpers. A checkpoint of a
LoRA model holds the adapter only; resuming loads the base model and puts the saved adapter back on it.
"""

from __future__ import annotations

from pathlib import Path

from lpselect.config import FineTuneSettings
from lpselect.errors import LPSelectError


def lora_config(s: FineTuneSettings):
    try:
        from peft import LoraConfig, TaskType
    except ImportError:
        raise LPSelectError("LoRA needs the package peft: pip install 'lpselect[lora]'") from None
    targets: str | list[str] = s.lora_target_modules
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    return LoraConfig(task_type=TaskType.CAUSAL_LM, r=s.lora_r, lora_alpha=s.lora_alpha,
                      lora_dropout=s.lora_dropout, target_modules=targets)


def with_lora(base, s: FineTuneSettings, adapter: Path | None = None):
    """``base`` with fresh adapters, or (resuming) with the adapter saved in ``adapter``."""
    config = lora_config(s)  # checks that peft is installed
    from peft import PeftModel, get_peft_model

    if adapter is not None:
        return PeftModel.from_pretrained(base, str(adapter), is_trainable=True)
    return get_peft_model(base, config)


def load_trainable(source: str, s: FineTuneSettings, saved: Path | None = None, *,
                   attn_implementation: str | None = None):
    """The model to train: ``source`` (or, resuming, the checkpoint's model folder ``saved``), LoRA-wrapped
    when asked (a LoRA checkpoint holds the adapter: it goes back on the base model from ``source``)."""
    from lpselect.engine.models import load_causal_lm

    if not s.lora:
        return load_causal_lm(str(saved) if saved else source, attn_implementation=attn_implementation)
    return with_lora(load_causal_lm(source, attn_implementation=attn_implementation), s, saved)
