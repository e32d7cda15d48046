"""Refusals of the server's services (starting, cancelling and reading runs, quotas, research):
each carries an HTTP status, a code and details, which the API answers as its error body and a
socket as an `error` event. Kept apart from the engine so that anything the engine imports (usage,
sessions) can raise them without importing the engine."""

from typing import Any


class ServiceError(Exception):
    """A refusal with an HTTP status, a code and details (the API's error body, a socket's `error`)."""

    status = 400
    code = "invalid"
    # Seconds after which trying again may succeed (a `Retry-After` header), when that is known.
    retry_after: int | None = None

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class ConversationBusy(ServiceError):
    status = 409
    code = "conversation_busy"


class WrongAgent(ServiceError):
    """A conversation named with an agent it does not belong to."""

    status = 409
    code = "conversation_of_another_agent"


class TooManyRuns(ServiceError):
    status = 429
    code = "too_many_runs"
    retry_after = 5  # a hint: the active runs end in their own time


class RunNotActive(ServiceError):
    status = 409
    code = "run_not_active"


class Unavailable(ServiceError):
    status = 503
    code = "unavailable"
    retry_after = 5


class AlreadyDecided(ServiceError):
    status = 409
    code = "approval_decided"
