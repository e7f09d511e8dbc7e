"""LP inside your own Hugging Face ``Trainer``: record P0 .. Pn while *your* fine-tuning runs.

``lpselect score`` trains the scorer itself. Many users already have a training script (a ``Trainer``, or TRL's
``SFTTrainer``, which is a ``Trainer`` subclass and takes callbacks the same way) and only want the perplexity
record of it. :class:`LPCallback` measures every training sample's perplexity before the first step and after
each epoch with lpselect's own scoring pass (:func:`lpselect.engine.passes.scoring_pass`: eval mode, no
gradients, LM head only on scored positions), and writes the ``scores.parquet`` and ``manifest.json`` that
``lpselect select``, ``compare`` and ``report`` read, so the rest of lpselect works on it unchanged.

Loss mask: a row's ``labels`` follow the Hugging Face convention (aligned with ``input_ids``, -100 where not
scored; the model shifts them internally), so token j is scored exactly where ``labels[j] != -100``, and
position 0 never is (nothing predicts it) -- the same tokens ``model(input_ids, labels=labels).loss`` averages
over. Without ``labels``, TRL's ``completion_mask`` / ``assistant_masks`` are used if present, else every
token after the first is scored (a causal LM's default ``labels = input_ids``).

Checks at train begin (before the first step), because a mistake here is silent until ``select``: the train set
must be the data file's rows in the file's order (scores are keyed by row position), so a different row count,
or a sampled row whose tokens do not hold that file row's text, is refused; and a train set in which no row
masks any token (no labels, or labels = input_ids as ``DataCollatorForLanguageModeling`` makes them) gets a
warning, since LP then scores the prompt as well as the response.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import math
import shutil
import time
import unicodedata
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from lpselect.data.tokenize import TokenizedData
from lpselect.engine.batching import pass_token_budget
from lpselect.engine.distributed import Workers
from lpselect.engine.passes import scoring_pass
from lpselect.errors import InputError, LPSelectError
from lpselect.runs.folder import RunFolder, describe_input
from lpselect.runs.io import save_npy, write_parquet
from lpselect.runs.layout import PASS_FILE, PASSES, SCORES
from lpselect.steps.score import WORK, finished_passes, score_table

log = logging.getLogger(__name__)
SOURCE = "trainer callback"
IGNORE_INDEX = -100  # Hugging Face's "no loss here" label
MASK_COLUMNS = ("completion_mask", "assistant_masks")  # TRL's loss masks, used when a row has no labels
_ROWS_PER_READ = 1024  # rows fetched per slice of a datasets.Dataset: column reads, not one row at a time
_CHECKED_ROWS = 5  # rows whose text is compared with the data file: the first, the last and 3 evenly between
_HEAD_CHARS = 40  # leading characters (whitespace dropped) of a row's prompt and response that must be found


def tokenized_from_dataset(dataset: Any) -> TokenizedData:
    """lpselect's token table of a Trainer's ``train_dataset`` (rows in dataset order: id = row position).

    A row is a mapping with ``input_ids`` and optionally ``labels``, ``attention_mask`` (positions with mask 0
    are dropped, i.e. pre-padded rows are unpadded) and TRL's ``completion_mask`` / ``assistant_masks``.
    """
    if dataset is None or not hasattr(dataset, "__len__"):
        raise LPSelectError("LPCallback needs a train_dataset with a length (an IterableDataset has no fixed rows "
                            "to score); pass dataset=... to LPCallback")
    ids_parts, scored_parts, lengths = [], [], []
    for i, row in enumerate(_rows(dataset)):
        ids, scored = _row_arrays(row, i)
        ids_parts.append(ids.astype(np.int32, copy=False))
        scored_parts.append(scored)
        lengths.append(len(ids))
    n = len(lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)
    return TokenizedData(
        tokens=np.concatenate(ids_parts) if n else np.zeros(0, dtype=np.int32),
        scored=np.concatenate(scored_parts) if n else np.zeros(0, dtype=bool),
        offsets=offsets,
        truncated=np.zeros(n, dtype=np.int32),  # the callback cuts nothing: the user's tokenisation did
        prompt_shortened=np.zeros(n, dtype=bool),
    )


def _rows(dataset: Any) -> Iterator[Any]:
    """Rows of a ``datasets.Dataset`` (read in column slices, much faster than one row at a time) or of any
    indexable dataset (a list, a torch ``Dataset``)."""
    n = len(dataset)
    if hasattr(dataset, "column_names"):
        for start in range(0, n, _ROWS_PER_READ):
            batch = dataset[start : min(start + _ROWS_PER_READ, n)]
            keys = list(batch)
            for j in range(len(batch[keys[0]]) if keys else 0):
                yield {k: batch[k][j] for k in keys}
        return
    for i in range(n):
        yield dataset[i]


def _flat(value: Any, name: str, row: int) -> np.ndarray:
    arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1:
        raise LPSelectError(f"train_dataset row {row}: '{name}' must be one sequence, got shape {arr.shape}")
    return arr


def _row_arrays(row: Any, i: int) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, scored mask) of one row; ``scored[j]`` is True where token j is a label the loss counts."""
    if "input_ids" not in row:
        raise LPSelectError(f"train_dataset row {i}: no 'input_ids' (LPCallback needs tokenised rows)")
    ids = _flat(row["input_ids"], "input_ids", i).astype(np.int64)
    if row.get("labels") is not None:
        labels = _flat(row["labels"], "labels", i).astype(np.int64)
        if len(labels) != len(ids):
            raise LPSelectError(f"train_dataset row {i}: {len(labels)} labels for {len(ids)} input_ids")
        scored = labels != IGNORE_INDEX
        if not np.array_equal(labels[scored], ids[scored]):
            raise LPSelectError(f"train_dataset row {i}: labels differ from input_ids where scored; LPCallback "
                                "scores a causal LM's labels (input_ids, -100 where not scored)")
    else:
        mask = next((row[c] for c in MASK_COLUMNS if row.get(c) is not None), None)
        scored = np.ones(len(ids), dtype=bool) if mask is None else _flat(mask, "loss mask", i).astype(bool)
        if len(scored) != len(ids):
            raise LPSelectError(f"train_dataset row {i}: loss mask and input_ids differ in length")
    if row.get("attention_mask") is not None:
        keep = _flat(row["attention_mask"], "attention_mask", i).astype(bool)
        ids, scored = ids[keep], scored[keep]
    scored = scored.copy()
    scored[:1] = False  # nothing predicts the first token (the shift of the HF loss drops it too)
    return ids, scored


