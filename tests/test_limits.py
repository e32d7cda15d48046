"""Rate limits on every way to start a run or open a stream (REST, SSE, WebSocket, research, the
protocol adapters): 429 with Retry-After past the rate, per user; and the per-user cap's 429
says when to retry too."""

import json

import pytest
from django.core.cache import cache

from agents_app.api.auth import CLOSE_THROTTLED
from agents_app.models import Run

from .streams import SSEClient, stream_run, ws_client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def rates(settings, alice, bob):
    def set_rates(run_start="", stream_open=""):
        settings.THROTTLE_RUN_START, settings.THROTTLE_STREAM_OPEN = run_start, stream_open
        # The counters live in the cache (Redis in the PostgreSQL + Redis run): start from none.
        cache.delete_many(
            [f"throttle_{s}_{u.pk}" for s in ("run_start", "stream_open") for u in (alice, bob)]
        )

    return set_rates


async def test_run_starts_are_limited_per_user_on_every_surface(api_for, alice, bob, rates):
    rates(run_start="2/min")
    api = api_for(alice)
    for _ in range(2):
        assert (await api.post("/api/agents/chat/run", {"input": "hi"})).status_code == 200
    refused = await api.post("/api/agents/chat/run", {"input": "hi"})
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert refused.json()["error"]["code"] == "throttled"

    sse = SSEClient("POST", "/api/agents/chat/stream", {"input": "hi"}, alice.token)
    assert await sse.start() == 429
    assert int(sse.headers["retry-after"]) > 0
    openai = SSEClient(
        "POST",
        "/v1/chat/completions",
        {"model": "chat", "messages": [{"role": "user", "content": "x"}]},
        alice.token,
    )
    assert await openai.start() == 429
    await openai.read_all()
    assert json.loads(openai.raw)["error"]["type"] == "rate_limit_error"
    assert "x-should-retry" not in openai.headers  # a rate limit is worth the client's retry
    assert (await api.post("/api/research/", {"query": "volcanoes"})).status_code == 429

    ws = ws_client("chat", alice.token)
    await ws.connect()
    await ws.send_json_to({"type": "run", "input": "hi"})
    error = await ws.receive_json_from(5)
    assert error["type"] == "error" and error["code"] == "throttled" and error["retry_after"] > 0
    await ws.disconnect()

    assert await Run.objects.filter(owner=alice).acount() == 2
    # Bob has his own allowance.
    assert (await api_for(bob).post("/api/agents/chat/run", {"input": "hi"})).status_code == 200


async def test_stream_opens_are_limited(alice, rates):
    rates(stream_open="2/min")
    _client, events = await stream_run(alice.token, {"input": "hi"})
    run_id = events[0]["run_id"]
    joined = SSEClient("GET", f"/api/runs/{run_id}/stream", None, alice.token)
    assert await joined.start() == 200
    await joined.read_all()
    again = SSEClient("GET", f"/api/runs/{run_id}/stream", None, alice.token)
    assert await again.start() == 429
    ws = ws_client("chat", alice.token)
    await ws.connect()
    assert (await ws.receive_output(2))["code"] == CLOSE_THROTTLED


async def test_the_active_run_cap_says_when_to_retry(api_for, alice, settings, slow_model):
    settings.AGENTS_MAX_ACTIVE_RUNS_PER_USER = 1
    slow_model["seconds"] = 2
    first = SSEClient("POST", "/api/agents/chat/stream", {"input": "hi"}, alice.token)
    assert await first.start() == 200
    refused = await api_for(alice).post("/api/agents/chat/run", {"input": "hi"})
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_runs"
    assert int(refused["Retry-After"]) > 0
    second = SSEClient("POST", "/api/agents/chat/stream", {"input": "hi"}, alice.token)
    assert await second.start() == 429
    assert int(second.headers["retry-after"]) > 0
    await first.read_all(timeout=20)


async def test_a_full_process_refuses_new_streams(alice, settings, slow_model):
    settings.MAX_OPEN_STREAMS = 1
    slow_model["seconds"] = 1
    first = SSEClient("POST", "/api/agents/chat/stream", {"input": "hi"}, alice.token)
    assert await first.start() == 200
    full = SSEClient("POST", "/api/agents/chat/stream", {"input": "hi"}, alice.token)
    assert await full.start() == 503
    assert int(full.headers["retry-after"]) > 0
    await full.read_all()
    assert json.loads(full.raw)["error"]["code"] == "unavailable"
    ws = ws_client("chat", alice.token)
    await ws.connect()
    assert (await ws.receive_output(2))["code"] == 4503
    assert await Run.objects.acount() == 1  # nothing started for the refused ones
    await first.read_all(timeout=20)
    await first.disconnect()
    await first.comm.wait(5)  # the consumer has left
    again = SSEClient("POST", "/api/agents/chat/stream", {"input": "hi"}, alice.token)
    assert await again.start() == 200  # the place was given back
    await again.read_all(timeout=20)
