"""Load: 200 concurrent streams on one server process, each read to its end, with no error and no
lost or repeated event; every run's stored text is what its stream carried."""

import asyncio
import json
import time

import httpx
import pytest
from httpx_sse import aconnect_sse

from agents_app.models import Run

from .live_server import serving

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]
STREAMS = 200


async def one_stream(client: httpx.AsyncClient, token: str, n: int) -> list[dict]:
    events = []
    headers = {"Authorization": f"Token {token}"}
    body = {"input": f"Tell me about rivers, stream {n}"}
    async with aconnect_sse(client, "POST", "/api/agents/chat/stream", json=body, headers=headers) as source:
        assert source.response.status_code == 200
        async for sse in source.aiter_sse():
            if sse.data:
                events.append(json.loads(sse.data))
    return events


async def test_two_hundred_concurrent_streams(alice):
    with serving(OFFLINE_MODEL_DELAY="0.02") as url:
        limits = httpx.Limits(max_connections=STREAMS + 10)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
            started = time.monotonic()
            results = await asyncio.wait_for(
                asyncio.gather(*(one_stream(client, alice.token, n) for n in range(STREAMS))), 150
            )
            elapsed = time.monotonic() - started
    print(f"\n{STREAMS} concurrent streams on one process in {elapsed:.1f} s")
    for events in results:
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert events[-1]["type"] == "stream_complete" and events[-1]["status"] == "completed"
        run = await Run.objects.aget(pk=events[0]["run_id"])
        text = "".join(e["delta"] for e in events if e.get("event_type") == "response.output_text.delta")
        assert run.status == Run.Status.COMPLETED and text == run.final_output
    assert await Run.objects.filter(status=Run.Status.COMPLETED).acount() == STREAMS
