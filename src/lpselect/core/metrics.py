"""Per-sample metrics over the score table: pure numpy, lower value = lower band.

docs/method.md §6 (the method): LP(i) and LP_app(i) from the perplexity table ``ppl[:, i] = P_i``; lower = harder.
Rival signals computed from the same passes (docs/metrics.md gives each formula and its source):
``ppl`` (perplexity at an epoch), ``ifd`` (instruction-following difficulty, a loss ratio),
``confidence`` / ``variability`` (dataset cartography) and ``lp_online`` (LP from training losses).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import get_args

import numpy as np

from lpselect.config import Metric

METRICS: tuple[str, ...] = get_args(Metric)

# Which end of each metric's ascending ranking holds the hard samples (the table docs/metrics.md shows): the
# bands by meaning (hardest / easiest / middle, docs/method.md §8) are read from it.
HARD_END: dict[str, str] = {"lp": "low", "lp_app": "low", "confidence": "low", "lp_online": "low",
                            "ppl": "high", "ifd": "high", "variability": "high"}


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


def recorded_epochs(table: Mapping[str, np.ndarray]) -> int:
    """n: the score table records perplexities of epochs 0..n (-1 when it has none)."""
    n = -1
    while f"ppl_{n + 1}" in table:
        n += 1
    return n


def spread_problem(values: np.ndarray, metric: str, epoch: int, n_epochs: int) -> str | None:
    """Why ``values`` rank nothing (one value on every row that has one), with what to do; None when they rank.
    LP(1) of a run that trained one epoch is the usual case: P(0) - P(1) = P0 - Pn, so it is 1 everywhere."""
    if metric == "lp" and n_epochs == 1:  # 1 where P0 != P1 and 0 where P0 == P1: a split, not a ranking
        return (f"lp({epoch}) is 1 for every row of a run that trained one epoch (LP(1) = (P0-P1)/(P0-P1); 0 "
                "where P0 = P1), so it ranks nothing: use --metric lp_app (LP_app(1), the one-epoch metric), or "
                "score with --epochs 3 for LP")
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    if len(finite) < 2 or finite.min() != finite.max():
        return None
    return (f"{metric}({epoch}) is {finite[0]:g} for all {len(finite)} rows with a value, so it ranks nothing: "
            "choose another metric or epoch (docs/metrics.md)")


def stacked(table: Mapping[str, np.ndarray], prefix: str, start: int = 0) -> np.ndarray:
    """Columns ``{prefix}_{start}``, ``{prefix}_{start+1}``, ... as one (rows x epochs) array."""
    cols = []
    e = start
    while f"{prefix}_{e}" in table:
        cols.append(np.asarray(table[f"{prefix}_{e}"], dtype=np.float64))
        e += 1
    if not cols:
        what = "online losses: they are recorded by `lpselect score` (not in imported scores)" \
            if prefix == "ppl_online" else "perplexities: `lpselect score` writes them"
        raise ValueError(f"the scores have no {prefix}_{start} column ({what})")
    return np.column_stack(cols)


def _column(table: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    if name not in table:
        fix = "--ifd (IFD scores each response alone)" if name.startswith("ppl_resp_") else "more --epochs"
        raise ValueError(f"the scores have no column {name!r}: re-run `lpselect score` with {fix}")
    return np.asarray(table[name], dtype=np.float64)


def _epochs_1_to_n(prob: np.ndarray) -> np.ndarray:
    prob = np.asarray(prob, dtype=np.float64)
    if prob.ndim != 2 or prob.shape[1] < 2:
        raise ValueError("confidence/variability need at least one training epoch (prob_0 and prob_1): re-run "
                         "`lpselect score` with --epochs 1 or more")
    return prob[:, 1:]


def _check(ppl: np.ndarray, epoch: int) -> np.ndarray:
    ppl = np.asarray(ppl, dtype=np.float64)
    if ppl.ndim != 2 or ppl.shape[1] < 2:
        raise ValueError(f"need perplexities of at least epochs 0 and 1, got shape {ppl.shape}: re-run "
                         "`lpselect score` with --epochs 1 or more")
    n = ppl.shape[1] - 1
    if not 1 <= epoch <= n:
        raise ValueError(f"epoch must be in 1..{n} (the scores record epochs 0..{n}), got {epoch}")
    return ppl
