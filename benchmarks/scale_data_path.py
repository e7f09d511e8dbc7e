"""Reading and tokenising at 100k and 1M rows, on their own: how the data path grows, without the hours of a
full scale run.

    python benchmarks/scale_data_path.py [--sizes 100000 1000000] [--threads 1] [--out FILE]

For each size it writes the synthetic rows of ``benchmarks/scale.py`` (same lengths, words, seed and tiny
scorer) and runs ``lpselect plan --epochs 0 --no-embed`` in a child: plan reads and tokenises the whole file
exactly as ``score`` does and records both times, then probes P0 for a few seconds. Printed: per size the read
and tokenise seconds, microseconds per row and the per-row ratio to the previous size, plan's P0 estimate,
and the child's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from _common import cpu_flag_grep, cpu_model, git_commit, log, lpselect_cmd, markdown_table, measure
from scale import WORDS, alpaca_lengths, write_synthetic


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the children (0 = inherit)")
    ap.add_argument("--out", type=Path, default=None, help="also write the markdown to this file")
    args = ap.parse_args(argv)
    from lpselect.testing import build_tiny_llama

    work = Path(tempfile.mkdtemp(prefix="lpselect-datapath-"))
    model = str(build_tiny_llama(work / "tiny-llama", extra_corpus=[" ".join(WORDS)] * 20, vocab_size=1024))
    lengths, rows, previous = alpaca_lengths(), [], None
    for n in sorted(args.sizes):
        data = work / f"synthetic-{n}.jsonl"
        write_synthetic(data, n, lengths, 0)
        plan_json = work / f"plan-{n}.json"
        log(f"{n:,} rows: lpselect plan")
        kib, wall, rc = measure(lpselect_cmd("plan", "--data", str(data), "--model", model, "--epochs", "0",
                                             "--no-embed", "--probe-seconds", "3", "--json", str(plan_json)),
                                work / f"plan-{n}.log", args.threads)
        if rc:
            raise SystemExit(f"plan failed at {n} rows: see {work / f'plan-{n}.log'}")
        phases = {p["kind"]: p for p in json.loads(plan_json.read_text())["phases"]}
        per_row = {k: phases[k]["seconds"] / n * 1e6 for k in ("read", "tokenize")}
        ratio = {k: f"{per_row[k] / previous[k]:.2f}x" if previous else "" for k in per_row}
        rows.append([f"{n:,}", f"{phases['read']['seconds']:.1f}", f"{per_row['read']:.1f}", ratio["read"],
                     f"{phases['tokenize']['seconds']:.1f}", f"{per_row['tokenize']:.0f}", ratio["tokenize"],
                     f"{phases['pass']['seconds']:.0f}", f"{kib / 1024:,.0f}", f"{wall:.0f}"])
        previous = per_row
        data.unlink()
    text = (f"# Data path: read and tokenise, {' / '.join(f'{n:,}' for n in sorted(args.sizes))} rows\n\n"
            f"- lpselect {git_commit()}; CPU: {cpu_model()} ({cpu_flag_grep()}); "
            f"OMP_NUM_THREADS={args.threads or 'inherited'}\n\n"
            + markdown_table(["rows", "read s", "read µs/row", "ratio", "tokenise s", "tokenise µs/row", "ratio",
                              "plan's P0 estimate s", "peak RSS MiB", "child wall s"], rows) + "\n")
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
