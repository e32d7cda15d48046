"""A server process killed mid-answer (SIGKILL: no shutdown of its own) leaves no conversation
stuck: another process ends its run `interrupted` within RUN_STALE_AFTER + RUN_SWEEP_INTERVAL (15 s
by default), keeping the text it had streamed, and the conversation takes a new message."""

import asyncio
import json
import signal
import time

import httpx
import pytest
from django.conf import settings
from httpx_sse import aconnect_sse

from agents_app.models import Run

from .live_server import free_port, start_server

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


async def test_a_killed_process_s_run_ends_interrupted_in_bounded_time(alice):
    headers = {"Authorization": f"Token {alice.token}"}
    bound = settings.RUN_STALE_AFTER + settings.RUN_SWEEP_INTERVAL
    assert bound <= 15  # the defaults (the live servers use them)
    first_port, second_port = free_port(), free_port()
    first = start_server(first_port, OFFLINE_MODEL_DELAY="0.2")
    second = None
    try:
        seen = []
        async with httpx.AsyncClient(timeout=30) as client:
            body = {"input": "Tell me a long story about forests"}
            url = f"http://127.0.0.1:{first_port}/api/agents/chat/stream"
            async with aconnect_sse(client, "POST", url, json=body, headers=dict(headers)) as source:
                async for sse in source.aiter_sse():
                    if not sse.data:
                        continue
                    seen.append(json.loads(sse.data))
                    if sum(e.get("event_type") == "response.output_text.delta" for e in seen) == 3:
                        break
                first.send_signal(signal.SIGKILL)
                first.wait(10)
                killed = time.monotonic()
        run_id = seen[0]["run_id"]
        second = start_server(second_port)
        while (run := await Run.objects.aget(pk=run_id)).status == Run.Status.RUNNING:
            assert time.monotonic() - killed < bound + 2, "the dead process's run was not ended"
            await asyncio.sleep(0.2)
        assert (run.status, run.error_code) == (Run.Status.INTERRUPTED, "interrupted")
        streamed = "".join(e["delta"] for e in seen if e.get("event_type") == "response.output_text.delta")
        assert run.final_output.startswith(streamed)  # the text it had written stays
        async with httpx.AsyncClient(timeout=30) as client:
            again = await client.post(
                f"http://127.0.0.1:{second_port}/api/agents/chat/run",
                json={"input": "hello", "conversation_id": str(run.conversation_id)},
                headers=headers,
            )
        assert again.status_code == 200 and again.json()["status"] == "completed"
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(10)