def check_rows_match(tokens: TokenizedData, data: str | Path, processing_class: Any = None, *,
                     text: bool = True) -> None:
    """Refuse a train set that is not the data file's rows in order: scores are keyed by row position, and
    ``select`` would otherwise pick other rows than the ones scored. Checks the row count and, when the Trainer
    has a tokenizer to decode with, that a few rows (first, last, evenly between) hold the start of their file
    row's prompt (instruction, or first user turn) and of its response (which may be cut at the row's end).
    ``text=False``: the row count only."""
    from lpselect.data.formats import read_dataset

    dataset = read_dataset(data)
    if len(tokens) != len(dataset):
        raise InputError(data, f"the data file has {len(dataset)} rows but the train set has {len(tokens)}; "
                         "LPCallback keys scores by row position, so the train set must be the file's rows in its "
                         "order (none dropped, added or packed)")
    if not text:
        return
    tok = getattr(processing_class, "tokenizer", processing_class)
    if not callable(getattr(tok, "decode", None)):
        log.warning("LPCallback: the Trainer has no tokenizer (processing_class), so only the row count of the "
                    "train set was checked against %s, not its text", data)
        return
    unk = getattr(tok, "unk_token_id", None)
    for i in np.unique(np.linspace(0, len(tokens) - 1, _CHECKED_ROWS).round().astype(int)).tolist():
        ids = tokens.row(i)[0]
        if unk is not None and (ids == unk).any():
            continue  # text the tokenizer could not represent: decoding cannot give it back
        row_text = _squeeze(tok.decode(ids.tolist(), skip_special_tokens=True))
        sample = dataset.samples[i]
        if sample.messages is not None:
            parts = {role: next((m["content"] for m in sample.messages if m["role"] == role), "")
                     for role in ("user", "assistant")}
            whole_prompt = "".join(m["content"] for m in sample.messages if m["role"] != "assistant")
        else:
            parts = {"instruction": sample.instruction, "response": sample.output}
            whole_prompt = sample.instruction + sample.input
        (p_name, p_raw), (r_name, r_raw) = parts.items()
        prompt, response = _squeeze(p_raw)[:_HEAD_CHARS], _squeeze(r_raw)[:_HEAD_CHARS]
        cut = any(row_text.endswith(response[:k]) for k in range(1, len(response)))  # row ends inside the response
        # a long prompt filled the row (max_length): no response to check, only the prompt's start
        in_prompt = len(row_text) >= _TAIL_CHARS and row_text[-_TAIL_CHARS:] in _squeeze(whole_prompt)
        prompt_seen = prompt in row_text or (in_prompt and any(row_text.endswith(prompt[:k])
                                                               for k in range(_TAIL_CHARS, len(prompt))))
        if not prompt_seen or not (response in row_text or cut or in_prompt):
            name, raw = (p_name, p_raw) if prompt not in row_text else (r_name, r_raw)
            raise InputError(data, f"train set row {i} does not hold this row's {name} (it starts {raw[:30]!r}); "
                             "LPCallback keys scores by row position, so the train set must be the file's rows in "
                             "its order (not shuffled or filtered); pass check_rows=False if your rows rewrite "
                             "the text", row=i)


