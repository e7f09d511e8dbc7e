"""Training at 100k and 1M rows: does an optimizer step cost more when the epoch it belongs to is larger?

    python benchmarks/scale_epoch.py [--sizes 100000 1000000] [--steps 400] [--threads 1] [--out FILE]

A whole epoch of the tiny scorer over 1M rows takes hours on a 2-core CPU, and its cost per row is its cost per
optimizer step divided by the step's rows (32). So for each size this writes the synthetic rows of
``benchmarks/scale.py`` (same lengths, words, seed, tiny Llama and micro-batch budget) and trains the first
``--steps`` optimizer steps of epoch 1 with ``lpselect train --max-steps`` in a child: the same training loop
as ``score`` (``engine.train.train_epoch``), over rows drawn from the whole shuffled epoch, so the steps touch
the token table of every size across its whole span. Printed per size: seconds of those steps (the manifest's
``wall_time_s.train``), milliseconds per step and per row, and the ratio to the previous size.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import (  # benchmarks/ is on sys.path when a script here is run
    cpu_flag_grep,
    cpu_model,
    git_commit,
    log,
    lpselect_cmd,
    manifest_step,
    markdown_table,
    measure,
)
from scale import SYNTHETIC_SCORE_FLAGS, WORDS, alpaca_lengths, write_synthetic


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--steps", type=int, default=400, help="optimizer steps timed at every size")
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the children (0 = inherit)")
    ap.add_argument("--out", type=Path, default=None, help="also write the markdown to this file")
    args = ap.parse_args(argv)
    from lpselect.testing import build_tiny_llama

    work = Path(tempfile.mkdtemp(prefix="lpselect-epoch-"))
    model = str(build_tiny_llama(work / "tiny-llama", extra_corpus=[" ".join(WORDS)] * 20, vocab_size=1024))
    micro = list(SYNTHETIC_SCORE_FLAGS[SYNTHETIC_SCORE_FLAGS.index("--max-tokens-per-micro-batch"):][:2])
    lengths, rows, previous = alpaca_lengths(), [], None
    for n in sorted(args.sizes):
        data = work / f"synthetic-{n}.jsonl"
        write_synthetic(data, n, lengths, 0)
        out = work / f"train-{n}"
        log(f"{n:,} rows: lpselect train --max-steps {args.steps}")
        kib, wall, rc = measure(lpselect_cmd("train", "--data", str(data), "--out", str(out), "--model", model,
                                             "--epochs", "1", "--max-steps", str(args.steps), "--save-steps", "0",
                                             "--precision", "fp32", *micro, "--quiet"),
                                work / f"train-{n}.log", args.threads)
        if rc:
            raise SystemExit(f"train failed at {n} rows: see {work / f'train-{n}.log'}")
        step = manifest_step(out, "train")
        seconds, steps = step["wall_time_s"]["train"], step["steps_done"]
        rows_per_step = step["config"]["batch_size"] * step["config"]["grad_accum"]
        per_step = seconds / steps * 1e3
        ratio = f"{per_step / previous:.2f}x" if previous else ""
        rows.append([f"{n:,}", str(steps), f"{seconds:.1f}", f"{per_step:.0f}",
                     f"{per_step / rows_per_step * 1e3:,.0f}", ratio,
                     f"{step['wall_time_s']['read_tokenize']:.0f}", f"{kib / 1024:,.0f}", f"{wall:.0f}"])
        previous = per_step
        data.unlink()
    text = (f"# Training steps at {' / '.join(f'{n:,}' for n in sorted(args.sizes))} rows\n\n"
            f"- lpselect {git_commit()}; CPU: {cpu_model()} ({cpu_flag_grep()}); "
            f"OMP_NUM_THREADS={args.threads or 'inherited'}; the first {args.steps} optimizer steps of epoch 1, "
            f"tiny random Llama, {' '.join(micro)}\n\n"
            + markdown_table(["rows", "steps", "train s", "ms/step", "µs/row", "ratio", "read + tokenise s",
                              "peak RSS MiB", "child wall s"], rows) + "\n")
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
