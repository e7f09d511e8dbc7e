"""A local judge: a transformers causal LM with its own chat template, greedy decoding, no server."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from lpselect.errors import LPSelectError


class LocalChat:
    """``complete(messages) -> str`` from a local model; one generation at a time (thread-safe)."""

    deterministic = True  # greedy: asking again gives the same reply, so unreadable replies are not retried

    def __init__(self, model: str | Path, *, max_new_tokens: int = 512, device: str = "auto"):
        from lpselect.engine.models import load_causal_lm, load_tokenizer, model_source
        from lpselect.engine.precision import pick_device

        self.source = model_source(str(model))
        self.max_new_tokens = max_new_tokens
        self.tokenizer = load_tokenizer(self.source)
        if not getattr(self.tokenizer, "chat_template", None):
            raise LPSelectError(f"judge model '{model}' has no chat template; a local judge must be a chat "
                                "model")
        self.device = pick_device(device)
        self.model = load_causal_lm(self.source).to(self.device).eval()
        self._lock = threading.Lock()

    def identity(self) -> dict[str, Any]:
        return {"kind": "local", "model": str(Path(self.source).resolve()) if Path(self.source).exists()
                else self.source, "max_new_tokens": self.max_new_tokens, "decoding": "greedy"}

    def complete(self, messages: list[dict[str, str]]) -> str:
        import torch

        enc = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                 return_dict=True)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        with self._lock, torch.inference_mode():
            out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
        new = out[0, enc["input_ids"].shape[1]:]
        return self.tokenizer.decode(new, skip_special_tokens=True)
