"""Scoring-pass throughput and exactness: lpselect's ``scoring_pass`` vs a plain Trainer-evaluate-style loop.

    python benchmarks/bench_scoring.py [--n 128] [--data DOLLY.json] [--model SmolLM2] [--repeats 3]

Arms, on the same model object and the same token table (lpselect's tokenisation, loss mask and truncation):

* ``baseline fp32``: batches of 4 in file order, padded to the longest of the batch,
  ``model(input_ids, attention_mask, labels)`` producing full-vocabulary fp32 logits at every position
  (prompt labels -100), each row's loss from those logits, under ``torch.no_grad``;
* ``ours fp32`` / ``ours bf16``: ``lpselect.engine.passes.scoring_pass`` with the score job's CPU budget
  (2048 padded tokens per batch; 16384 on CUDA) in fp32 and under bf16 autocast.

Arms run interleaved (the order rotates each round) after a small warm-up; tokens/s counts real (unpadded)
tokens, so the same for every arm. MFU = 2 x parameters x tokens/s / the matmul peak measured in this run
(bf16 arms against the bf16 peak, fp32 arms against the fp32 peak). Exactness: max relative difference of
ours-fp32 vs the baseline's fp32 perplexities, and Spearman of ours-bf16 vs those exact fp32 perplexities.
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import (  # benchmarks/ is on sys.path when a script here is run
    bench_setup,
    fmt,
    interleaved,
    log,
    markdown_table,
    n_params,
    note_start,
    parse_bench_args,
    peak_rows,
    print_header,
    ratio_stats,
    reference_eval,
)


def _own_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--budget", type=int, default=0,
                    help="ours: padded tokens per batch (0 = the score job's default: 2048 CPU, 16384 CUDA)")
    ap.add_argument("--batch-size", type=int, default=4, help="baseline rows per batch (default 4)")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds per arm (default 3)")


parse_args = parse_bench_args(__doc__, 128, _own_args)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    note_start()
    import numpy as np
    import torch
    from scipy.stats import spearmanr

    from lpselect.engine.batching import pass_token_budget
    from lpselect.engine.models import load_causal_lm
    from lpselect.engine.passes import scoring_pass

    setup = bench_setup(args)
    source, data, peaks, pad_id = setup.source, setup.data, setup.peaks, setup.pad_id
    budget = pass_token_budget(args.budget, torch.device(setup.device))  # the score job's own default
    model = load_causal_lm(source).to(setup.device)
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
        ("device", setup.device),
        setup.data_row(args.data.name),
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
