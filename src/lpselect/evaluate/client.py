"""A client of any OpenAI-compatible chat-completions endpoint, on httpx (connection pool, timeouts) and tenacity
(the retry loop).

Transient failures (429, 408, 425, 5xx, timeouts, refused or dropped connections, a body that is not the
expected JSON) are retried with exponential backoff and jitter; a ``Retry-After`` header (seconds or an HTTP
date, which neither library reads for us) sets the wait instead. Other HTTP errors (400, 401, 404, ...) fail at
once: retrying cannot fix them. The API key lives only in memory and is masked out of every error message.

A server that is too slow for the timeout (a local CPU model, an overloaded endpoint) keeps generating the
replies the client gave up on, so plain retries multiply its load. On a timeout the client therefore lowers
how many requests it keeps in flight (halved, at least one; raised again one by one as replies arrive) and
waits twice as long on that request's next attempt (up to 8x), and says once what to change.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import timezone
from typing import Any

import httpx
import tenacity

from lpselect.errors import LPSelectError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUS = {408, 425, 429}
MAX_RETRY_AFTER_S = 600.0
MAX_TIMEOUT_GROWTH = 8.0


class JudgeRequestError(LPSelectError):
    """The endpoint refused a request, or kept failing after every retry."""


class RetriesExhausted(JudgeRequestError):
    """A request kept failing (429/5xx/timeouts) after every retry: that order is counted as failed, the run
    goes on, and a rerun asks it again (a failure is never cached)."""


class _Transient(Exception):
    def __init__(self, message: str, retry_after: float | None = None, timed_out: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.timed_out = timed_out


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = time.time() if now is None else now
    return min(max(when.timestamp() - now, 0.0), MAX_RETRY_AFTER_S)


def backoff_delay(retry: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Exponential backoff with jitter: uniform in [d/2, d] for d = min(cap, base * 2**retry)."""
    d = min(cap, base * 2 ** retry)
    return d / 2 + rand() * d / 2


class InFlightLimit:
    """How many requests may be in flight (AIMD): unlimited (the caller's pool bounds it) until a timeout, then
    halved on every timeout (at least 1) and raised by one after as many replies as the current limit; back to
    unlimited once it reaches the most that were ever in flight."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.in_flight = self.peak = 0
        self.limit: int | None = None
        self._successes = 0

    def __enter__(self) -> InFlightLimit:
        with self._cond:
            while self.limit is not None and self.in_flight >= self.limit:
                self._cond.wait()
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self.in_flight -= 1
            self._cond.notify_all()

    def timed_out(self) -> int:
        """A request timed out: halve the limit; returns the new one."""
        with self._cond:
            self.limit = max(1, (self.limit or self.peak) // 2)
            self._successes = 0
            return self.limit

    def answered(self) -> None:
        with self._cond:
            if self.limit is None:
                return
            self._successes += 1
            if self._successes >= self.limit:
                self._successes = 0
                self.limit += 1
                if self.limit >= self.peak:
                    self.limit = None
                self._cond.notify_all()


class OpenAIChatClient:
    """``complete(messages) -> str`` against POST {base_url}/chat/completions."""

    deterministic = False  # an API may answer differently when asked again

    def __init__(self, model: str, *, base_url: str = DEFAULT_BASE_URL, api_key: str | None = None,
                 temperature: float = 0.0, max_tokens: int = 512, timeout: float = 120.0,
                 max_retries: int = 6, backoff_base: float = 1.0, backoff_max: float = 60.0,
                 sleep: Callable[[float], None] = time.sleep):
        if max_retries < 0 or timeout <= 0:
            raise ValueError("max_retries must be >= 0 and timeout > 0")
        self.model, self.base_url = model, base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.temperature, self.max_tokens = temperature, max_tokens
        self.timeout, self.max_retries = timeout, max_retries
        self.backoff_base, self.backoff_max, self._sleep = backoff_base, backoff_max, sleep
        self._api_key = api_key or None
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        self._http = httpx.Client(headers=headers, timeout=timeout)
        self.in_flight = InFlightLimit()
        self._warned = threading.Event()

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIChatClient(model={self.model!r}, base_url={self.base_url!r})"

    def identity(self) -> dict[str, Any]:
        """What decides a reply (for the cache key); no secret."""
        return {"kind": "openai-chat", "base_url": self.base_url, "model": self.model,
                "temperature": self.temperature, "max_tokens": self.max_tokens}

    def _mask(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def complete(self, messages: list[dict[str, str]]) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": self.temperature,
                           "max_tokens": self.max_tokens}).encode()
        timeout = [self.timeout]  # this request's: grows after each of its timeouts

        def attempt() -> str:
            with self.in_flight:
                try:
                    reply = self._post(body, timeout[0])
                except _Transient as e:
                    if e.timed_out:
                        self._slow_server(timeout[0])
                        timeout[0] = min(timeout[0] * 2, self.timeout * MAX_TIMEOUT_GROWTH)
                    raise
            self.in_flight.answered()
            return reply

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_retries + 1), wait=self._wait,
            retry=tenacity.retry_if_exception_type(_Transient), sleep=self._sleep, before_sleep=self._log_retry,
            reraise=True)
        try:
            return retrying(attempt)
        except _Transient as e:
            raise RetriesExhausted(f"{self.url}: gave up after {self.max_retries + 1} attempts; "
                                    f"last error: {e}") from None

    def _wait(self, state: tenacity.RetryCallState) -> float:
        """The server's Retry-After when it sent one, else exponential backoff with jitter."""
        err = state.outcome.exception() if state.outcome is not None else None
        if isinstance(err, _Transient) and err.retry_after is not None:
            return err.retry_after
        return backoff_delay(state.attempt_number - 1, self.backoff_base, self.backoff_max)

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.info("judge request failed (%s); retry %d/%d in %.2fs", err, state.attempt_number,
                 self.max_retries, wait)

    def _slow_server(self, timeout: float) -> None:
        limit = self.in_flight.timed_out()
        if not self._warned.is_set():
            self._warned.set()
            log.warning("%s gave no reply within %g s: now at most %d request(s) in flight and longer waits on "
                        "retries. For a slow server (e.g. a local model on a CPU) use --concurrency 1, a smaller "
                        "--max-tokens (e.g. 64) or a larger --timeout.", self.base_url, timeout, limit)

    def _post(self, body: bytes, timeout: float | None = None) -> str:
        """One HTTP attempt."""
        try:
            resp = self._http.post(self.url, content=body, headers={"Content-Type": "application/json"},
                                   timeout=timeout or self.timeout)
        except httpx.TimeoutException as e:
            raise _Transient(f"timed out after {timeout or self.timeout:g} s ({type(e).__name__})",
                             timed_out=True) from None
        except httpx.TransportError as e:  # refused, reset, protocol errors
            raise _Transient(self._mask(f"{type(e).__name__}: {e}")) from None
        if resp.status_code >= 400:
            if resp.status_code in RETRY_STATUS or resp.status_code >= 500:
                raise _Transient(f"HTTP {resp.status_code}", parse_retry_after(resp.headers.get("Retry-After")))
            detail = self._mask(resp.text[:300])
            raise JudgeRequestError(f"{self.url} answered HTTP {resp.status_code} {resp.reason_phrase}: "
                                    f"{detail}")
        try:
            content = resp.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Transient("the reply is not a chat-completions JSON body") from None
        return content if isinstance(content, str) else ""
