"""/health (liveness) and /ready (readiness: database, channel layer, model provider), open to
load balancers without credentials; a failed check is a 503 that names it."""

import os
import time

import httpx
import pytest
from django.test import AsyncClient

from .live_server import PrivateRedis, free_port, start_server

pytestmark = pytest.mark.django_db(transaction=True)


async def test_health_and_ready_need_no_credentials():
    client = AsyncClient()
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = await client.get("/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready" and body["provider"] == "offline"
    assert body["checks"] == {"database": "ok", "channel_layer": "ok", "model_provider": "ok"}


async def test_a_provider_without_its_key_is_not_ready(settings):
    settings.AGENTS_MODEL_PROVIDER, settings.OPENAI_API_KEY = "openai", ""
    ready = await AsyncClient().get("/ready")
    assert ready.status_code == 503 and ready.json()["checks"]["model_provider"] == "failed"
    settings.OPENAI_API_KEY = "sk-test"  # configured: no request is made to check it
    assert (await AsyncClient().get("/ready")).status_code == 200


async def test_an_unreachable_channel_layer_is_not_ready(settings):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]},
        }
    }
    ready = await AsyncClient().get("/ready")
    assert ready.status_code == 503
    body = ready.json()
    assert body["checks"] == {"database": "ok", "channel_layer": "failed", "model_provider": "ok"}
    assert "127.0.0.1" not in ready.content.decode()  # the details are logged, not shown


def test_the_probes_answer_plain_http_when_https_is_on(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/health").status_code == 200
    assert client.get("/api/agents/").status_code == 301


@pytest.mark.live
async def test_ready_on_redis_with_the_engine_running_and_without_redis(alice):
    """channels_redis lets one receive of a process wait at a time, and the engine's control loop
    holds that turn: a readiness check that waited on a channel of its own was a 503 for good once
    the engine ran. It is 200 then, and a 503 naming the channel layer within 3 s of Redis going."""
    redis = PrivateRedis()
    if redis.binary is None:
        pytest.skip("needs a redis-server binary to run a Redis of the test's own")
    redis.start()
    port = free_port()
    server = start_server(port, REDIS_URL=redis.url, CHANNEL_PREFIX=f"ready{os.getpid()}")
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            # A run first: the engine (and its control loop's receive) is surely going.
            headers = {"Authorization": f"Token {alice.token}"}
            done = await client.post("/api/agents/chat/run", json={"input": "hi"}, headers=headers)
            assert done.status_code == 200 and done.json()["status"] == "completed"
            ready = await client.get("/ready")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"] == {"database": "ok", "channel_layer": "ok", "model_provider": "ok"}
            redis.stop()
            began = time.monotonic()
            ready = await client.get("/ready")
            assert time.monotonic() - began < 3
            assert ready.status_code == 503 and ready.json()["checks"]["channel_layer"] == "failed"
            assert ready.json()["checks"]["database"] == "ok"
    finally:
        server.terminate()
        server.wait(10)
        redis.stop()
