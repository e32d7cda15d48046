"""The worker tier (RUN_EXECUTION=worker) with real processes: web processes accept, stream and
cancel; `manage.py run_worker` processes execute, whichever web process accepted the run."""

import asyncio
import json
import signal
import time

import httpx
import pytest
from httpx_sse import aconnect_sse

from agents_app.models import ConversationItem, Run, RunEvent

from .live_server import free_port, needs_worker_tier, start_server, start_worker
from .streams import wait_finished
from .test_approvals_live import stored_seqs
from .test_protocol_doc import documented_examples

pytestmark = [
    pytest.mark.live,
    pytest.mark.django_db(transaction=True),
    needs_worker_tier(),
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
        webs: dict[str, object] = {}

        def web(self, **env) -> str:
            port = free_port()
            procs.append(start_server(port, RUN_EXECUTION="worker", **env))
            url = f"http://127.0.0.1:{port}"
            self.webs[url] = procs[-1]
            return url

        def stop(self, url: str) -> None:
            """A web process stops as systemd stops it (SIGTERM), and is waited for."""
            proc = self.webs.pop(url)
            proc.terminate()
            assert proc.wait(20) == 0

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


async def resume(client, base: str, user, events: list) -> list[dict]:
    """The rest of a run's stream into `events`, from `base`, after the last event in it."""
    run_id, after = events[0]["run_id"], str(events[-1]["seq"])
    url = f"{base}/api/runs/{run_id}/stream"
    return await read(client, "GET", url, auth(user, **{"Last-Event-ID": after}), events)


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
        rest = (await resume(client, b, alice, list(first)))[len(first) :]
        joined = await read(client, "GET", f"{b}/api/runs/{run_id}/stream", auth(alice), [])
    events = first + rest
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "stream_complete" and events[-1]["status"] == "completed"
    assert joined == events
    run = await wait_finished(run_id)
    assert run.status == Run.Status.COMPLETED and run.worker_channel != Run.UNCLAIMED
    assert await stored_seqs(run_id) == [e["seq"] for e in events]


async def test_a_cancel_through_another_web_process_reaches_the_worker_within_a_second(tier, alice):
    a, b = tier.web(), tier.web()
    tier.worker(OFFLINE_MODEL_DELAY="0.2")
    async with httpx.AsyncClient(timeout=30) as client:
        events = await read(
            client, "POST", f"{a}/api/agents/chat/stream", auth(alice), [], deltas(2), json=STORY
        )
        run_id = events[0]["run_id"]
        reading = asyncio.create_task(resume(client, a, alice, events))
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


async def remembered(conversation_id) -> list:
    items = ConversationItem.objects.filter(conversation_id=conversation_id).order_by("id")
    return [(d.get("type"), d.get("role"), d.get("name")) async for d in items.values_list("data", flat=True)]


def text_deltas_after(events: list, kind: str) -> int:
    """Text deltas streamed after the last event of `kind`."""
    last = max((i for i, e in enumerate(events) if e["type"] == kind or e.get("name") == kind), default=None)
    return 0 if last is None else sum(e.get("event_type") == DELTA for e in events[last:])


async def test_a_worker_killed_in_a_run_s_second_turn_another_finishes_it_from_its_checkpoint(tier, alice):
    a = tier.web()
    fast = {"OFFLINE_MODEL_DELAY": "0.2", "RUN_WORKER_DEAD_AFTER": "3"}
    first = tier.worker(**fast)
    question = {"input": "What is 6*7?"}
    async with httpx.AsyncClient(timeout=60) as client:
        whole = await read(client, "POST", f"{a}/api/agents/chat/stream", auth(alice), [], json=question)
        # The same question again; its worker dies once the answer's second turn streams.
        events = await read(
            client,
            "POST",
            f"{a}/api/agents/chat/stream",
            auth(alice),
            [],
            lambda e: text_deltas_after(e, "tool_output") >= 1,
            json=question,
        )
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed = time.monotonic()
        tier.worker(**fast)
        run_id = events[0]["run_id"]
        await resume(client, a, alice, events)
        took = time.monotonic() - killed
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    [restarted] = [e for e in events if e["type"] == "turn_restarted"]
    assert restarted["turn"] == 2 and "stopped answering" in restarted["reason"]
    [documented] = [e for e in documented_examples() if e["type"] == "turn_restarted"]
    assert set(documented) == set(restarted)  # docs/events.md's example has its fields
    # What comes after `after_seq` and before the restart is the cut turn: the tool's output stays.
    kept = [e for e in events if e["seq"] <= restarted["after_seq"]]
    assert any(e.get("name") == "tool_output" for e in kept)
    assert not any(e.get("event_type") == DELTA for e in kept)
    assert events[-1]["type"] == "stream_complete" and events[-1]["status"] == "completed"
    assert events[-1]["final_output"] == whole[-1]["final_output"] == "6*7 = 42."
    assert took < 15, took
    run = await wait_finished(run_id)
    assert run.status == Run.Status.COMPLETED and run.restarts == 1
    # Its conversation remembers the exchange once, as an uninterrupted run's does.
    assert await remembered(run.conversation_id) == await remembered(whole[0]["conversation_id"])
    assert await stored_seqs(run_id) == [e["seq"] for e in events]


async def test_a_stopping_worker_hands_its_runs_to_another(tier, alice):
    a = tier.web()
    slow = {"OFFLINE_MODEL_DELAY": "0.05", "RUN_SHUTDOWN_GRACE": "0.5"}
    first = tier.worker(**slow)
    async with httpx.AsyncClient(timeout=60) as client:
        whole = await read(client, "POST", f"{a}/api/agents/chat/stream", auth(alice), [], json=STORY)
        events = await read(
            client, "POST", f"{a}/api/agents/chat/stream", auth(alice), [], deltas(5), json=STORY
        )
        tier.worker(**slow)
        first.send_signal(signal.SIGTERM)
        run_id = events[0]["run_id"]
        await resume(client, a, alice, events)
        assert first.wait(15) == 0
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    [restarted] = [e for e in events if e["type"] == "turn_restarted"]
    started = next(e for e in events if e["type"] == "run_started")
    assert restarted["turn"] == 1 and restarted["after_seq"] == started["seq"]
    assert events[-1]["status"] == "completed" and events[-1]["final_output"] == whole[-1]["final_output"]
    assert (await wait_finished(run_id)).restarts == 1


async def test_a_run_taken_over_too_often_ends_failed(tier, alice):
    a = tier.web()
    first = tier.worker(OFFLINE_MODEL_DELAY="0.05", RUN_SHUTDOWN_GRACE="0")
    async with httpx.AsyncClient(timeout=60) as client:
        events = await read(
            client, "POST", f"{a}/api/agents/chat/stream", auth(alice), [], deltas(3), json=STORY
        )
        tier.worker(RUN_MAX_RESTARTS="0")
        first.send_signal(signal.SIGTERM)
        run_id = events[0]["run_id"]
        await resume(client, a, alice, events)
    assert events[-1]["type"] == "error" and events[-1]["code"] == "interrupted"
    run = await wait_finished(run_id)
    assert run.status == Run.Status.FAILED and run.error_code == "interrupted" and run.restarts == 1
    assert run.final_output  # the text it had written stays


async def test_a_rolling_restart_of_the_web_processes_loses_no_run(tier, alice):
    webs = [tier.web(), tier.web()]
    tier.worker(OFFLINE_MODEL_DELAY="0.1")
    tier.worker(OFFLINE_MODEL_DELAY="0.1")
    reconnects = []

    async def client_of(n: int, client) -> list[dict]:
        """One streamed run; when its web process goes, it resumes on one that is up."""
        events: list[dict] = []
        method, url, body = "POST", f"{webs[n % 2]}/api/agents/chat/stream", {"json": STORY}
        headers = auth(alice)
        while True:
            try:
                await read(client, method, url, headers, events, **body)
            except (httpx.HTTPError, AssertionError):
                pass
            if events and events[-1]["type"] in ("stream_complete", "error"):
                return events
            await asyncio.sleep(0.2)
            if events:
                reconnects.append(n)
                method, body = "GET", {}
                url = f"{webs[(n + len(reconnects)) % 2]}/api/runs/{events[0]['run_id']}/stream"
                headers = auth(alice, **{"Last-Event-ID": str(events[-1]["seq"])})

    async with httpx.AsyncClient(timeout=60) as client:
        clients = [asyncio.create_task(client_of(n, client)) for n in range(20)]
        await asyncio.sleep(3)
        for index in range(2):  # one at a time, as a deploy restarts them
            old = webs[index]
            webs[index] = webs[1 - index]  # meanwhile clients go to the other one
            tier.stop(old)
            webs[index] = tier.web()
        results = await asyncio.wait_for(asyncio.gather(*clients), 120)
    assert reconnects  # streams were cut by the restarts
    for events in results:
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert events[-1]["type"] == "stream_complete" and events[-1]["status"] == "completed"
        assert not any(e["type"] == "turn_restarted" for e in events)  # no run was touched
