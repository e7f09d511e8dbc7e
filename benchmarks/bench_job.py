"""The whole LP_app(1) job (P0 pass, one training epoch, P1 pass): a plain Trainer-based job vs
``lpselect.steps.score.score``.

    python benchmarks/bench_job.py [--n 64] [--data DOLLY.json] [--model SmolLM2] [--bf16] [--epochs-compare]

* ``baseline``: the reference's recipe written plainly: a Trainer-evaluate-style perplexity loop (batches of 4
  in file order, padded to the longest, full fp32 logits, as in bench_scoring.py), one epoch of
  ``transformers.Trainer`` with the reference's settings (as in bench_training.py; LR schedule over 3 epochs,
  stopped after the first), and the same loop again. Timed phase by phase; model loading and tokenisation are
  not timed.
* ``ours``: ``score(data, run, ScoreConfig(epochs=1, ...))``; the phase times are read from the run folder's
  ``manifest.json`` (``steps.score.wall_time_s``: pass_0 + train_1 + pass_1; reading, tokenising, model
  loading and the checkpoint are outside these phases). The whole ``score()`` call is printed as well.

Rounds are interleaved (the order rotates). ``--epochs-compare`` also runs ours with ``epochs=3`` and prints
wall(epochs 1) / wall(epochs 3) over the same phases (pass_0..pass_3, train_1..train_3).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (  # benchmarks/ is on sys.path when a script here is run
    device_name,
    fmt,
    fresh_model,
    interleaved,
    log,
    manifest_step,
    markdown_table,
    note_start,
    parse_bench_args,
    phase,
    print_header,
    reference_eval,
    subset_file,
    tokenize_file,
    trainer_epoch,
)

PHASES = ("pass_0", "train_1", "pass_1")


def _own_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--bf16", action="store_true", help="both jobs in bf16 (default fp32, ours' CPU default)")
    ap.add_argument("--epochs-compare", action="store_true", help="also run ours with epochs=3")
    ap.add_argument("--repeats", type=int, default=1, help="rounds per arm (default 1)")
    ap.add_argument("--micro-budget", type=int, default=None,
                    help="ours: padded tokens per training micro-batch (default: ScoreConfig's default)")


parse_args = parse_bench_args(__doc__, 64, _own_args)


def run_ours(data_file: Path, source: str, epochs: int, precision: str, folder: Path, max_length: int,
             device: str = "auto", micro_budget: int | None = None) -> dict[str, Any]:
    """One score job in a fresh run folder: its manifest's phase times, perplexities, and total wall."""
    from lpselect.config import ScoreConfig
    from lpselect.runs.tables import read_ppl_table
    from lpselect.steps.score import score  # imported in main() already: fails before any timing

    run = folder / f"ours-e{epochs}-{time.monotonic_ns()}"
    extra = {} if micro_budget is None else {"max_tokens_per_micro_batch": micro_budget}
    cfg = ScoreConfig(model=source, epochs=epochs, precision=precision, max_length=max_length, device=device,
                      **extra)
    t0 = time.perf_counter()
    result = score(data_file, run, cfg, progress=False)
    total = time.perf_counter() - t0
    step = manifest_step(run, "score")
    ppl = read_ppl_table(result.scores_path)
    return {"times": step["wall_time_s"], "total": total, "config": step["config"],
            "micro_budget": step.get("micro_batch_budget"), "ppl": [ppl[:, e] for e in range(epochs + 1)]}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    note_start()
    import numpy as np
    import torch
    from scipy.stats import spearmanr

    import lpselect.steps.score  # noqa: F401  (import errors show now, not after the baseline's minutes)
    from lpselect.core.metrics import learning_percentage_approx
    from lpselect.engine.batching import pass_token_budget
    from lpselect.engine.models import load_tokenizer, model_source

    if args.threads:
        torch.set_num_threads(args.threads)
    precision = "bf16" if args.bf16 else "fp32"
    device = device_name(args.device)
    source = model_source(args.model)
    tokenizer = load_tokenizer(source)
    pad_id = tokenizer.pad_token_id
    with tempfile.TemporaryDirectory(prefix="lpselect-bench-job-") as tmp:
        folder = Path(tmp)
        data_file = subset_file(args.data, args.n, folder)
        data = tokenize_file(data_file, tokenizer, args.max_length)

        def baseline() -> tuple[float, dict[str, Any]]:
            model = fresh_model(source, device)  # not timed
            times: dict[str, float] = {}
            t0 = time.perf_counter()
            ppl0 = reference_eval(model, data, pad_id, bf16=args.bf16)
            times["pass_0"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            outcome = trainer_epoch(model, data, pad_id, bf16=args.bf16, schedule_epochs=3)
            times["train_1"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            ppl1 = reference_eval(model, data, pad_id, bf16=args.bf16)
            times["pass_1"] = time.perf_counter() - t0
            del model
            gc.collect()
            return sum(times.values()), {"times": times, "ppl": [ppl0, ppl1], "note": outcome.note,
                                         "trainer_train_s": outcome.seconds}

        def ours() -> tuple[float, dict[str, Any]]:
            r = run_ours(data_file, source, 1, precision, folder, args.max_length, device, args.micro_budget)
            gc.collect()
            return sum(phase(r["times"], p) for p in PHASES), r

        log("warm-up (one small batch, so neither arm pays the first call's kernel set-up)")
        warm_model = fresh_model(source, device)
        reference_eval(warm_model, data, pad_id, bf16=args.bf16, rows=np.argsort(data.lengths)[:4])
        del warm_model
        results = interleaved({"baseline": baseline, "ours": ours}, args.repeats)
        e3 = None
        if args.epochs_compare:
            log("ours with epochs=3")
            e3 = run_ours(data_file, source, 3, precision, folder, args.max_length, device, args.micro_budget)

    base_runs, our_runs = results["baseline"], results["ours"]
    auto_budget = f"{pass_token_budget(0, torch.device(device))} (auto)"
    cfg = our_runs[0][1]["config"]
    print_header("LP_app(1) job: lpselect score(epochs=1) vs a plain Trainer-based job", [
        ("model", source),
        ("device", device),
        ("data", f"first {len(data)} rows of {args.data.name}: {int(data.lengths.sum()):,} tokens "
                 f"({int(data.n_scored.sum()):,} scored)"),
        ("precision", precision),
        ("baseline", "eval loop (batch 4, file order, full logits) + Trainer epoch "
                     f"({base_runs[0][1]['note']}) + eval loop"),
        ("ours", f"score(): pass budget {cfg['max_tokens_per_batch'] or auto_budget}, micro-batch budget "
                 f"{our_runs[0][1]['micro_budget']} tokens; phases from manifest.json"),
        ("rounds", f"{args.repeats}, interleaved; figures are medians"),
    ])

    def med(runs: list[tuple[float, dict[str, Any]]], name: str) -> float:
        return statistics.median(phase(r["times"], name) for _, r in runs)

    rows = []
    for name, label in zip(PHASES, ("P0 pass", "train epoch 1", "P1 pass"), strict=True):
        b, o = med(base_runs, name), med(our_runs, name)
        rows.append([label, f"{b:.1f}", f"{o:.1f}", f"{b / o:.2f}x"])
    b_tot = statistics.median(t for t, _ in base_runs)
    o_tot = statistics.median(t for t, _ in our_runs)
    rows.append(["**total (P0 + epoch + P1)**", f"**{b_tot:.1f}**", f"**{o_tot:.1f}**",
                 f"**{b_tot / o_tot:.2f}x**"])
    whole = statistics.median(r["total"] for _, r in our_runs)
    rows.append(["ours: whole score() call (read, tokenise, load, checkpoint too)", "", f"{whole:.1f}", ""])
    print(markdown_table(["phase", "baseline s", "ours s", "speed-up (baseline / ours)"], rows))
    print()

    bp, op = base_runs[0][1]["ppl"], our_runs[0][1]["ppl"]
    ok = np.isfinite(bp[0]) & np.isfinite(op[0])
    lp_b = learning_percentage_approx(np.column_stack(bp), 1)
    lp_o = learning_percentage_approx(np.column_stack(op), 1)
    fin = np.isfinite(lp_b) & np.isfinite(lp_o)
    rel0 = float(np.max(np.abs(op[0][ok] - bp[0][ok]) / bp[0][ok]))
    rho1 = float(spearmanr(op[1][fin], bp[1][fin]).statistic)
    rho_lp = float(spearmanr(lp_o[fin], lp_b[fin]).statistic)
    agreement = [
        ["P0 max relative difference (same weights)", fmt(rel0)],
        ["P1 Spearman (different shuffles, so not equal)", f"{rho1:.4f}"],
        ["LP_app(1) Spearman", f"{rho_lp:.4f}" if np.isfinite(rho_lp) else
         "n/a: LP_app(1) is constant (P1 = P0, e.g. one optimizer step at warm-up LR 0)"],
    ]
    print(markdown_table(["agreement, ours vs baseline", "value"], agreement))
    if e3 is not None:
        phases3 = [f"pass_{e}" for e in range(4)] + [f"train_{e}" for e in range(1, 4)]
        w3 = sum(phase(e3["times"], p) for p in phases3)
        w1, t1 = our_runs[-1][0], our_runs[-1][1]["total"]
        print()
        print(markdown_table(["ours", "P0..Pn + epochs s", "whole score() s"], [
            ["epochs 1 (LP_app(1))", f"{w1:.1f}", f"{t1:.1f}"],
            ["epochs 3 (LP(1), reference default)", f"{w3:.1f}", f"{e3['total']:.1f}"],
            ["ratio wall(epochs 1) / wall(epochs 3)", f"{w1 / w3:.2f}", f"{t1 / e3['total']:.2f}"],
        ]))


if __name__ == "__main__":
    main()
