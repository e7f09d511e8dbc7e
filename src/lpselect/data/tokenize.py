"""Tokenisation with the loss mask and the truncation policies of docs/method.md §3–4.

One implementation serves scoring, scorer training and target training. The result is three flat arrays
(tokens, scored-label mask, row offsets) that are cheap to save, memory-map and slice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import get_args

import numpy as np

from lpselect.config import Truncation
from lpselect.data.formats import Sample
from lpselect.data.template import render_prompt
from lpselect.errors import InputError
from lpselect.runs.io import save_npy

TRUNCATION_MODES: tuple[str, ...] = get_args(Truncation)
#: the arrays of a saved table, one ``<name>.npy`` each; offsets last, so its file (runs.layout.TOKENS_DONE)
#: exists only beside a complete table
TABLE_ARRAYS = ("tokens", "scored", "truncated", "prompt_shortened", "offsets")


@dataclass
class TokenizedData:
    """Token ids of all samples back to back. ``scored[j]`` is True where token j is a scored label."""

    tokens: np.ndarray  # int32, flat
    scored: np.ndarray  # bool, flat, same length as tokens
    offsets: np.ndarray  # int64, n + 1
    truncated: np.ndarray  # int32 per row: tokens cut away by truncation
    prompt_shortened: np.ndarray  # bool per row: the prompt (not the response) was cut (``--truncation prompt``)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.tokens[a:b], self.scored[a:b]

    @cached_property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @cached_property
    def n_scored(self) -> np.ndarray:
        """Scored tokens per row. The first token of a row is never a label (nothing predicts it).

        Computed once, a block of rows at a time: no temporary as long as the whole token table."""
        out = np.zeros(len(self), dtype=np.int64)
        for a in range(0, len(self), 4096):
            b = min(a + 4096, len(self))
            lo, hi = int(self.offsets[a]), int(self.offsets[b])
            mask = np.array(self.scored[lo:hi], dtype=bool)  # a copy: the table may be a read-only memmap
            local = self.offsets[a:b] - lo
            mask[local[self.lengths[a:b] > 0]] = False
            csum = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
            out[a:b] = csum[self.offsets[a + 1 : b + 1] - lo] - csum[local]
        return out

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        for name in TABLE_ARRAYS:
            save_npy(folder / f"{name}.npy", getattr(self, name))

    @classmethod
    def load(cls, folder: str | Path, mmap: bool = True) -> TokenizedData:
        mode = "r" if mmap else None
        folder = Path(folder)
        arrays = {
            name: np.load(folder / f"{name}.npy", mmap_mode=mode)
            for name in TABLE_ARRAYS
        }
        return cls(**arrays)


def tokenize_samples(
    samples: Sequence[Sample],
    tokenizer,
    *,
    max_length: int = 512,
    truncation: str = "prompt",
    progress: Callable[[int], None] | None = None,
) -> TokenizedData:
    """Tokenise ``prompt + output + eos`` per docs/method.md §3 (chat data: the tokenizer's chat template)."""
    if truncation not in TRUNCATION_MODES:
        raise ValueError(f"truncation must be one of {TRUNCATION_MODES}, got {truncation!r}")
    if max_length < 2:
        raise ValueError("max_length must be at least 2")
    eos = tokenizer.eos_token or ""
    parts: list[TokenizedData] = []  # packed per chunk: Python token lists never outlive their chunk
    batch = 256  # small chunks: the tokenizer's per-batch objects stay small
    for start in range(0, len(samples), batch):
        chunk = samples[start : start + batch]
        chat = [s for s in chunk if s.messages is not None]
        plain = [s for s in chunk if s.messages is None]
        encoded: dict[int, tuple[list[int], list[bool], int, bool]] = {}
        if plain:
            prompts = [render_prompt(s.instruction, s.input) for s in plain]
            full = tokenizer([p + s.output + eos for p, s in zip(prompts, plain, strict=True)]).input_ids
            prompt_lens = [len(x) for x in tokenizer(prompts).input_ids]
            for s, ids, n_prompt in zip(plain, full, prompt_lens, strict=True):
                encoded[s.id] = _truncate_plain(s, ids, n_prompt, tokenizer, eos, max_length, truncation)
        for s in chat:
            encoded[s.id] = _encode_chat(s, tokenizer, max_length)
        parts.append(_pack([encoded[s.id] for s in chunk]))
        if progress:
            progress(len(chunk))
    return _concat(parts)


def tokenize_responses(samples: Sequence[Sample], tokenizer, *, max_length: int = 512) -> TokenizedData:
    """The response alone (``output + eos``, every token a label, cut from the right): the denominator of IFD."""
    eos = tokenizer.eos_token or ""
    parts = []
    for start in range(0, len(samples), 256):
        chunk = samples[start : start + 256]
        rows = []
        for ids in tokenizer([s.output + eos for s in chunk]).input_ids:
            kept = ids[:max_length]
            rows.append((kept, [True] * len(kept), len(ids) - len(kept), False))
        parts.append(_pack(rows))
    return _concat(parts)


def _pack(rows: list[tuple[list[int], list[bool], int, bool]]) -> TokenizedData:
    lengths = np.array([len(r[0]) for r in rows], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = np.fromiter((t for r in rows for t in r[0]), dtype=np.int32, count=int(offsets[-1]))
    scored = np.fromiter((m for r in rows for m in r[1]), dtype=bool, count=int(offsets[-1]))
    return TokenizedData(
        tokens=tokens,
        scored=scored,
        offsets=offsets,
        truncated=np.array([r[2] for r in rows], dtype=np.int32),
        prompt_shortened=np.array([r[3] for r in rows], dtype=bool),
    )


def _concat(parts: list[TokenizedData]) -> TokenizedData:
    """Chunks packed one after another, as one table (offsets shifted by the tokens before each chunk)."""
    if not parts:
        return _pack([])
    starts = np.cumsum([0] + [int(p.offsets[-1]) for p in parts[:-1]])
    return TokenizedData(
        tokens=np.concatenate([p.tokens for p in parts]),
        scored=np.concatenate([p.scored for p in parts]),
        offsets=np.concatenate([[0]] + [p.offsets[1:] + s for p, s in zip(parts, starts, strict=True)]).astype(
            np.int64),
        truncated=np.concatenate([p.truncated for p in parts]),
        prompt_shortened=np.concatenate([p.prompt_shortened for p in parts]),
    )


def _mask(n_prompt: int, length: int) -> list[bool]:
    return [False] * min(n_prompt, length) + [True] * max(0, length - n_prompt)


def _truncate_plain(
    s: Sample, ids: list[int], n_prompt: int, tokenizer, eos: str, max_length: int, mode: str
) -> tuple[list[int], list[bool], int, bool]:
    if len(ids) <= max_length:
        return ids, _mask(n_prompt, len(ids)), 0, False
    if mode == "right":
        return ids[:max_length], _mask(n_prompt, max_length), len(ids) - max_length, False
    # mode == "prompt": the response is guaranteed min(its length, max_length // 2) tokens. A prompt that fits
    # beside that keeps every token and the response is cut from the right (as "right" does); a longer prompt
    # is shortened to fit (the end of the input first, then the instruction), so every sample keeps a response.
    response_len = len(ids) - n_prompt
    budget = max_length - min(response_len, max_length // 2)
    if n_prompt <= budget:
        return ids[:max_length], _mask(n_prompt, max_length), len(ids) - max_length, False
    with_input = bool(s.input)

    def prompt_len(instruction: str, inp: str) -> int:
        return len(tokenizer(render_prompt(instruction, inp, with_input=with_input)).input_ids)

    instruction, inp = s.instruction, s.input
    if prompt_len(instruction, "") <= budget:
        inp = inp[: longest_prefix(len(inp), lambda c: prompt_len(instruction, inp[:c]) <= budget)]
    else:
        inp = ""
        keep = longest_prefix(len(instruction), lambda c: prompt_len(instruction[:c], "") <= budget)
        instruction = instruction[:keep]
    prompt = render_prompt(instruction, inp, with_input=with_input)
    new_ids = tokenizer(prompt + s.output + eos).input_ids[:max_length]
    new_prompt_len = len(tokenizer(prompt).input_ids)
    return new_ids, _mask(new_prompt_len, len(new_ids)), len(ids) - len(new_ids), True


def longest_prefix(n: int, fits: Callable[[int], bool]) -> int:
    """Largest c in [0, n] with fits(c) (fits is monotone: shorter text, fewer tokens); 0 if none."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _encode_chat(s: Sample, tokenizer, max_length: int) -> tuple[list[int], list[bool], int, bool]:
    """Chat template; labels are the assistant turns (their content and end-of-turn marker) only."""
    if not getattr(tokenizer, "chat_template", None):
        raise InputError("<tokenizer>", "chat data needs a tokenizer with a chat template", row=s.id, field="messages")
    messages = list(s.messages or ())
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant" or i < s.first_scored_turn:
            continue
        upto = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not text.startswith(upto):
            raise InputError(
                "<tokenizer>", "chat template is not prefix-stable; cannot locate assistant turns", row=s.id
            )
        spans.append((_content_start(tokenizer, messages, i, upto, s.id), len(upto)))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc.input_ids
    mask = [any(a <= start < b for a, b in spans) for start, _ in enc.offset_mapping]
    if len(ids) > max_length:
        return ids[:max_length], mask[:max_length], len(ids) - max_length, False
    return ids, mask, 0, False


_SENTINEL = "\ue000lpselect-turn\ue001"  # private-use characters: never in real text, kept as-is by templates


def _content_start(tokenizer, messages: list[dict[str, str]], i: int, upto: str, row: int) -> int:
    """Where assistant turn ``i``'s content starts in ``upto`` (the text rendered up to and including it).

    The turn is rendered once more with a sentinel for its content: what precedes the sentinel is the turn's
    header (role marker, BOS, a template's default system prompt), which is never scored. This holds for
    templates without a generation prompt too, where rendering the turns before it would end before the
    header and score the role marker. A template that rewrites the content (trims it, say) falls back to the
    generation prompt's end."""
    probe = [*messages[:i], {**messages[i], "content": _SENTINEL}]
    marked = tokenizer.apply_chat_template(probe, tokenize=False)
    at = marked.find(_SENTINEL)
    if at >= 0 and marked[:at] + messages[i]["content"] + marked[at + len(_SENTINEL):] == upto:
        return at
    before = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True) if i else ""
    if not upto.startswith(before):
        raise InputError("<tokenizer>", "chat template is not prefix-stable; cannot locate assistant turns", row=row)
    return len(before)
