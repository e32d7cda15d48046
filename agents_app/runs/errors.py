"""How a run fails: the codes of failed runs, for clients and support staff."""

import httpx2
import openai
from agents.exceptions import (
    InputGuardrailTripwireTriggered,
    MaxTurnsExceeded,
    ModelBehaviorError,
    OutputGuardrailTripwireTriggered,
)


class RunTimeout(Exception):
    """A run went on past AGENTS_RUN_TIMEOUT."""


# Codes of failures upstream (the model's API), not in this server: REST answers them with 502.
UPSTREAM_ERROR_CODES = frozenset(
    {"model_rate_limited", "model_auth_failed", "model_request_rejected", "model_unavailable"}
)
# A run whose events or end the database refused (a value it cannot store, an outage that
# outlasted RUN_DB_RETRY_SECONDS).
JOURNAL_FAILED = "journal_failed"


def error_text(exc: BaseException) -> str:
    """What a failed run says went wrong: openai's connection errors say only "Connection error."
    or "Request timed out.", so the HTTP client's reason follows them."""
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    if isinstance(exc, openai.APIConnectionError) and isinstance(cause, httpx2.TransportError) and str(cause):
        return f"{text} ({cause})"
    return text


def error_code(exc: BaseException) -> str:
    """What support staff and clients need to tell apart: a limit or outage at the model's
    provider (retry later), a credentials problem (fix the configuration), a request the
    provider refused, and a fault in this server."""
    if isinstance(exc, MaxTurnsExceeded):
        return "max_turns_exceeded"
    if isinstance(exc, RunTimeout):
        return "run_timeout"
    if isinstance(exc, InputGuardrailTripwireTriggered | OutputGuardrailTripwireTriggered):
        return "guardrail_triggered"
    if isinstance(exc, ModelBehaviorError):
        return "model_error"
    if isinstance(exc, openai.RateLimitError):
        return "model_rate_limited"
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return "model_auth_failed"
    if isinstance(exc, openai.APIStatusError):
        return "model_unavailable" if exc.status_code >= 500 else "model_request_rejected"
    # A connection refused, timed out or dropped mid-answer: openai wraps the first two, but
    # a stream cut while it is read surfaces as the HTTP client's own error.
    if isinstance(exc, openai.APIConnectionError | httpx2.TransportError):
        return "model_unavailable"
    return "internal_error"
