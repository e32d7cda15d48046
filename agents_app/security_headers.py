"""Security headers on every HTTP response the server sends, not only those Django's middleware
makes: the streaming consumers' answers, Django's own early refusals (a Host ALLOWED_HOSTS
refuses), and a consumer's unhandled failure, which becomes a JSON 500 here rather than the ASGI
server's bare HTML page. A header a response already has (a page's own Content-Security-Policy)
is kept."""

import logging

import orjson

log = logging.getLogger(__name__)

DEFAULTS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    # For answers that are not pages (JSON, streams, error pages): nothing to load, nowhere to frame.
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
)
SERVER_ERROR = orjson.dumps({"error": {"code": "server_error", "message": "internal server error"}})


def with_defaults(headers: list) -> list:
    have = {bytes(name).lower() for name, _value in headers}
    return [*headers, *((name, value) for name, value in DEFAULTS if name not in have)]


class SecurityHeaders:
    """ASGI middleware around the whole HTTP application."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def send_with_headers(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": with_defaults(list(message.get("headers") or []))}
            await send(message)

        try:
            return await self.app(scope, receive, send_with_headers)
        except Exception:
            if started:
                raise  # the ASGI server ends a response it cannot finish
            log.exception("unhandled error answering %s %s", scope.get("method"), scope.get("path"))
            length = str(len(SERVER_ERROR)).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", length)]
            await send_with_headers({"type": "http.response.start", "status": 500, "headers": headers})
            await send({"type": "http.response.body", "body": SERVER_ERROR})
