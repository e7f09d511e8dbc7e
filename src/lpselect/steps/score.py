"""The score job: tokenise once, P0, then n x (train one epoch, checkpoint, Pi), then ``scores.parquet``.

Every finished phase is on disk before the next starts (token table, one ``ppl_i.npy`` per pass, a
checkpoint per trained epoch and every ``save_minutes`` / ``save_steps`` inside one), so re-running the same
command on the same folder resumes after a crash, and says what it reused.

``--epochs N`` on a finished run of the same settings with fewer epochs extends it when the LR schedule is the
same (it spans max(epochs, schedule_epochs) epochs: a 1-epoch run trained exactly the first epoch of a 3-epoch
schedule). With ``--keep-checkpoint`` the run keeps its last epoch-end checkpoint, so only the new epochs are
trained; without it (the default: the checkpoint holds weights and optimizer state, about 12 bytes a
parameter) training restarts from epoch 1 and P0 is kept.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from lpselect.config import ScoreConfig
from lpselect.core.metrics import confidence, instruction_following_difficulty, variability
from lpselect.data.formats import read_dataset
from lpselect.data.provenance import describe_data, record_fingerprint
from lpselect.data.tokenize import TokenizedData, tokenize_responses, tokenize_samples
from lpselect.engine.batching import pass_token_budget
from lpselect.engine.checkpoint import (
    Position,
    SaveCadence,
    checkpoint_array,
    clear_stale,
    read_checkpoint,
    restore_rng,
    save_checkpoint,
)
from lpselect.engine.memory import release_free_memory
from lpselect.engine.passes import PassResult, finish, rank_shards, shard_sums
from lpselect.engine.recipe import FineTuneRecipe
from lpselect.engine.train import EpochState, StepResult, merge_row_nll, steps_per_epoch, train_epoch
from lpselect.engine.trainable import prepare_trainable
from lpselect.errors import RunFolderError
from lpselect.faults import crash_point
from lpselect.runs.folder import BOOKKEEPING_SETTINGS, RunFolder, setting_changes
from lpselect.runs.io import atomic_path, save_npy
from lpselect.runs.layout import (
    CHECKPOINT,
    EVENTS,
    PASS_CHUNK,
    PASS_CHUNKS,
    PASS_FILE,
    PASSES,
    SCORE_WORK,
    SCORES,
    TOKENS,
    TOKENS_DONE,
    TOKENS_RESPONSE,
)

log = logging.getLogger(__name__)
WORK = SCORE_WORK
STEP = "score"


@dataclass
class ScoreResult:
    scores_path: Path
    n_rows: int
    n_nan: int
    n_truncated: int
    n_prompt_shortened: int
    n_duplicates: int = 0
    n_empty_outputs: int = 0


def score(data: str | Path, out: str | Path, config: ScoreConfig | None = None, *, force: bool = False,
          progress: bool = True, fields: dict[str, str] | None = None) -> ScoreResult:
    """Record every sample's perplexity before training and after each of ``config.epochs`` epochs. ``fields``
    maps the data's columns (:func:`lpselect.data.formats.read_dataset`); it is recorded with the data."""
    recipe = ScoreRecipe(config or ScoreConfig(), progress=progress)
    recipe.setup(data, out, force=force, fields=fields)
    recipe.train()
    return recipe.finish()


