"""Turning rows of the token table into padded tensors, and grouping rows into batches."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lpselect.data.tokenize import TokenizedData


def pass_token_budget(requested: int, device: torch.device) -> int:
    """A scoring pass's padded-token budget: ``requested``, or 0 = auto (small batches keep a CPU's caches warm;
    a GPU wants large ones)."""
    return requested or (16384 if device.type == "cuda" else 2048)


def token_budget_batches(
    lengths: np.ndarray, rows: np.ndarray, max_tokens: int, max_rows: int = 256
) -> list[np.ndarray]:
    """Rows sorted longest first, cut into batches whose padded size (rows x longest) stays under max_tokens."""
    order = rows[np.argsort(-lengths[rows], kind="stable")]
    batches, start = [], 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)
        size = max(1, min(max_rows, max_tokens // longest))
        batches.append(order[start : start + size])
        start += size
    return batches


def collate(data: TokenizedData, rows: Sequence[int], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-padded ids, attention mask, and label mask (True where a position's token is a scored label)."""
    lengths = [int(data.offsets[r + 1] - data.offsets[r]) for r in rows]
    width = max(max(lengths), 1)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    scored = np.zeros((len(rows), width), dtype=bool)
    attn = np.zeros((len(rows), width), dtype=np.int64)
    for j, r in enumerate(rows):
        tok, sc = data.row(int(r))
        ids[j, : len(tok)] = tok
        scored[j, : len(tok)] = sc
        attn[j, : len(tok)] = 1
    scored[:, 0] = False  # nothing predicts the first token
    return {
        "input_ids": torch.from_numpy(ids).to(device),
        "attention_mask": torch.from_numpy(attn).to(device),
        "scored": torch.from_numpy(scored).to(device),
    }
