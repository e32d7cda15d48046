"""Rate limits, with DRF's throttles: how often a user (or, unauthenticated, an IP address) may
start runs (`run_start`: REST, SSE, WebSocket, research, every protocol adapter) and open streams
(`stream_open`: a start's stream, a join or resume, a socket). Rates come from settings
(THROTTLE_RUN_START, THROTTLE_STREAM_OPEN; empty: no limit) and are counted in Django's cache,
which is Redis when REDIS_URL is set, so the limits hold across processes.

DRF views list the throttles (`throttle_classes`); the consumers bypass DRF's views, so they
call `check_throttles` in their one trip to the sync thread, after authentication."""

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from rest_framework.exceptions import Throttled
from rest_framework.throttling import UserRateThrottle

RUN_START = "run_start"
STREAM_OPEN = "stream_open"


class SettingsRateThrottle(UserRateThrottle):
    """A user's (else the client IP's) rate for `scope`, read from settings on every check, so a
    changed setting (or a test's) takes effect at once."""

    def get_rate(self):
        return getattr(settings, f"THROTTLE_{self.scope.upper()}") or None


class RunStartThrottle(SettingsRateThrottle):
    scope = RUN_START


class StreamOpenThrottle(SettingsRateThrottle):
    scope = STREAM_OPEN


THROTTLES = {RUN_START: RunStartThrottle, STREAM_OPEN: StreamOpenThrottle}


@dataclass
class SocketCaller:
    """What a throttle reads of a request (`user`, and `META` for an unauthenticated one), for
    the WebSocket consumer, which has no HTTP request."""

    user: Any
    META: dict


def socket_caller(scope: dict) -> SocketCaller:
    client = scope.get("client") or ("", 0)
    return SocketCaller(user=scope.get("user"), META={"REMOTE_ADDR": client[0]})


def check_throttles(request, *scopes: str) -> None:
    """Raise DRF's Throttled (429 with Retry-After) if `request` (a DRF Request, or anything with
    the `user` and `META` a throttle reads) is over one of the scopes' rates. Sync: the cache may
    be Redis."""
    for scope in scopes:
        throttle = THROTTLES[scope]()
        if not throttle.allow_request(request, None):
            raise Throttled(wait=throttle.wait())


def client_address(request) -> str | None:
    """The client's IP address for login lockouts (django-axes' AXES_CLIENT_IP_CALLABLE), read
    as DRF's throttles read it: REMOTE_ADDR, or behind TRUSTED_PROXIES proxies the address that
    many hops back in X-Forwarded-For."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    addresses = [address.strip() for address in forwarded.split(",") if address.strip()]
    if not settings.TRUSTED_PROXIES or not addresses:
        return request.META.get("REMOTE_ADDR")
    return addresses[-min(settings.TRUSTED_PROXIES, len(addresses))]
