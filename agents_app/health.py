"""Probes for load balancers and orchestrators, without credentials: /health says the process
answers (liveness); /ready that it can serve runs (readiness): the database answers, the channel
layer carries a message, and the model provider is configured. Failures name the check, not its
details (they are logged): the probes are public."""

import asyncio
import logging

from django.conf import settings
from django.db import connection
from django.http import JsonResponse

from . import providers
from .db import in_sync_thread
from .runs.lifespan import start_engine

log = logging.getLogger(__name__)

# Seconds each readiness check may take (they run together): a probe's answer comes within it.
CHECK_TIMEOUT = 2.5


def health(request):
    return JsonResponse({"status": "ok"})


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def _channel_layer() -> None:
    """A message through the layer to this process's run engine and back (runs/executor.py)."""
    engine = await start_engine()
    await engine.executor.check_layer()


async def _model_provider() -> None:
    if providers.provider_name() == "openai" and not settings.OPENAI_API_KEY:
        raise RuntimeError("the openai provider is selected but OPENAI_API_KEY is empty")


CHECKS = {
    "database": in_sync_thread(_database),
    "channel_layer": _channel_layer,
    "model_provider": _model_provider,
}


async def _run(name: str) -> str:
    try:
        await asyncio.wait_for(CHECKS[name](), CHECK_TIMEOUT)
    except Exception:
        log.warning("readiness check %s failed", name, exc_info=True)
        return "failed"
    return "ok"


async def ready(request):
    results = await asyncio.gather(*(_run(name) for name in CHECKS))
    checks = dict(zip(CHECKS, results, strict=True))
    ok = all(result == "ok" for result in results)
    status = "ready" if ok else "unavailable"
    body = {"status": status, "checks": checks, "provider": providers.provider_name()}
    return JsonResponse(body, status=200 if ok else 503)
