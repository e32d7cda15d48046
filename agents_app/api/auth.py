"""Authentication for Channels consumers, with exactly the REST API's rules.

HTTP (SSE) consumers build a real Django request from the scope and run DRF's own
authenticators on it (token, or session + CSRF). WebSockets: origin check -> session ->
token (`Authorization` header or a `token.<key>` subprotocol); never a query-string token.
"""

import functools
import io
import time
from collections.abc import Callable
from importlib import import_module
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlparse

from channels.auth import AuthMiddlewareStack
from django.conf import settings
from django.contrib.auth import get_user
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.handlers.asgi import ASGIRequest
from django.http.request import split_domain_port, validate_host
from rest_framework.exceptions import AuthenticationFailed, NotAuthenticated
from rest_framework.request import Request
from rest_framework.settings import api_settings

from tokens_app.auth import authenticate_key
from tokens_app.models import ApiToken, token_still_usable

from ..db import in_sync_thread
from .throttles import check_throttles

WS_SUBPROTOCOL = "agents.v1"
TOKEN_SUBPROTOCOL_PREFIX = "token."
# Close codes sent by the WebSocket consumer (documented in docs/events.md).
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN_ORIGIN = 4403
CLOSE_NOT_FOUND = 4404  # a conversation socket for a conversation that is not the caller's
CLOSE_THROTTLED = 4429  # too many sockets opened (THROTTLE_STREAM_OPEN)


def _drf_request(scope: dict, body: bytes) -> Request:
    # The body is already complete: its real length is the one that counts (chunked uploads have none).
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
    scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
    django_request = ASGIRequest(scope, io.BytesIO(body))
    SessionMiddleware(lambda r: None).process_request(django_request)
    AuthenticationMiddleware(lambda r: None).process_request(django_request)
    return Request(
        django_request,
        parsers=[parser() for parser in api_settings.DEFAULT_PARSER_CLASSES],
        authenticators=[auth() for auth in api_settings.DEFAULT_AUTHENTICATION_CLASSES],
    )


def authenticated_request(scope: dict, body: bytes, *throttles: str) -> Request:
    """A DRF Request for an HTTP consumer's scope, authenticated (and within the rate limits
    named, agents_app/api/throttles.py) or raising a DRF APIException.

    Sync (it may query the database): consumers call it inside their one hop to the sync thread.
    What authenticated it goes into the scope (a token's id, or the session): the stream checks
    at each keep-alive that it still does (`CredentialWatch`).
    """
    request = _drf_request(scope, body)
    # Touching .user runs the authenticators (and CSRF for session auth); failures raise.
    if request.user is None or not request.user.is_authenticated:
        raise NotAuthenticated()
    check_throttles(request, *throttles)
    if isinstance(request.auth, ApiToken):
        scope["token_id"] = request.auth.pk
    elif request.auth is None:  # DRF's session authentication
        remember_session(scope, request.session, request.user)
    return request


class CredentialWatch:
    """For a stream or socket: checks, once per keep-alive interval (SSE_KEEPALIVE_INTERVAL) and
    when asked (`now`), that what authenticated it still does: an API token neither revoked nor
    expired, or a session not ended (logout, expiry, a password change) of a user still active."""

    def __init__(self, check: Callable[[], bool], what: str):
        self.check = check
        self.code, self.message = LOST[what]
        self.next_check_at = time.monotonic() + settings.SSE_KEEPALIVE_INTERVAL

    @classmethod
    def of(cls, scope: dict) -> "CredentialWatch | None":
        if scope.get("token_id") is not None:
            return cls(functools.partial(token_still_usable, scope["token_id"]), "token")
        if scope.get("session_key"):
            check = functools.partial(session_still_valid, scope["session_key"], scope["session_user_id"])
            return cls(check, "session")
        return None

    async def still_usable(self, now: bool = False) -> bool:
        """True until the credentials are found unusable; looks only when a check is due (or `now`)."""
        if not now and time.monotonic() < self.next_check_at:
            return True
        self.next_check_at = time.monotonic() + settings.SSE_KEEPALIVE_INTERVAL
        return await in_sync_thread(self.check)()


