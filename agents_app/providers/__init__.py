"""Which model serves the agents: the offline model or OpenAI (or an OpenAI-compatible server).

Settings are read at call time, so tests and admin changes take effect without a restart.
"""

from __future__ import annotations

import functools
from typing import Any

from agents import ModelSettings, RunConfig
from agents.models.interface import ModelProvider
from django.conf import settings

from .offline import DEFAULT_OFFLINE_MODEL, OfflineModel, OfflineModelProvider
from .offline_schema import OfflineRequest, register_structured_composer, unregister_structured_composer
from .openai import DEFAULT_OPENAI_MODEL, base_url, openai_provider, uses_responses_api

__all__ = [
    "OfflineModel",
    "OfflineModelProvider",
    "OfflineRequest",
    "api_name",
    "configure_tracing",
    "get_model_provider",
    "model_name",
    "provider_info",
    "provider_name",
    "register_structured_composer",
    "run_config",
    "unregister_structured_composer",
]

_offline_provider = OfflineModelProvider()


def provider_name() -> str:
    """ "offline" or "openai": AGENTS_MODEL_PROVIDER, else openai when an API key is set, else offline."""
    configured = settings.AGENTS_MODEL_PROVIDER
    if configured:
        return configured
    return "openai" if settings.OPENAI_API_KEY else "offline"


def model_name() -> str:
    default = DEFAULT_OPENAI_MODEL if provider_name() == "openai" else DEFAULT_OFFLINE_MODEL
    return settings.AGENTS_DEFAULT_MODEL or default


def api_name() -> str:
    """ "offline", "responses" or "chat_completions"."""
    if provider_name() != "openai":
        return "offline"
    return "responses" if uses_responses_api() else "chat_completions"


def get_model_provider() -> ModelProvider:
    return openai_provider() if provider_name() == "openai" else _offline_provider


def run_config(**overrides: Any) -> RunConfig:
    """A RunConfig for the configured provider; keyword arguments override any field."""
    provider, model = get_model_provider(), model_name()
    tracing_disabled = not tracing_on()
    chat = api_name() == "chat_completions"
    if not overrides:
        # Building one costs ~2 ms (the SDK resolves type hints per instance); runs only read it.
        return _shared_run_config(provider, model, tracing_disabled, chat)
    return _build_run_config(provider, model, tracing_disabled, chat, overrides)


@functools.lru_cache(maxsize=8)
def _shared_run_config(provider: ModelProvider, model: str, tracing_disabled: bool, chat: bool) -> RunConfig:
    return _build_run_config(provider, model, tracing_disabled, chat, {})


def _build_run_config(
    provider: ModelProvider, model: str, tracing_disabled: bool, chat: bool, overrides: dict[str, Any]
) -> RunConfig:
    options: dict[str, Any] = {"model_provider": provider, "model": model}
    options["tracing_disabled"] = tracing_disabled
    overrides = dict(overrides)
    if chat:
        # OpenAI-compatible servers only report streamed token usage when asked to.
        base = ModelSettings(include_usage=True)
        options["model_settings"] = base.resolve(overrides.pop("model_settings", None))
    options.update(overrides)
    return RunConfig(**options)


def tracing_on() -> bool:
    """Whether runs are traced: into this database, to OpenAI, or both."""
    return settings.AGENTS_TRACES or settings.AGENTS_TRACE_EXPORT


def configure_tracing() -> None:
    """Traces go to this database (AGENTS_TRACES); export to OpenAI sends run data out, so it
    stays off unless AGENTS_TRACE_EXPORT is set."""
    from traces_app.exporter import install  # here: its models load once the apps are ready

    install()


def provider_info() -> dict[str, Any]:
    """What /info and the UI show about the model in use."""
    name = provider_name()
    return {
        "provider": name,
        "model": model_name(),
        "base_url": base_url() if name == "openai" else None,
        "api": api_name(),
    }
