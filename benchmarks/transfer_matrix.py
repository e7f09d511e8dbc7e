"""Hardness transfer across the reference's seven Alpaca scorers (docs/method.md §6).

Prints, as markdown, the Spearman matrix of LP(1) between scorers and each scorer's LP(1)-vs-LP_app(1)
correlation, and saves the matrix as a heatmap PNG:

    python benchmarks/transfer_matrix.py OUT.png [--pplx-dir ../shared/data/reference-pplx] [--metric lp]

Rows that are 1.0 at every epoch (the reference's mark of a sample with no response token, docs/method.md §11) are
NaN, as ``lpselect import-reference`` makes them, and are dropped pair by pair.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from lpselect.analysis.compare import correlation_matrix, rank_correlation
from lpselect.analysis.figures import heatmap
from lpselect.core.metrics import learning_percentage, learning_percentage_approx
from lpselect.interop.reference import load_ppl_pickle, no_token_rows

SCORERS = ("opt-350m", "opt-1.3b", "opt-2.7b", "opt-6.7b", "opt-13b", "llama2-7b", "llama2-13b")
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "reference-pplx"


def load_scorer(folder: Path) -> np.ndarray:
    ppl = np.stack([load_ppl_pickle(folder / f"epoch-{e}.pkl") for e in ("pre", "1", "2", "3")], axis=1)
    ppl[no_token_rows(ppl)] = np.nan
    return ppl


def markdown(names: list[str], values: np.ndarray) -> str:
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for name, row in zip(names, values, strict=True):
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("png", type=Path, help="where to save the heatmap")
    ap.add_argument("--pplx-dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--method", choices=("spearman", "kendall"), default="spearman")
    args = ap.parse_args()
    t0 = time.perf_counter()
    found = [s for s in SCORERS if (args.pplx_dir / f"alpaca-{s}").is_dir()]
    if len(found) < 2:
        raise SystemExit(f"need at least two scorers under {args.pplx_dir}, found {found}")
    ppl = {s: load_scorer(args.pplx_dir / f"alpaca-{s}") for s in found}
    lp1 = {s: learning_percentage(p, 1) for s, p in ppl.items()}
    m = correlation_matrix(lp1, args.method)
    print(f"## {args.method} of LP(1) between scorers (Alpaca, {len(next(iter(ppl.values()))):,} rows)\n")
    print(markdown(m.names, m.values))
    print("\n## LP(1) vs LP_app(1) of the same scorer\n")
    print("| scorer | Spearman | Kendall tau-b | rows |\n|---|---:|---:|---:|")
    for s, p in ppl.items():
        c = rank_correlation(lp1[s], learning_percentage_approx(p, 1))
        print(f"| {s} | {c.spearman:.3f} | {c.kendall:.3f} | {c.n:,} |")
    args.png.parent.mkdir(parents=True, exist_ok=True)
    args.png.write_bytes(heatmap(m.names, m.values, f"{args.method} of LP(1) between scorers (Alpaca 52k)"))
    print(f"\nheatmap: {args.png}  ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
