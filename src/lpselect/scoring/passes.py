"""One perplexity pass over every sample (SPEC §4): eval mode, no dropout, no gradients."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from lpselect.data.tokenize import TokenizedData
from lpselect.scoring.batching import collate, token_budget_batches
from lpselect.scoring.forward import scored_token_nll
from lpselect.scoring.precision import autocast


@dataclass
class PassResult:
    """Per-row results of one pass; NaN for a row with no scored token."""

    ppl: np.ndarray  # exp(mean NLL of the scored tokens)
    prob: np.ndarray  # mean probability of the scored tokens (dataset cartography's confidence input)


def perplexity_pass(model, data: TokenizedData, **kwargs) -> np.ndarray:
    """exp(mean NLL of scored tokens) per row; NaN for a row with no scored token."""
    return scoring_pass(model, data, **kwargs).ppl


def scoring_pass(
    model,
    data: TokenizedData,
    *,
    pad_id: int,
    precision: str = "fp32",
    max_tokens: int = 16384,
    rows: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
    combine: Callable[[np.ndarray], np.ndarray] | None = None,
) -> PassResult:
    """One eval-mode pass over ``rows`` (default all); results are arrays over all rows.

    ``combine`` merges the per-row sums of several processes that scored disjoint rows (a sum across ranks).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    lengths = data.lengths
    rows = np.arange(len(data)) if rows is None else rows
    total = np.zeros(len(data), dtype=np.float64)
    prob_total = np.zeros(len(data), dtype=np.float64)
    count = np.zeros(len(data), dtype=np.int64)
    try:
        with torch.inference_mode(), autocast(device, precision):
            for batch_rows in token_budget_batches(lengths, rows, max_tokens):
                batch = collate(data, batch_rows, pad_id, device)
                nll, row_idx = scored_token_nll(model, batch)
                sums = torch.zeros(2, len(batch_rows), dtype=torch.float64, device=nll.device)
                sums[0].index_add_(0, row_idx, nll.double())
                sums[1].index_add_(0, row_idx, torch.exp(-nll.double()))
                total[batch_rows], prob_total[batch_rows] = sums.cpu().numpy()
                count[batch_rows] = batch["scored"].sum(dim=1).cpu().numpy()
                if progress:
                    progress(int(lengths[batch_rows].sum()))
    finally:
        model.train(was_training)
    if combine is not None:
        total, prob_total, count = combine(np.stack([total, prob_total, count.astype(np.float64)]))
    with np.errstate(divide="ignore", invalid="ignore"):
        ppl = np.exp(total / count)
        prob = prob_total / count
    ppl[count == 0] = np.nan
    prob[count == 0] = np.nan
    return PassResult(ppl=ppl, prob=prob)
