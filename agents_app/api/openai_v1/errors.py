"""Errors in OpenAI's shape, so the `openai` clients raise their usual exception classes:
`{"error": {"message", "type", "param", "code"}}` with the status code the API would use.

The `openai` clients retry 408, 409, 429 and 5xx answers by themselves unless told not to
(`x-should-retry: false`): a busy conversation or a failed run is not worth repeating, and a
retried run would be a second run, so only a rate limit (429) keeps the client's retry."""

from ...errors import ServiceError
from ..errors import exception_handler

NO_RETRY = [(b"x-should-retry", b"false")]
TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


class OpenAIError(ServiceError):
    """A refusal of the /v1 adapters, with OpenAI's codes (e.g. `model_not_found`) and the
    request field it is about (`param`)."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message, fields={param: [message]} if param else None)
        self.status = status
        self.code = code or "invalid_request_error"


def error_type(status: int) -> str:
    return TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def openai_error(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}


def from_api_error(status: int, body: dict) -> dict:
    """Our `{"error": {"code", "message", "fields"?}}` in OpenAI's shape; `param` is the first
    field a validation error names."""
    error = body.get("error", {}) if isinstance(body, dict) else {}
    fields = error.get("fields")
    param = next(iter(fields), None) if isinstance(fields, dict) else None
    code = error.get("code")
    if status == 401:
        code = "invalid_api_key"
    return openai_error(status, error.get("message") or "request refused", param, code)


def retry_headers(status: int) -> list:
    return [] if status == 429 else NO_RETRY


def openai_exception_handler(exc, context):
    response = exception_handler(exc, context)
    if response is not None:
        response.data = from_api_error(response.status_code, response.data)
        for name, value in retry_headers(response.status_code):
            response[name.decode()] = value.decode()
    return response


class OpenAIErrors:
    """For DRF views (sync or async) of the /v1 API: their errors in OpenAI's shape."""

    def get_exception_handler(self):
        return openai_exception_handler
