"""Logs: one JSON object per line when LOG_FORMAT=json, and a request id on every record.

The request id is the client's `X-Request-ID` (when it is a plain token) or a new one; it is set
per HTTP request (Django middleware, and the streaming consumers) and per socket, sent back in
the response, and carried into the logs of the runs the request starts (a run's task starts
with the request's id, `runs.executor.detached`)."""

import json
import logging
import re
import time
import uuid
from contextvars import ContextVar

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
HEADER = "X-Request-ID"
VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Attributes every LogRecord has: whatever else a record carries came as `extra`.
STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "request_id"}


def new_request_id(offered: str | None) -> str:
    """The client's id if it is a plain token, else a new one; set for this context."""
    request_id = offered if offered and VALID_ID.fullmatch(offered) else uuid.uuid4().hex
    REQUEST_ID.set(request_id)
    return request_id


class RequestIdFilter(logging.Filter):
    """Puts the current request id (or None) on every record, as `request_id`."""

    def filter(self, record):
        record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """{"time" (UTC), "level", "logger", "message", "request_id", ...the record's extra fields}."""

    converter = time.gmtime

    def format(self, record):
        line = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        line.update((k, v) for k, v in vars(record).items() if k not in STANDARD)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def request_id_middleware(get_response):
    """Django middleware: each request gets its id (in the logs, and in the response header)."""

    if iscoroutinefunction(get_response):

        async def middleware(request):
            request_id = new_request_id(request.headers.get(HEADER))
            response = await get_response(request)
            response[HEADER] = request_id
            return response

        markcoroutinefunction(middleware)
        return middleware

    def middleware(request):
        request_id = new_request_id(request.headers.get(HEADER))
        response = get_response(request)
        response[HEADER] = request_id
        return response

    return middleware


request_id_middleware.async_capable = True
request_id_middleware.sync_capable = True
