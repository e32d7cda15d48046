"""CORS for the streaming consumers, which Django's middleware never sees: django-cors-headers'
own middleware is asked what it would answer, with the same settings as every other API path."""

import io

from corsheaders.middleware import CorsMiddleware
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse


def cors_answer(scope: dict) -> tuple[bool, list[tuple[bytes, bytes]]]:
    """(is this a preflight the middleware answers itself, the CORS headers of the answer)."""
    request = ASGIRequest(scope, io.BytesIO(b""))
    plain = HttpResponse()
    response = CorsMiddleware(lambda request: plain)(request)
    headers = [
        (name.encode("latin1"), value.encode("latin1"))
        for name, value in response.items()
        if name.lower().startswith("access-control-") or name.lower() == "vary"
    ]
    return response is not plain, headers
