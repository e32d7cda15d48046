"""The worker tier (RUN_EXECUTION=worker) with real processes: web processes accept, stream and
cancel; `manage.py run_worker` processes execute, whichever web process accepted the run."""

import asyncio
import json
import signal
import time

import httpx
import pytest
from django.conf import settings
from django.db import connection
from httpx_sse import aconnect_sse

from agents_app.models import Run, RunEvent

from .live_server import free_port, start_server, start_worker
from .streams import wait_finished

pytestmark = [
    pytest.mark.live,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql" or not settings.REDIS_URL,
        reason="the worker tier: its queue is PostgreSQL's, its processes meet through Redis",
    ),
]

STORY = {"input": "Tell me a long story about forests"}
REFUND = {"input": "refund order A17 250"}
DELTA = "response.output_text.delta"


def auth(user, **headers) -> dict:
    return {"Authorization": f"Token {user.token}", **headers}


@pytest.fixture
def tier():
    """Web and worker processes on demand (all in worker mode); all stopped at the end."""
    procs = []

    class Tier:
        def web(self, **env) -> str:
            port = free_port()
            procs.append(start_server(port, RUN_EXECUTION="worker", **env))
            return f"http://127.0.0.1:{port}"

        def worker(self, **env):
            procs.append(start_worker(**env))
            return procs[-1]

    yield Tier()
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        proc.wait(15)


async def read(client, method, url, headers, events: list, until=None, **kwargs) -> list[dict]:
    """An SSE stream's events into `events`, up to the terminal one (or `until(events)`)."""
    async with aconnect_sse(client, method, url, headers=headers, **kwargs) as source:
        assert source.response.status_code == 200, source.response.status_code
        async for sse in source.aiter_sse():
            if not sse.data:
                continue
            events.append(json.loads(sse.data))
            if events[-1]["type"] in ("stream_complete", "error") or (until and until(events)):
                break
    return events


def deltas(n: int):
    return lambda events: sum(e.get("event_type") == DELTA for e in events) >= n


async def test_accepted_by_one_web_process_executed_by_a_worker_followed_through_another(tier, alice):
    a, b = tier.web(), tier.web()
    tier.worker(OFFLINE_MODEL_DELAY="0.05")
    async with httpx.AsyncClient(timeout=30) as client:
        first = await read(
            client, "POST", f"{a}/api/agents/chat/stream", auth(alice), [], deltas(3), json=STORY
        )
        run_id = first[0]["run_id"]
        # The run waited for a worker first: its stream says so, as a queued run's does.
        assert first[0]["type"] == "run_queued" and first[0]["position"] == 0
        assert first[1]["type"] == "run_started"
        rest = await read(
            client,
            "GET",
            f"{b}/api/runs/{run_id}/stream",
            auth(alice, **{"Last-Event-ID": str(first[-1]["seq"])}),
            [],
        )
        joined = await read(client, "GET", f"{b}/api/runs/{run_id}/stream", auth(alice), [])
    events = first + rest
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "stream_complete" and events[-1]["status"] == "completed"
    assert joined == events
    run = await wait_finished(run_id)
    assert run.status == Run.Status.COMPLETED and run.worker_channel != Run.UNCLAIMED
    assert [seq async for seq in RunEvent.objects.filter(run_id=run_id).values_list("seq", flat=True)] == [
        e["seq"] for e in events
    ]


async def test_a_cancel_through_another_web_process_reaches_the_worker_within_a_second(tier, alice):
    a, b = tier.web(), tier.web()
    tier.worker(OFFLINE_MODEL_DELAY="0.2")
    async with httpx.AsyncClient(timeout=30) as client:
        events = await read(
            client, "POST", f"{a}/api/agents/chat/stream", auth(alice), [], deltas(2), json=STORY
        )
        run_id = events[0]["run_id"]
        reading = asyncio.create_task(
            read(
                client,
                "GET",
                f"{a}/api/runs/{run_id}/stream",
                auth(alice, **{"Last-Event-ID": str(events[-1]["seq"])}),
                events,
            )
        )
        asked = time.monotonic()
        cancelled = await client.post(f"{b}/api/runs/{run_id}/cancel", headers=auth(alice))
        assert cancelled.status_code == 202, cancelled.text
        await asyncio.wait_for(reading, 10)
        took = time.monotonic() - asked
    assert events[-1]["type"] == "stream_complete" and events[-1]["status"] == "cancelled"
    assert took < 1.0, took
    assert (await wait_finished(run_id)).status == Run.Status.CANCELLED


