"""A client of any OpenAI-compatible chat-completions endpoint, on the standard library only.

Transient failures (429, 408, 5xx, timeouts, refused or dropped connections, a body that is not the expected
JSON) are retried with exponential backoff and jitter; a ``Retry-After`` header sets the wait instead. Other
HTTP errors (400, 401, 404, ...) fail at once: retrying cannot fix them. The API key lives only in memory and
is masked out of every error message.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import timezone
from typing import Any

from lpselect.errors import LPSelectError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUS = {408, 425, 429}
MAX_RETRY_AFTER_S = 600.0


class JudgeRequestError(LPSelectError):
    """The endpoint refused a request, or kept failing after every retry."""


class RetriesExhausted(JudgeRequestError):
    """A request kept failing (429/5xx/timeouts) after every retry: that order is counted as failed, the run
    goes on, and a rerun asks it again (a failure is never cached)."""


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
        self._opener = urllib.request.build_opener()

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
        last = ""
        for retry in range(self.max_retries + 1):
            try:
                return self._post(body)
            except _Transient as e:
                last = str(e)
                if retry == self.max_retries:
                    break
                wait = e.retry_after if e.retry_after is not None else backoff_delay(
                    retry, self.backoff_base, self.backoff_max)
                log.info("judge request failed (%s); retry %d/%d in %.2fs", last, retry + 1,
                         self.max_retries, wait)
                self._sleep(wait)
        raise RetriesExhausted(f"{self.url}: gave up after {self.max_retries + 1} attempts; "
                                f"last error: {last}")

    def _post(self, body: bytes) -> str:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            detail = self._mask(_read_quietly(e)[:300])
            if e.code in RETRY_STATUS or 500 <= e.code < 600:
                raise _Transient(f"HTTP {e.code}", parse_retry_after(e.headers.get("Retry-After"))) from None
            raise JudgeRequestError(f"{self.url} answered HTTP {e.code} {e.reason}: {detail}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:  # timeouts, refused, reset
            reason = getattr(e, "reason", e)
            raise _Transient(self._mask(f"{type(e).__name__}: {reason}")) from None
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Transient("the reply is not a chat-completions JSON body") from None
        return content if isinstance(content, str) else ""


def _read_quietly(e: urllib.error.HTTPError) -> str:
    try:
        return e.read().decode("utf-8", "replace")
    except Exception:
        return ""
