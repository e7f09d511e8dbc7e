"""Scoring-pass throughput and exactness: lpselect's ``scoring_pass`` vs a plain Trainer-evaluate-style loop.

    python benchmarks/bench_scoring.py [--n 128] [--data DOLLY.json] [--model SmolLM2] [--repeats 3]

Arms, on the same model object and the same token table (lpselect's tokenisation, loss mask and truncation):

* ``baseline fp32``: batches of 4 in file order, padded to the longest of the batch,
  ``model(input_ids, attention_mask, labels)`` producing full-vocabulary fp32 logits at every position
  (prompt labels -100), each row's loss from those logits, under ``torch.no_grad``;
* ``ours fp32`` / ``ours bf16``: ``lpselect.scoring.passes.scoring_pass`` with the score job's CPU budget
  (2048 padded tokens per batch; 16384 on CUDA) in fp32 and under bf16 autocast.

Arms run interleaved (the order rotates each round) after a small warm-up; tokens/s counts real (unpadded)
tokens, so the same for every arm. MFU = 2 x parameters x tokens/s / the matmul peak measured in this run
(bf16 arms against the bf16 peak, fp32 arms against the fp32 peak). Exactness: max relative difference of
ours-fp32 vs the baseline's fp32 perplexities, and Spearman of ours-bf16 vs those exact fp32 perplexities.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _common import (  # benchmarks/ is on sys.path when a script here is run
    DOLLY,
    fmt,
    interleaved,
    log,
    markdown_table,
    matmul_peak,
    n_params,
    note_start,
    peak_rows,
    print_header,
    ratio_stats,
    reference_eval,
    resolve_source,
    subset_file,
    tokenize_file,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--data", type=Path, default=DOLLY, help="JSON array of samples (default: shared Dolly)")
    ap.add_argument("--n", type=int, default=128, help="use the first N samples (default 128)")
    ap.add_argument("--model", default=None,
                    help="hub id or folder (default: SmolLM2-135M-Instruct, offline)")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--budget", type=int, default=0,
                    help="ours: padded tokens per batch (0 = the score job's default: 2048 CPU, 16384 CUDA)")
    ap.add_argument("--batch-size", type=int, default=4, help="baseline rows per batch (default 4)")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds per arm (default 3)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    note_start()
    import numpy as np
    import torch
    from scipy.stats import spearmanr

    from lpselect.models import load_causal_lm, load_tokenizer
    from lpselect.scoring.passes import scoring_pass

    if args.threads:
        torch.set_num_threads(args.threads)
    budget = args.budget or (16384 if torch.cuda.is_available() else 2048)
    log("measuring matmul peaks")
    peaks = {d: matmul_peak(d) for d in ("fp32", "bf16")}
    source = resolve_source(args.model)
    tokenizer = load_tokenizer(source)
    with tempfile.TemporaryDirectory(prefix="lpselect-bench-") as tmp:
        data = tokenize_file(subset_file(args.data, args.n, Path(tmp)), tokenizer, args.max_length)
    model = load_causal_lm(source)
    pad_id = tokenizer.pad_token_id
    params = n_params(model)
    n_tokens = int(data.lengths.sum())

    def baseline() -> tuple[float, np.ndarray]:
        t0 = time.perf_counter()
        ppl = reference_eval(model, data, pad_id, batch_size=args.batch_size)
        return time.perf_counter() - t0, ppl

    def ours(precision: str):
        def run() -> tuple[float, np.ndarray]:
            t0 = time.perf_counter()
            ppl = scoring_pass(model, data, pad_id=pad_id, precision=precision, max_tokens=budget).ppl
            return time.perf_counter() - t0, ppl
        return run

    log("warm-up")
    warm = np.argsort(data.lengths, kind="stable")[: args.batch_size]  # one small batch
    reference_eval(model, data, pad_id, batch_size=args.batch_size, rows=warm)
    for p in ("fp32", "bf16"):
        scoring_pass(model, data, pad_id=pad_id, precision=p, max_tokens=budget, rows=warm)
    arms = {"baseline fp32": baseline, "ours fp32": ours("fp32"), "ours bf16": ours("bf16")}
    results = interleaved(arms, args.repeats)

    exact = results["baseline fp32"][0][1]
    ours32, ours16 = results["ours fp32"][0][1], results["ours bf16"][0][1]
    ok = np.isfinite(exact)
    max_rel32 = float(np.max(np.abs(ours32[ok] - exact[ok]) / exact[ok]))
    max_rel16 = float(np.max(np.abs(ours16[ok] - exact[ok]) / exact[ok]))
    rho16 = float(spearmanr(ours16[ok], exact[ok]).statistic)
    rho32 = float(spearmanr(ours32[ok], exact[ok]).statistic)
    nan_mismatch = int((np.isfinite(ours32) != ok).sum())

    print_header("Scoring pass: lpselect scoring_pass vs a Trainer-evaluate-style loop", [
        ("model", f"{source} ({params / 1e6:.2f}M parameters)"),
        ("data", f"first {len(data)} rows of {args.data.name}: {n_tokens:,} tokens "
                 f"({int(data.n_scored.sum()):,} scored), longest {int(data.lengths.max())}"),
        ("baseline", f"batches of {args.batch_size} in file order, full fp32 logits, torch.no_grad"),
        ("ours", f"scoring_pass, {budget} padded tokens per batch, length-sorted, LM head on scored "
                 "positions only"),
        *peak_rows(peaks),
        ("rounds", f"{args.repeats}, interleaved (order rotates); times are medians"),
    ])
    base_times = [t for t, _ in results["baseline fp32"]]
    rows = []
    for name, runs in results.items():
        times = [t for t, _ in runs]
        med = statistics.median(times)
        tps = n_tokens / med
        peak = peaks["bf16" if "bf16" in name else "fp32"]
        rows.append([name, f"{med:.2f}", f"{min(times):.2f}", f"{tps:,.0f}",
                     "1.00x" if name == "baseline fp32" else ratio_stats(base_times, times),
                     f"{100 * 2 * params * tps / peak.flops:.1f} % ({peak.dtype})"])
    print(markdown_table(["arm", "median s", "best s", "tokens/s",
                          "speed vs baseline (per-round median, range)", "MFU (2·N·tok/s / peak)"], rows))
    print()
    print(markdown_table(["exactness (vs baseline fp32 perplexities)", "value"], [
        ["max relative difference, ours fp32", fmt(max_rel32)],
        ["Spearman, ours fp32", f"{rho32:.6f}"],
        ["max relative difference, ours bf16", fmt(max_rel16)],
        ["Spearman, ours bf16", f"{rho16:.6f}"],
        ["rows NaN in one and not the other", str(nan_mismatch)],
    ]))


if __name__ == "__main__":
    main()
