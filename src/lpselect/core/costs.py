"""The arithmetic of a cost plan (``lpselect plan``): model FLOPs per phase and wall time from measured units.

Pure Python: the probe that times real units lives in :mod:`lpselect.steps.plan`.

FLOPs are the nominal model FLOPs of the benchmarks (benchmarks/README.md): a forward pass costs 2·N per token
and a training step 6·N (forward 2·N, backward 4·N), N = the scorer's parameters (tied embeddings counted once),
over every token of every row (prompt and response). With LoRA the frozen weights get no weight gradient, so
a training step costs 4·N (the adapters' own FLOPs are negligible). The job of ``score --epochs n`` is
n + 1 passes (P0 .. Pn) and n training epochs; ``--ifd`` adds one pass over the responses per pass.

The bill (:func:`bill`) sets the selection's FLOPs against what it saves: the target trains 6·N_target FLOPs a
token (4·N with LoRA; N its active parameters, those a token goes through: fewer than all of them in a
mixture of experts) for its epochs, on all the rows or on a subset of p % of them, whose tokens are estimated
as its rows x the mean tokens per row (which rows a selection takes, and how long they are, is not known before
it runs).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Phase:
    """One phase of the score job: ``kind`` is "pass", "pass_response" or "train"; ``epoch`` its index."""

    name: str
    kind: str
    epoch: int


def job_phases(epochs: int, *, ifd: bool = False) -> list[Phase]:
    """The phases of ``score --epochs epochs`` in the order the job runs them: P0, then train i and Pi."""
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    phases: list[Phase] = []
    for e in range(epochs + 1):
        if e:
            phases.append(Phase(f"train epoch {e}", "train", e))
        phases.append(Phase(f"pass P{e}", "pass", e))
        if ifd:
            phases.append(Phase(f"response pass P{e}", "pass_response", e))
    return phases


def phase_flops(kind: str, n_params: int, tokens: int, *, lora: bool = False) -> float:
    """Nominal model FLOPs of one phase over ``tokens`` tokens (see the module docstring)."""
    if kind in ("pass", "pass_response"):
        per_token = 2
    elif kind == "train":
        per_token = 4 if lora else 6
    else:
        raise ValueError(f"unknown phase kind {kind!r}")
    return float(per_token) * n_params * tokens


def gpu_seconds(flops: float, peak_tflops: float, utilisation: float) -> float:
    """Wall seconds at ``utilisation`` (0-1] of a peak of ``peak_tflops`` TFLOP/s."""
    if peak_tflops <= 0 or not 0 < utilisation <= 1:
        raise ValueError(f"need peak_tflops > 0 and 0 < utilisation <= 1, got {peak_tflops}, {utilisation}")
    return flops / (peak_tflops * 1e12 * utilisation)


def probe_order(n_units: int, max_candidates: int = 64, seed: int = 0) -> list[int]:
    """Which units a probe times, in order: an evenly spaced sample of all units (so long and short batches
    are both represented), shuffled, so that a probe stopped after any number of them is still a spread."""
    if n_units <= 0:
        return []
    k = min(n_units, max_candidates)
    picks = sorted({round(i * (n_units - 1) / max(k - 1, 1)) for i in range(k)})
    random.Random(seed).shuffle(picks)
    return picks


def extrapolate(unit_seconds: Sequence[float], n_units: int) -> float:
    """Total seconds of ``n_units`` units of one size (optimizer updates) from the timed ones: n_units x their
    mean."""
    if not unit_seconds:
        raise ValueError("no unit was timed")
    return n_units * math.fsum(unit_seconds) / len(unit_seconds)


def extrapolate_by_work(unit_seconds: Sequence[float], unit_work: Sequence[float], total_work: float) -> float:
    """Total seconds of a phase whose units differ in size (batches of a pass or of an epoch, their work the
    padded tokens rows x longest): the phase's total work x the timed units' seconds per unit of work. A ratio,
    not a mean per unit, so a probe that happened to time the large batches does not inflate the phase."""
    if not unit_seconds:
        raise ValueError("no unit was timed")
    if len(unit_work) != len(unit_seconds):
        raise ValueError(f"{len(unit_seconds)} timed units but {len(unit_work)} work sizes")
    work = math.fsum(unit_work)
    if work <= 0:
        raise ValueError("the timed units have no work")
    return total_work * math.fsum(unit_seconds) / work


#: Yin & Rush, "Compute-Constrained Data Selection" (ICLR 2025): perplexity-based selection is compute-optimal
#: only when the trained model has about this many times the selector's parameters or more (gradient-based
#: selection needs about 10 times)
MIN_TARGET_RATIO = 5.0

_COUNT_SUFFIXES = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}


def parse_count(text: str) -> int:
    """A parameter count as people write it: 7000000000, 7,000,000, 7e9, 7B, 360M, 1.5k (k, M, B, T; any case)."""
    raw = str(text).strip().replace(",", "").replace("_", "")
    scale = _COUNT_SUFFIXES.get(raw[-1:].lower(), 1.0)
    digits = raw[:-1] if scale != 1.0 else raw
    try:
        value = float(digits) * scale
    except ValueError:
        raise ValueError(f"{text!r} is not a parameter count: write e.g. 7e9, 7B, 360M or 135000000") from None
    if not math.isfinite(value) or value < 1:
        raise ValueError(f"{text!r} is not a parameter count: it must be at least 1")
    return round(value)


def training_flops(n_params: int, tokens: float, epochs: int, *, lora: bool = False) -> float:
    """Nominal FLOPs of training ``n_params`` parameters for ``epochs`` epochs over ``tokens`` tokens an epoch."""
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    return phase_flops("train", n_params, 1, lora=lora) * tokens * epochs


def subset_rows(rows: int, percent: float) -> int:
    """The rows of a p % subset: round(rows x p / 100), the budget of ``select --exact``."""
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], got {percent}")
    return round(rows * percent / 100)


def ratio_warning(target_parameters: int, scorer_parameters: int, *, active: bool = False) -> str | None:
    """Why a selection may not pay for itself: a target under :data:`MIN_TARGET_RATIO` times the scorer
    (``target_parameters`` the active ones of a mixture of experts: ``active`` says so in the message)."""
    ratio = target_parameters / scorer_parameters
    if ratio >= MIN_TARGET_RATIO:
        return None
    which = "active parameters per token" if active else "parameters"
    return (f"the target has {ratio:.1f}x the scorer's {which} ({target_parameters / 1e6:,.0f}M against "
            f"{scorer_parameters / 1e6:,.0f}M): Yin & Rush (ICLR 2025) find perplexity-based selection "
            f"compute-optimal only from about {MIN_TARGET_RATIO:g}x (gradient-based: about 10x); below that, "
            "training the target on all the data may buy more for the same compute")


@dataclass(frozen=True)
class SubsetBill:
    """The target's training on one subset size, and what the selection buys against it."""

    percent: float
    rows: int
    tokens: float  # estimated: rows x the mean tokens per row
    target_flops: float
    saved_flops: float  # the target on all the rows minus on the subset
    net_flops: float  # saved minus the selection's own
    pays: bool  # the selection costs fewer FLOPs than it saves
    target_gpu_seconds: float | None = None
    saved_gpu_seconds: float | None = None
    net_gpu_seconds: float | None = None


