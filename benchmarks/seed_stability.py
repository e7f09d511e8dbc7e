"""How stable is a selection across scorer seeds, and how well do the cheap LP variants rank like LP(1)?

    python benchmarks/seed_stability.py [--n 400] [--seeds 42 43] [--epochs 2] [--out runs/stability]

Scores the same random sample of real Dolly rows (drawn with a fixed seed) once per scorer seed with
``lpselect score`` (SmolLM2-135M-Instruct by default; a finished run folder is reused, an interrupted one
resumes), then prints, as markdown:

- between seeds: Spearman and Kendall of LP(1), LP_app(1) and lp_online(1), and the overlap of the 10 %
  ``low`` subsets (global ranking; two random 10 % subsets would share about 10 %);
- within each run: Spearman of LP_app(1) and of lp_online(1) against exact LP(1), and the share of the job's
  wall time that the passes after P0 took (what ``lp_online`` would save).

The seed changes the order in which the scorer sees the samples (and any dropout), nothing else.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import (  # benchmarks/ is on sys.path when a script here is run
    DOLLY,
    git_commit,
    manifest_step,
    run_lpselect,
    sample_file,
)

from lpselect.analysis.compare import compare_runs, rank_correlation
from lpselect.analysis.runio import metric_values, read_scores
from lpselect.config import CompareSpec

METRICS = (("lp", "LP(1)"), ("lp_app", "LP_app(1)"), ("lp_online", "lp_online(1)"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--data", type=Path, default=DOLLY, help="JSON array of samples (default: shared Dolly)")
    ap.add_argument("--n", type=int, default=400, help="rows drawn at random (seed 0) from --data")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 43], help="scorer seeds (at least two)")
    ap.add_argument("--epochs", type=int, default=2, help="training epochs n (LP(1) needs n >= 2)")
    ap.add_argument("--percent", type=float, default=10)
    ap.add_argument("--out", type=Path, default=Path("runs/stability"), help="folder for the data and runs")
    ap.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS of the score jobs (0 = inherit)")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                    help="further options for lpselect score (e.g. --extra --precision bf16 --model PATH)")
    args = ap.parse_args(argv)
    if len(args.seeds) < 2 or args.epochs < 2:
        ap.error("give at least two seeds and --epochs >= 2")
    return args


def wall_share_after_p0(run: Path) -> float:
    """Share of the job's training + pass time spent in the passes after P0."""
    wall = manifest_step(run, "score")["wall_time_s"]
    total = sum(v for k, v in wall.items() if k.startswith(("pass_", "train_")))
    later = sum(v for k, v in wall.items() if k.startswith("pass_") and not k.endswith("_0"))
    return later / total


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    data = sample_file(args.data, args.n, args.out)
    runs = [args.out / f"seed{s}" for s in args.seeds]
    for seed, run in zip(args.seeds, runs, strict=True):
        run_lpselect("score", "--data", str(data), "--out", str(run), "--epochs", str(args.epochs), "--seed",
                     str(seed), "--quiet", *args.extra, threads=args.threads)

    print(f"\n{args.n} random rows of {args.data.name}; seeds {args.seeds}; {args.epochs} epochs; "
          f"commit {git_commit()}\n")
    print(f"| between seeds {args.seeds[0]} and {args.seeds[1]} | Spearman | Kendall | "
          f"overlap of the {args.percent:g} % low subsets | Jaccard |")
    print("|---|---:|---:|---:|---:|")
    for metric, label in METRICS:
        c = compare_runs(runs[0], runs[1], CompareSpec(metric=metric, epoch=1, percent=args.percent))
        o = c.overlap.global_
        print(f"| {label} | {c.correlation.spearman:.3f} | {c.correlation.kendall:.3f} | "
              f"{o.n_common}/{o.n_a} ({o.fraction:.0%}) | {o.jaccard:.3f} |")

    print("\n| run | Spearman LP_app(1) vs LP(1) | Spearman lp_online(1) vs LP(1) | "
          "wall share of the passes after P0 |")
    print("|---|---:|---:|---:|")
    for seed, run in zip(args.seeds, runs, strict=True):
        scores = read_scores(run)
        lp = metric_values(scores, "lp", 1)
        app = rank_correlation(metric_values(scores, "lp_app", 1), lp).spearman
        online = rank_correlation(metric_values(scores, "lp_online", 1), lp).spearman
        print(f"| seed {seed} | {app:.3f} | {online:.3f} | {wall_share_after_p0(run):.0%} |")


if __name__ == "__main__":
    main()
