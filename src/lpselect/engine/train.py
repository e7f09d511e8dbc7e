"""The one training loop of the scorer (docs/method.md §5) and the target (§9): AdamW, cosine schedule with warm-up,
micro-batches with accumulation.

The settings are the step's own config (``FineTuneSettings``: ``ScoreConfig`` or ``TrainConfig``); an automatic
micro-batch budget (``max_tokens_per_micro_batch`` None) is resolved once the model is loaded
(``engine.budget.with_micro_budget``), and one left unresolved means micro-batches of ``batch_size`` rows.

The loss of one optimizer step is the mean NLL over every scored token of its batch_size x grad_accum
samples (the Hugging Face Trainer's token-level normalisation across accumulation steps). Because that
gradient is a sum over the step's samples, how the step is cut into micro-batches does not change it: the
step's samples are sorted by length and cut by a token budget, which removes most padding and feeds the
matrix units larger products, with the same update as fixed micro-batches of ``batch_size`` rows.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from lpselect.config import FineTuneSettings
from lpselect.data.tokenize import TokenizedData
from lpselect.engine.batching import collate, token_budget_batches
from lpselect.engine.distributed import Workers
from lpselect.engine.forward import scored_token_nll
from lpselect.engine.precision import autocast


def steps_per_epoch(n_rows: int, s: FineTuneSettings) -> int:
    return math.ceil(n_rows / (s.batch_size * s.grad_accum))


def make_optimizer(model, s: FineTuneSettings, total_steps: int):
    from transformers import get_cosine_schedule_with_warmup

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(s.warmup_ratio * total_steps), total_steps)
    return optimizer, scheduler


def epoch_order(n_rows: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled row order of one epoch: a function of (seed, epoch) only, so a resumed run repeats it."""
    return np.random.default_rng([seed, epoch]).permutation(n_rows)


@dataclass
class EpochState:
    """How far an epoch has come: its finished optimizer-step slots and their loss sums over every rank (what a
    mid-epoch checkpoint records, and where a resumed epoch starts)."""

    done: int = 0
    loss_sum: float = 0.0
    token_sum: int = 0


@dataclass(frozen=True)
class StepResult:
    """One finished optimizer-step slot, as ``train_epoch`` reports it to ``on_step``."""

    slot: int  # index of the slot in the epoch's order
    rows: np.ndarray  # the slot's rows (every rank's)
    loss_sum: float  # NLL summed over the step's scored tokens, every rank's
    tokens: int  # scored tokens of the step
    stepped: bool  # False: the slot had no scored token, no update was made


def train_epoch(
    model,
    data: TokenizedData,
    optimizer,
    scheduler,
    s: FineTuneSettings,
    *,
    epoch: int,
    pad_id: int,
    precision: str = "fp32",
    progress: Callable[[int], None] | None = None,
    row_nll: np.ndarray | None = None,
    workers: Workers | None = None,
    on_step: Callable[[StepResult], None] | None = None,
    state: EpochState | None = None,
    max_updates: int | None = None,
) -> float:
    """Train over all rows (from ``state.done`` on, when resuming); returns the epoch's mean training loss
    (token-weighted).

    ``row_nll`` (optional, one float per row) receives each row's mean token NLL as seen by the forward pass
    that trained on it: the input of ``lp_online``, which needs no extra scoring pass. With several
    ``workers`` each takes a shard of every step and gradients are summed before the update. ``on_step`` runs
    after every step slot, once ``state`` counts it (where the caller checkpoints, logs, or crashes on
    purpose in a test). ``max_updates`` stops the call after that many optimizer updates (a run's
    ``max_steps``); the epoch is then unfinished and ``state`` says where it stands.
    """
    workers = workers or Workers()
    state = state if state is not None else EpochState()
    model.train()
    if state.done == 0:
        torch.manual_seed(s.seed + epoch)  # dropout noise is a function of (seed, epoch); a resume restores it
    order = epoch_order(len(data), s.seed, epoch)
    step_rows = s.batch_size * s.grad_accum
    if progress and state.done:
        progress(int(data.lengths[order[: state.done * step_rows]].sum()))
    updates = 0
    for k in range(state.done, steps_per_epoch(len(data), s)):
        if max_updates is not None and updates >= max_updates:
            break
        step = order[k * step_rows : (k + 1) * step_rows]
        loss, denom, stepped = optimizer_step(model, data, step, optimizer, scheduler, s, pad_id=pad_id,
                                              precision=precision, workers=workers, row_nll=row_nll)
        loss = float(workers.sum(np.array([loss]))[0])  # every rank's share of the step
        state.loss_sum += loss
        state.token_sum += denom
        state.done = k + 1
        updates += stepped
        if progress:
            progress(int(data.lengths[step].sum()))
        if on_step:
            on_step(StepResult(k, step, loss, denom, stepped))
    if row_nll is not None:
        merge_row_nll(row_nll, workers)
    return state.loss_sum / max(state.token_sum, 1)


def merge_row_nll(row_nll: np.ndarray, workers: Workers) -> None:
    """Every rank's recorded online losses in every rank's array (collective; rows seen by several ranks, as
    after a resume, are averaged: the same value)."""
    if workers.world == 1:
        return
    seen = ~np.isnan(row_nll)
    merged = workers.sum(np.stack([np.where(seen, row_nll, 0.0), seen.astype(np.float64)]))
    row_nll[:] = np.where(merged[1] > 0, merged[0] / np.maximum(merged[1], 1), np.nan)


