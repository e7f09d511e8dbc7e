"""Answers of a model to the evaluation test sets (docs/method.md §10), with the training template.

``load_testsets`` reads the five test sets, each with its own field names, into (testset, id, question).
``generate_answers`` answers them in batches (left padding) with the Alpaca prompt the model was trained
with, greedy or seeded sampling, and appends one JSON line per answer, flushed at once: re-running the same
command skips the questions already answered, so an interrupted run is completed, never restarted.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from tqdm.auto import tqdm

from lpselect.config import GenerateConfig, TestSet
from lpselect.data.template import render_prompt
from lpselect.data.tokenize import longest_prefix
from lpselect.engine.models import load_causal_lm
from lpselect.errors import InputError, LPSelectError
from lpselect.runs.io import jsonl_objects, write_json
from lpselect.runs.layout import ANSWERS_SETTINGS

if TYPE_CHECKING:
    from lpselect.engine.precision import PrecisionChoice

log = logging.getLogger(__name__)

TESTSETS: tuple[str, ...] = get_args(TestSet)
DEFAULT_TESTSET_DIR = Path("..") / "shared" / "data" / "testsets"


@dataclass(frozen=True)
class TestQuestion:
    """One question: ``question`` is what a judge reads; ``instruction``/``input`` make the prompt."""

    testset: str
    id: int | str
    question: str
    instruction: str
    input: str = ""

    __test__ = False  # not a pytest test class

    @property
    def key(self) -> tuple[str, str]:
        return (self.testset, str(self.id))


@dataclass
class GenerateResult:
    out_path: Path
    n_written: int
    n_skipped: int  # already in the file
    new_tokens: int
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------- test sets


def default_testset_dir() -> Path | None:
    """$LPSELECT_TESTSET_DIR, else ../shared/data/testsets (relative to the working folder) when it exists."""
    env = os.environ.get("LPSELECT_TESTSET_DIR")
    if env:
        return Path(env)
    return DEFAULT_TESTSET_DIR if DEFAULT_TESTSET_DIR.is_dir() else None


def testset_file(name: str, testset_dir: str | Path) -> Path:
    return Path(testset_dir) / f"{name}_test_set.jsonl"


def load_testsets(names: Sequence[str] | str, testset_dir: str | Path | None = None, *,
                  limit: int | None = None) -> list[TestQuestion]:
    """The questions of each named test set, in file order (at most ``limit`` per set), from ``testset_dir``
    (default: :func:`default_testset_dir`)."""
    if testset_dir is None:
        testset_dir = default_testset_dir()
        if testset_dir is None:
            raise LPSelectError("no test-set folder: pass --testset-dir DIR (or set LPSELECT_TESTSET_DIR)")
    if limit is not None and limit < 1:
        raise LPSelectError(f"limit must be at least 1, got {limit}")
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in TESTSETS]
    if unknown:
        raise LPSelectError(f"unknown test set(s) {unknown}; known: {', '.join(TESTSETS)}")
    if not names:
        raise LPSelectError("no test set named")
    questions: list[TestQuestion] = []
    for name in dict.fromkeys(names):
        path = testset_file(name, testset_dir)
        if not path.is_file():
            raise InputError(path, f"test set '{name}' not found (expected {path.name} in {testset_dir})")
        rows = [obj for _, obj in jsonl_objects(path)]
        if limit is not None:
            rows = rows[:limit]
        questions.extend(_normalise(name, path, i, row) for i, row in enumerate(rows))
    return questions


def _field(path: Path, row: int, obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InputError(path, "missing, empty or not text", row=row, field=name)
    return value


def _normalise(name: str, path: Path, row: int, obj: dict[str, Any]) -> TestQuestion:
    """Each file's own field names: vicuna text/question_id, koala prompt/id, wizardlm Instruction/idx,
    sinstruct instruction + instances[0].input / id, lima conversations (first turn) / row position."""
    if name == "vicuna":
        text = _field(path, row, obj, "text")
        return TestQuestion(name, obj.get("question_id", row), text, text)
    if name == "koala":
        text = _field(path, row, obj, "prompt")
        return TestQuestion(name, obj.get("id", row), text, text)
    if name == "wizardlm":
        text = _field(path, row, obj, "Instruction")
        return TestQuestion(name, obj.get("idx", row), text, text)
    if name == "sinstruct":
        instruction = _field(path, row, obj, "instruction")
        instances = obj.get("instances") or [{}]
        first = instances[0] if isinstance(instances, list) and instances else {}
        inp = first.get("input", "") if isinstance(first, dict) else ""
        if not isinstance(inp, str):
            raise InputError(path, "not text", row=row, field="instances[0].input")
        question = f"{instruction}\n\n{inp}" if inp.strip() else instruction
        return TestQuestion(name, obj.get("id", row), question, instruction, inp if inp.strip() else "")
    # lima: `conversations` is the list of turns (the first is the question), or in some copies that string
    conv = obj.get("conversations")
    text = conv[0] if isinstance(conv, list) and conv else conv
    if not isinstance(text, str) or not text.strip():
        raise InputError(path, "missing, empty or not text (or a list whose first turn is text)", row=row,
                         field="conversations")
    return TestQuestion(name, obj.get("id", row), text, text)


# ---------------------------------------------------------------- generation


def generate_answers(
    model_dir: str | Path | None,
    out_jsonl: str | Path,
    config: GenerateConfig | None = None,
    *,
    questions: Sequence[TestQuestion] | None = None,
    model_name: str | None = None,
    progress: bool = True,
) -> GenerateResult:
    """Answer every question not yet in ``out_jsonl`` with ``config``'s settings; append one line per answer
    (flushed).

    ``model_dir``: a model folder (a LoRA adapter folder too), a hub id, or None / the default name for
    the untrained offline SmolLM2. ``questions``: default, ``config``'s test sets (:func:`load_testsets`).
    Greedy when ``config.temperature`` is 0, else sampling seeded per batch.
    """
    import torch

    from lpselect.engine.models import load_tokenizer, model_source
    from lpselect.engine.precision import announce, choose_precision, pick_device

    config = config or GenerateConfig()
    if questions is None:
        questions = load_testsets(config.testsets, config.testset_dir, limit=config.limit)
    max_new_tokens, temperature, seed, batch_size = (config.max_new_tokens, config.temperature, config.seed,
                                                     config.batch_size)
    out = Path(out_jsonl)
    label = model_name or _model_label(model_dir)
    # the model is its resolved path and its weights, not the label: runs/x/final and runs/y/final share a label
    settings = {"model": label, "model_path": _model_identity(model_dir), "weights": _weights_fingerprint(model_dir),
                "max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed}
    done = _read_done(out, label)
    _check_settings(out, settings)
    pending = [q for q in questions if q.key not in done]
    n_skipped = len(questions) - len(pending)
    if not pending:
        return GenerateResult(out, 0, n_skipped, 0, 0.0)

    source = _source_of(model_dir, model_source)
    tokenizer = load_tokenizer(source)  # a model that is not there: one line naming where it was looked for
    tokenizer.padding_side = "left"
    dev = pick_device(config.device)
    choice = choose_precision(config.precision, dev)
    announce(choice)
    prec = choice.precision
    model = load_causal_lm(source, dtype="bfloat16" if prec == "bf16" else "float32").to(dev)
    model.eval()
    _write_settings(out, settings, source, choice)

    eos_ids = _eos_ids(model, tokenizer)
    limit = _max_prompt_tokens(model, max_new_tokens)
    prompts = {q.key: _prompt(q, tokenizer, limit) for q in pending}
    # longest first: similar lengths share a batch (little padding), and a memory error shows at once
    order = sorted(pending, key=lambda q: -len(prompts[q.key][0]))
    gen_kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "eos_token_id": eos_ids,
                                  "pad_token_id": tokenizer.pad_token_id}
    if temperature > 0:
        gen_kwargs.update(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
    else:
        gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    from transformers import GenerationConfig

    gen_config = GenerationConfig(**gen_kwargs)

    n_written, new_tokens, t0 = 0, 0, time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a", encoding="utf-8") as f, tqdm(total=len(order), desc=f"generate {label}", unit="q",
                                                      disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            enc = tokenizer.pad({"input_ids": [prompts[q.key][0] for q in batch]}, return_tensors="pt")
            enc = {k: v.to(dev) for k, v in enc.items()}
            if temperature > 0:
                torch.manual_seed(_batch_seed(seed, batch))
            with torch.inference_mode():
                generated = model.generate(**enc, generation_config=gen_config)
            new = generated[:, enc["input_ids"].shape[1] :].tolist()
            for q, ids in zip(batch, new, strict=True):
                ids = _until_eos(ids, eos_ids)
                new_tokens += len(ids)
                line = {"testset": q.testset, "id": q.id, "question": q.question,
                        "answer": tokenizer.decode(ids, skip_special_tokens=True).strip(), "model": label}
                if prompts[q.key][1]:
                    line["prompt_shortened"] = True
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
                f.flush()
                n_written += 1
            bar.update(len(batch))
    return GenerateResult(out, n_written, n_skipped, new_tokens, time.perf_counter() - t0)


def _model_label(model_dir: str | Path | None) -> str:
    if model_dir is None or str(model_dir) == "":
        from lpselect.engine.models import DEFAULT_SCORER

        return DEFAULT_SCORER
    p = Path(model_dir)
    return p.resolve().name if p.exists() else str(model_dir)


def _model_identity(model_dir: str | Path | None) -> str:
    """What answered: a local model's resolved full path, else the hub id or the default's name."""
    if model_dir is None or str(model_dir) == "":
        from lpselect.engine.models import DEFAULT_SCORER

        return DEFAULT_SCORER
    p = Path(model_dir).expanduser()
    return str(p.resolve()) if p.exists() else str(model_dir)


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def _weights_fingerprint(model_dir: str | Path | None) -> str | None:
    """A cheap fingerprint of a local model's weight files (name, size, and the bytes of their first and last MiB),
    so a model trained again into the same folder is another model while a copied folder is the same; None for a
    hub id or the default."""
    import hashlib

    if model_dir is None or not Path(model_dir).is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(f for f in Path(model_dir).iterdir() if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES)):
        size = f.stat().st_size
        h.update(f"{f.name}:{size}:".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(_EDGE))
            if size > 2 * _EDGE:
                fh.seek(size - _EDGE)
            h.update(fh.read(_EDGE))
    return h.hexdigest()[:16]


_EDGE = 1 << 20  # bytes read at each end of a weight file for its fingerprint


def _source_of(model_dir: str | Path | None, model_source) -> str:
    if model_dir is not None and Path(model_dir).is_dir():
        return str(model_dir)
    return model_source(None if model_dir is None else str(model_dir))


def _eos_ids(model, tokenizer) -> list[int]:
    ids: list[int] = []
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        for v in value if isinstance(value, list) else [value]:
            if v is not None and v not in ids:
                ids.append(int(v))
    if not ids:
        raise LPSelectError("the tokenizer has no end-of-sequence token; generation could not stop")
    return ids


def _max_prompt_tokens(model, max_new_tokens: int) -> int | None:
    cfg = model.config
    n_pos = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    if not n_pos:
        return None
    return max(1, int(n_pos) - max_new_tokens)


def _prompt(q: TestQuestion, tokenizer, limit: int | None) -> tuple[list[int], bool]:
    """Token ids of the Alpaca prompt (as in training: the tokenizer's usual special tokens), and whether
    the question was shortened (input first, then instruction, from the end) to fit the model's positions."""
    with_input = bool(q.input)

    def ids(instruction: str, inp: str) -> list[int]:
        return tokenizer(render_prompt(instruction, inp, with_input=with_input)).input_ids

    full = ids(q.instruction, q.input)
    if limit is None or len(full) <= limit:
        return full, False
    instruction, inp = q.instruction, q.input
    if len(ids(instruction, "")) <= limit:
        inp = inp[: longest_prefix(len(inp), lambda c: len(ids(instruction, inp[:c])) <= limit)]
    else:
        inp = ""
        keep = longest_prefix(len(instruction), lambda c: len(ids(instruction[:c], "")) <= limit)
        instruction = instruction[:keep]
    log.warning("%s %s: prompt shortened to fit %d tokens", q.testset, q.id, limit)
    return ids(instruction, inp)[:limit], True


def _until_eos(ids: list[int], eos_ids: list[int]) -> list[int]:
    for i, t in enumerate(ids):
        if t in eos_ids:
            return ids[:i]
    return ids


def _batch_seed(seed: int, batch: Sequence[TestQuestion]) -> int:
    import zlib

    keys = "|".join(f"{q.testset}/{q.id}" for q in batch)
    return (seed * 1_000_003 + zlib.crc32(keys.encode())) % (2**63)


# ---------------------------------------------------------------- resuming


def _read_done(out: Path, label: str) -> set[tuple[str, str]]:
    """Keys already answered in ``out``. A torn last line (a crash mid-write) is cut away; a bad line in the
    middle, or answers of another model, are refused."""
    if not out.exists():
        return set()
    raw = out.read_bytes()
    lines = raw.split(b"\n")
    done: set[tuple[str, str]] = set()
    good_end = 0
    for i, line in enumerate(lines):
        if not line.strip():
            good_end += len(line) + 1
            continue
        try:
            obj = json.loads(line)
            key = (str(obj["testset"]), str(obj["id"]))
            answer_model = obj.get("model")
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
            if i == len(lines) - 1:  # the last line, with no newline: torn by an interruption
                log.warning("%s: dropping an incomplete last line", out)
                with open(out, "r+b") as f:
                    f.truncate(good_end)
                break
            raise InputError(out, f"line {i + 1} is not a valid answer line", row=i) from None
        if answer_model is not None and answer_model != label:
            raise LPSelectError(f"{out} holds answers of model '{answer_model}', not '{label}'; "
                                "write to another file")
        done.add(key)
        good_end += len(line) + 1
        if i == len(lines) - 1:  # a complete last line without its newline: add it before appending
            with open(out, "ab") as f:
                f.write(b"\n")
    return done


def _settings_path(out: Path) -> Path:
    return out.with_name(ANSWERS_SETTINGS.format(answers=out.name))


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    path = _settings_path(out)
    if not path.exists() or not out.exists():
        return
    try:
        old = json.loads(path.read_text()).get("settings", {})
    except json.JSONDecodeError:
        return
    changed = sorted(k for k in settings if k in old and old[k] != settings[k])
    if changed:
        raise LPSelectError(f"{out} was generated with other settings ({', '.join(changed)}: "
                            f"{[old[k] for k in changed]} -> {[settings[k] for k in changed]}); "
                            "write to another file")


def _write_settings(out: Path, settings: dict[str, Any], source: str, precision: PrecisionChoice) -> None:
    from lpselect.runs.folder import library_versions

    write_json(_settings_path(out),
               {"settings": settings, "model_source": source, "precision": precision.precision,
                "precision_reason": precision.reason, "versions": library_versions()})
