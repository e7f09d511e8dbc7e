"""Judging: every question is asked twice, the answers in both orders, through any chat backend.

Requests run on a bounded thread pool; every reply goes to the disk cache before it is used, so a rerun
after a crash or an interruption only sends what is missing. A reply whose first line has no two grades is
asked again (a new request) up to ``parse_retries`` times, then the order is recorded as unparsed. A request
that still fails after the client's retries is recorded as failed (never cached): the run finishes, and a rerun
asks only the failed and missing orders.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from lpselect.config import JudgeConfig
from lpselect.evaluate.answers import AnswerPair, pair_answers
from lpselect.evaluate.cache import ReplyCache, request_key
from lpselect.evaluate.client import RetriesExhausted
from lpselect.evaluate.prompt import PROMPT_VERSION, Messages, build_messages, parse_scores
from lpselect.evaluate.reviews import OrderResult, Review, write_reviews
from lpselect.runs.layout import REPLY_CACHE

log = logging.getLogger(__name__)


class ChatBackend(Protocol):
    deterministic: bool  # True: the same request always gets the same reply (no point asking again)

    def identity(self) -> dict[str, Any]: ...

    def complete(self, messages: Messages) -> str: ...


def build_judge(config: JudgeConfig, model: str) -> ChatBackend:
    """The judge ``config`` describes, asking ``model``: an OpenAI-compatible endpoint (its key read from the
    environment variable ``config.api_key_env`` only, never from a file or an argument) or a local
    transformers chat model (a hub id or path)."""
    if config.backend == "local":
        from lpselect.evaluate.local import LocalChat

        return LocalChat(model, max_new_tokens=config.max_tokens, device=config.device)
    from lpselect.evaluate.client import OpenAIChatClient

    key = os.environ.get(config.api_key_env)
    if not key:
        log.warning("$%s is not set: requests go without a key", config.api_key_env)
    return OpenAIChatClient(model, base_url=config.base_url, api_key=key, temperature=config.temperature,
                            max_tokens=config.max_tokens, timeout=config.timeout, max_retries=config.max_retries)


@dataclass
class JudgeStats:
    requests_sent: int = 0
    cache_hits: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def count(self, *, cached: bool) -> None:
        with self._lock:
            if cached:
                self.cache_hits += 1
            else:
                self.requests_sent += 1


@dataclass(frozen=True)
class JudgeResult:
    path: Path
    reviews: list[Review]
    stats: JudgeStats

    @property
    def n_unparsed(self) -> int:
        return sum(r.status == "unparsed" for r in self.reviews)

    @property
    def n_failed(self) -> int:
        return sum(r.status == "failed" for r in self.reviews)


def judge_order(backend: ChatBackend, messages: Messages, *, cache: ReplyCache | None = None,
                parse_retries: int = 2, stats: JudgeStats | None = None) -> OrderResult:
    """Ask one order until its reply can be read (or the retries are spent); never invent a score."""
    identity = backend.identity()
    tries = 1 if backend.deterministic else 1 + max(parse_retries, 0)
    reply = ""
    for attempt in range(tries):
        key = request_key(identity, messages, attempt)
        cached = cache.get(key) if cache is not None else None
        if cached is None:
            try:
                reply = backend.complete(messages)
            except RetriesExhausted as e:  # counted as failed; not cached, so a rerun asks again
                if stats is not None:
                    stats.count(cached=False)
                return OrderResult("", None, attempt + 1, error=str(e))
            if cache is not None:
                cache.put(key, reply)
        else:
            reply = cached
        if stats is not None:
            stats.count(cached=cached is not None)
        scores = parse_scores(reply)
        if scores is not None:
            return OrderResult(reply, scores, attempt + 1)
    return OrderResult(reply, None, tries)


def judge_pairs(pairs: Sequence[AnswerPair], backend: ChatBackend, *, cache: ReplyCache | None = None,
                concurrency: int = 4, parse_retries: int = 2, model_a: str | None = None,
                model_b: str | None = None, progress: bool = False) -> tuple[list[Review], JudgeStats]:
    """Judge every pair in both orders (A first, then B first), at most ``concurrency`` requests at once."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    stats = JudgeStats()
    results: dict[tuple[int, str], OrderResult] = {}
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="judge") as pool:
        futures: dict[Future[OrderResult], tuple[int, str]] = {}
        for i, p in enumerate(pairs):
            for order, first, second in (("ab", p.answer_a, p.answer_b), ("ba", p.answer_b, p.answer_a)):
                fut = pool.submit(judge_order, backend, build_messages(p.question, first, second),
                                  cache=cache, parse_retries=parse_retries, stats=stats)
                futures[fut] = (i, order)
        try:
            for fut in tqdm(as_completed(futures), total=len(futures), desc="judging", disable=not progress):
                results[futures[fut]] = fut.result()
        except BaseException:
            for fut in futures:
                fut.cancel()  # replies already received stay in the cache for the rerun
            raise
    judge = str(backend.identity().get("model"))
    reviews = [Review(p.testset, p.id, p.question, results[(i, "ab")], results[(i, "ba")], model_a, model_b,
                      judge, PROMPT_VERSION) for i, p in enumerate(pairs)]
    return reviews, stats


def default_cache_dir(out: str | Path) -> Path:
    """``reviews.jsonl`` -> ``reviews.cache/`` next to it."""
    out = Path(out)
    return out.with_name(REPLY_CACHE.format(stem=out.stem))


def judge_files(answers_a: str | Path, answers_b: str | Path, out: str | Path, backend: ChatBackend, *,
                cache_dir: str | Path | None = None, concurrency: int = 4, parse_retries: int = 2,
                progress: bool = False) -> JudgeResult:
    """Pair two answers files by (testset, id), judge every pair in both orders, write the reviews JSONL."""
    pairs, model_a, model_b = pair_answers(answers_a, answers_b)
    cache = ReplyCache(cache_dir if cache_dir is not None else default_cache_dir(out))
    reviews, stats = judge_pairs(pairs, backend, cache=cache, concurrency=concurrency,
                                 parse_retries=parse_retries, model_a=model_a, model_b=model_b,
                                 progress=progress)
    return JudgeResult(write_reviews(out, reviews), reviews, stats)
