"""Per-token negative log-likelihood of the scored labels only.

The LM head runs on the hidden states of the positions that predict a scored token, never on the prompt,
and in chunks, so a batch never materialises a full (batch x length x vocab) logit tensor.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

HEAD_CHUNK = 2048  # positions per LM-head call: bounds the logits buffer to HEAD_CHUNK x vocab


def _has_logit_postprocessing(model) -> bool:
    cfg = model.config
    return bool(getattr(cfg, "final_logit_softcapping", None)) or getattr(cfg, "logit_scale", None) not in (None, 1.0)


def _logits_through_forward(model, ids: torch.Tensor, attn: torch.Tensor, rows: torch.Tensor,
                            positions: torch.Tensor) -> torch.Tensor:
    """Logits at (rows, positions) from ``model(...)``, keeping only the needed positions where the model can."""
    if "logits_to_keep" not in inspect.signature(type(model).forward).parameters:
        return model(input_ids=ids, attention_mask=attn).logits[rows, positions]
    keep = torch.unique(positions)  # sorted
    logits = model(input_ids=ids, attention_mask=attn, logits_to_keep=keep).logits
    return logits[rows, torch.searchsorted(keep, positions)]


def scored_token_nll(model, batch: dict[str, torch.Tensor], *, whole_model: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (nll per scored label in fp32, row index of each). Gradients flow when called under train.

    ``whole_model`` goes through the model's own forward (FSDP: its hooks gather the weights): the head then
    runs on the positions some row of the batch needs (``logits_to_keep``) rather than on exactly the scored
    ones.
    """
    ids, attn, scored = batch["input_ids"], batch["attention_mask"], batch["scored"]
    rows, cols = scored.nonzero(as_tuple=True)  # label positions; their predictors sit at cols - 1
    targets = ids[rows, cols]
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if whole_model or decoder is None or _has_logit_postprocessing(model):
        return F.cross_entropy(_logits_through_forward(model, ids, attn, rows, cols - 1).float(), targets,
                               reduction="none"), rows
    hidden = decoder(input_ids=ids, attention_mask=attn).last_hidden_state[rows, cols - 1]
    head = model.get_output_embeddings()
    # the head runs in the weights' own precision even under bf16 autocast: a bf16 softmax over the whole
    # vocabulary costs more accuracy than the rest of the model, for about a fifth of a small model's FLOPs
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        hidden = hidden.to(head.weight.dtype)
        nll = [
            F.cross_entropy(head(hidden[s : s + HEAD_CHUNK]).float(), targets[s : s + HEAD_CHUNK], reduction="none")
            for s in range(0, len(targets), HEAD_CHUNK)
        ]
    return (torch.cat(nll) if nll else hidden.new_zeros(0, dtype=torch.float32)), rows
