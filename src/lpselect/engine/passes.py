"""One perplexity pass over the samples (docs/method.md §4): eval mode, no dropout, no gradients.

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
from lpselect.engine.distributed import Workers
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
    """Perplexity and mean probability per row from the summed pass; NaN where a row has no scored token."""
    total, prob_total, count = sums
    with np.errstate(divide="ignore", invalid="ignore"):
        ppl = np.exp(total / count)
        prob = prob_total / count
    ppl[count == 0] = np.nan
    prob[count == 0] = np.nan
    return PassResult(ppl=ppl, prob=prob)


def rank_shards(data: TokenizedData, workers: Workers, rows: np.ndarray | None = None) -> list[np.ndarray]:
    """Every rank's rows of a pass over ``rows`` (default all): disjoint, so each row is scored exactly once."""
    rows = np.arange(len(data)) if rows is None else np.asarray(rows)
    return [workers.shard(rows, data.lengths, r) for r in range(workers.world)]


def shard_sums(model, data: TokenizedData, shards: list[np.ndarray], workers: Workers, part: slice = slice(None),
               *, max_tokens: int, **kwargs) -> np.ndarray:
    """:func:`pass_sums` of ``part`` of this rank's shard. Under FSDP every rank makes as many forward calls as
    the busiest rank's ``part`` needs (the calls are collective)."""
    calls = (max(len(token_budget_batches(data.lengths, s[part], max_tokens)) for s in shards)
             if workers.fsdp else None)
    return pass_sums(model, data, shards[workers.rank][part], max_tokens=max_tokens, fsdp_calls=calls, **kwargs)


def scoring_pass(model, data: TokenizedData, *, rows: np.ndarray | None = None, workers: Workers | None = None,
                 max_tokens: int = 16384, **kwargs) -> PassResult:
    """One whole pass over ``rows`` (default all), each rank its shard, the sums added over the ranks; results
    are arrays over all rows. ``LPCallback``'s pass; the score job runs the same per chunk of rows."""
    workers = workers or Workers()
    shards = rank_shards(data, workers, rows)
    return finish(workers.sum(shard_sums(model, data, shards, workers, max_tokens=max_tokens, **kwargs)))