async def test_a_run_cancelled_before_a_worker_took_it_never_starts(tier, alice):
    a, b = tier.web(), tier.web()  # no worker yet
    async with httpx.AsyncClient(timeout=30) as client:
        events = await read(
            client, "POST", f"{a}/api/agents/chat/stream", auth(alice), [], lambda e: e, json=STORY
        )
        [queued] = events
        assert queued["type"] == "run_queued" and queued["waiting_for"] is None
        run_id = queued["run_id"]
        assert (await Run.objects.aget(pk=run_id)).status == Run.Status.QUEUED
        cancelled = await client.post(f"{b}/api/runs/{run_id}/cancel", headers=auth(alice))
        assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
        rest = await read(
            client, "GET", f"{a}/api/runs/{run_id}/stream", auth(alice, **{"Last-Event-ID": "1"}), []
        )
        assert [e["type"] for e in rest] == ["stream_complete"] and rest[0]["status"] == "cancelled"
        # A worker now finds its job and runs nothing; the next run goes through.
        tier.worker()
        later = await read(
            client, "POST", f"{b}/api/agents/chat/stream", auth(alice), [], json={"input": "hi"}
        )
    assert later[-1]["type"] == "stream_complete" and later[-1]["status"] == "completed"
    types = [
        t async for t in RunEvent.objects.filter(run_id=run_id).order_by("seq").values_list("type", flat=True)
    ]
    assert types == ["run_queued", "stream_complete"]
    run = await Run.objects.aget(pk=run_id)
    assert run.status == Run.Status.CANCELLED and run.started_at is None and run.requests == 0


async def test_a_paused_run_survives_the_loss_of_every_worker(tier, alice):
    a, b = tier.web(), tier.web()
    first = tier.worker()
    async with httpx.AsyncClient(timeout=30) as client:
        paused = await client.post(f"{a}/api/agents/ops/run", json=REFUND, headers=auth(alice))
        assert paused.json()["status"] == "awaiting_approval", paused.text
        run_id, [call] = paused.json()["run_id"], paused.json()["approvals"]
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        decided = await client.post(
            f"{b}/api/runs/{run_id}/approvals/{call['approval_id']}",
            json={"decision": "approve"},
            headers=auth(alice),
        )
        assert decided.status_code == 200, decided.text
        # Decided with no worker alive: the run waits for one, and the next one goes on with it.
        assert (await Run.objects.aget(pk=run_id)).worker_channel == Run.UNCLAIMED
        tier.worker()
        events = await read(client, "GET", f"{a}/api/runs/{run_id}/stream", auth(alice), [])
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "stream_complete" and "refunded 250.00" in events[-1]["final_output"]
    assert [e["type"] for e in events].count("run_started") == 1
    assert (await wait_finished(run_id)).status == Run.Status.COMPLETED


async def test_runs_of_one_conversation_take_turns_in_the_workers(tier, alice):
    a = tier.web()
    tier.worker(OFFLINE_MODEL_DELAY="0.05")
    tier.worker(OFFLINE_MODEL_DELAY="0.05")
    async with httpx.AsyncClient(timeout=30) as client:
        first = await read(
            client, "POST", f"{a}/api/agents/chat/stream", auth(alice), [], deltas(1), json=STORY
        )
        conversation = first[0]["conversation_id"]
        body = {"input": "And then?", "conversation_id": conversation, "if_busy": "enqueue"}
        second = await read(client, "POST", f"{a}/api/agents/chat/stream", auth(alice), [], json=body)
    first_run = await wait_finished(first[0]["run_id"])
    second_run = await wait_finished(second[0]["run_id"])
    assert second[0]["type"] == "run_queued" and second[0]["waiting_for"] == str(first_run.pk)
    assert first_run.status == second_run.status == Run.Status.COMPLETED
    assert second_run.started_at >= first_run.finished_at
