"""Peak memory of ``lpselect score --epochs 0`` (one P0 pass) at two data sizes, each in a fresh process.

    python benchmarks/bench_memory.py [--sizes 4000 40000] [--data ALPACA.json] [--model SmolLM2 | --tiny]

Each size runs ``lpselect score --data FIRST_N_ROWS.json --out RUN --epochs 0 --quiet`` as a child process;
its peak resident set size is the child's own ``ru_maxrss`` (``os.wait4``), so sizes never mix. A third child
that only imports lpselect, torch and transformers gives the fixed floor. ``--tiny`` scores with a randomly
initialised 2-layer Llama and a 400-token byte-level BPE tokenizer (``lpselect.testing``, as the tests use)
built in a temp folder, so the data path (reading, tokenising, the token table, batching) dominates the memory;
with the default scorer (SmolLM2-135M) the model and the pass dominate, and 40,000 rows take hours on a 2-core
CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import (  # benchmarks/ is on sys.path when a script here is run
    ALPACA,
    log,
    log_tail,
    lpselect_cmd,
    manifest_step,
    markdown_table,
    measure,
    note_start,
    phase,
    print_header,
    subset_file,
)

from lpselect.testing import build_tiny_llama

IMPORTS_ONLY = "import torch, transformers, lpselect.cli, lpselect.steps.score, lpselect.data.formats"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--data", type=Path, default=ALPACA,
                    help="JSON array of samples (default: shared Alpaca)")
    ap.add_argument("--sizes", type=int, nargs=2, default=[4000, 40000], metavar=("N1", "N2"),
                    help="rows of the two runs (default 4000 40000)")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--model", default=None,
                       help="hub id or folder (default: SmolLM2-135M-Instruct, offline)")
    group.add_argument("--tiny", action="store_true", help="a tiny random Llama: the data path dominates")
    ap.add_argument("--threads", type=int, default=0,
                    help="OMP_NUM_THREADS for the children (0 = inherit); 1 is far faster on a loaded machine")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                    help="further options for lpselect score (e.g. --extra --precision bf16)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    note_start()
    with tempfile.TemporaryDirectory(prefix="lpselect-bench-mem-") as tmp:
        folder = Path(tmp)
        if args.tiny:
            source = str(build_tiny_llama(folder / "tiny-llama"))
            model_label = "tiny random Llama (2 layers, hidden 32, vocab 400)"
        else:
            from lpselect.engine.models import model_source

            source = model_source(args.model)
            model_label = source
        floor_kib, _, rc = measure([sys.executable, "-c", IMPORTS_ONLY], folder / "imports.log", args.threads)
        if rc:
            raise SystemExit(f"the import-only child failed:\n{log_tail(folder / 'imports.log', 2000)}")
        runs: list[dict[str, Any]] = []
        for n in args.sizes:
            data_file = subset_file(args.data, n, folder, skip_empty_output=True)
            run = folder / f"run-{n}"
            cmd = lpselect_cmd("score", "--data", str(data_file), "--out", str(run), "--epochs", "0", "--model",
                               source, "--quiet", *args.extra)
            log(f"{n} rows: lpselect score --epochs 0")
            kib, wall, rc = measure(cmd, folder / f"run-{n}.log", args.threads)
            if rc:
                raise SystemExit(f"lpselect score failed on {n} rows:\n{log_tail(folder / f'run-{n}.log')}")
            step = manifest_step(run, "score")
            runs.append({"n": n, "kib": kib, "wall": wall, "tokens": step["counts"]["tokens"],
                         "mb": data_file.stat().st_size / 2**20, "times": step["wall_time_s"]})
            log(f"  peak RSS {kib / 1024:.0f} MiB, {wall:.0f} s")

    print_header("Peak memory of lpselect score --epochs 0", [
        ("model", model_label),
        ("data", f"first N rows of {args.data.name} with a non-empty output (lpselect refuses an empty one)"),
        ("command", "lpselect score --data D --out R --epochs 0 --model M --quiet " + " ".join(args.extra)),
        ("peak RSS", "the child's own ru_maxrss (os.wait4), one fresh process per size"),
        ("threads", f"OMP_NUM_THREADS={args.threads}" if args.threads else "inherited"),
        ("floor", f"a child that only imports torch, transformers and lpselect: {floor_kib / 1024:,.0f} MiB"),
    ])
    rows = []
    for r in runs:
        t = r["times"]
        rows.append([f"{r['n']:,}", f"{r['mb']:.1f}", f"{r['tokens']:,}", f"{r['kib'] / 1024:,.0f}",
                     f"{(r['kib'] - floor_kib) / 1024:,.0f}", f"{r['wall']:.0f}",
                     f"{t.get('tokenize_tokens', float('nan')):.1f}", f"{phase(t, 'pass_0'):.1f}"])
    a, b = runs
    above = (b["kib"] - floor_kib) / max(a["kib"] - floor_kib, 1)
    rows.append([f"ratio {b['n'] / a['n']:.1f}x rows", f"{b['mb'] / a['mb']:.2f}x",
                 f"{b['tokens'] / a['tokens']:.2f}x", f"**{b['kib'] / a['kib']:.2f}x**", f"**{above:.2f}x**",
                 f"{b['wall'] / a['wall']:.2f}x", "", ""])
    print(markdown_table(["rows", "input MiB", "tokens", "peak RSS MiB", "RSS above floor MiB", "wall s",
                          "tokenise s", "P0 pass s"], rows))


if __name__ == "__main__":
    main()
