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
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from lpselect.config import ScoreConfig
from lpselect.core.metrics import confidence, instruction_following_difficulty, variability
from lpselect.data.formats import read_dataset
from lpselect.data.provenance import record_fingerprint
from lpselect.data.tokenize import TokenizedData, tokenize_responses, tokenize_samples
from lpselect.engine.batching import pass_token_budget, token_budget_batches
from lpselect.engine.checkpoint import (
    Position,
    SaveCadence,
    checkpoint_array,
    clear_stale,
    read_checkpoint,
    restore_rng,
    save_checkpoint,
)
from lpselect.engine.distributed import Workers, init_workers
from lpselect.engine.memory import release_free_memory
from lpselect.engine.models import load_tokenizer, model_source
from lpselect.engine.passes import PassResult, finish, pass_sums
from lpselect.engine.precision import announce, choose_precision, pick_device
from lpselect.engine.train import EpochState, StepResult, merge_row_nll, steps_per_epoch, train_epoch
from lpselect.engine.trainable import prepare_trainable
from lpselect.errors import RunFolderError
from lpselect.faults import crash_point
from lpselect.runs.folder import BOOKKEEPING_SETTINGS, RunFolder, describe_data, setting_changes
from lpselect.runs.io import atomic_path, save_npy
from lpselect.runs.layout import CHECKPOINT, SCORE_WORK, SCORES

