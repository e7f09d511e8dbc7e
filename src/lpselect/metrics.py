"""Learning percentage (SPEC §6). Pure numpy over the perplexity table ``ppl[:, i] = P_i``; lower = harder."""

from __future__ import annotations

import numpy as np

METRICS = ("lp", "lp_app")


def learning_percentage(ppl: np.ndarray, epoch: int) -> np.ndarray:
    """LP(i) = (P(i-1) - P(i)) / (P0 - Pn); 0 where P0 == Pn (as in the reference). NaN stays NaN."""
    ppl = _check(ppl, epoch)
    total = ppl[:, 0] - ppl[:, -1]
    step = ppl[:, epoch - 1] - ppl[:, epoch]
    out = np.zeros(len(ppl), dtype=np.float64)
    np.divide(step, total, out=out, where=total != 0)
    out[np.isnan(total) | np.isnan(step)] = np.nan
    return out


def learning_percentage_approx(ppl: np.ndarray, epoch: int) -> np.ndarray:
    """LP_app(i) = (P(i-1) - P(i)) / P0: needs only epochs 0..i, so LP_app(1) needs one training epoch."""
    ppl = _check(ppl, epoch)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (ppl[:, epoch - 1] - ppl[:, epoch]) / ppl[:, 0]


def compute_metric(name: str, ppl: np.ndarray, epoch: int) -> np.ndarray:
    if name == "lp":
        return learning_percentage(ppl, epoch)
    if name == "lp_app":
        return learning_percentage_approx(ppl, epoch)
    raise ValueError(f"unknown metric {name!r}; expected one of {METRICS}")


def _check(ppl: np.ndarray, epoch: int) -> np.ndarray:
    ppl = np.asarray(ppl, dtype=np.float64)
    if ppl.ndim != 2 or ppl.shape[1] < 2:
        raise ValueError(f"need perplexities of at least epochs 0 and 1, got shape {ppl.shape}")
    n = ppl.shape[1] - 1
    if not 1 <= epoch <= n:
        raise ValueError(f"epoch must be in 1..{n} (the scores record epochs 0..{n}), got {epoch}")
    return ppl
