"""One perplexity pass over the samples (SPEC §4): eval mode, no dropout, no gradients.

A pass produces per-row *sums* (NLL, token probability, scored-token count). Sums of disjoint row sets add
up, which is what lets a pass be cut into chunks that are saved as they finish (resume) and shared across
processes (several GPUs); :func:`finish` turns the sums into perplexities at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from lpselect.data.tokenize import TokenizedData
from lpselect.engine.batching import collate, token_budget_batches
from lpselect.engine.forward import scored_token_nll
from lpselect.engine.precision import autocast


@dataclass
class PassResult:
    """Per-row results of one pass; NaN for a row with no scored token."""

    ppl: np.ndarray  # exp(mean NLL of the scored tokens)
    prob: np.ndarray  # mean probability of the scored tokens (dataset cartography's confidence input)


def pass_sums(
    model,
    data: TokenizedData,
    rows: np.ndarray,
    *,
    pad_id: int,
    precision: str = "fp32",
    max_tokens: int = 16384,
    progress: Callable[[int], None] | None = None,
    fsdp_calls: int | None = None,
) -> np.ndarray:
    """(3, len(data)) array: NLL sum, probability sum and scored-token count of ``rows`` (zero elsewhere).

    Under FSDP forward calls are collective: ``fsdp_calls`` (the busiest rank's batch count) pads this rank's
    batches with forwards whose result is dropped. FSDP's weight gathers cannot run in inference mode, so
    that path uses no_grad.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    lengths = data.lengths
    sums = np.zeros((3, len(data)), dtype=np.float64)
    try:
        sharded = fsdp_calls is not None
        with torch.no_grad() if sharded else torch.inference_mode(), autocast(device, precision):
            batches = token_budget_batches(lengths, np.asarray(rows), max_tokens)
            for _ in range((fsdp_calls or 0) - len(batches)):
                filler = np.array([int(np.argmax(lengths > 0))])
                scored_token_nll(model, collate(data, filler, pad_id, device), whole_model=True)
            for batch_rows in batches:
                batch = collate(data, batch_rows, pad_id, device)
                nll, row_idx = scored_token_nll(model, batch, whole_model=sharded)
                acc = torch.zeros(2, len(batch_rows), dtype=torch.float64, device=nll.device)
                acc[0].index_add_(0, row_idx, nll.double())
                acc[1].index_add_(0, row_idx, torch.exp(-nll.double()))
                sums[:2, batch_rows] = acc.cpu().numpy()
                sums[2, batch_rows] = batch["scored"].sum(dim=1).cpu().numpy()
                if progress:
                    progress(int(lengths[batch_rows].sum()))
    finally:
        model.train(was_training)
    return sums


def finish(sums: np.ndarray) -> PassResult:
    total, prob_total, count = sums
    with np.errstate(divide="ignore", invalid="ignore"):
        ppl = np.exp(total / count)
        prob = prob_total / count
    ppl[count == 0] = np.nan
    prob[count == 0] = np.nan
    return PassResult(ppl=ppl, prob=prob)


def scoring_pass(model, data: TokenizedData, *, rows: np.ndarray | None = None, **kwargs) -> PassResult:
    """One pass over ``rows`` (default all) in one go; results are arrays over all rows."""
    return finish(pass_sums(model, data, np.arange(len(data)) if rows is None else rows, **kwargs))


def perplexity_pass(model, data: TokenizedData, **kwargs) -> np.ndarray:
    """exp(mean NLL of scored tokens) per row; NaN for a row with no scored token."""
    return scoring_pass(model, data, **kwargs).ppl
