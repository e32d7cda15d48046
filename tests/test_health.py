"""/health (liveness) and /ready (readiness: database, channel layer, model provider), open to
load balancers without credentials; a failed check is a 503 that names it."""

import pytest
from django.test import AsyncClient

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