log = logging.getLogger(__name__)
WORK = SCORE_WORK


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
    cfg = config or ScoreConfig()
    workers, device = init_workers(pick_device(cfg.device))
    workers = replace(workers, fsdp=cfg.fsdp and workers.world > 1)
    progress = progress and workers.is_main
    run = RunFolder(out, writer=workers.is_main).lock()  # first: a second job on the folder is refused at once
    work = run.path / WORK
    t0 = time.perf_counter()
    source = model_source(cfg.model, cfg.gguf_file)  # before begin_step: a typo in --model must not claim the step
    tokenizer = load_tokenizer(source)
    t_tokenizer = time.perf_counter() - t0
    extended_from: list[int] = []  # the epochs of the run this one extends, if it does

    def extends(old: dict, new: dict) -> bool:
        if not _extends(run.path, old, new):
            return False
        extended_from.append(int(old["epochs"]))
        return True

    run.begin_step("score", inputs={"data": describe_data(data, fields)}, config=cfg.model_dump(),
                   outputs=[WORK, SCORES], force=force, defaults=ScoreConfig().model_dump(), extends=extends)
    run.record_time("score", "load_tokenizer", t_tokenizer)
    ckpt = work / CHECKPOINT
    if workers.is_main:
        clear_stale(work, ckpt)  # a checkpoint being written when the process was killed
    workers.barrier()
    torch.manual_seed(cfg.seed)
    had_tokens = (work / "tokens" / "offsets.npy").exists()
    tokens, responses, data_counts = _tokenized_data(data, tokenizer, cfg, run, workers, progress, fields)
    release_free_memory()  # the samples and the tokenizer's batches are gone: hand their pages back

    choice = choose_precision(cfg.precision, device)
    precision = choice.precision
    announce(choice)
    run.update_step("score", device=str(device), precision=precision, precision_reason=choice.reason)
    pass_budget = pass_token_budget(cfg.max_tokens_per_batch, device)
    total_steps = steps_per_epoch(len(tokens), cfg) * max(cfg.epochs, cfg.schedule_epochs)
    passes = work / "passes"
    pass_files = ["ppl", "prob"] + (["ppl_resp"] if cfg.ifd else [])
    done = finished_passes(passes, cfg.epochs, pass_files)
    per_epoch = steps_per_epoch(len(tokens), cfg)
    pos, rng = read_checkpoint(ckpt)
    trained = 0 if pos is None else pos.epoch - (pos.done_in_epoch < per_epoch)  # epochs finished
    retrain = done < cfg.epochs and trained < done
    if retrain:
        pos, rng, trained = None, None, 0  # no usable checkpoint: retrain from the start, P0 kept
        done = min(done, 0)
    if workers.is_main:
        _say_reused(run.path, extended_from, cfg.epochs, had_tokens, done, pos, per_epoch, retrain)

    if done < cfg.epochs:
        with run.timed("score", "load_model"):
            t = prepare_trainable(source, cfg, ckpt if pos is not None else None, device=device,
                                  precision=precision, total_steps=total_steps,
                                  workers=workers, with_optimizer=cfg.epochs > 0)
        model, optimizer, scheduler, settings, architecture, workers = (t.model, t.optimizer, t.scheduler,
                                                                        t.settings, t.architecture, t.workers)
        run.update_step("score", micro_batch_budget=settings.max_tokens_per_micro_batch)
        pad_id = tokenizer.pad_token_id
        n_tokens = int(tokens.lengths.sum())
        save = save_npy if workers.is_main else _skip
        log = _event_log(work / "events.log", workers)
        cadence = SaveCadence(cfg.save_steps, cfg.save_minutes, workers)
        for epoch in range(0, cfg.epochs + 1):
            if epoch > trained:
                online = np.full(len(tokens), np.nan)
                state = EpochState()
                if pos is not None and pos.epoch == epoch:  # resume inside this epoch
                    state = EpochState(pos.done_in_epoch, pos.loss_sum, pos.token_sum)
                    if (saved := checkpoint_array(ckpt, "online_nll")) is not None:
                        online[:] = saved
                    restore_rng(rng)

                def at_checkpoint(e: int, st: EpochState, rows: np.ndarray | None) -> None:
                    arrays = None
                    if rows is not None:
                        merge_row_nll(rows, workers)
                        arrays = {"online_nll": rows}
                    save_checkpoint(ckpt, model, optimizer, scheduler,
                                    Position(epoch=e, done_in_epoch=st.done, global_step=(e - 1) * per_epoch
                                             + st.done, loss_sum=st.loss_sum, token_sum=st.token_sum),
                                    workers, architecture, arrays=arrays)
                    cadence.saved()

                def on_step(r: StepResult, e: int = epoch, st: EpochState = state, rows: np.ndarray = online) -> None:
                    if st.done < per_epoch and cadence.due(st.done):
                        at_checkpoint(e, st, rows)  # before the log line: a logged step is on disk
                        log(f"step {e}:{r.slot} rank {workers.rank}")
                    crash_point(f"train:{e}:step:{r.slot}")

                cadence.saved()  # the time counts training only, not the passes before it
                with run.timed("score", f"train_{epoch}"), _bar(n_tokens, f"train epoch {epoch}", "tok",
                                                                progress) as bar:
                    loss = train_epoch(model, tokens, optimizer, scheduler, settings, epoch=epoch, pad_id=pad_id,
                                       precision=precision, progress=bar.update, row_nll=online, workers=workers,
                                       on_step=on_step, state=state)
                save(passes / f"ppl_online_{epoch}.npy", np.exp(online))
                at_checkpoint(epoch, state, None)  # the epoch's end (its online losses are saved beside)
                log(f"trained epoch {epoch} rank {workers.rank}")
                losses = (run.step("score") or {}).get("train_loss", {})
                run.update_step("score", train_loss={**losses, str(epoch): round(loss, 6)})
                crash_point(f"trained:{epoch}")
            if epoch > done:
                kinds = [("ppl", tokens)] + ([("ppl_resp", responses)] if responses else [])
                results = {}
                for kind, table_ in kinds:
                    with run.timed("score", f"pass_{kind}_{epoch}"), _bar(
                            int(table_.lengths.sum()), f"{kind} P{epoch}", "tok", progress) as bar:
                        results[kind] = _chunked_pass(
                            model, table_, passes / f"{kind}_{epoch}.chunks", f"{kind}:{epoch}", workers, log,
                            cfg.pass_chunk_rows, pad_id=pad_id, precision=precision, max_tokens=pass_budget,
                            progress=bar.update)
                if responses is not None:
                    save(passes / f"ppl_resp_{epoch}.npy", results["ppl_resp"].ppl)
                save(passes / f"prob_{epoch}.npy", results["ppl"].prob)
                save(passes / f"ppl_{epoch}.npy", results["ppl"].ppl)  # written last: marks the epoch as done
                crash_point(f"passed:{epoch}")
            workers.barrier()
            if workers.is_main:
                for kind in ("ppl", "ppl_resp"):
                    shutil.rmtree(passes / f"{kind}_{epoch}.chunks", ignore_errors=True)
        del model

    scores_path = run.path / SCORES
    table = score_table(passes, cfg.epochs, tokens, ifd=cfg.ifd)
    if workers.is_main:
        with atomic_path(scores_path) as tmp:
            pq.write_table(table, tmp)
            crash_point("write_scores")
    ppl = np.column_stack([table.column(f"ppl_{e}").to_numpy() for e in range(cfg.epochs + 1)])
    result = ScoreResult(
        scores_path=scores_path,
        n_rows=len(tokens),
        n_nan=int((~np.isfinite(ppl)).any(axis=1).sum()),
        n_truncated=int((tokens.truncated > 0).sum()),
        n_prompt_shortened=int(tokens.prompt_shortened.sum()),
        n_duplicates=data_counts["duplicate_rows"],
        n_empty_outputs=data_counts["empty_output_rows"],
    )
    run.update_step("score", status="complete", model_source=source, device=str(device), precision=precision,
                    counts={"rows": result.n_rows, "nan_rows": result.n_nan, "truncated_rows": result.n_truncated,
                            "prompt_shortened_rows": result.n_prompt_shortened,
                            **data_counts,
                            "tokens": int(tokens.lengths.sum()), "scored_tokens": int(tokens.n_scored.sum())})
    if workers.is_main:
        _keep_or_drop_checkpoint(ckpt, cfg)
    workers.barrier()
    run.release()
    return result


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


