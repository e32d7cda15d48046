"""The OpenAI path: the SDK's `OpenAIProvider` for api.openai.com or any OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import functools
import logging

import httpx2
import openai
from agents import OpenAIProvider
from agents.models.interface import Model
from django.conf import settings
from openai import AsyncOpenAI

from .fast_events import TESTED_OPENAI_VERSIONS, FastEventsAsyncOpenAI, tested_openai
from .upstream import DeadlineClient

log = logging.getLogger(__name__)

DEFAULT_OPENAI_MODEL = "gpt-4.1-mini"


def base_url() -> str | None:
    return settings.OPENAI_BASE_URL or None


def uses_responses_api() -> bool:
    """Responses API for OpenAI itself; Chat Completions for a custom base URL unless told otherwise."""
    explicit = settings.OPENAI_USE_RESPONSES
    if explicit is not None:
        return bool(explicit)
    return base_url() is None


def openai_provider() -> OpenAIProvider:
    return _provider(
        settings.OPENAI_API_KEY or None,
        base_url(),
        uses_responses_api(),
        settings.OPENAI_TIMEOUT,
        settings.OPENAI_STREAM_IDLE_TIMEOUT,
        settings.OPENAI_MAX_RETRIES,
        settings.OPENAI_FIRST_BYTE_TIMEOUT,
        uses_fast_events(),
    )


def uses_fast_events() -> bool:
    """OPENAI_FAST_EVENTS, with an openai version fast_events.py was tested with only."""
    if not settings.OPENAI_FAST_EVENTS:
        return False
    if tested_openai():
        return True
    _warn_untested(openai.__version__)
    return False


@functools.cache
def _warn_untested(version: str) -> None:
    log.warning(
        "OPENAI_FAST_EVENTS is on, but openai %s is not among the versions fast_events.py was tested "
        "with (%s): streamed events are built by openai's own parsing",
        version,
        ", ".join(sorted(TESTED_OPENAI_VERSIONS)),
    )


# One provider per configuration, so runs share its clients and connection pools.
@functools.lru_cache(maxsize=8)
def _provider(
    api_key: str | None,
    url: str | None,
    use_responses: bool,
    timeout: float,
    idle_timeout: float,
    max_retries: int,
    first_byte_timeout: float,
    fast_events: bool,
) -> OpenAIProvider:
    return PerLoopOpenAIProvider(
        api_key=api_key,
        base_url=url,
        use_responses=use_responses,
        # `read`: the longest wait for the next bytes, so a stalled stream ends the run.
        timeout=httpx2.Timeout(timeout, read=min(timeout, idle_timeout)),
        retries=(max_retries, first_byte_timeout),
        fast_events=fast_events,
    )


def _http_client(max_retries: int, first_byte_timeout: float) -> DeadlineClient:
    """The SDK's HTTP client: retries within one first-byte deadline (upstream.py), and room for
    one upstream connection per concurrent run.

    openai's default pool stops at 1,000 connections, so run 1,001 of a process would wait
    silently for a free connection; OPENAI_MAX_CONNECTIONS sets the limit.
    """
    limit = settings.OPENAI_MAX_CONNECTIONS
    # httpx2 is the HTTP library openai's clients are built on (its client is an httpx2.AsyncClient).
    limits = httpx2.Limits(max_connections=limit, max_keepalive_connections=min(limit, 200))
    return DeadlineClient(max_retries=max_retries, first_byte_timeout=first_byte_timeout, limits=limits)


class PerLoopOpenAIProvider(OpenAIProvider):
    """An OpenAIProvider with one HTTP client per event loop.

    The SDK otherwise shares one process-wide connection pool, and a pooled connection opened on one
    loop fails ("Event loop is closed") when another loop (async_to_sync, a test) reuses it.
    """

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None,
        use_responses: bool,
        timeout: httpx2.Timeout,
        retries: tuple[int, float],
        fast_events: bool,
    ):
        super().__init__(api_key=api_key, base_url=base_url, use_responses=use_responses)
        # openai's own retries off: the HTTP client retries, within the first-byte deadline.
        self._client_options = {
            "api_key": api_key,
            "base_url": base_url,
            "timeout": timeout,
            "max_retries": 0,
        }
        self._retries = retries
        self._responses = use_responses
        # Streamed events built by pydantic's validator (fast_events.py).
        self._client_class = FastEventsAsyncOpenAI if fast_events else AsyncOpenAI
        self._by_loop: dict[asyncio.AbstractEventLoop, OpenAIProvider] = {}

    def get_model(self, model_name: str | None) -> Model:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return super().get_model(model_name)
        for closed in [other for other in self._by_loop if other.is_closed()]:
            del self._by_loop[closed]
        provider = self._by_loop.get(loop)
        if provider is None:
            client = self._client_class(**self._client_options, http_client=_http_client(*self._retries))
            provider = self._by_loop[loop] = OpenAIProvider(
                openai_client=client, use_responses=self._responses
            )
        return provider.get_model(model_name)
