"""One JSON error shape for every API failure: {"error": {"code", "message", "fields"?, ...}}."""

from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from ..errors import ServiceError


def error_body(code: str, message: str, **extra) -> dict:
    return {"error": {"code": code, "message": message, **{k: v for k, v in extra.items() if v is not None}}}


def first_message(detail) -> str:
    """The first problem of a validation error's details, named by its field."""
    if isinstance(detail, dict):
        for field, value in detail.items():
            inner = first_message(value)
            return inner if field == "non_field_errors" else f"{field}: {inner}"
    if isinstance(detail, list) and detail:
        return first_message(detail[0])
    return str(detail)


def choice_param(params, field: str, choices: list[str]) -> str | None:
    """A query parameter that must be one of `choices`: its value, None when absent, else a
    400 naming the field (an unknown or empty filter value is a mistake, not an empty result)."""
    value = params.get(field)
    if value is not None and value not in choices:
        raise exceptions.ValidationError({field: [f"must be one of {', '.join(choices)}"]})
    return value


CURSOR_DIGITS = 10  # a stream position (an event's seq) fits in 2**31
CURSOR_MAX = 10**CURSOR_DIGITS - 1


def cursor(raw: Any) -> int | None:
    """The one reading of a stream position or a count a client sends (a `Last-Event-ID` header,
    `last_event_id`, `starting_after`, a socket's `resume`, `limit`): a non-negative integer, or
    ASCII digits of it (at most CURSOR_DIGITS); None for anything else (the caller answers 400)."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw if 0 <= raw <= CURSOR_MAX else None
    if isinstance(raw, bytes):
        raw = raw.decode("latin-1")
    if isinstance(raw, str) and 0 < len(raw) <= CURSOR_DIGITS and raw.isascii() and raw.isdigit():
        return int(raw)
    return None


def exception_handler(exc, context):
    # Django's own 404 and 403 (get_object_or_404, a viewset's lookup) in the API's shape too.
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "not found")
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    if isinstance(exc, RequestDataTooBig):
        return Response(error_body("too_large", "request body is larger than the server accepts"), status=413)
    if isinstance(exc, ServiceError):
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return Response(error_body(exc.code, exc.message, **exc.extra), status=exc.status, headers=headers)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = error_body("invalid", first_message(exc.detail), fields=exc.detail)
    elif isinstance(exc, exceptions.APIException):
        code = exc.get_codes() if isinstance(exc.get_codes(), str) else "error"
        response.data = error_body(code, str(exc.detail))
    return response
