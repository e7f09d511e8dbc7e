"""A client of any OpenAI-compatible chat-completions endpoint, on httpx (connection pool, timeouts) and tenacity
(the retry loop).

Transient failures (429, 408, 425, 5xx, connect timeouts, refused or dropped connections, a body that is not
the expected JSON) are retried with exponential backoff and jitter; a ``Retry-After`` header (seconds or an HTTP
date, which neither library reads for us) sets the wait instead. Other HTTP errors (400, 401, 404, ...) fail at
once: retrying cannot fix them. The API key lives only in memory and is masked out of every error message.

A reply that does not come within the timeout is never asked for again: the server got the request and may
still be generating it (a local model on a CPU), so a second copy would only add to the load it is behind on.
That order counts as failed and a rerun asks it again; the default timeout (``JudgeConfig.timeout``) is
generous. A request that never reached the server (refused, connect timeout) is retried; at most
``concurrency`` requests (the judge's thread pool) are in flight.
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
DEFAULT_TIMEOUT_S = 600.0
CONNECT_TIMEOUT_S = 10.0


class JudgeRequestError(LPSelectError):
    """The endpoint refused a request, or kept failing after every retry."""


class RetriesExhausted(JudgeRequestError):
    """A request kept failing (429/5xx/timeouts) after every retry: that order is counted as failed, the run
    goes on, and a rerun asks it again (a failure is never cached)."""


class NoReply(RetriesExhausted):
    """The server took the request but sent no reply within the timeout: not sent again (it may still be
    working on it), so that order counts as failed, as after spent retries, and a rerun asks it again."""


class _Transient(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


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


class OpenAIChatClient:
    """``complete(messages) -> str`` against POST {base_url}/chat/completions."""

    deterministic = False  # an API may answer differently when asked again

    def __init__(self, model: str, *, base_url: str = DEFAULT_BASE_URL, api_key: str | None = None,
                 temperature: float = 0.0, max_tokens: int = 512, timeout: float = DEFAULT_TIMEOUT_S,
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
        self._http = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout, connect=min(timeout,
                                                                                           CONNECT_TIMEOUT_S)))
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

        def attempt() -> str:
            return self._post(body)

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

    def _no_reply(self) -> NoReply:
        if not self._warned.is_set():
            self._warned.set()
            log.warning("%s gave no reply within %g s: such requests are not sent again (the server may still be "
                        "working on them) and count as failed. For a slow server (e.g. a local model on a CPU) "
                        "use a larger --timeout, --concurrency 1 or a smaller --max-tokens.", self.base_url,
                        self.timeout)
        return NoReply(f"{self.url}: no reply within {self.timeout:g} s; not sent again, since the server may "
                       f"still be working on it (a rerun asks again; a slow server needs a larger --timeout)")

    def _post(self, body: bytes) -> str:
        """One HTTP attempt."""
        try:
            resp = self._http.post(self.url, content=body, headers={"Content-Type": "application/json"})
        except httpx.ReadTimeout:  # the server has the request: asking again would only add to its load
            raise self._no_reply() from None
        except httpx.TimeoutException as e:  # connect/write/pool: the request never reached the server whole
            raise _Transient(f"timed out ({type(e).__name__})") from None
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
