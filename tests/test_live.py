"""Live server over real sockets: daphne on 127.0.0.1, httpx-sse and websockets clients."""

import asyncio
import itertools
import json
import os
import time
from pathlib import Path

import httpx
import pytest
import websockets
from django.conf import settings
from httpx_sse import aconnect_sse

from agents_app.models import Run, RunEvent

from .live_server import PrivateRedis, free_port, start_server
from .streams import text_of, wait_finished

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def live_urls(django_db_setup, django_db_blocker):
    procs, urls = [], []
    # Two processes when Redis connects them, to prove any process can cancel any run.
    for _ in range(2 if settings.REDIS_URL else 1):
        port = free_port()
        procs.append(start_server(port))
        urls.append(f"http://127.0.0.1:{port}")
    yield urls
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def auth(user) -> dict:
    return {"Authorization": f"Token {user.token}"}


async def read_sse(
    client, method, url, user, stop_after=None, events=None, arrivals=None, first_delta=None, **kwargs
) -> list[dict]:
    """The events of one SSE connection, up to its terminal event or `stop_after` text deltas.

    For a caller watching the stream while it runs: `events` is filled as events come,
    `arrivals` gets each one's arrival time, and `first_delta` is set at the first text delta."""
    events = [] if events is None else events
    deltas = 0
    async with aconnect_sse(client, method, url, headers=auth(user), **kwargs) as source:
        assert source.response.status_code == 200
        async for sse in source.aiter_sse():
            if not sse.data:  # the opening `retry:` block
                continue
            event = json.loads(sse.data)
            assert int(sse.id) == event["seq"]
            events.append(event)
            if arrivals is not None:
                arrivals.append(time.monotonic())
            if event.get("event_type") == "response.output_text.delta":
                deltas += 1
                if first_delta is not None:
                    first_delta.set()
                if stop_after and deltas >= stop_after:
                    break
            if event["type"] in ("stream_complete", "error"):
                break
    return events


async def start_story(client, base, user, stop_after, text="Tell me a story"):
    """Start a chat run with an SSE stream and leave it after `stop_after` text deltas."""
    return await read_sse(
        client, "POST", f"{base}/api/agents/chat/stream", user, stop_after=stop_after, json={"input": text}
    )


async def test_cut_and_resume_with_last_event_id(live_urls, alice):
    base = live_urls[0]
    async with httpx.AsyncClient(timeout=20) as client:
        first = await start_story(client, base, alice, stop_after=5)
        run_id, last = first[0]["run_id"], first[-1]["seq"]
        headers = {**auth(alice), "Last-Event-ID": str(last)}
        async with aconnect_sse(client, "GET", f"{base}/api/runs/{run_id}/stream", headers=headers) as source:
            rest = [json.loads(s.data) async for s in source.aiter_sse() if s.data]
        events = first + rest
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert events[-1]["type"] == "stream_complete"
        assert text_of(events) == events[-1]["final_output"]
        gone = await client.get(
            f"{base}/api/runs/{run_id}/stream?last_event_id={events[-1]['seq']}", headers=auth(alice)
        )
        assert gone.status_code == 204


async def test_run_continues_after_client_left(live_urls, alice):
    base = live_urls[0]
    async with httpx.AsyncClient(timeout=20) as client:
        seen = await start_story(client, base, alice, stop_after=2)
    run = await wait_finished(seen[0]["run_id"])
    assert run.status == "completed"
    stored = [e.data async for e in RunEvent.objects.filter(run=run).order_by("seq")]
    assert [e["seq"] for e in stored] == list(range(1, run.last_seq + 1))
    assert stored[-1]["type"] == "stream_complete"
    assert text_of(stored) == run.final_output


