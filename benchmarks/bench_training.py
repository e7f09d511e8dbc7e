"""Training throughput: one epoch of lpselect's ``train_epoch`` vs one epoch of ``transformers.Trainer``.

    python benchmarks/bench_training.py [--n 128] [--data DOLLY.json] [--model SmolLM2] [--bf16] [--repeats 1]

Arms, each on a model loaded afresh from disk (so all start from the same weights) and the same token table
(lpselect's tokenisation, loss mask and truncation):

* ``Trainer``: ``transformers.Trainer`` with the reference's settings: per-device batch 4, gradient
  accumulation 8, AdamW lr 2e-5, weight decay 0, cosine schedule with 3 % warm-up, max grad norm 1, no length
  grouping (random sampler), a collator padding to the longest row with prompt labels -100, ``report_to=[]``,
  ``save_strategy="no"``, fp32 (or ``--bf16``: the Trainer's bf16 autocast). Only ``trainer.train()`` is
  timed.
* ``ours fp32`` / ``ours bf16``: ``lpselect.engine.train.train_epoch`` with ``FineTuneSettings`` defaults
  (the same optimizer step of 32 samples, cut into length-sorted micro-batches by a token budget: the score
  job's automatic one unless ``--micro-budget`` names others).

Both use an LR schedule spanning ``--schedule-epochs`` (default 3, as ``lpselect score --epochs 1``) and stop
after the first epoch. tokens/s counts real (unpadded) tokens; MFU = 6 x parameters x tokens/s / the matmul
peak measured in this run. Loss: the mean over optimizer steps of each step's token-mean training loss, and
the mean of the last ``--last-k`` steps (Trainer: its logged per-step losses; ours: from the per-row NLLs
that train_epoch reports), and the final loss: the trained model's token-mean NLL over all rows (one fp32
pass, untimed). The arms shuffle differently, so their step losses agree only roughly; the final loss
compares the trained models on the same rows.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import TYPE_CHECKING

from _common import (  # benchmarks/ is on sys.path when a script here is run
    TrainOutcome,
    bench_setup,
    fresh_model,
    interleaved,
    log,
    markdown_table,
    n_params,
    note_start,
    parse_bench_args,
    peak_rows,
    print_header,
    ratio_stats,
    sync,
    trainer_epoch,
)

if TYPE_CHECKING:
    from lpselect.data.tokenize import TokenizedData


def _own_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--bf16", action="store_true", help="the Trainer arm in bf16 (default fp32)")
    ap.add_argument("--schedule-epochs", type=int, default=3, help="LR schedule length in epochs (default 3)")
    ap.add_argument("--micro-budget", default=None,
                    help="ours: padded tokens per micro-batch (default: the score job's automatic budget: 2048 "
                         "on CPU, what fits the GPU up to 16384 on CUDA); a comma list "
                         "adds a bf16 arm per further budget")
    ap.add_argument("--optim", default=None, help="Trainer optimizer (default: the Trainer's own default)")
    ap.add_argument("--last-k", type=int, default=2, help="final loss = mean of the last K optimizer steps")
    ap.add_argument("--repeats", type=int, default=1, help="timed epochs per arm (default 1)")


parse_args = parse_bench_args(__doc__, 128, _own_args)


def ours_epoch(model, data: TokenizedData, pad_id: int, *, precision: str, schedule_epochs: int = 3,
               micro_budget: int | None = None) -> TrainOutcome:
    """One epoch of ``lpselect.engine.train.train_epoch`` (epoch 1 of a ``schedule_epochs`` schedule, as the
    score job runs it); per-step losses come from the rows' NLLs that train_epoch reports (``row_nll``).
    ``micro_budget`` None is the score job's automatic budget for this device."""
    import numpy as np

    from lpselect.config import FineTuneSettings
    from lpselect.engine import train as tr
    from lpselect.engine.budget import auto_micro_budget

    device = next(model.parameters()).device
    if micro_budget is None:
        micro_budget = auto_micro_budget(model, device, precision=precision, checkpointing=False)
    s = FineTuneSettings(max_tokens_per_micro_batch=micro_budget)
    optimizer, scheduler = tr.make_optimizer(model, s, tr.steps_per_epoch(len(data), s) * schedule_epochs)
    row_nll = np.full(len(data), np.nan)
    sync()
    t0 = time.perf_counter()
    tr.train_epoch(model, data, optimizer, scheduler, s, epoch=1, pad_id=pad_id, precision=precision,
                   row_nll=row_nll)
    sync()
    seconds = time.perf_counter() - t0
    order, n_scored = tr.epoch_order(len(data), s.seed, 1), data.n_scored
    step = s.batch_size * s.grad_accum
    losses = []
    for a in range(0, len(order), step):
        rows = order[a : a + step]
        w = n_scored[rows]
        if w.sum():
            losses.append(float(np.nansum(row_nll[rows] * w) / w.sum()))
    return TrainOutcome(seconds, losses, f"micro-batch budget {micro_budget} tokens")


