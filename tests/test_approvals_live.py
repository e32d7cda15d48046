"""Approvals across real server processes: a run paused in one process is decided through another
(or after its process was killed) and goes on, each reader seeing every event once, in order."""

import asyncio
import json
import signal

import httpx
import pytest
from django.conf import settings
from httpx_sse import aconnect_sse

from agents_app.models import Run, RunEvent

from .live_server import free_port, start_server
from .streams import wait_finished

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]
needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="two processes meet through Redis")

LARGE = {"input": "refund order A17 250"}


def auth(user) -> dict:
    return {"Authorization": f"Token {user.token}"}


@pytest.fixture
def servers():
    """Start servers on demand; all stopped at the end."""
    procs = []

    def start() -> tuple[str, object]:
        port = free_port()
        proc = start_server(port)
        procs.append(proc)
        return f"http://127.0.0.1:{port}", proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


async def read_stream(client, method, url, user, events: list, **kwargs) -> list[dict]:
    """An SSE stream's events into `events` as they come, up to the terminal one."""
    async with aconnect_sse(client, method, url, headers=auth(user), **kwargs) as source:
        assert source.response.status_code == 200
        async for sse in source.aiter_sse():
            if not sse.data:
                continue
            events.append(json.loads(sse.data))
            if events[-1]["type"] in ("stream_complete", "error"):
                break
    return events


async def until(events: list, kind: str, timeout: float = 15) -> dict:
    async with asyncio.timeout(timeout):
        while not any(e["type"] == kind for e in events):
            await asyncio.sleep(0.02)
    return next(e for e in events if e["type"] == kind)


async def stored_seqs(run_id) -> list[int]:
    return [
        seq
        async for seq in RunEvent.objects.filter(run_id=run_id).order_by("seq").values_list("seq", flat=True)
    ]


@needs_redis
async def test_paused_on_one_process_approved_through_another(servers, alice):
    (a, _), (b, _) = servers(), servers()
    async with httpx.AsyncClient(timeout=30) as client:
        on_a: list[dict] = []
        reader_a = asyncio.create_task(
            read_stream(client, "POST", f"{a}/api/agents/ops/stream", alice, on_a, json=LARGE)
        )
        pause = await until(on_a, "approval_required")
        run_id = pause["run_id"]
        on_b: list[dict] = []
        reader_b = asyncio.create_task(
            read_stream(client, "GET", f"{b}/api/runs/{run_id}/stream", alice, on_b)
        )
        await until(on_b, "approval_required")
        [call] = pause["approvals"]
        decided = await client.post(
            f"{b}/api/runs/{run_id}/approvals/{call['approval_id']}",
            json={"decision": "approve"},
            headers=auth(alice),
        )
        assert decided.status_code == 200, decided.text
        await asyncio.wait_for(asyncio.gather(reader_a, reader_b), 30)
    for events in (on_a, on_b):
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert events[-1]["type"] == "stream_complete" and events[-1]["status"] == "completed"
        assert "refunded 250.00 on order A17" in events[-1]["final_output"]
    assert on_a == on_b
    assert await stored_seqs(run_id) == [e["seq"] for e in on_a]


async def test_a_paused_run_survives_its_process(servers, alice):
    first, proc = servers()
    async with httpx.AsyncClient(timeout=30) as client:
        paused = await client.post(f"{first}/api/agents/ops/run", json=LARGE, headers=auth(alice))
        assert paused.json()["status"] == "awaiting_approval"
        run_id, [call] = paused.json()["run_id"], paused.json()["approvals"]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        second, _ = servers()
        run = await Run.objects.aget(pk=run_id)
        assert run.status == Run.Status.AWAITING_APPROVAL  # no sweep ends a paused run
        decided = await client.post(
            f"{second}/api/runs/{run_id}/approvals/{call['approval_id']}",
            json={"decision": "approve"},
            headers=auth(alice),
        )
        assert decided.status_code == 200, decided.text
        events = await read_stream(client, "GET", f"{second}/api/runs/{run_id}/stream", alice, [])
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "stream_complete" and "refunded 250.00" in events[-1]["final_output"]
    run = await wait_finished(run_id)
    assert run.status == Run.Status.COMPLETED


@needs_redis
async def test_two_decisions_at_once_resume_once(servers, alice):
    (a, _), (b, _) = servers(), servers()
    async with httpx.AsyncClient(timeout=30) as client:
        paused = await client.post(f"{a}/api/agents/ops/run", json=LARGE, headers=auth(alice))
        run_id, [call] = paused.json()["run_id"], paused.json()["approvals"]
        path = f"/api/runs/{run_id}/approvals/{call['approval_id']}"
        answers = await asyncio.gather(
            client.post(a + path, json={"decision": "approve"}, headers=auth(alice)),
            client.post(b + path, json={"decision": "approve"}, headers=auth(alice)),
        )
        assert sorted(r.status_code for r in answers) == [200, 409]
        events = await read_stream(client, "GET", f"{a}/api/runs/{run_id}/stream", alice, [])
    assert [e["type"] for e in events].count("approval_decided") == 1
    assert [e["type"] for e in events].count("stream_complete") == 1
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    run = await wait_finished(run_id)
    assert run.status == Run.Status.COMPLETED and run.requests == 2