async def test_cancel_from_second_connection_within_a_second(live_urls, alice):
    start_base, cancel_base = live_urls[0], live_urls[-1]
    async with httpx.AsyncClient(timeout=20) as client, httpx.AsyncClient(timeout=20) as other:
        async with aconnect_sse(
            client,
            "POST",
            f"{start_base}/api/agents/chat/stream",
            headers=auth(alice),
            json={"input": "A long story"},
        ) as source:
            events = []
            async for sse in source.aiter_sse():
                if not sse.data:
                    continue
                events.append(json.loads(sse.data))
                if events[-1].get("event_type") == "response.output_text.delta" and len(events) == 5:
                    started = time.monotonic()
                    response = await other.post(
                        f"{cancel_base}/api/runs/{events[0]['run_id']}/cancel", headers=auth(alice)
                    )
                    assert response.status_code == 202
                if events[-1]["type"] in ("stream_complete", "error"):
                    break
        elapsed = time.monotonic() - started
    assert events[-1]["type"] == "stream_complete" and events[-1]["status"] == "cancelled"
    assert elapsed < 1.0, f"cancel took {elapsed:.2f} s"
    assert (await Run.objects.aget(pk=events[0]["run_id"])).status == "cancelled"


async def test_join_from_another_process_streams_live(live_urls, alice):
    """A reader on the other server gets the run's events as they happen (the owner publishes to
    the group once asked), not only at its database polls (1 s apart and backing off)."""
    if len(live_urls) < 2:
        pytest.skip("needs two server processes (Redis channel layer)")
    owner, other = live_urls
    async with httpx.AsyncClient(timeout=20) as client:
        first = await start_story(client, owner, alice, 2, text="Tell me a long story about the sea")
        run_id = first[0]["run_id"]
        arrivals = []
        events = await read_sse(client, "GET", f"{other}/api/runs/{run_id}/stream", alice, arrivals=arrivals)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "stream_complete" and text_of(events) == events[-1]["final_output"]
    live = [b - a for a, b in itertools.pairwise(arrivals)]
    assert len(live) > 10 and max(live) < 0.5, f"largest gap {max(live):.2f} s"


async def test_websocket_run_drop_and_resume(live_urls, alice):
    ws_url = live_urls[0].replace("http://", "ws://") + "/ws/agents/chat/"
    headers = auth(alice)
    async with websockets.connect(ws_url, additional_headers=headers) as ws:
        await ws.send(json.dumps({"type": "run", "input": "Tell me a story about rain"}))
        first = [json.loads(await ws.recv()) for _ in range(6)]
    run_id = first[0]["run_id"]
    async with websockets.connect(ws_url, additional_headers=headers) as ws:
        await ws.send(json.dumps({"type": "resume", "run_id": run_id, "last_event_id": first[-1]["seq"]}))
        rest = []
        while not rest or rest[-1]["type"] not in ("stream_complete", "error"):
            rest.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
    events = first + rest
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert text_of(events) == events[-1]["final_output"]


async def test_websocket_rejects_unauthenticated(live_urls):
    ws_url = live_urls[0].replace("http://", "ws://") + "/ws/agents/chat/"
    async with websockets.connect(ws_url) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd.code == 4401


async def test_a_quiet_socket_still_serves_after_the_layers_blocking_receive(live_urls, alice):
    """A consumer's channel-layer receive blocks 5 s at a time on Redis. With the read timeout
    equal to it, every consumer idle that long lost its dispatch loop: a WebSocket went deaf, an
    SSE stream stopped noticing its client leave. Quiet for longer than that, it must still work."""
    ws_url = live_urls[0].replace("http://", "ws://") + "/ws/agents/chat/"
    async with websockets.connect(ws_url, additional_headers=auth(alice)) as ws:
        await asyncio.sleep(6.5)
        await ws.send(json.dumps({"type": "run", "input": "What is 6 * 7?"}))
        events = []
        while not events or events[-1]["type"] not in ("stream_complete", "error"):
            events.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
    assert events[-1]["type"] == "stream_complete" and "42" in events[-1]["final_output"]


