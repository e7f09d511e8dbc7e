"""Is a consensus subset (mean rank over several scorer seeds) more reproducible than a single seed's?

    python benchmarks/consensus_stability.py [--n 1000] [--seeds 42 43 44 45 46 47] [--out runs/consensus]

Draws ``--n`` real Dolly rows at random (seed 0), scores them with ``lpselect score --seeds ...`` (SmolLM2-135M-
Instruct by default, ``--epochs 1``: LP_app(1); P0 once, one epoch and P1 per seed; a finished run is reused,
an interrupted one resumes), clusters them once (``lpselect cluster``, all-MiniLM-L6-v2), then prints, for the
10 % ``low`` band of LP_app(1) within clusters (the method) and of the global ranking:

- single seed vs single seed: the overlap |A∩B|/|A| of every pair of seeds (mean, min, max);
- consensus vs consensus: the seeds split into two disjoint groups (the first half, the second half), each
  group's consensus subset (lpselect.core.consensus: mean rank), and the overlap of the two;
- consensus vs each of its own seeds;
- by group size 1 .. n/2: every pair of disjoint seed groups of that size, the overlap of their consensus
  subsets (mean, min, max), so one split's luck does not decide the comparison.

Two random 10 % subsets share about 10 %.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from pathlib import Path

import numpy as np
from _common import DOLLY, cpu_flag_grep, cpu_model, git_commit, markdown_table, run_lpselect, sample_file

from lpselect.analysis.compare import set_overlap
from lpselect.analysis.runio import metric_values, read_clusters, read_scores
from lpselect.core.consensus import consensus_metric
from lpselect.core.selection import select


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--data", type=Path, default=DOLLY, help="JSON array of samples (default: shared Dolly)")
    ap.add_argument("--n", type=int, default=1000, help="rows drawn at random (seed 0) from --data")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44, 45, 46, 47],
                    help="scorer seeds, an even number >= 4: the first half and the second half form the two "
                         "consensus groups")
    ap.add_argument("--percent", type=float, default=10)
    ap.add_argument("--metric", default="lp_app")
    ap.add_argument("--epoch", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("runs/consensus"), help="folder for the data and runs")
    ap.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS of the children (0 = inherit)")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                    help="further options for lpselect score (e.g. --model PATH --max-tokens-per-micro-batch 1024)")
    args = ap.parse_args(argv)
    if len(args.seeds) < 4 or len(args.seeds) % 2 or len(set(args.seeds)) != len(args.seeds):
        ap.error("--seeds needs an even number (>= 4) of distinct seeds")
    return args


def band(values: np.ndarray, labels: np.ndarray | None, percent: float) -> np.ndarray:
    return select(values, labels, percent, "low", strategy="global" if labels is None else "cluster").ids


def disjoint_group_pairs(n: int, size: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Every unordered pair of disjoint ``size``-element groups of range(n) (n=6: 15 pairs of single seeds,
    45 pairs of 2-seed groups, 10 splits into two 3-seed groups)."""
    pairs = []
    for a in itertools.combinations(range(n), size):
        rest = [i for i in range(n) if i not in a]
        pairs.extend((a, b) for b in itertools.combinations(rest, size) if a < b)
    return pairs


def group_band(values: list[np.ndarray], group: tuple[int, ...], labels: np.ndarray | None,
               percent: float) -> np.ndarray:
    """The subset of one seed (its own metric) or of a group's consensus (mean rank)."""
    metric = values[group[0]] if len(group) == 1 else consensus_metric([values[i] for i in group])
    return band(metric, labels, percent)


def overlaps(values: list[np.ndarray], labels: np.ndarray | None, percent: float) -> dict[str, list[float]]:
    """The overlaps of the pre-set split (first half against second half) and of each half with its seeds."""
    half = len(values) // 2
    groups = (tuple(range(half)), tuple(range(half, len(values))))
    ids = [band(v, labels, percent) for v in values]
    cons = [group_band(values, g, labels, percent) for g in groups]
    return {
        "single vs single": [set_overlap(a, b).fraction for a, b in itertools.combinations(ids, 2)],
        "consensus vs consensus": [set_overlap(cons[0], cons[1]).fraction],
        "consensus vs its seeds": [set_overlap(cons[g], ids[i]).fraction
                                   for g, members in enumerate(groups) for i in members],
    }


def overlaps_by_group_size(values: list[np.ndarray], labels: np.ndarray | None,
                           percent: float) -> dict[int, list[float]]:
    """For each group size 1 .. n/2: the overlap of the consensus subsets of every pair of disjoint groups."""
    out: dict[int, list[float]] = {}
    for size in range(1, len(values) // 2 + 1):
        pairs = disjoint_group_pairs(len(values), size)
        subsets = {g: group_band(values, g, labels, percent) for pair in pairs for g in pair}
        out[size] = [set_overlap(subsets[a], subsets[b]).fraction for a, b in pairs]
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    data = sample_file(args.data, args.n, args.out)
    runs = args.out / "runs"
    run_lpselect("score", "--data", str(data), "--out", str(runs), "--seeds", ",".join(map(str, args.seeds)),
                 "--epochs", str(max(1, args.epoch)), "--quiet", *args.extra, threads=args.threads)
    run_lpselect("cluster", "--data", str(data), "--out", str(args.out / "cluster"), "--quiet",
                 threads=args.threads)
    tables = [read_scores(runs / f"seed-{s}") for s in args.seeds]
    values = [metric_values(t, args.metric, args.epoch) for t in tables]
    labels = read_clusters(args.out / "cluster", tables[0].n_rows)
    half = len(args.seeds) // 2
    print(f"# Consensus stability: {args.metric}({args.epoch}), {args.percent:g} % low band\n")
    print(f"- data: {args.n} rows of {args.data.name} (random, seed 0); scorer seeds {args.seeds}; groups "
          f"{args.seeds[:half]} and {args.seeds[half:]}")
    print(f"- lpselect {git_commit()}; CPU: {cpu_model()} ({cpu_flag_grep()}); score options: "
          f"{' '.join(args.extra) or '(defaults)'}\n")
    rows = []
    for name, lab in (("within clusters (the method)", labels), ("global ranking", None)):
        for kind, fractions in overlaps(values, lab, args.percent).items():
            rows.append([name, kind, len(fractions), f"{statistics.fmean(fractions):.1%}",
                         f"{min(fractions):.1%} - {max(fractions):.1%}"])
    print(markdown_table(["selection", "overlap |A∩B|/|A|", "pairs", "mean", "range"], rows))
    print("\nEvery pair of disjoint seed groups of each size (1 = single seeds):\n")
    rows = []
    for name, lab in (("within clusters (the method)", labels), ("global ranking", None)):
        for size, fractions in overlaps_by_group_size(values, lab, args.percent).items():
            rows.append([name, size, len(fractions), f"{statistics.fmean(fractions):.1%}",
                         f"{min(fractions):.1%} - {max(fractions):.1%}"])
    print(markdown_table(["selection", "seeds per group", "pairs of disjoint groups", "mean overlap", "range"],
                         rows))


if __name__ == "__main__":
    main()
