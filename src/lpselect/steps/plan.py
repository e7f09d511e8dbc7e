"""``lpselect plan``: what a score job (and the embedding of ``cluster``) will cost, before any training.

The data are read and tokenised in full (exact token counts), the scorer is loaded as the job loads it, and
a probe times a spread of the job's own units with the job's own code: batches of a pass
(:func:`lpselect.engine.passes.pass_sums`), micro-batches of an epoch
(:func:`lpselect.engine.train.accumulate_gradients`) and optimizer updates
(:func:`lpselect.engine.train.apply_update`), sentence-embedding batches, after two untimed warm-up units each.
A pass's or an epoch's batches differ in size, so their time is the phase's padded tokens times the timed
batches' seconds per padded token; updates and embedding batches take their number times their mean
(:mod:`lpselect.core.costs`). Nothing is written and no weights change that are kept.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lpselect.config import ClusterConfig, FineTuneSettings, ScoreConfig
from lpselect.core.costs import extrapolate, extrapolate_by_work, gpu_seconds, job_phases, phase_flops, probe_order
from lpselect.data.formats import read_dataset
from lpselect.data.template import embedding_text
from lpselect.data.tokenize import TokenizedData, tokenize_responses, tokenize_samples
from lpselect.engine.batching import pass_token_budget, token_budget_batches
from lpselect.engine.models import load_embedder
from lpselect.engine.passes import pass_sums
from lpselect.engine.recipe import FineTuneRecipe
from lpselect.engine.train import (
    accumulate_gradients,
    apply_update,
    epoch_order,
    micro_batches,
    steps_per_epoch,
)
from lpselect.engine.trainable import prepare_trainable
from lpselect.errors import LPSelectError

log = logging.getLogger(__name__)


@dataclass
class PhaseCost:
    name: str
    kind: str  # pass | pass_response | train | embed | read | tokenize | load
    tokens: int | None
    flops: float | None
    seconds: float  # measured (read, tokenize) or estimated from the probe
    units: int = 0  # batches, micro-batches or embedding batches in the whole phase
    units_timed: int = 0
    gpu_seconds: float | None = None
    measured: bool = False  # True: the whole phase ran (read, tokenise); False: extrapolated
    epoch: int | None = None  # of a pass or a training epoch


@dataclass
class CostPlan:
    data: str
    rows: int
    tokens: int
    scored_tokens: int
    model: str
    parameters: int
    device: str
    precision: str
    epochs: int
    phases: list[PhaseCost] = field(default_factory=list)
    probe_seconds: float = 0.0
    gpu: dict[str, Any] | None = None

    @property
    def total_seconds(self) -> float:
        return sum(p.seconds for p in self.phases)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_seconds": self.total_seconds}


def plan(data: str | Path, config: ScoreConfig | None = None, *, probe_seconds: float = 20.0,
         embed: bool = True, cluster: ClusterConfig | None = None, peak_tflops: float | None = None,
         utilisation: float = 0.4, gpu_name: str | None = None, fields: dict[str, str] | None = None) -> CostPlan:
    """Estimate every phase of ``score`` (with ``config``) and, with ``embed``, of ``cluster``'s embedding."""
    cfg = config or ScoreConfig()
    ccfg = cluster or ClusterConfig()
    if probe_seconds <= 0:
        raise LPSelectError(f"--probe-seconds: probe_seconds must be > 0, got {probe_seconds}")
    if peak_tflops is not None:
        try:
            gpu_seconds(1.0, peak_tflops, utilisation)  # validates both before any work
        except ValueError as e:
            raise LPSelectError(f"--peak-tflops / --mfu: {e}") from None
    recipe = FineTuneRecipe(cfg, progress=False, distributed=False)  # the score job's setup, in one process
    device, precision = recipe.device, recipe.choose_precision()
    source, tokenizer = recipe.find_model(), recipe.load_tokenizer()

    t0 = time.perf_counter()
    dataset = read_dataset(data, fields)
    read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tokens = tokenize_samples(dataset.samples, tokenizer, max_length=cfg.max_length, truncation=cfg.truncation)
    responses = tokenize_responses(dataset.samples, tokenizer, max_length=cfg.max_length) if cfg.ifd else None
    tokenize_s = time.perf_counter() - t0

    total_steps = steps_per_epoch(len(tokens), cfg) * max(cfg.epochs, cfg.schedule_epochs)
    t0 = time.perf_counter()
    trainable = prepare_trainable(source, cfg, None, total_steps=total_steps, with_optimizer=cfg.epochs > 0,
                                  **recipe.placement())
    load_s = time.perf_counter() - t0
    model, settings = trainable.model, trainable.settings
    n_params = sum(p.numel() for p in model.parameters())  # parameters() counts tied weights once
    pad_id = tokenizer.pad_token_id
    probed = 1 + (cfg.epochs > 0) + (responses is not None) + embed
    budget = probe_seconds / probed
    sync = torch.cuda.synchronize if device.type == "cuda" else _no_sync

    probe_start = time.perf_counter()
    pass_budget = pass_token_budget(cfg.max_tokens_per_batch, device)
    per_pass = {"pass": _probe_pass(model, tokens, pad_id, precision, pass_budget, budget, sync)}
    if responses is not None:
        per_pass["pass_response"] = _probe_pass(model, responses, pad_id, precision, pass_budget, budget, sync)
    train = _probe_epoch(model, trainable.optimizer, trainable.scheduler, tokens, settings, pad_id, precision,
                         budget, sync) if cfg.epochs > 0 else None
    embed_cost = _probe_embed(dataset.samples, ccfg, budget) if embed else None
    probe_s = time.perf_counter() - probe_start
    del model, trainable

    n_tokens, n_resp = int(tokens.lengths.sum()), int(responses.lengths.sum()) if responses is not None else 0
    phases = [PhaseCost("read the data", "read", None, None, read_s, measured=True),
              PhaseCost("tokenise", "tokenize", n_tokens + n_resp, None, tokenize_s, measured=True),
              PhaseCost("load the scorer", "load", None, None, load_s, measured=True)]
    for ph in job_phases(cfg.epochs, ifd=cfg.ifd):
        est = train if ph.kind == "train" else per_pass[ph.kind]
        assert est is not None
        n = n_resp if ph.kind == "pass_response" else n_tokens
        flops = phase_flops(ph.kind, n_params, n, lora=cfg.lora)
        phases.append(PhaseCost(ph.name, ph.kind, n, flops, est.seconds, est.units, est.units_timed,
                                gpu_seconds(flops, peak_tflops, utilisation) if peak_tflops else None,
                                epoch=ph.epoch))
    if embed_cost is not None:
        phases.append(PhaseCost("embed (cluster)", "embed", None, None, embed_cost.seconds, embed_cost.units,
                                embed_cost.units_timed))
    return CostPlan(data=str(data), rows=len(tokens), tokens=n_tokens, scored_tokens=int(tokens.n_scored.sum()),
                    model=source, parameters=n_params, device=str(device), precision=precision, epochs=cfg.epochs,
                    phases=phases, probe_seconds=probe_s,
                    gpu=None if peak_tflops is None else {"name": gpu_name or "GPU", "peak_tflops": peak_tflops,
                                                          "utilisation": utilisation})


