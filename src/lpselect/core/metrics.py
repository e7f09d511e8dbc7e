"""Per-sample metrics over the score table: pure numpy, lower value = lower band.

SPEC §6 (the method): LP(i) and LP_app(i) from the perplexity table ``ppl[:, i] = P_i``; lower = harder.
Rival signals computed from the same passes (docs/metrics.md gives each formula and its source):
``ppl`` (perplexity at an epoch), ``ifd`` (instruction-following difficulty, a loss ratio),
``confidence`` / ``variability`` (dataset cartography) and ``lp_online`` (LP from training losses).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

METRICS = ("lp", "lp_app", "ppl", "ifd", "confidence", "variability", "lp_online")


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


def instruction_following_difficulty(ppl_conditioned: np.ndarray, ppl_response_only: np.ndarray) -> np.ndarray:
    """IFD = mean NLL(response | prompt) / mean NLL(response alone) = ln(ppl_cond) / ln(ppl_alone).

    A loss ratio (as in Cherry LLM's code), not a perplexity ratio. Undefined (NaN) where the response alone
    has zero loss.
    """
    num = np.log(np.asarray(ppl_conditioned, dtype=np.float64))
    den = np.log(np.asarray(ppl_response_only, dtype=np.float64))
    out = np.full(len(num), np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def confidence(prob: np.ndarray) -> np.ndarray:
    """Dataset cartography: mean over training epochs 1..n of the sample's mean token probability."""
    return _epochs_1_to_n(prob).mean(axis=1)


def variability(prob: np.ndarray) -> np.ndarray:
    """Dataset cartography: population standard deviation over epochs 1..n of the mean token probability."""
    return _epochs_1_to_n(prob).std(axis=1)


def compute_metric(name: str, table: Mapping[str, np.ndarray], epoch: int) -> np.ndarray:
    """The metric ``name`` at ``epoch`` from a score table (column name -> array), as in scores.parquet."""
    if name in ("lp", "lp_app", "lp_online"):
        ppl = stacked(table, "ppl")
        if name == "lp_online":
            online = stacked(table, "ppl_online", start=1)
            ppl = np.column_stack([ppl[:, 0], online])
            return learning_percentage(ppl, epoch)
        return learning_percentage(ppl, epoch) if name == "lp" else learning_percentage_approx(ppl, epoch)
    if name == "ppl":
        return np.asarray(_column(table, f"ppl_{epoch}"), dtype=np.float64)
    if name == "ifd":
        return instruction_following_difficulty(_column(table, f"ppl_{epoch}"), _column(table, f"ppl_resp_{epoch}"))
    if name in ("confidence", "variability"):
        prob = stacked(table, "prob")
        return confidence(prob) if name == "confidence" else variability(prob)
    raise ValueError(f"unknown metric {name!r}; expected one of {METRICS}")


def stacked(table: Mapping[str, np.ndarray], prefix: str, start: int = 0) -> np.ndarray:
    """Columns ``{prefix}_{start}``, ``{prefix}_{start+1}``, ... as one (rows x epochs) array."""
    cols = []
    e = start
    while f"{prefix}_{e}" in table:
        cols.append(np.asarray(table[f"{prefix}_{e}"], dtype=np.float64))
        e += 1
    if not cols:
        raise ValueError(f"the scores have no {prefix}_{start} column (was the score job run with what "
                         f"this metric needs?)")
    return np.column_stack(cols)


def _column(table: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    if name not in table:
        raise ValueError(f"the scores have no column {name!r} (was the score job run with what this metric needs?)")
    return np.asarray(table[name], dtype=np.float64)


def _epochs_1_to_n(prob: np.ndarray) -> np.ndarray:
    prob = np.asarray(prob, dtype=np.float64)
    if prob.ndim != 2 or prob.shape[1] < 2:
        raise ValueError("confidence/variability need at least one training epoch (prob_0 and prob_1)")
    return prob[:, 1:]


def _check(ppl: np.ndarray, epoch: int) -> np.ndarray:
    ppl = np.asarray(ppl, dtype=np.float64)
    if ppl.ndim != 2 or ppl.shape[1] < 2:
        raise ValueError(f"need perplexities of at least epochs 0 and 1, got shape {ppl.shape}")
    n = ppl.shape[1] - 1
    if not 1 <= epoch <= n:
        raise ValueError(f"epoch must be in 1..{n} (the scores record epochs 0..{n}), got {epoch}")
    return ppl
