"""Target training (SPEC §9): instruction-tune the target model on a selected subset.

The same tokenisation, template, truncation and loss mask as the scorer (``tokenize_samples``), and the
same optimisation step as scorer training (token-normalised accumulation over length-grouped micro-batches,
AdamW, cosine schedule with warm-up). Full fine-tuning by default; LoRA (peft) as an option, saved merged
by default so the output is an ordinary Hugging Face model folder.

The output folder holds, when done, the model and tokenizer (``save_pretrained``) and ``manifest.json``.
While training it also holds ``checkpoint/`` (model or adapter, optimizer, scheduler, RNG, position), written
every ``save_steps`` optimizer steps (else every ``save_minutes`` of training) and at each epoch end by one
atomic rename. Re-running the same command
resumes from it: the row order of an epoch is a function of (seed, epoch), so the finished steps of the
interrupted epoch are skipped, not redone, and the result equals an uninterrupted run's.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from lpselect.config import TrainConfig
from lpselect.data.formats import read_dataset
from lpselect.data.provenance import subset_fields, verify_subset
from lpselect.data.tokenize import tokenize_samples
from lpselect.engine.checkpoint import Position, SaveCadence, read_checkpoint, restore_rng, save_checkpoint
from lpselect.engine.distributed import Workers, init_workers
from lpselect.engine.models import load_tokenizer, model_source
from lpselect.engine.precision import announce, choose_precision, pick_device
from lpselect.engine.sharding import (
    full_model_state,
    save_model,
)
from lpselect.engine.train import EpochState, StepResult, steps_per_epoch, train_epoch
from lpselect.engine.trainable import prepare_trainable
from lpselect.errors import LPSelectError
from lpselect.faults import crash_point
from lpselect.runs.folder import RunFolder, describe_data, same_content, same_settings
from lpselect.runs.io import recover_dir
from lpselect.runs.layout import CHECKPOINT, LOCK_FILES, MANIFEST

log = logging.getLogger(__name__)
STEP = "train"
FINAL_MARKERS = ("config.json", "adapter_config.json")  # a finished training folder holds one of them


@dataclass
class TrainResult:
    model_dir: Path
    n_rows: int
    steps: int
    epoch_losses: dict[str, float]
    resumed_from_step: int
    n_truncated: int
    n_prompt_shortened: int


def train_target(data: str | Path, out_dir: str | Path, config: TrainConfig | None = None, *,
                 force: bool = False, progress: bool = True,
                 on_step: Callable[[int], None] | None = None, fields: dict[str, str] | None = None) -> TrainResult:
    """Instruction-tune ``config.model`` on ``data``; write a Hugging Face model folder to ``out_dir``.

    ``on_step(global_step)`` is called after every optimizer step (and after its checkpoint, if any).
    """
    cfg = config or TrainConfig()
    out = Path(out_dir)
    workers, device = init_workers(pick_device(cfg.device))
    workers = replace(workers, fsdp=cfg.fsdp and workers.world > 1)
    progress = progress and workers.is_main
    source = model_source(cfg.model, cfg.gguf_file)
    if Path(source).resolve() == out.resolve():
        raise LPSelectError(f"--out {out} is the model's own folder; choose another folder")
    if workers.is_main:
        _check_out_dir(out, force)
    workers.barrier()
    fields = fields or subset_fields(data)  # a subset selected with --fields is read with that mapping
    inputs = {"data": describe_data(data, fields), "model": {"source": source}}
    old = _read_step(out)
    finished = any((out / name).exists() for name in FINAL_MARKERS)
    if (old and old.get("status") == "complete" and finished and same_content(old.get("inputs"), inputs)
            and same_settings(old.get("config"), cfg.model_dump(), TrainConfig().model_dump())):
        log.info("%s: training already complete", out)
        return _result_from_manifest(out, old)

    # read and tokenise before claiming the folder: a typo in --data or --model must not lock it
    t0 = time.perf_counter()
    dataset = read_dataset(data, fields)
    if note := verify_subset(dataset):  # a subset must hold the rows its <subset>.report.json describes
        log.warning(note)
    tokenizer = load_tokenizer(source)  # a model that is not there: one line naming where it was looked for
    tokens = tokenize_samples(dataset.samples, tokenizer, max_length=cfg.max_length,
                              truncation=cfg.truncation)
    del dataset
    if int(tokens.n_scored.sum()) == 0:
        raise LPSelectError(f"{data}: no sample keeps a response token after truncation; nothing to train on")
    t_read = time.perf_counter() - t0
    run = RunFolder(out, writer=workers.is_main).lock()  # before _clear: a second job must not wipe a folder in use
    if (workers.is_main and force and old is not None
            and (not same_content(old.get("inputs"), inputs)
                 or not same_settings(old.get("config"), cfg.model_dump(), TrainConfig().model_dump()))):
        _clear(out)
    workers.barrier()
    # the outputs: a record with none of them (a run that failed before its first checkpoint) claims nothing
    run.begin_step(STEP, inputs=inputs, config=cfg.model_dump(), outputs=[CHECKPOINT, *FINAL_MARKERS],
                   force=force, defaults=TrainConfig().model_dump())
    _add_time(run, "read_tokenize", t_read)

    choice = choose_precision(cfg.precision, device)
    precision = choice.precision
    announce(choice)
    run.update_step(STEP, device=str(device), precision=precision, precision_reason=choice.reason)
    per_epoch = steps_per_epoch(len(tokens), cfg)
    total_steps = per_epoch * cfg.epochs
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)

    t0 = time.perf_counter()
    ckpt = out / CHECKPOINT
    if workers.is_main:
        recover_dir(ckpt)  # a crash between the two renames of replace_dir
    workers.barrier()
    pos, rng = read_checkpoint(ckpt)
    torch.manual_seed(cfg.seed)  # LoRA's initial weights
    t = prepare_trainable(source, cfg, ckpt if pos else None, device=device, precision=precision,
                          total_steps=total_steps, workers=workers)
    model, optimizer, scheduler, settings, architecture, workers = (t.model, t.optimizer, t.scheduler, t.settings,
                                                                    t.architecture, t.workers)
    _add_time(run, "load_model", time.perf_counter() - t0)
    resumed_from = pos.global_step if pos else 0
    pos = pos or Position()
    if resumed_from and workers.is_main:
        log.info("resuming %s: reused checkpoint at epoch %d step %d/%d (optimizer step %d of %d)", out, pos.epoch,
                 pos.done_in_epoch, per_epoch, pos.global_step, total_steps)
    run.update_step(STEP, status="training", model_source=source, device=str(device), precision=precision,
                    micro_batch_budget=settings.max_tokens_per_micro_batch,
                    steps_total=total_steps, steps_per_epoch=per_epoch,
                    counts={"rows": len(tokens), "tokens": int(tokens.lengths.sum()),
                            "scored_tokens": int(tokens.n_scored.sum()),
                            "truncated_rows": int((tokens.truncated > 0).sum()),
                            "prompt_shortened_rows": int(tokens.prompt_shortened.sum())})

    if rng is not None:  # after loading: building LoRA layers draws random numbers
        restore_rng(rng)
    pad_id = tokenizer.pad_token_id
    bar = tqdm(total=total_steps, initial=min(pos.global_step, total_steps), desc="train target", unit="step",
               disable=not progress, dynamic_ncols=True)
    t_train = time.perf_counter()
    my_tokens = 0  # this rank's share of the tokens trained on in this run (the manifest shows the balance)
    cadence = SaveCadence(cfg.save_steps, cfg.save_minutes, workers)
    try:
        while pos.epoch <= cfg.epochs and pos.global_step < total_steps:
            epoch, first_step = pos.epoch, pos.global_step
            state = EpochState(pos.done_in_epoch, pos.loss_sum, pos.token_sum)
            updates = 0

            def at_step(r: StepResult, epoch: int = epoch, first_step: int = first_step,
                        state: EpochState = state) -> None:
                """Progress, the epoch's loss in the manifest, checkpoints and the caller's hook, per step."""
                nonlocal my_tokens, updates, t_train
                my_tokens += int(tokens.lengths[workers.shard(r.rows, tokens.lengths)].sum())
                updates += r.stepped
                now = Position(epoch, state.done, first_step + updates, state.loss_sum, state.token_sum)
                if r.stepped:
                    bar.update(1)
                    bar.set_postfix(loss=f"{r.loss_sum / max(r.tokens, 1):.4f}", epoch=epoch)
                epoch_end = now.done_in_epoch == per_epoch or now.global_step >= total_steps
                if epoch_end:
                    _finish_epoch(run, now)
                if epoch_end or (r.stepped and cadence.due(now.global_step)):
                    save_checkpoint(ckpt, model, optimizer, scheduler, now, workers, architecture,
                                    extra={"lora": cfg.lora})
                    cadence.saved()
                    workers.barrier()
                    _add_time(run, "train", time.perf_counter() - t_train)
                    t_train = time.perf_counter()
                if r.stepped:
                    crash_point(f"train:step:{now.global_step}")
                    if on_step is not None:
                        on_step(now.global_step)

            train_epoch(model, tokens, optimizer, scheduler, settings, epoch=epoch, pad_id=pad_id,
                        precision=precision, workers=workers, on_step=at_step, state=state,
                        max_updates=total_steps - first_step)
            pos = Position(epoch, state.done, first_step + updates, state.loss_sum, state.token_sum)
            if pos.done_in_epoch == per_epoch:
                pos = Position(epoch=epoch + 1, global_step=pos.global_step)
    finally:
        bar.close()
        _add_time(run, "train", time.perf_counter() - t_train)

    t0 = time.perf_counter()
    _write_final(out, model, tokenizer, cfg, workers, architecture)
    _add_time(run, "save", time.perf_counter() - t0)
    record = run.step(STEP) or {}
    per_rank = workers.sum(np.eye(workers.world)[workers.rank] * my_tokens).astype(int).tolist()
    if workers.is_main:
        run.update_step(STEP, status="complete", steps_done=pos.global_step, processes=workers.world,
                        tokens_per_process=per_rank,
                        files=sorted(p.name for p in out.iterdir()
                                     if p.is_file() and p.name != MANIFEST and p.name not in LOCK_FILES))
        if not cfg.keep_checkpoint:
            shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
    workers.barrier()
    run.release()
    return TrainResult(model_dir=out, n_rows=len(tokens), steps=pos.global_step,
                       epoch_losses=dict(record.get("train_loss", {})), resumed_from_step=resumed_from,
                       n_truncated=int((tokens.truncated > 0).sum()),
                       n_prompt_shortened=int(tokens.prompt_shortened.sum()))


# ---------------------------------------------------------------- model


def _write_final(out: Path, model, tokenizer, cfg: TrainConfig, workers: Workers, architecture: str) -> None:
    """save_pretrained the model (merged LoRA by default, or the adapter) and tokenizer into ``out`` (rank 0)."""
    model.eval()
    state = full_model_state(model) if workers.fsdp else None  # collective: every rank takes part
    if not workers.is_main:
        return
    dtype = getattr(torch, cfg.save_dtype)
    if cfg.lora and not cfg.save_adapter:
        model = model.merge_and_unload()
    if state is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    elif cfg.save_dtype != "float32":
        model = model.to(dtype)
    tmp = Path(tempfile.mkdtemp(prefix=".final.", dir=out))
    try:
        save_model(model, tmp, state, architecture)
        tokenizer.save_pretrained(tmp)
        for p in tmp.iterdir():
            target = out / p.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(p, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- checkpoints


# ---------------------------------------------------------------- manifest helpers


def _finish_epoch(run: RunFolder, pos: Position) -> None:
    losses = dict((run.step(STEP) or {}).get("train_loss", {}))
    losses[str(pos.epoch)] = round(pos.loss_sum / max(pos.token_sum, 1), 6)
    run.update_step(STEP, train_loss=losses, steps_done=pos.global_step)


def _add_time(run: RunFolder, phase: str, seconds: float) -> None:
    """Accumulate wall time per phase across resumed runs."""
    times = dict((run.step(STEP) or {}).get("wall_time_s", {}))
    times[phase] = round(times.get(phase, 0.0) + seconds, 3)
    run.update_step(STEP, wall_time_s=times)


def _check_out_dir(out: Path, force: bool) -> None:
    """Refuse to write into a non-empty folder that is not a training folder of ours (e.g. a model folder)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise LPSelectError(f"--out {out} exists and is not a folder")
    manifest = out / MANIFEST
    ours = False
    if manifest.exists():
        try:
            ours = STEP in json.loads(manifest.read_text()).get("steps", {})
        except (json.JSONDecodeError, AttributeError):
            ours = False
    if not ours and any(p.name not in LOCK_FILES for p in out.iterdir()) and not force:
        raise LPSelectError(f"--out {out} is a non-empty folder that no `lpselect train` wrote; "
                            "choose an empty or new folder (or --force to overwrite it)")
    if not ours and force:
        _clear(out)


def _read_step(out: Path) -> dict[str, Any] | None:
    if not (out / MANIFEST).exists():
        return None
    return RunFolder(out).step(STEP)


def _clear(out: Path) -> None:
    """Empty ``out``, all but the run-folder lock (a lock file deleted while held would let a second job in)."""
    for p in out.iterdir():
        if p.name in LOCK_FILES:
            continue
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


def _result_from_manifest(out: Path, record: dict[str, Any]) -> TrainResult:
    counts = record.get("counts", {})
    return TrainResult(model_dir=out, n_rows=counts.get("rows", 0), steps=record.get("steps_done", 0),
                       epoch_losses=dict(record.get("train_loss", {})),
                       resumed_from_step=record.get("steps_done", 0),
                       n_truncated=counts.get("truncated_rows", 0),
                       n_prompt_shortened=counts.get("prompt_shortened_rows", 0))

