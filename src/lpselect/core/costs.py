"""The arithmetic of a cost plan (``lpselect plan``): model FLOPs per phase and wall time from measured units.

Pure Python: the probe that times real units lives in :mod:`lpselect.steps.plan`.

FLOPs are the nominal model FLOPs of the benchmarks (benchmarks/README.md): a forward pass costs 2·N per token
and a training step 6·N (forward 2·N, backward 4·N), N = the scorer's parameters (tied embeddings counted once),
over every token of every row (prompt and response). With LoRA the frozen weights get no weight gradient, so
a training step costs 4·N (the adapters' own FLOPs are negligible). The job of ``score --epochs n`` is
n + 1 passes (P0 .. Pn) and n training epochs; ``--ifd`` adds one pass over the responses per pass.
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