def _chunked_pass(model, data: TokenizedData, folder: Path, tag: str, workers: Workers,
                  log: Callable[[str], None], chunk_rows: int, progress: Callable[[int], None], max_tokens: int,
                  **kwargs) -> PassResult:
    """This rank's shard of a pass, cut into chunks of rows, each saved when done: a resumed pass computes only
    missing chunks. Under FSDP every rank runs every chunk index with the same number of forward calls, and a
    chunk is skipped only when every rank has saved it."""
    shards = [workers.shard(np.arange(len(data)), data.lengths, r) for r in range(workers.world)]
    rows = shards[workers.rank]
    n_chunks = -(-max(map(len, shards) if workers.fsdp else [len(rows)]) // chunk_rows)
    sums = np.zeros((3, len(data)), dtype=np.float64)
    for k in range(n_chunks):
        part = slice(k * chunk_rows, (k + 1) * chunk_rows)
        chunk = rows[part]
        paths = [folder / f"rank{r}-of-{workers.world}-chunk{k}.npy" for r in range(workers.world)]
        if paths[workers.rank].exists() and (not workers.fsdp or all(p.exists() for p in paths)):
            sums[:, chunk] = np.load(paths[workers.rank])
            progress(int(data.lengths[chunk].sum()))
            continue
        calls = max(len(token_budget_batches(data.lengths, s[part], max_tokens)) for s in shards) \
            if workers.fsdp else None
        sums[:, chunk] = pass_sums(model, data, chunk, progress=progress, max_tokens=max_tokens,
                                   fsdp_calls=calls, **kwargs)[:, chunk]
        path = paths[workers.rank]
        save_npy(path, sums[:, chunk])
        log(f"pass {tag} chunk {k} rank {workers.rank}")
        crash_point(f"pass:{tag}:{k}")
    return finish(workers.sum(sums))


def _event_log(path: Path, workers: Workers) -> Callable[[str], None]:
    """Append-only record of finished units of work: proves after a resume that none was done twice."""

    def log(message: str) -> None:
        with open(path, "a") as f:
            f.write(message + "\n")
            f.flush()
            os.fsync(f.fileno())

    return log


def _skip(*_: object) -> None:
    """What a rank other than 0 does instead of writing a file."""


def _tokenized_data(data: str | Path, tokenizer, cfg: ScoreConfig, run: RunFolder, workers: Workers,
                    progress: bool, fields: dict[str, str] | None = None,
                    ) -> tuple[TokenizedData, TokenizedData | None, dict[str, int]]:
    """Read the data and tokenise it (or memory-map the saved tables). The samples are dropped on return:
    from then on only the token tables are held, so memory does not grow with the dataset."""
    with run.timed("score", "read"):
        dataset = read_dataset(data, fields)
        record_fingerprint(run, "score", dataset)  # rows_sha256: select etc. check data against it
    tokens = _token_table(run, workers, run.path / WORK / "tokens", progress, lambda bar: tokenize_samples(
        dataset.samples, tokenizer, max_length=cfg.max_length, truncation=cfg.truncation, progress=bar.update),
        len(dataset))
    responses = _token_table(run, workers, run.path / WORK / "tokens_response", progress,
                             lambda bar: tokenize_responses(dataset.samples, tokenizer, max_length=cfg.max_length),
                             len(dataset)) if cfg.ifd else None
    return tokens, responses, dataset.kept_but_counted()


def _token_table(run: RunFolder, workers: Workers, folder: Path, progress: bool, build, n_rows: int
                 ) -> TokenizedData:
    """Tokenise once (rank 0); later runs, resumes and the other ranks memory-map the saved table."""
    if workers.is_main and not (folder / "offsets.npy").exists():
        with run.timed("score", f"tokenize_{folder.name}"), _bar(n_rows, "tokenize", "rows", progress) as bar:
            build(bar).save(folder)
    workers.barrier()
    return TokenizedData.load(folder)


def score_table(passes: Path, epochs: int, tokens: TokenizedData, *, ifd: bool = False) -> pa.Table:
    """scores.parquet: id, ppl_i, prob_i, [ppl_resp_i, ifd_i], ppl_online_i (where a training loop recorded
    them), confidence, variability, counts. Also what ``LPCallback`` writes from a user's Trainer."""
    n, epoch_range = len(tokens), range(epochs + 1)
    cols: dict[str, np.ndarray] = {"id": np.arange(n, dtype=np.int64)}
    for prefix in ["ppl", "prob"] + (["ppl_resp"] if ifd else []):
        cols.update({f"{prefix}_{e}": np.load(passes / f"{prefix}_{e}.npy") for e in epoch_range})
    if ifd:
        cols.update({f"ifd_{e}": instruction_following_difficulty(cols[f"ppl_{e}"], cols[f"ppl_resp_{e}"])
                     for e in epoch_range})
    cols.update({f"ppl_online_{e}": np.load(passes / f"ppl_online_{e}.npy") for e in epoch_range
                 if e >= 1 and (passes / f"ppl_online_{e}.npy").exists()})
    if epochs >= 1:
        prob = np.column_stack([cols[f"prob_{e}"] for e in epoch_range])
        cols["confidence"], cols["variability"] = confidence(prob), variability(prob)
    cols["n_scored_tokens"] = tokens.n_scored.astype(np.int64)
    cols["truncated"] = np.asarray(tokens.truncated, dtype=np.int32)
    cols["prompt_shortened"] = np.asarray(tokens.prompt_shortened, dtype=bool)
    return pa.table(cols)


def _bar(total: int, desc: str, unit: str, enabled: bool):
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, disable=not enabled, dynamic_ncols=True)


def finished_passes(passes: Path, epochs: int, prefixes: list[str]) -> int:
    """Largest e with every pass file of epochs 0 .. e on disk; -1 when none."""
    e = -1
    while e < epochs and all((passes / f"{p}_{e + 1}.npy").exists() for p in prefixes):
        e += 1
    return e