@dataclass(frozen=True)
class Bill:
    """A selection's FLOPs set against the target training it saves, for each subset size."""

    target: str
    target_parameters: int  # all of them
    target_active_parameters: int  # those a token goes through (fewer in a mixture of experts): the FLOPs' N
    scorer_parameters: int
    ratio: float  # target active / scorer parameters
    target_epochs: int
    target_lora: bool
    rows: int
    tokens: int  # a full epoch of the target
    mean_tokens_per_row: float
    selection_flops: float
    full_flops: float
    subsets: list[SubsetBill]
    warning: str | None
    selection_gpu_seconds: float | None = None
    full_gpu_seconds: float | None = None


def bill(*, selection_flops: float, scorer_parameters: int, target_parameters: int, rows: int, tokens: int,
         epochs: int, percents: Sequence[float], target: str = "", lora: bool = False,
         peak_tflops: float | None = None, utilisation: float = 0.4, active_parameters: int | None = None) -> Bill:
    """The bill of a selection (``selection_flops``) for a target of ``target_parameters`` (of which
    ``active_parameters`` a token, default all) trained ``epochs`` epochs on ``rows`` rows of ``tokens`` tokens,
    or on p % of them for each p in ``percents``; GPU seconds at ``utilisation`` of ``peak_tflops`` when given."""
    active = target_parameters if active_parameters is None else active_parameters
    if rows <= 0 or scorer_parameters <= 0 or not 0 < active <= target_parameters:
        raise ValueError(f"need rows, scorer parameters > 0 and 0 < active <= target parameters, got {rows}, "
                         f"{scorer_parameters}, {active}, {target_parameters}")

    rate = None if peak_tflops is None else gpu_seconds(1.0, peak_tflops, utilisation)  # seconds a FLOP

    def gpu(flops: float) -> float | None:
        return None if rate is None else flops * rate

    full = training_flops(active, tokens, epochs, lora=lora)
    subsets = []
    for p in percents:
        n = subset_rows(rows, p)
        sub_tokens = n * tokens / rows
        flops = training_flops(active, sub_tokens, epochs, lora=lora)
        saved = full - flops
        net = saved - selection_flops
        subsets.append(SubsetBill(float(p), n, sub_tokens, flops, saved, net, selection_flops < saved,
                                  gpu(flops), gpu(saved), gpu(net)))
    return Bill(target, target_parameters, active, scorer_parameters, active / scorer_parameters, epochs, lora,
                rows, tokens, tokens / rows, selection_flops, full, subsets,
                ratio_warning(active, scorer_parameters, active=active < target_parameters), gpu(selection_flops),
                gpu(full))


def format_count(n: float) -> str:
    """135M, 362M, 6.74B, 1.2T: a parameter count at a glance (three significant digits)."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:g}"


def format_seconds(seconds: float) -> str:
    """12 ms, 3.2 s, 4.5 min, 2.3 h, 1.5 d."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