LOST = {
    "token": ("token_revoked", "the API token of this connection was revoked or expired"),
    "session": ("session_ended", "the session of this connection ended (logged out, expired): log in again"),
}


def session_still_valid(session_key: str, user_id: Any) -> bool:
    """The session still logs this user in, as Django's own `get_user` reads a request's session:
    not flushed (logout), not expired, the password unchanged, the user active."""
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = get_user(SimpleNamespace(session=store))
    return user.is_authenticated and user.pk == user_id


def remember_session(scope: dict, session, user) -> None:
    """A connection authenticated by a session: which one, for its CredentialWatch."""
    scope["session_key"] = session.session_key
    scope["session_user_id"] = user.pk


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin1")
    return None


DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def is_secure(scope: dict) -> bool:
    """The connection came over TLS: to this server (`wss`), or to the proxy in front of it as its
    SECURE_PROXY_SSL_HEADER says (as Django's `request.is_secure()` reads it)."""
    if scope.get("scheme") in ("wss", "https"):
        return True
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if not proxy_header:
        return False
    name, value = proxy_header
    header = name.removeprefix("HTTP_").lower().replace("_", "-").encode("latin1")
    return (_header(scope, header) or "").split(",")[0].strip() == value


def origin_allowed(origin: str, host: str | None, secure: bool = False) -> bool:
    """A browser's socket from this site: its Origin is the socket's own scheme (`secure`: https),
    host and port (as Django's CSRF check compares them), on a host ALLOWED_HOSTS accepts; or a
    trusted origin (CSRF_TRUSTED_ORIGINS, CORS_ALLOWED_ORIGINS). A page on another port of the
    same host, or over plain HTTP to an HTTPS site, is another site."""
    if origin in settings.CSRF_TRUSTED_ORIGINS or origin in settings.CORS_ALLOWED_ORIGINS:
        return True
    parsed = urlparse(origin)
    if parsed.scheme != ("https" if secure else "http") or not parsed.netloc or not host:
        return False
    netloc = parsed.netloc.lower().removesuffix(DEFAULT_PORTS[parsed.scheme])
    host = host.lower()
    for port in DEFAULT_PORTS.values():
        host = host.removesuffix(port)
    if netloc != host:
        return False
    hosts = settings.ALLOWED_HOSTS or (["localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else [])
    return validate_host(split_domain_port(host)[0], hosts)


@in_sync_thread
def _token_for_key(key: str) -> ApiToken | None:
    try:
        return authenticate_key(key)
    except AuthenticationFailed:
        return None


class WebsocketAuthMiddleware:
    """Sets scope["auth"] to "token", "session" or None, and scope["user"] accordingly (and
    scope["token_id"] for a token, which the socket checks stays usable).

    A session cookie only counts with an allowed Origin (cross-site WebSocket hijacking);
    a token needs no Origin, so non-browser clients work.
    """

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        scope = dict(scope)
        origin = _header(scope, b"origin")
        scope["origin_ok"] = origin is None or origin_allowed(
            origin, _header(scope, b"host"), is_secure(scope)
        )
        key = self._token(scope)
        if key is not None:
            token = await _token_for_key(key)
            scope["user"], scope["auth"] = (token.user, "token") if token else (None, None)
            scope["token_id"] = token.pk if token else None
        else:
            user = scope.get("user")
            ok = bool(
                user is not None and user.is_authenticated and origin is not None and scope["origin_ok"]
            )
            scope["auth"] = "session" if ok else None
            if ok:
                remember_session(scope, scope["session"], user)
        return await self.inner(scope, receive, send)

    @staticmethod
    def _token(scope: dict) -> str | None:
        header = _header(scope, b"authorization")
        if header and header.lower().startswith(("token ", "bearer ")):
            return header.split(None, 1)[1].strip()
        for proto in scope.get("subprotocols", []):
            if proto.startswith(TOKEN_SUBPROTOCOL_PREFIX):
                return proto[len(TOKEN_SUBPROTOCOL_PREFIX) :]
        return None


def WebsocketAuthStack(inner):
    return AuthMiddlewareStack(WebsocketAuthMiddleware(inner))
