"""ASGI entry point: HTTP (SSE consumers, then Django) and WebSocket routing."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from django.conf import settings
from django.core.asgi import get_asgi_application

# Django must be set up before anything imports models or consumers.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.urls import re_path  # noqa: E402

from agents_app.api.auth import WebsocketAuthStack  # noqa: E402
from agents_app.api.routing import http_urlpatterns, websocket_urlpatterns  # noqa: E402
from agents_app.runs.lifespan import lifespan, start_with_the_reactor, tune_process  # noqa: E402
from agents_app.security_headers import SecurityHeaders  # noqa: E402

django_http = ASGIStaticFilesHandler(django_asgi_app) if settings.SERVE_STATIC else django_asgi_app

application = ProtocolTypeRouter(
    {
        "http": SecurityHeaders(URLRouter([*http_urlpatterns, re_path(r"", django_http)])),
        "websocket": WebsocketAuthStack(URLRouter(websocket_urlpatterns)),
        "lifespan": lifespan,
    }
)
start_with_the_reactor()
tune_process()