_TAIL_CHARS = 16  # the end of a row found inside its prompt means the row was cut before its response


def _squeeze(text: str) -> str:
    """Text compared whatever the tokenizer did to spacing, case or Unicode forms."""
    return "".join(unicodedata.normalize("NFKC", text).casefold().split())


def _masks_nothing(tokens: TokenizedData) -> bool:
    """True when every token of every row (after the first, which nothing predicts) is scored."""
    return len(tokens) > 0 and bool(np.array_equal(tokens.n_scored, np.maximum(tokens.lengths - 1, 0)))


MASK_WARNING = ("LPCallback: no row of the train set masks a token from the loss (no labels, or labels equal to "
                "input_ids, as DataCollatorForLanguageModeling makes them), so LP scores the prompt and the "
                "response alike. To score the response only, give each row 'labels' with -100 on its prompt "
                "tokens, or use TRL's SFTTrainer on prompt/completion rows (completion_only_loss)")


def _workers(model: torch.nn.Module) -> Workers:
    """This process's place in the job: the Trainer (accelerate) has already joined the process group."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return Workers()
    from torch.distributed.fsdp import FSDPModule

    return replace(Workers(rank=dist.get_rank(), world=dist.get_world_size()),
                   fsdp=isinstance(model, FSDPModule))  # FSDP2: forward calls are collective


def _check_supported(args: TrainingArguments, model: torch.nn.Module) -> None:
    """Refuse (before any work) set-ups where the callback's model is not a whole, callable model."""
    from torch.distributed.fsdp import FSDPModule

    if getattr(args, "fsdp", None) and not isinstance(model, FSDPModule):
        raise LPSelectError("LPCallback supports FSDP2 (fsdp_version 2), not FSDP1: under FSDP1 the Trainer hands "
                            "callbacks the unwrapped module, whose weights are sharded")
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        raise LPSelectError("LPCallback does not support DeepSpeed ZeRO-3 (use DDP, ZeRO-1/2, or FSDP2)")


def _plain(value: Any) -> Any:
    """A setting as JSON can hold it (the Trainer's enums as their values)."""
    return value.value if isinstance(value, enum.Enum) else value


def _model_name(model: torch.nn.Module) -> str:
    cfg = getattr(model, "config", None)
    return (getattr(model, "name_or_path", None) or getattr(cfg, "_name_or_path", None)
            or type(model).__name__)


def _pad_id(processing_class: Any, model: torch.nn.Module) -> int:
    """Any valid id: padded positions are masked, so the value never reaches a score."""
    tok = getattr(processing_class, "tokenizer", processing_class)
    for value in (getattr(tok, "pad_token_id", None), getattr(getattr(model, "config", None), "pad_token_id", None)):
        if isinstance(value, int):
            return value
    return 0


def _token_sha256(tokens: TokenizedData) -> str:
    """Fingerprint of the scored rows: a re-run on other data is refused like ``lpselect score`` refuses it."""
    h = hashlib.sha256()
    for a in (tokens.offsets, tokens.tokens, tokens.scored):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


