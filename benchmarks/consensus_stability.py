"""Is a consensus subset (mean rank over several scorer seeds) more reproducible than a single seed's?

    python benchmarks/consensus_stability.py [--n 1000] [--seeds 42 43 44 45 46 47] [--out runs/consensus]

Draws ``--n`` real Dolly rows at random (seed 0), scores them with ``lpselect score --seeds ...`` (SmolLM2-135M-
Instruct by default, ``--epochs 1``: LP_app(1); P0 once, one epoch and P1 per seed; a finished run is reused,
an interrupted one resumes), clusters them once (``lpselect cluster``, all-MiniLM-L6-v2), then prints, for the
10 % ``low`` band of LP_app(1) within clusters (the method) and of the global ranking:

- single seed vs single seed: the overlap |A∩B|/|A| of every pair of seeds (mean, min, max);
- consensus vs consensus: the seeds split into two disjoint groups (the first half, the second half), each
  group's consensus subset (lpselect.core.consensus: mean rank), and the overlap of the two;
- consensus vs each of its own seeds.

Two random 10 % subsets share about 10 %.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
from _common import DOLLY, cpu_flag_grep, cpu_model, git_commit, log, markdown_table
from seed_stability import sample_file

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


def lpselect(*args: str, threads: int) -> None:
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    cmd = [sys.executable, "-m", "lpselect", *args]
    log(" ".join(cmd[2:]))
    subprocess.run(cmd, check=True, env=env)


def band(values: np.ndarray, labels: np.ndarray | None, percent: float) -> np.ndarray:
    return select(values, labels, percent, "low", strategy="global" if labels is None else "cluster").ids


def overlaps(values: list[np.ndarray], labels: np.ndarray | None, percent: float) -> dict[str, list[float]]:
    half = len(values) // 2
    ids = [band(v, labels, percent) for v in values]
    cons = [band(consensus_metric(group), labels, percent) for group in (values[:half], values[half:])]
    return {
        "single vs single": [set_overlap(a, b).fraction for a, b in itertools.combinations(ids, 2)],
        "consensus vs consensus": [set_overlap(cons[0], cons[1]).fraction],
        "consensus vs its seeds": [set_overlap(cons[g], ids[i]).fraction
                                   for g, members in enumerate((range(half), range(half, len(ids))))
                                   for i in members],
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    data = sample_file(args.data, args.n, args.out)
    runs = args.out / "runs"
    lpselect("score", "--data", str(data), "--out", str(runs), "--seeds", ",".join(map(str, args.seeds)),
             "--epochs", str(max(1, args.epoch)), "--quiet", *args.extra, threads=args.threads)
    lpselect("cluster", "--data", str(data), "--out", str(args.out / "cluster"), "--quiet", threads=args.threads)
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


if __name__ == "__main__":
    main()
