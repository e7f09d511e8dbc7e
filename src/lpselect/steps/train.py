"""Target training (docs/method.md §9): instruction-tune the target model on a selected subset.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lpselect.config import TrainConfig
from lpselect.data.formats import read_dataset
from lpselect.data.provenance import describe_data, subset_fields, verify_subset
from lpselect.data.tokenize import TokenizedData, tokenize_samples
from lpselect.engine.checkpoint import Position, SaveCadence, read_checkpoint, restore_rng, save_checkpoint
from lpselect.engine.distributed import Workers
from lpselect.engine.recipe import FineTuneRecipe
from lpselect.engine.sharding import full_model_state, save_model
from lpselect.engine.train import EpochState, StepResult, steps_per_epoch, train_epoch
from lpselect.engine.trainable import prepare_trainable
from lpselect.errors import LPSelectError
from lpselect.faults import crash_point
from lpselect.runs.folder import RunFolder, same_content, same_settings
from lpselect.runs.io import recover_dir
from lpselect.runs.layout import CHECKPOINT, LOCK_FILES, MANIFEST, MODEL_MARKERS

log = logging.getLogger(__name__)
STEP = "train"
FINAL_MARKERS = MODEL_MARKERS  # a finished training folder holds one of them


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
    recipe = TargetRecipe(config or TrainConfig(), Path(out_dir), progress=progress, on_step=on_step)
    fields = fields or subset_fields(data)  # a subset selected with --fields is read with that mapping
    if (complete := recipe.check_out(data, fields, force=force)) is not None:
        return complete
    recipe.setup(data, fields, force=force)
    recipe.train()
    return recipe.finish()


class TargetRecipe(FineTuneRecipe):
    """The train job: :meth:`check_out` (the folder may be written; done already?), :meth:`setup` (tokens,
    folder, precision, model, where to resume), :meth:`train` (epochs until the last or ``max_steps``),
    :meth:`finish` (the model folder)."""

    step = STEP
    cfg: TrainConfig

    def __init__(self, cfg: TrainConfig, out: Path, *, progress: bool = True,
                 on_step: Callable[[int], None] | None = None) -> None:
        super().__init__(cfg, progress=progress)
        self.out, self.ckpt, self.on_step_hook = out, out / CHECKPOINT, on_step

    def check_out(self, data: str | Path, fields: dict[str, str] | None, *, force: bool) -> TrainResult | None:
        """Refuse an ``--out`` that is the model's own folder or one no ``train`` wrote; the earlier result
        when this very training is already complete there."""
        out = self.out
        if Path(self.find_model()).resolve() == out.resolve():
            raise LPSelectError(f"--out {out} is the model's own folder; choose another folder")
        if self.workers.is_main:
            _check_out_dir(out, force)
        self.workers.barrier()
        self.inputs = {"data": describe_data(data, fields), "model": {"source": self.source}}
        self.old = _read_step(out)
        finished = any((out / name).exists() for name in FINAL_MARKERS)
        if self.old and self.old.get("status") == "complete" and finished and self._same_as_old():
            log.info("%s: training already complete", out)
            return _result_from_manifest(out, self.old)
        return None

    def _same_as_old(self) -> bool:
        old = self.old or {}
        return (same_content(old.get("inputs"), self.inputs)
                and same_settings(old.get("config"), self.cfg.model_dump(), TrainConfig().model_dump()))

    def setup(self, data: str | Path, fields: dict[str, str] | None, *, force: bool) -> None:
        """Tokenise (before claiming the folder: a typo in --data or --model must not lock it), claim the folder,
        choose the precision, load the model (from the checkpoint when resuming)."""
        t0 = time.perf_counter()
        self.tokens = self._read_tokens(data, fields)
        t_read = time.perf_counter() - t0
        self.run = RunFolder(self.out, writer=self.workers.is_main).lock()  # before _clear: a folder in use stays
        if self.workers.is_main and force and self.old is not None and not self._same_as_old():
            _clear(self.out)
        self.workers.barrier()
        # the outputs: a record with none of them (a run that failed before its first checkpoint) claims nothing
        self.run.begin_step(STEP, inputs=self.inputs, config=self.cfg.model_dump(),
                            outputs=[CHECKPOINT, *FINAL_MARKERS], force=force, defaults=TrainConfig().model_dump())
        _add_time(self.run, "read_tokenize", t_read)
        self.choose_precision(self.run)
        self.per_epoch = steps_per_epoch(len(self.tokens), self.cfg)
        self.total_steps = self.per_epoch * self.cfg.epochs
        if self.cfg.max_steps:
            self.total_steps = min(self.total_steps, self.cfg.max_steps)
        self.load_model()
        self._record_start()

    def _read_tokens(self, data: str | Path, fields: dict[str, str] | None) -> TokenizedData:
        """The data's token table: the same template, truncation and loss mask as the scorer's."""
        dataset = read_dataset(data, fields)
        if note := verify_subset(dataset):  # a subset must hold the rows its <subset>.report.json describes
            log.warning(note)
        self.load_tokenizer()  # a model that is not there: one line naming where it was looked for
        tokens = tokenize_samples(dataset.samples, self.tokenizer, max_length=self.cfg.max_length,
                                  truncation=self.cfg.truncation)
        if int(tokens.n_scored.sum()) == 0:
            raise LPSelectError(f"{data}: no sample keeps a response token after truncation; nothing to train on")
        return tokens

    def load_model(self) -> None:
        """The model, optimizer and schedule, from the checkpoint when there is one; where training resumes."""
        t0 = time.perf_counter()
        if self.workers.is_main:
            recover_dir(self.ckpt)  # a crash between the two renames of replace_dir
        self.workers.barrier()
        pos, self.rng = read_checkpoint(self.ckpt)
        torch.manual_seed(self.cfg.seed)  # LoRA's initial weights
        self.use(prepare_trainable(self.source, self.cfg, self.ckpt if pos else None, total_steps=self.total_steps,
                                   **self.placement()))
        _add_time(self.run, "load_model", time.perf_counter() - t0)
        self.resumed_from = pos.global_step if pos else 0
        self.pos = pos or Position()
        if self.resumed_from and self.workers.is_main:
            log.info("resuming %s: reused checkpoint at epoch %d step %d/%d (optimizer step %d of %d)", self.out,
                     self.pos.epoch, self.pos.done_in_epoch, self.per_epoch, self.pos.global_step, self.total_steps)

    def _record_start(self) -> None:
        tokens = self.tokens
        self.run.update_step(STEP, status="training", model_source=self.source, device=str(self.device),
                             precision=self.precision,
                             micro_batch_budget=self.trainable.settings.max_tokens_per_micro_batch,
                             steps_total=self.total_steps, steps_per_epoch=self.per_epoch,
                             counts={"rows": len(tokens), "tokens": int(tokens.lengths.sum()),
                                     "scored_tokens": int(tokens.n_scored.sum()),
                                     "truncated_rows": int((tokens.truncated > 0).sum()),
                                     "prompt_shortened_rows": int(tokens.prompt_shortened.sum())})

    def train(self) -> None:
        """Epochs until the last one or ``max_steps``, each from where the checkpoint stopped."""
        if self.rng is not None:  # after loading: building LoRA layers draws random numbers
            restore_rng(self.rng)
        self.progress_bar = self.bar(self.total_steps, "train target", "step",
                                     initial=min(self.pos.global_step, self.total_steps))
        self.t_train = time.perf_counter()
        self.my_tokens = 0  # this rank's share of the tokens trained on in this run (the manifest shows the balance)
        self.cadence = SaveCadence(self.cfg.save_steps, self.cfg.save_minutes, self.workers)
        try:
            while self.pos.epoch <= self.cfg.epochs and self.pos.global_step < self.total_steps:
                self.train_one_epoch()
        finally:
            self.progress_bar.close()
            _add_time(self.run, "train", time.perf_counter() - self.t_train)

    def train_one_epoch(self) -> None:
        """The epoch ``pos`` is in, from its next step; ``pos`` then points past it (or where ``max_steps``
        stopped)."""
        pos, t = self.pos, self.trainable
        self.epoch, self.first_step, self.updates = pos.epoch, pos.global_step, 0
        self.state = EpochState(pos.done_in_epoch, pos.loss_sum, pos.token_sum)
        train_epoch(t.model, self.tokens, t.optimizer, t.scheduler, t.settings, epoch=self.epoch, pad_id=self.pad_id,
                    precision=self.precision, workers=self.workers, on_step=self.on_step, state=self.state,
                    max_updates=self.total_steps - self.first_step)
        self.pos = self.position()
        if self.pos.done_in_epoch == self.per_epoch:
            self.pos = Position(epoch=self.epoch + 1, global_step=self.pos.global_step)

    def position(self) -> Position:
        """Where training stands inside the current epoch."""
        st = self.state
        return Position(self.epoch, st.done, self.first_step + self.updates, st.loss_sum, st.token_sum)

    def on_step(self, r: StepResult) -> None:
        """Progress, the epoch's loss in the manifest, checkpoints and the caller's hook, per step slot."""
        self.my_tokens += int(self.tokens.lengths[self.workers.shard(r.rows, self.tokens.lengths)].sum())
        self.updates += r.stepped
        now = self.position()
        if r.stepped:
            self.progress_bar.update(1)
            self.progress_bar.set_postfix(loss=f"{r.loss_sum / max(r.tokens, 1):.4f}", epoch=self.epoch)
        epoch_end = now.done_in_epoch == self.per_epoch or now.global_step >= self.total_steps
        if epoch_end:
            _finish_epoch(self.run, now)
        if epoch_end or (r.stepped and self.cadence.due(now.global_step)):
            self.save_checkpoint(now)
        if r.stepped:
            crash_point(f"train:step:{now.global_step}")
            if self.on_step_hook is not None:
                self.on_step_hook(now.global_step)

    def save_checkpoint(self, pos: Position) -> None:
        """Checkpoint at ``pos`` (every rank takes part); the training time up to it is recorded."""
        t = self.trainable
        save_checkpoint(self.ckpt, t.model, t.optimizer, t.scheduler, pos, self.workers, t.architecture,
                        extra={"lora": self.cfg.lora})
        self.cadence.saved()
        self.workers.barrier()
        _add_time(self.run, "train", time.perf_counter() - self.t_train)
        self.t_train = time.perf_counter()

    def finish(self) -> TrainResult:
        """The model folder (save_pretrained), the step complete, the checkpoint deleted unless kept."""
        t0 = time.perf_counter()
        _write_final(self.out, self.trainable.model, self.tokenizer, self.cfg, self.workers,
                     self.trainable.architecture)
        _add_time(self.run, "save", time.perf_counter() - t0)
        record = self.run.step(STEP) or {}
        workers = self.workers
        per_rank = workers.sum(np.eye(workers.world)[workers.rank] * self.my_tokens).astype(int).tolist()
        if workers.is_main:
            self.run.update_step(STEP, status="complete", steps_done=self.pos.global_step, processes=workers.world,
                                 tokens_per_process=per_rank, files=_model_files(self.out))
            if not self.cfg.keep_checkpoint:
                shutil.rmtree(self.ckpt, ignore_errors=True)
        workers.barrier()
        self.run.release()
        tokens = self.tokens
        return TrainResult(model_dir=self.out, n_rows=len(tokens), steps=self.pos.global_step,
                           epoch_losses=dict(record.get("train_loss", {})), resumed_from_step=self.resumed_from,
                           n_truncated=int((tokens.truncated > 0).sum()),
                           n_prompt_shortened=int(tokens.prompt_shortened.sum()))


def _model_files(out: Path) -> list[str]:
    """The files of the finished model folder (not the manifest, not the lock)."""
    return sorted(p.name for p in out.iterdir() if p.is_file() and p.name != MANIFEST and p.name not in LOCK_FILES)


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

