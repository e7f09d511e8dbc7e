"""The score job: tokenise once, P0, then n x (train one epoch, checkpoint, Pi), then ``scores.parquet``.

Every finished phase is on disk before the next starts (token table, one ``ppl_i.npy`` per pass, a
checkpoint per trained epoch), so re-running the same command on the same folder resumes after a crash.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from lpselect.config import ScoreConfig
from lpselect.data.formats import read_dataset
from lpselect.data.tokenize import TokenizedData, tokenize_samples
from lpselect.io import save_npy, write_parquet
from lpselect.models import load_causal_lm, load_tokenizer, model_source
from lpselect.runs import RunFolder, describe_input
from lpselect.scoring.passes import perplexity_pass
from lpselect.scoring.precision import pick_device, resolve_precision
from lpselect.scoring.train import TrainSettings, make_optimizer, steps_per_epoch, train_epoch

log = logging.getLogger(__name__)
SCORES = "scores.parquet"
WORK = "score"  # sub-folder of the run folder with the job's intermediate state


@dataclass
class ScoreResult:
    scores_path: Path
    n_rows: int
    n_nan: int
    n_truncated: int
    n_prompt_shortened: int


def score(data: str | Path, out: str | Path, config: ScoreConfig | None = None, *, force: bool = False,
          progress: bool = True) -> ScoreResult:
    """Record every sample's perplexity before training and after each of ``config.epochs`` epochs."""
    cfg = config or ScoreConfig()
    run = RunFolder(out)
    work = run.path / WORK
    run.begin_step("score", inputs={"data": describe_input(data)}, config=cfg.model_dump(),
                   outputs=[WORK, SCORES], force=force)
    torch.manual_seed(cfg.seed)
    with run.timed("score", "read"):
        dataset = read_dataset(data)
    with run.timed("score", "load_tokenizer"):
        source = model_source(cfg.model, cfg.gguf_file)
        tokenizer = load_tokenizer(source)
    tokens_dir = work / "tokens"
    if (tokens_dir / "offsets.npy").exists():
        tokens = TokenizedData.load(tokens_dir)
    else:
        with run.timed("score", "tokenize"), _bar(len(dataset), "tokenize", "rows", progress) as bar:
            tokens = tokenize_samples(dataset.samples, tokenizer, max_length=cfg.max_length,
                                      truncation=cfg.truncation, progress=bar.update)
            tokens.save(tokens_dir)
        tokens = TokenizedData.load(tokens_dir)
    del dataset

    device = pick_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    # small batches keep a CPU's caches warm; a GPU wants large ones
    pass_budget = cfg.max_tokens_per_batch or (16384 if device.type == "cuda" else 2048)
    settings = TrainSettings(lr=cfg.lr, weight_decay=cfg.weight_decay, warmup_ratio=cfg.warmup_ratio,
                             batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
                             max_grad_norm=cfg.max_grad_norm, seed=cfg.seed,
                             max_tokens_per_micro_batch=cfg.max_tokens_per_micro_batch)
    total_steps = steps_per_epoch(len(tokens), settings) * max(cfg.epochs, cfg.schedule_epochs)
    passes = work / "passes"
    done = _finished_passes(passes, cfg.epochs)
    ckpt_epoch, ckpt_dir = _latest_checkpoint(work)
    if done < cfg.epochs and ckpt_epoch < done:
        ckpt_epoch, ckpt_dir = 0, None  # no usable checkpoint: retrain from the start, passes kept
        done = min(done, 0)

    if done < cfg.epochs:
        with run.timed("score", "load_model"):
            model = load_causal_lm(str(ckpt_dir / "model") if ckpt_dir else source).to(device)
        pad_id = tokenizer.pad_token_id
        optimizer, scheduler = make_optimizer(model, settings, total_steps) if cfg.epochs else (None, None)
        if ckpt_dir is not None:
            optimizer.load_state_dict(torch.load(ckpt_dir / "optimizer.pt", weights_only=True))
            scheduler.load_state_dict(torch.load(ckpt_dir / "scheduler.pt", weights_only=True))
        n_tokens = int(tokens.lengths.sum())
        for epoch in range(0, cfg.epochs + 1):
            if epoch > ckpt_epoch:
                with run.timed("score", f"train_{epoch}"), _bar(n_tokens, f"train epoch {epoch}", "tok",
                                                                progress) as bar:
                    loss = train_epoch(model, tokens, optimizer, scheduler, settings, epoch=epoch,
                                       pad_id=pad_id, precision=precision, progress=bar.update)
                _save_checkpoint(work, epoch, model, optimizer, scheduler)
                losses = (run.step("score") or {}).get("train_loss", {})
                run.update_step("score", train_loss={**losses, str(epoch): round(loss, 6)})
            if epoch > done:
                with run.timed("score", f"pass_{epoch}"), _bar(n_tokens, f"perplexity P{epoch}", "tok",
                                                               progress) as bar:
                    ppl = perplexity_pass(model, tokens, pad_id=pad_id, precision=precision,
                                          max_tokens=pass_budget, progress=bar.update)
                save_npy(passes / f"ppl_{epoch}.npy", ppl)
        del model

    ppl = np.stack([np.load(passes / f"ppl_{e}.npy") for e in range(cfg.epochs + 1)], axis=1)
    columns = {"id": pa.array(np.arange(len(tokens), dtype=np.int64))}
    columns.update({f"ppl_{e}": pa.array(ppl[:, e]) for e in range(cfg.epochs + 1)})
    columns["n_scored_tokens"] = pa.array(tokens.n_scored.astype(np.int64))
    columns["truncated"] = pa.array(np.asarray(tokens.truncated, dtype=np.int32))
    columns["prompt_shortened"] = pa.array(np.asarray(tokens.prompt_shortened, dtype=bool))
    scores_path = run.path / SCORES
    write_parquet(scores_path, pa.table(columns))
    result = ScoreResult(
        scores_path=scores_path,
        n_rows=len(tokens),
        n_nan=int((~np.isfinite(ppl)).any(axis=1).sum()),
        n_truncated=int((tokens.truncated > 0).sum()),
        n_prompt_shortened=int(tokens.prompt_shortened.sum()),
    )
    run.update_step("score", status="complete", model_source=source, device=str(device), precision=precision,
                    counts={"rows": result.n_rows, "nan_rows": result.n_nan, "truncated_rows": result.n_truncated,
                            "prompt_shortened_rows": result.n_prompt_shortened,
                            "tokens": int(tokens.lengths.sum()), "scored_tokens": int(tokens.n_scored.sum())})
    if not cfg.keep_checkpoint:
        shutil.rmtree(work / "checkpoint", ignore_errors=True)
    return result


def _bar(total: int, desc: str, unit: str, enabled: bool):
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, disable=not enabled, dynamic_ncols=True)


def _finished_passes(passes: Path, epochs: int) -> int:
    """Largest e with ppl_0 .. ppl_e all on disk; -1 when none."""
    e = -1
    while e < epochs and (passes / f"ppl_{e + 1}.npy").exists():
        e += 1
    return e


def _latest_checkpoint(work: Path) -> tuple[int, Path | None]:
    folder = work / "checkpoint"
    if not (folder / "epoch.txt").exists():
        return 0, None
    return int((folder / "epoch.txt").read_text()), folder


def _save_checkpoint(work: Path, epoch: int, model, optimizer, scheduler) -> None:
    """Model, optimizer and scheduler after ``epoch``; written aside and swapped in by one rename."""
    final = work / "checkpoint"
    tmp = Path(tempfile.mkdtemp(prefix=".checkpoint.", dir=work))
    try:
        model.save_pretrained(tmp / "model")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "epoch.txt").write_text(str(epoch))
        old = work / ".checkpoint.old"
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