@dataclass
class _Estimate:
    seconds: float
    units: int
    units_timed: int


def _no_sync() -> None:
    """CPU work is done when the call returns."""


def _timed_units(n_units: int, run: Callable[[int], None], budget_s: float, sync: Callable[[], None],
                 min_timed: int = 2, prepare: Callable[[], None] | None = None,
                 work: np.ndarray | None = None) -> tuple[list[int], list[float]]:
    """Which units the probe timed and their seconds: a spread of the units (:func:`lpselect.core.costs.probe_order`)
    after two untimed warm-up units, at least ``min_timed`` of them (a phase of fewer units times warm ones
    again), until ``budget_s`` is spent. The warm-up is the largest unit (by ``work``) and one more: the first
    calls allocate (kernels, caches, the optimizer's state, the allocator's pools), and on a CPU the second unit
    is still slower than the rest. ``prepare`` runs untimed before each unit."""
    if n_units <= 0:
        raise LPSelectError("nothing to probe: the phase has no batches")
    order = probe_order(n_units)
    first = [int(np.argmax(work))] if work is not None else []
    warmup = (first + [i for i in order if i not in first])[:2]
    rest = [i for i in order if i not in warmup]
    timed_order = rest + warmup[::-1][: max(0, min_timed - len(rest))]  # a short phase times warm units again
    for i in warmup:
        if prepare:
            prepare()
        run(i)
    sync()
    picked: list[int] = []
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    for i in timed_order:
        if prepare:
            prepare()
            sync()
        t0 = time.perf_counter()
        run(i)
        sync()
        times.append(time.perf_counter() - t0)
        picked.append(i)
        if len(times) >= min_timed and time.perf_counter() > deadline:
            break
    return picked, times


