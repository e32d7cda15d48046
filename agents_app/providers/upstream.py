"""The HTTP client the openai package sends requests with: it retries a request the model's API
refused or dropped before answering, all within one deadline for the answer to begin.

openai's own retries (turned off here) give each try the whole read timeout and sleep any
Retry-After up to two minutes, so an upstream that never answers held a run for
(retries + 1) x the idle timeout. Here the first byte of the answer (its response headers) has
OPENAI_FIRST_BYTE_TIMEOUT seconds counted from the first try, whatever the retries; a
Retry-After that would end past that deadline is not waited for: the upstream's own refusal
ends the run at once. Once the answer began, nothing is retried (the stream's silences are
bounded by the read timeout, OPENAI_STREAM_IDLE_TIMEOUT).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import time
from typing import Any

import httpx2
from openai import DefaultAsyncHttpxClient

log = logging.getLogger(__name__)

FIRST_RETRY_DELAY = 0.5  # then doubling, up to MAX_RETRY_DELAY, less up to a quarter of jitter
MAX_RETRY_DELAY = 8.0


class FirstByteTimeout(httpx2.TimeoutException):
    """The model's API did not begin its answer within OPENAI_FIRST_BYTE_TIMEOUT, retries included."""


class DeadlineClient(DefaultAsyncHttpxClient):
    """openai's default HTTP client, with the retries and the first-byte deadline above."""

    def __init__(self, *, max_retries: int, first_byte_timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_retries = max_retries
        self.first_byte_timeout = first_byte_timeout

    async def send(self, request: httpx2.Request, *, stream: bool = False, **kwargs: Any) -> httpx2.Response:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.first_byte_timeout
        attempt = 0
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    # Streamed, so the deadline covers the wait for the headers only.
                    response = await super().send(request, stream=True, **kwargs)
            except TimeoutError:
                raise FirstByteTimeout(
                    f"the model's API did not begin to answer within {self.first_byte_timeout:g} s "
                    f"({attempt + 1} {'try' if attempt == 0 else 'tries'})",
                    request=request,
                ) from None
            except httpx2.TransportError:
                delay = backoff(attempt)
                if attempt >= self.max_retries or loop.time() + delay >= deadline:
                    raise
            else:
                if attempt >= self.max_retries or not should_retry(response):
                    return await finish(response, stream)
                asked = retry_after(response.headers)
                delay = backoff(attempt) if asked is None else asked
                if loop.time() + delay >= deadline:
                    # Waiting would outlast the deadline: the upstream's refusal is the answer.
                    if asked is not None:
                        log.info("upstream Retry-After %g s ends past the deadline: no retry", asked)
                    return await finish(response, stream)
                await response.aclose()
            await asyncio.sleep(delay)
            attempt += 1


async def finish(response: httpx2.Response, stream: bool) -> httpx2.Response:
    """The response as the caller asked for it: a caller that does not stream gets it read."""
    if not stream:
        try:
            await response.aread()
        finally:
            await response.aclose()
    return response


def should_retry(response: httpx2.Response) -> bool:
    """Refusals worth another try: the server says so, or a timeout, lock, rate limit or its own fault."""
    told = response.headers.get("x-should-retry")
    if told in ("true", "false"):
        return told == "true"
    return response.status_code in (408, 409, 429) or response.status_code >= 500


def retry_after(headers: httpx2.Headers) -> float | None:
    """The wait the server asked for, in seconds: `retry-after-ms`, or `retry-after` as seconds
    or as an HTTP date; None when it asked for none (or for nothing readable)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        return max(seconds, 0.0) if math.isfinite(seconds) else math.inf
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def backoff(attempt: int) -> float:
    """The wait before retry number `attempt + 1` when the server named none."""
    return min(FIRST_RETRY_DELAY * 2**attempt, MAX_RETRY_DELAY) * (1 - random.random() / 4)