class ScoreRecipe(FineTuneRecipe):
    """The score job: :meth:`setup` (folder, tokens, precision, where to resume), :meth:`train` (per epoch:
    :meth:`train_one_epoch` and :meth:`score_passes`), :meth:`finish` (``scores.parquet``)."""

    step = STEP
    cfg: ScoreConfig

    def setup(self, data: str | Path, out: str | Path, *, force: bool, fields: dict[str, str] | None) -> None:
        """Claim the folder, load the tokenizer, record the step, tokenise the data, choose the precision and
        find what the folder already holds."""
        self.run = RunFolder(out, writer=self.workers.is_main).lock()  # first: a second job is refused at once
        self.work = self.run.path / WORK
        self.ckpt, self.passes = self.work / CHECKPOINT, self.work / PASSES
        t0 = time.perf_counter()
        self.find_model()  # before begin_step: a typo in --model must not claim the step
        self.load_tokenizer()
        t_tokenizer = time.perf_counter() - t0
        self.extended_from: list[int] = []  # the epochs of the run this one extends, if it does
        self.run.begin_step(STEP, inputs={"data": describe_data(data, fields)}, config=self.cfg.model_dump(),
                            outputs=[WORK, SCORES], force=force, defaults=ScoreConfig().model_dump(),
                            extends=self._extends)
        self.run.record_time(STEP, "load_tokenizer", t_tokenizer)
        if self.workers.is_main:
            clear_stale(self.work, self.ckpt)  # a checkpoint being written when the process was killed
        self.workers.barrier()
        torch.manual_seed(self.cfg.seed)
        had_tokens = (self.work / TOKENS / TOKENS_DONE).exists()
        self.tokens, self.responses, self.data_counts = self._tokenized_data(data, fields)
        release_free_memory()  # the samples and the tokenizer's batches are gone: hand their pages back
        self.choose_precision(self.run)
        self.pass_budget = pass_token_budget(self.cfg.max_tokens_per_batch, self.device)
        self.resume(had_tokens)

    def _extends(self, old: dict, new: dict) -> bool:
        """``begin_step``'s question: do settings ``new`` extend the finished run of ``old``?"""
        if not _extends(self.run.path, old, new):
            return False
        self.extended_from.append(int(old["epochs"]))
        return True

    def resume(self, had_tokens: bool) -> None:
        """Which passes are on disk (``done``: P0..P_done), which epochs the checkpoint has trained
        (``trained``), and where inside an epoch training restarts (``pos``)."""
        cfg = self.cfg
        self.per_epoch = steps_per_epoch(len(self.tokens), cfg)
        self.done = finished_passes(self.passes, cfg.epochs, ["ppl", "prob"] + (["ppl_resp"] if cfg.ifd else []))
        self.pos, self.rng = read_checkpoint(self.ckpt)
        pos = self.pos
        self.trained = 0 if pos is None else pos.epoch - (pos.done_in_epoch < self.per_epoch)  # epochs finished
        retrain = self.done < cfg.epochs and self.trained < self.done
        if retrain:
            self.pos, self.rng, self.trained = None, None, 0  # no usable checkpoint: retrain from the start, P0 kept
            self.done = min(self.done, 0)
        if self.workers.is_main:
            _say_reused(self.run.path, self.extended_from, cfg.epochs, had_tokens, self.done, self.pos,
                        self.per_epoch, retrain)

    def train(self) -> None:
        """P0, then per epoch: train it (unless the checkpoint already has) and its passes (unless on disk)."""
        if self.done >= self.cfg.epochs:
            return
        self.load_model()
        for epoch in range(0, self.cfg.epochs + 1):
            if epoch > self.trained:
                self.train_one_epoch(epoch)
            if epoch > self.done:
                self.score_passes(epoch)
            self.drop_pass_chunks(epoch)
        self.trainable = None

    def load_model(self) -> None:
        """The scorer (from the checkpoint when resuming), its optimizer and schedule, the save cadence."""
        cfg = self.cfg
        with self.run.timed(STEP, "load_model"):
            self.use(prepare_trainable(self.source, cfg, self.ckpt if self.pos is not None else None,
                                       total_steps=self.per_epoch * max(cfg.epochs, cfg.schedule_epochs),
                                       with_optimizer=cfg.epochs > 0, **self.placement()))
        self.run.update_step(STEP, micro_batch_budget=self.trainable.settings.max_tokens_per_micro_batch)
        self.events = EventLog(self.work / EVENTS)
        self.cadence = SaveCadence(cfg.save_steps, cfg.save_minutes, self.workers)

    def train_one_epoch(self, epoch: int) -> None:
        """Train ``epoch`` (from the checkpoint's step when it stopped inside it), save its online losses and
        checkpoint its end."""
        self.epoch, self.state, self.online = epoch, EpochState(), np.full(len(self.tokens), np.nan)
        if self.pos is not None and self.pos.epoch == epoch:  # resume inside this epoch
            self.state = EpochState(self.pos.done_in_epoch, self.pos.loss_sum, self.pos.token_sum)
            if (saved := checkpoint_array(self.ckpt, "online_nll")) is not None:
                self.online[:] = saved
            restore_rng(self.rng)
        self.cadence.saved()  # the time counts training only, not the passes before it
        t = self.trainable
        with self.run.timed(STEP, f"train_{epoch}"), self.bar(int(self.tokens.lengths.sum()), f"train epoch {epoch}",
                                                              "tok", unit_scale=True) as bar:
            loss = train_epoch(t.model, self.tokens, t.optimizer, t.scheduler, t.settings, epoch=epoch,
                               pad_id=self.pad_id, precision=self.precision, progress=bar.update,
                               row_nll=self.online, workers=self.workers, on_step=self.on_step, state=self.state)
        self.save(self.passes / PASS_FILE.format(kind="ppl_online", epoch=epoch), np.exp(self.online))
        self.save_checkpoint()  # the epoch's end (its online losses are saved beside)
        self.events(f"trained epoch {epoch} rank {self.workers.rank}")
        losses = (self.run.step(STEP) or {}).get("train_loss", {})
        self.run.update_step(STEP, train_loss={**losses, str(epoch): round(loss, 6)})
        crash_point(f"trained:{epoch}")

    def on_step(self, r: StepResult) -> None:
        """After each optimizer-step slot: a checkpoint when the cadence is due."""
        if self.state.done < self.per_epoch and self.cadence.due(self.state.done):
            self.save_checkpoint(self.online)  # before the log line: a logged step is on disk
            self.events(f"step {self.epoch}:{r.slot} rank {self.workers.rank}")
        crash_point(f"train:{self.epoch}:step:{r.slot}")

    def save_checkpoint(self, online_nll: np.ndarray | None = None) -> None:
        """Checkpoint where the epoch stands; inside an epoch with its online losses so far (every rank's)."""
        arrays = None
        if online_nll is not None:
            merge_row_nll(online_nll, self.workers)
            arrays = {"online_nll": online_nll}
        e, st, t = self.epoch, self.state, self.trainable
        pos = Position(epoch=e, done_in_epoch=st.done, global_step=(e - 1) * self.per_epoch + st.done,
                       loss_sum=st.loss_sum, token_sum=st.token_sum)
        save_checkpoint(self.ckpt, t.model, t.optimizer, t.scheduler, pos, self.workers, t.architecture,
                        arrays=arrays)
        self.cadence.saved()

    def score_passes(self, epoch: int) -> None:
        """P_epoch: the perplexity pass over the samples (and the responses, for IFD), saved per epoch."""
        kinds = [("ppl", self.tokens)] + ([("ppl_resp", self.responses)] if self.responses else [])
        results = {kind: self.scoring_pass(kind, table, epoch) for kind, table in kinds}
        if self.responses is not None:
            self.save(self.passes / PASS_FILE.format(kind="ppl_resp", epoch=epoch), results["ppl_resp"].ppl)
        self.save(self.passes / PASS_FILE.format(kind="prob", epoch=epoch), results["ppl"].prob)
        # written last: marks the epoch as done
        self.save(self.passes / PASS_FILE.format(kind="ppl", epoch=epoch), results["ppl"].ppl)
        crash_point(f"passed:{epoch}")

    def scoring_pass(self, kind: str, data: TokenizedData, epoch: int) -> PassResult:
        """One pass, timed and shown, in chunks saved as they finish (:meth:`chunked_pass`)."""
        with self.run.timed(STEP, f"pass_{kind}_{epoch}"), self.bar(
                int(data.lengths.sum()), f"{kind} P{epoch}", "tok", unit_scale=True) as bar:
            return self.chunked_pass(data, self.passes / PASS_CHUNKS.format(kind=kind, epoch=epoch),
                                     f"{kind}:{epoch}", bar.update)

    def chunked_pass(self, data: TokenizedData, folder: Path, tag: str, progress: Callable[[int], None]
                     ) -> PassResult:
        """This rank's shard of a pass, cut into chunks of rows, each saved when done: a resumed pass computes
        only missing chunks. Under FSDP every rank runs every chunk index with the same number of forward calls,
        and a chunk is skipped only when every rank has saved it."""
        workers, chunk_rows = self.workers, self.cfg.pass_chunk_rows
        shards = rank_shards(data, workers)
        rows = shards[workers.rank]
        n_chunks = -(-max(map(len, shards) if workers.fsdp else [len(rows)]) // chunk_rows)
        sums = np.zeros((3, len(data)), dtype=np.float64)
        for k in range(n_chunks):
            part = slice(k * chunk_rows, (k + 1) * chunk_rows)
            chunk = rows[part]
            paths = [folder / PASS_CHUNK.format(rank=r, world=workers.world, chunk=k) for r in range(workers.world)]
            if paths[workers.rank].exists() and (not workers.fsdp or all(p.exists() for p in paths)):
                sums[:, chunk] = np.load(paths[workers.rank])
                progress(int(data.lengths[chunk].sum()))
                continue
            sums[:, chunk] = shard_sums(self.trainable.model, data, shards, workers, part, pad_id=self.pad_id,
                                        precision=self.precision, max_tokens=self.pass_budget,
                                        progress=progress)[:, chunk]
            save_npy(paths[workers.rank], sums[:, chunk])
            self.events(f"pass {tag} chunk {k} rank {workers.rank}")
            crash_point(f"pass:{tag}:{k}")
        return finish(workers.sum(sums))

    def drop_pass_chunks(self, epoch: int) -> None:
        """Once every rank is past ``epoch``'s passes, their chunks are no longer needed."""
        self.workers.barrier()
        if self.workers.is_main:
            for kind in ("ppl", "ppl_resp"):
                shutil.rmtree(self.passes / PASS_CHUNKS.format(kind=kind, epoch=epoch), ignore_errors=True)

    def save(self, path: Path, array: np.ndarray) -> None:
        """Rank 0 writes the job's files."""
        if self.workers.is_main:
            save_npy(path, array)

    def finish(self) -> ScoreResult:
        """``scores.parquet`` (rank 0), the step's counts, the checkpoint kept or deleted, the folder released."""
        scores_path = self.run.path / SCORES
        table = score_table(self.passes, self.cfg.epochs, self.tokens, ifd=self.cfg.ifd)
        if self.workers.is_main:
            with atomic_path(scores_path) as tmp:
                pq.write_table(table, tmp)
                crash_point("write_scores")
        result = self._result(scores_path, table)
        tokens = self.tokens
        self.run.update_step(STEP, status="complete", model_source=self.source, device=str(self.device),
                             precision=self.precision, counts={
                                 "rows": result.n_rows, "nan_rows": result.n_nan,
                                 "truncated_rows": result.n_truncated,
                                 "prompt_shortened_rows": result.n_prompt_shortened, **self.data_counts,
                                 "tokens": int(tokens.lengths.sum()), "scored_tokens": int(tokens.n_scored.sum())})
        if self.workers.is_main:
            _keep_or_drop_checkpoint(self.ckpt, self.cfg)
        self.workers.barrier()
        self.run.release()
        return result

    def _result(self, scores_path: Path, table: pa.Table) -> ScoreResult:
        ppl = np.column_stack([table.column(f"ppl_{e}").to_numpy() for e in range(self.cfg.epochs + 1)])
        return ScoreResult(
            scores_path=scores_path,
            n_rows=len(self.tokens),
            n_nan=int((~np.isfinite(ppl)).any(axis=1).sum()),
            n_truncated=int((self.tokens.truncated > 0).sum()),
            n_prompt_shortened=int(self.tokens.prompt_shortened.sum()),
            n_duplicates=self.data_counts["duplicate_rows"],
            n_empty_outputs=self.data_counts["empty_output_rows"],
        )

    def _tokenized_data(self, data: str | Path, fields: dict[str, str] | None
                        ) -> tuple[TokenizedData, TokenizedData | None, dict[str, int]]:
        """Read the data and tokenise it (or memory-map the saved tables). The samples are dropped on return:
        from then on only the token tables are held, so memory does not grow with the dataset."""
        cfg, tokenizer = self.cfg, self.tokenizer
        with self.run.timed(STEP, "read"):
            dataset = read_dataset(data, fields)
            record_fingerprint(self.run, STEP, dataset)  # rows_sha256: select etc. check data against it
        tokens = self._token_table(self.work / TOKENS, len(dataset), lambda bar: tokenize_samples(
            dataset.samples, tokenizer, max_length=cfg.max_length, truncation=cfg.truncation, progress=bar.update))
        responses = self._token_table(self.work / TOKENS_RESPONSE, len(dataset), lambda bar: tokenize_responses(
            dataset.samples, tokenizer, max_length=cfg.max_length)) if cfg.ifd else None
        return tokens, responses, dataset.kept_but_counted()

    def _token_table(self, folder: Path, n_rows: int, build: Callable[[tqdm], TokenizedData]) -> TokenizedData:
        """Tokenise once (rank 0); later runs, resumes and the other ranks memory-map the saved table."""
        if self.workers.is_main and not (folder / TOKENS_DONE).exists():
            with self.run.timed(STEP, f"tokenize_{folder.name}"), self.bar(n_rows, "tokenize", "rows",
                                                                           unit_scale=True) as bar:
                build(bar).save(folder)
        self.workers.barrier()
        return TokenizedData.load(folder)


class EventLog:
    """Append-only record of finished units of work: proves after a resume that none was done twice."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, message: str) -> None:
        with open(self.path, "a") as f:
            f.write(message + "\n")
            f.flush()
            os.fsync(f.fileno())


def _extends(folder: Path, old: dict, new: dict) -> bool:
    """Whether settings ``new`` continue the finished run of ``old``: only ``epochs`` grew, and the LR schedule
    (max(epochs, schedule_epochs) epochs) is the same, so the old epochs are exactly the new run's first ones.
    Raises the refusal, with the reason, when only ``epochs`` grew but the schedule would not be the same."""
    if setting_changes(old, new, ignore=BOOKKEEPING_SETTINGS | {"epochs"}) or new["epochs"] <= old["epochs"]:
        return False
    span_old, span_new = max(old["epochs"], old["schedule_epochs"]), max(new["epochs"], new["schedule_epochs"])
    if span_old != span_new:
        raise RunFolderError(
            f"{folder}: step 'score' was run with other config (epochs: {old['epochs']} → {new['epochs']}); it "
            f"cannot be extended: its LR schedule spans {span_old} epochs, this one {span_new}; use another "
            "folder, or --force to discard its results (a run with --schedule-epochs N extends up to N epochs)")
    return True


def _say_reused(folder: Path, extended_from: list[int], epochs: int, had_tokens: bool, done: int,
                pos: Position | None, per_epoch: int, retrain: bool) -> None:
    """One line on what a resumed or extended run takes from the folder instead of computing it again."""
    reused = ["tokens"] if had_tokens else []
    if done >= 0:
        reused.append(f"P0..P{done}" if done else "P0")
    if pos is not None and done < epochs:  # a checkpoint is used only when there is training left
        where = "end" if pos.done_in_epoch >= per_epoch else f"step {pos.done_in_epoch}/{per_epoch}"
        reused.append(f"checkpoint at epoch {pos.epoch} {where}")
    what = (f"extending {folder} from {extended_from[0]} to {epochs} epochs" if extended_from
            else f"resuming {folder}")
    if not reused and not extended_from:
        return
    note = "; no checkpoint of the trained epochs: training again from epoch 1" if retrain else ""
    log.info("%s: reused %s%s", what, ", ".join(reused) or "nothing", note)


def _keep_or_drop_checkpoint(ckpt: Path, cfg: ScoreConfig) -> None:
    """Delete the last checkpoint unless asked to keep it; say what keeping it would give where the run can be
    extended (epochs < schedule_epochs: ``--epochs N`` would then train only the new epochs)."""
    if not ckpt.exists() or cfg.keep_checkpoint:
        return
    if cfg.epochs < cfg.schedule_epochs:
        size = sum(f.stat().st_size for f in ckpt.rglob("*") if f.is_file())
        log.info("deleted the last checkpoint (%.1f GB); with --keep-checkpoint, a later --epochs up to %d on "
                 "this folder would train only the new epochs instead of starting again", size / 1e9,
                 cfg.schedule_epochs)
    shutil.rmtree(ckpt, ignore_errors=True)


def score_table(passes: Path, epochs: int, tokens: TokenizedData, *, ifd: bool = False) -> pa.Table:
    """scores.parquet: id, ppl_i, prob_i, [ppl_resp_i, ifd_i], ppl_online_i (where a training loop recorded
    them), confidence, variability, counts. Also what ``LPCallback`` writes from a user's Trainer."""
    n, epoch_range = len(tokens), range(epochs + 1)
    cols: dict[str, np.ndarray] = {"id": np.arange(n, dtype=np.int64)}
    for prefix in ["ppl", "prob"] + (["ppl_resp"] if ifd else []):
        cols.update({f"{prefix}_{e}": np.load(passes / PASS_FILE.format(kind=prefix, epoch=e)) for e in epoch_range})
    if ifd:
        cols.update({f"ifd_{e}": instruction_following_difficulty(cols[f"ppl_{e}"], cols[f"ppl_resp_{e}"])
                     for e in epoch_range})
    online = {e: passes / PASS_FILE.format(kind="ppl_online", epoch=e) for e in epoch_range if e >= 1}
    cols.update({f"ppl_online_{e}": np.load(path) for e, path in online.items() if path.exists()})
    if epochs >= 1:
        prob = np.column_stack([cols[f"prob_{e}"] for e in epoch_range])
        cols["confidence"], cols["variability"] = confidence(prob), variability(prob)
    cols["n_scored_tokens"] = tokens.n_scored.astype(np.int64)
    cols["truncated"] = np.asarray(tokens.truncated, dtype=np.int32)
    cols["prompt_shortened"] = np.asarray(tokens.prompt_shortened, dtype=bool)
    return pa.table(cols)


def finished_passes(passes: Path, epochs: int, prefixes: list[str]) -> int:
    """Largest e with every pass file of epochs 0 .. e on disk; -1 when none."""
    e = -1
    while e < epochs and all((passes / PASS_FILE.format(kind=p, epoch=e + 1)).exists() for p in prefixes):
        e += 1
    return e