def _padded_tokens(batches: Sequence[np.ndarray], lengths: np.ndarray) -> np.ndarray:
    """Each batch's work: rows x its longest row, the positions it computes."""
    return np.array([len(b) * max(int(lengths[b].max()), 1) for b in batches], dtype=np.float64)


def _by_work(picked: list[int], times: list[float], work: np.ndarray) -> float:
    return extrapolate_by_work(times, work[picked].tolist(), float(work.sum()))


def _probe_pass(model, data: TokenizedData, pad_id: int, precision: str, max_tokens: int, budget_s: float,
                sync: Callable[[], None]) -> _Estimate:
    """A pass is its batches (the job's own plan of them) run one after another."""
    batches = token_budget_batches(data.lengths, np.arange(len(data)), max_tokens)
    work = _padded_tokens(batches, data.lengths)
    picked, times = _timed_units(len(batches), lambda i: pass_sums(model, data, batches[i], pad_id=pad_id,
                                                                   precision=precision, max_tokens=max_tokens),
                                 budget_s, sync, work=work)
    return _Estimate(_by_work(picked, times, work), len(batches), len(times))


def _probe_epoch(model, optimizer, scheduler, data: TokenizedData, s: FineTuneSettings, pad_id: int, precision: str,
                 budget_s: float, sync: Callable[[], None]) -> _Estimate:
    """An epoch is its micro-batches' forward and backward plus one update per optimizer step."""
    order = epoch_order(len(data), s.seed, 1)
    step_rows = s.batch_size * s.grad_accum
    steps = [order[i : i + step_rows] for i in range(0, len(order), step_rows)]
    micro = [mb for step in steps for mb in micro_batches(step, data.lengths, s)]
    work = _padded_tokens(micro, data.lengths)

    def forward_backward(i: int) -> None:
        mb = micro[i]
        accumulate_gradients(model, data, mb, s, denom=max(1, int(data.n_scored[mb].sum())), pad_id=pad_id,
                             precision=precision)
        optimizer.zero_grad(set_to_none=True)

    params = [p for p in model.parameters() if p.requires_grad]

    def update(_: int) -> None:
        apply_update(model, optimizer, scheduler, s)

    def gradients() -> None:
        for p in params:  # an update needs gradients; their values do not change its cost
            p.grad = torch.zeros_like(p)

    picked, fb_times = _timed_units(len(micro), forward_backward, budget_s * 0.8, sync, work=work)
    _, update_times = _timed_units(len(steps), update, budget_s * 0.2, sync, prepare=gradients)
    seconds = _by_work(picked, fb_times, work) + extrapolate(update_times, len(steps))
    return _Estimate(seconds, len(micro) + len(steps), len(fb_times) + len(update_times))


def _probe_embed(samples: Sequence[Any], cfg: ClusterConfig, budget_s: float) -> _Estimate:
    """``cluster`` encodes chunks of ``embed_chunk_rows`` texts, and sentence-transformers sorts a chunk by
    length before cutting it into batches: the probe's units are the batches of one such chunk of rows drawn
    at random, sorted the same way. Loading the embedder is not part of it (cluster records it apart, as score
    does the scorer's)."""
    model = load_embedder(cfg.embedder)
    model.max_seq_length = cfg.max_seq_length
    chunk = np.random.default_rng(0).permutation(len(samples))[: cfg.embed_chunk_rows]
    texts = sorted((embedding_text(samples[int(r)]) for r in chunk), key=len, reverse=True)
    n_units = math.ceil(len(samples) / cfg.batch_size)

    def encode(i: int) -> None:
        model.encode(texts[i * cfg.batch_size : (i + 1) * cfg.batch_size], batch_size=cfg.batch_size,
                     show_progress_bar=False, convert_to_numpy=True)

    _, times = _timed_units(math.ceil(len(texts) / cfg.batch_size), encode, budget_s, _no_sync)
    return _Estimate(extrapolate(times, n_units), n_units, len(times))