def optimizer_step(model, data: TokenizedData, step: np.ndarray, optimizer, scheduler, s: FineTuneSettings, *,
                   pad_id: int, precision: str = "fp32", workers: Workers | None = None,
                   row_nll: np.ndarray | None = None) -> tuple[float, int, bool]:
    """One optimizer step over the rows ``step``: the unit shared by scorer and target training.

    Returns (NLL sum of this rank's rows, scored tokens of the whole step, whether a step was taken: a step
    without any scored token is skipped).
    """
    workers = workers or Workers()
    denom = int(data.n_scored[step].sum())
    if denom == 0:
        return 0.0, 0, False
    loss_sum = accumulate_gradients(model, data, step, s, denom=denom, pad_id=pad_id, precision=precision,
                                    workers=workers, row_nll=row_nll)
    apply_update(model, optimizer, scheduler, s)
    return loss_sum, denom, True


def accumulate_gradients(model, data: TokenizedData, step: np.ndarray, s: FineTuneSettings, *, denom: int,
                         pad_id: int, precision: str = "fp32", workers: Workers | None = None,
                         row_nll: np.ndarray | None = None) -> float:
    """Forward and backward over this rank's micro-batches of ``step``, each loss divided by ``denom`` (the
    step's scored tokens); returns the NLL sum of this rank's rows.

    Under DDP (``workers.ddp``) every micro-batch but the last runs in ``no_sync``, and the last one's backward
    all-reduces the accumulated gradients, overlapped with it. DDP averages over ranks, so the loss is scaled
    by the world size: the update is the single-process one (a sum over the step's rows). A rank with fewer
    micro-batches than another still makes exactly one synchronising backward per step (zero-weight when it
    has no scored token), so every rank's collectives match.
    """
    workers = workers or Workers()
    device = next(model.parameters()).device
    loss_sum = 0.0
    mine = micro_batches(workers.shard(step, data.lengths), data.lengths, s)
    calls = len(mine)
    if workers.fsdp:  # every rank runs as many forward/backward calls as the busiest one
        calls = max(len(micro_batches(workers.shard(step, data.lengths, r), data.lengths, s))
                    for r in range(workers.world))
    ddp = workers.ddp
    scale = workers.world / denom if ddp is not None else 1.0 / denom
    synced = False
    for i in range(calls):
        mb = mine[i] if i < len(mine) else None
        last = i == calls - 1
        with ddp.no_sync() if ddp is not None and not last else contextlib.nullcontext():
            nll = None
            if mb is not None:
                batch = collate(data, mb, pad_id, device)
                with autocast(device, precision):
                    nll, rows = (ddp(batch) if ddp is not None
                                 else scored_token_nll(model, batch, whole_model=workers.fsdp))
            if nll is None or nll.numel() == 0:
                if workers.fsdp:
                    _idle_backward(model, data, step, pad_id, device, precision)
                continue
            if row_nll is not None:
                sums = torch.zeros(len(mb), dtype=torch.float64, device=nll.device)
                sums.index_add_(0, rows, nll.detach().double())
                counts = batch["scored"].sum(dim=1)
                mean = (sums / counts.clamp(min=1)).cpu().numpy()
                row_nll[mb] = np.where(counts.cpu().numpy() > 0, mean, np.nan)
            (nll.sum() * scale).backward()
            synced = last
            loss_sum += float(nll.detach().sum())
    if ddp is not None and not synced:
        _idle_backward(ddp, data, step, pad_id, device, precision)  # this rank's share of the all-reduce
    return loss_sum


def apply_update(model, optimizer, scheduler, s: FineTuneSettings) -> None:
    """The update from the accumulated (already synchronised) gradients: clip, step, advance the schedule,
    clear."""
    if s.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), s.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def _idle_backward(model, data: TokenizedData, step: np.ndarray, pad_id: int, device, precision: str) -> None:
    """A zero-weight forward/backward on one scored row: takes part in the collectives (FSDP's gathers, DDP's
    all-reduce) and adds no gradient. ``model`` is the FSDP model or the DDP-wrapped ``ScoredLoss``."""
    row = step[int(np.argmax(data.n_scored[step] > 0))] if len(step) else int(np.argmax(data.n_scored > 0))
    batch = collate(data, np.array([row]), pad_id, device)
    with autocast(device, precision):
        nll, _ = model(batch) if isinstance(model, DistributedDataParallel) else scored_token_nll(
            model, batch, whole_model=True)
    (nll.sum() * 0.0).backward()


def micro_batches(step: np.ndarray, lengths: np.ndarray, s: FineTuneSettings) -> list[np.ndarray]:
    """One optimizer step's rows cut into micro-batches (by token budget, or ``batch_size`` rows)."""
    if len(step) == 0:
        return []
    if not s.max_tokens_per_micro_batch:  # 0, or an automatic budget never resolved
        return [step[i : i + s.batch_size] for i in range(0, len(step), s.batch_size)]
    return token_budget_batches(lengths, step, s.max_tokens_per_micro_batch, max_rows=len(step))