class LPCallback(TrainerCallback):
    """Record every training sample's perplexity before training and after each epoch into ``out_dir``.

    Add it to a ``transformers.Trainer`` (or TRL's ``SFTTrainer``, a ``Trainer`` subclass: same way) with
    ``callbacks=[LPCallback("runs/mine")]``. Rows must be tokenised (``input_ids``, ``labels``); keep packing
    off, since a packed row mixes several samples. After each epoch ``out_dir/scores.parquet`` and the ``score``
    step of ``out_dir/manifest.json`` are rewritten (atomically), so ``lpselect select --scores
    out_dir/scores.parquet --data DATA`` works after any epoch, with DATA the same rows in the same order.

    Under DDP (torchrun / accelerate) every rank scores a disjoint shard of the rows and the per-row sums are
    added with ``all_reduce``; only the main process writes. FSDP2 works the same way (forward calls kept
    equal across ranks); FSDP1 and DeepSpeed ZeRO-3 are refused at train begin.

    ``data``: the data file the rows came from, recorded as the run's input (``report`` then shows the
    instructions). ``dataset``: the rows to score, if not the Trainer's ``train_dataset``. ``precision``:
    ``fp32`` or ``bf16`` (default: ``bf16`` when the Trainer trains in bf16). ``force``: replace a folder whose
    score step came from other data or settings (refused otherwise, as ``lpselect score`` refuses it).

    Checked at train begin, before the first step: with ``data``, the train set must have the file's row count,
    and a few rows (first, last, evenly between) must hold the start of their file row's prompt and response
    (decoded with the Trainer's ``processing_class``; row count only without one); otherwise an ``InputError``
    names the file and both sizes, or the first row that differs. ``check_rows=False`` keeps the count check but
    skips the text check, for rows whose text was rewritten. When no row masks any token from the loss (no
    labels, or labels = input_ids), a ``UserWarning`` says that LP scores prompt and response alike.
    """

    def __init__(self, out_dir: str | Path, *, data: str | Path | None = None, dataset: Sequence[Any] | None = None,
                 model_name: str | None = None, precision: str | None = None,
                 max_tokens_per_batch: int | None = None, force: bool = False, check_rows: bool = True) -> None:
        if precision not in (None, "fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        self.out_dir = Path(out_dir)
        self.data = data
        self.dataset = dataset
        self.model_name = model_name
        self.precision = precision
        self.max_tokens_per_batch = max_tokens_per_batch
        self.force = force
        self.check_rows = check_rows
        self._warned_mask = False
        self.tokens: TokenizedData | None = None
        self.workers = Workers()
        self.run: RunFolder | None = None
        self.epoch = -1  # index of the last pass on disk (0 = P0)
        self._pad_id = 0
        self._budget = 0  # padded tokens per pass batch, set at train begin for the model's device
        self._precision = "fp32"  # what this train() call's passes use (``precision``, else the Trainer's)

    @property
    def passes(self) -> Path:
        return self.out_dir / WORK / PASSES

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: torch.nn.Module | None = None, processing_class: Any = None,
                       train_dataloader: Any = None, **kwargs: Any) -> None:
        """Tokens from the dataset, checked against the data file, the run folder claimed, then P0 (or, on a
        resumed run, the passes kept)."""
        if model is None:
            raise LPSelectError("LPCallback got no model from the Trainer")
        _check_supported(args, model)
        self.tokens = tokenized_from_dataset(self.dataset if self.dataset is not None
                                             else getattr(train_dataloader, "dataset", None))
        self.workers = _workers(model)
        device = next(model.parameters()).device
        self._precision = self.precision or ("bf16" if args.bf16 else "fp32")
        self._budget = pass_token_budget(self.max_tokens_per_batch or 0, device)
        self._pad_id = _pad_id(processing_class, model)
        main = self.workers.is_main
        self.run = RunFolder(self.out_dir, writer=main)
        resumed = state.global_step > 0
        start = math.floor((state.epoch or 0) + 1e-6) if resumed else 0  # epochs fully trained before this call
        error: LPSelectError | None = None
        have = -1
        if main:
            try:
                if self.data is not None:  # before the folder is claimed: a refused train set leaves it as it was
                    check_rows_match(self.tokens, self.data, processing_class, text=self.check_rows)
                self._begin(args, state, model, device)
                if resumed:
                    have = finished_passes(self.passes, start, ["ppl", "prob"])
                else:
                    shutil.rmtree(self.passes, ignore_errors=True)  # a fresh run: no pass of an earlier one stays
            except LPSelectError as e:
                error = e
        # every rank must take the same path, or the others would wait forever in the pass's all_reduce
        failed, have = self.workers.sum(np.array([float(bool(error)), float(have if main else 0)]))
        if failed:
            raise error or LPSelectError("LPCallback: the main process refused the train set or the run folder")
        if main and not self._warned_mask and _masks_nothing(self.tokens):
            self._warned_mask = True  # after the ranks agreed: a warning turned error cannot strand them mid-sum
            warnings.warn(MASK_WARNING, UserWarning, stacklevel=2)
        if resumed and have < start:
            log.warning("LPCallback: resumed after epoch %d, but %s holds %s; the missing passes cannot be "
                        "recomputed from later weights, so this run records nothing", start, self.passes,
                        f"passes 0 .. {int(have)} only" if have >= 0 else "no pass")
            self.tokens = None
            return
        self.epoch = start
        if not resumed:
            self._pass(model, 0, state)
        elif main:
            self._write(state)

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     model: torch.nn.Module | None = None, **kwargs: Any) -> None:
        """P_i of every row with the weights after epoch i."""
        if self.tokens is None or model is None:
            return
        self._pass(model, self.epoch + 1, state)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        """Mark the step complete and unlock the folder."""
        if self.run is None:
            return
        if self.tokens is not None:
            self.run.update_step("score", status="complete", epochs_done=self.epoch)
        self.run.release()
        self.run = None

    def _begin(self, args: TrainingArguments, state: TrainerState, model: torch.nn.Module,
               device: torch.device) -> None:
        """Claim the score step: inputs (the rows' fingerprint, the data file) and the settings that shape P_i."""
        assert self.run is not None and self.tokens is not None
        inputs: dict[str, Any] = {"train_dataset": {"rows": len(self.tokens), "sha256": _token_sha256(self.tokens)}}
        if self.data is not None:
            inputs["data"] = describe_input(self.data)
        config = {
            "model": self.model_name or _model_name(model),
            "epochs": math.ceil(state.num_train_epochs or args.num_train_epochs),
            "max_steps": state.max_steps,
            **{k: _plain(getattr(args, k, None)) for k in (
                "learning_rate", "weight_decay", "lr_scheduler_type", "warmup_steps", "per_device_train_batch_size",
                "gradient_accumulation_steps", "max_grad_norm", "seed")},
            "precision": self._precision,
            "max_tokens_per_batch": self._budget,
        }
        self.run.begin_step("score", inputs=inputs, config=config, outputs=[WORK, SCORES], force=self.force)
        self.run.update_step("score", status="training", source=SOURCE, model_source=config["model"],
                             device=str(device), precision=self._precision, processes=self.workers.world)

    def _pass(self, model: torch.nn.Module, epoch: int, state: TrainerState) -> None:
        """This rank's shard of the pass, summed over ranks; the main process saves it and rewrites the files."""
        assert self.tokens is not None
        t0 = time.perf_counter()
        result = scoring_pass(model, self.tokens, workers=self.workers, pad_id=self._pad_id,
                              precision=self._precision, max_tokens=self._budget)
        self.epoch = epoch
        if not self.workers.is_main or self.run is None:
            return
        save_npy(self.passes / PASS_FILE.format(kind="prob", epoch=epoch), result.prob)
        save_npy(self.passes / PASS_FILE.format(kind="ppl", epoch=epoch), result.ppl)  # last: marks the pass done
        self.run.record_time("score", f"pass_ppl_{epoch}", time.perf_counter() - t0)
        self._write(state)

    def _write(self, state: TrainerState) -> None:
        """scores.parquet with P0 .. P_epoch, and the step's counts (rewritten after every pass)."""
        assert self.run is not None and self.tokens is not None
        table = score_table(self.passes, self.epoch, self.tokens)
        write_parquet(self.out_dir / SCORES, table)
        ppl = np.column_stack([table.column(f"ppl_{e}").to_numpy() for e in range(self.epoch + 1)])
        at = (self.run.step("score") or {}).get("pass_at_epoch", {})
        self.run.update_step(
            "score", epochs_done=self.epoch, pass_at_epoch={**at, str(self.epoch): round(float(state.epoch or 0), 4)},
            train_loss=_epoch_losses(state.log_history, self.epoch),
            counts={"rows": len(self.tokens), "nan_rows": int((~np.isfinite(ppl)).any(axis=1).sum()),
                    "truncated_rows": 0, "prompt_shortened_rows": 0,
                    "tokens": int(self.tokens.lengths.sum()), "scored_tokens": int(self.tokens.n_scored.sum())})


def _epoch_losses(history: list[dict[str, Any]], epochs: int) -> dict[str, float]:
    """Mean logged training loss per epoch (only epochs with a logged loss: it depends on ``logging_steps``)."""
    out: dict[str, float] = {}
    for e in range(1, epochs + 1):
        losses = [h["loss"] for h in history if "loss" in h and e - 1 < h.get("epoch", -1) <= e]
        if losses:
            out[str(e)] = round(float(np.mean(losses)), 6)
    return out