async def test_a_stopped_server_records_its_runs_as_interrupted(alice):
    """SIGTERM to daphne (a deploy, a restart): a run that cannot finish within
    RUN_SHUTDOWN_GRACE ends `interrupted` with its terminal event and partial output before the
    process exits, so its conversation is free at once (no wait for the stale sweep)."""
    port = free_port()
    proc = start_server(port, RUN_SHUTDOWN_GRACE="0.3")
    try:
        async with httpx.AsyncClient(timeout=20) as client:
            seen = await start_story(client, f"http://127.0.0.1:{port}", alice, stop_after=3)
        proc.terminate()
        assert await asyncio.to_thread(proc.wait, 20) == 0
    finally:
        proc.kill()
    run = await Run.objects.aget(pk=seen[0]["run_id"])
    assert (run.status, run.error_code) == ("interrupted", "interrupted")
    stored = [e.data async for e in RunEvent.objects.filter(run=run).order_by("seq")]
    assert [e["seq"] for e in stored] == list(range(1, run.last_seq + 1))
    assert stored[-1]["type"] == "error" and stored[-1]["code"] == "interrupted"
    assert run.final_output and text_of(stored) == run.final_output
    # Its conversation takes a new run at once.
    assert not await Run.objects.filter(conversation_id=run.conversation_id, status__in=Run.ACTIVE).aexists()


async def owned_and_joined(client, owner: str, other: str, user, text: str, during=None):
    """A chat run started on `owner` and joined from `other` once it streams, both read to the
    end; `during()` is called once both have had a text delta. Returns the events of both and
    the arrival times of the joined ones."""
    owned, joined, arrivals = [], [], []
    owned_delta, joined_delta = asyncio.Event(), asyncio.Event()
    url = f"{owner}/api/agents/chat/stream"
    owning = asyncio.create_task(
        read_sse(client, "POST", url, user, events=owned, first_delta=owned_delta, json={"input": text})
    )
    await asyncio.wait_for(owned_delta.wait(), 20)
    url = f"{other}/api/runs/{owned[0]['run_id']}/stream"
    joining = asyncio.create_task(
        read_sse(client, "GET", url, user, events=joined, arrivals=arrivals, first_delta=joined_delta)
    )
    await asyncio.wait_for(joined_delta.wait(), 20)
    if during is not None:
        during()
    await asyncio.wait_for(asyncio.gather(owning, joining), 60)
    return owned, joined, arrivals


async def test_a_redis_outage_cuts_no_stream_and_loses_nothing(alice):
    """Redis (the channel layer between processes) goes away in the middle of a run that is
    followed in its own process and from another one, then comes back. No stream is cut, both
    readers get every event once (the other process's from its database polls meanwhile), and
    afterwards the processes talk through the layer again."""
    redis = PrivateRedis()
    if not settings.REDIS_URL or redis.binary is None:
        pytest.skip("the Redis stack, with a redis-server binary to run a private one")
    redis.start()
    env = {"REDIS_URL": redis.url, "CHANNEL_PREFIX": f"outage{os.getpid()}"}
    ports = [free_port(), free_port()]
    procs = [start_server(port, **env) for port in ports]
    owner, other = (f"http://127.0.0.1:{port}" for port in ports)
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            text = "Tell me a long story about the sea"
            owned, joined, _ = await owned_and_joined(client, owner, other, alice, text, during=redis.stop)
            for events in (owned, joined):
                assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
                assert events[-1]["type"] == "stream_complete" and events[-1]["status"] == "completed"
            assert joined == owned and text_of(owned) == owned[-1]["final_output"]
            run = await wait_finished(owned[0]["run_id"])
            stored = [e.data async for e in RunEvent.objects.filter(run=run).order_by("seq")]
            assert stored == owned

            redis.start()
            await asyncio.sleep(3)  # the layer's receives retry at most 2 s apart
            text = "Tell me a long story about rivers"
            owned, joined, arrivals = await owned_and_joined(client, owner, other, alice, text)
            assert joined == owned and owned[-1]["status"] == "completed"
            # Live again through the layer (the owner publishes to the group once the other asks),
            # not in lumps at the other's database polls, 1 s apart.
            gaps = [b - a for a, b in itertools.pairwise(arrivals)]
            assert len(gaps) > 10 and max(gaps) < 0.5, f"largest gap {max(gaps):.2f} s"
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        redis.stop()