def data_loss(model, data: TokenizedData, pad_id: int) -> float:
    """Token-mean NLL of the scored tokens of all rows under ``model``, by one fp32 pass: the trained models'
    loss on their training data, comparable across arms that saw the rows in different orders."""
    import numpy as np

    from lpselect.engine.passes import pass_sums

    sums = pass_sums(model, data, np.arange(len(data)), pad_id=pad_id, precision="fp32")
    return float(sums[0].sum() / sums[2].sum())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    note_start()
    setup = bench_setup(args)
    source, data, peaks, pad_id = setup.source, setup.data, setup.peaks, setup.pad_id
    n_tokens = int(data.lengths.sum())
    trainer_name = f"Trainer {'bf16' if args.bf16 else 'fp32'}"

    device = setup.device
    budgets: list[int | None] = [int(b) for b in args.micro_budget.split(",")] if args.micro_budget else [None]

    def trainer_arm() -> tuple[float, TrainOutcome]:
        model = fresh_model(source, device)
        out = trainer_epoch(model, data, pad_id, bf16=args.bf16, schedule_epochs=args.schedule_epochs,
                            optim=args.optim)
        out.final_loss = data_loss(model, data, pad_id)
        del model
        gc.collect()
        return out.seconds, out

    def ours_arm(precision: str, budget: int | None):
        def run() -> tuple[float, TrainOutcome]:
            model = fresh_model(source, device)
            out = ours_epoch(model, data, pad_id, precision=precision, schedule_epochs=args.schedule_epochs,
                             micro_budget=budget)
            out.final_loss = data_loss(model, data, pad_id)
            del model
            gc.collect()
            return out.seconds, out
        return run

    params = n_params(fresh_model(source))
    arms = {trainer_name: trainer_arm, "ours fp32": ours_arm("fp32", budgets[0]),
            "ours bf16": ours_arm("bf16", budgets[0])}
    for b in budgets[1:]:
        arms[f"ours bf16, budget {b}"] = ours_arm("bf16", b)
    t0 = time.perf_counter()
    results = interleaved(arms, args.repeats)
    log(f"all arms: {time.perf_counter() - t0:.0f} s")

    trainer_note = results[trainer_name][0][1].note
    print_header("One training epoch: lpselect train_epoch vs transformers.Trainer", [
        ("model", f"{source} ({params / 1e6:.2f}M parameters)"),
        ("device", device),
        setup.data_row(args.data.name),
        ("optimizer steps", f"{-(-len(data) // 32)} of 32 samples; LR schedule over {args.schedule_epochs} "
                            "epoch(s), stopped after epoch 1"),
        ("Trainer", f"batch 4 x accumulation 8, padded to the longest, {trainer_note}"),
        ("ours", f"train_epoch, FineTuneSettings, {results['ours bf16'][0][1].note} (unless the arm names "
                 "another), torch.optim.AdamW"),
        ("final loss", "token-mean NLL of all rows' scored tokens under the trained model (one fp32 pass, not "
                       "timed): comparable across arms that saw the rows in different orders"),
        *peak_rows(peaks),
        ("rounds", f"{args.repeats}, interleaved (order rotates); times are medians"),
    ])
    base_times = [t for t, _ in results[trainer_name]]
    rows = []
    for name, runs in results.items():
        times = [t for t, _ in runs]
        med = statistics.median(times)
        tps = n_tokens / med
        peak = peaks["bf16" if "bf16" in name else "fp32"]
        first: TrainOutcome = runs[0][1]
        rows.append([name, f"{med:.1f}", f"{tps:,.0f}",
                     "1.00x" if name == trainer_name else ratio_stats(base_times, times),
                     f"{100 * 6 * params * tps / peak.flops:.1f} % ({peak.dtype})",
                     f"{first.mean_loss():.4f}", f"{first.last_loss(args.last_k):.4f}",
                     f"{first.final_loss:.4f}", str(len(first.step_losses))])
    print(markdown_table(["arm", "median s", "tokens/s", f"speed vs {trainer_name} (per-round median, range)",
                          "MFU (6·N·tok/s / peak)", "mean step loss", f"last {args.last_k} steps loss",
                          "final loss (trained model, all rows)", "steps"], rows))


if __name__ == "__main__":
    main()
