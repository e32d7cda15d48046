"""SSE consumers through the real ASGI application: order, terminal event, resume, auth, disconnects."""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async

from agents_app.api.sse import RunStreamConsumer
from agents_app.models import Run, RunEvent
from agents_app.runs.read import RunCursor

from .streams import SSEClient, parse_sse, stream_run, text_of, wait_finished

pytestmark = pytest.mark.django_db(transaction=True)


async def test_stream_order_and_terminal(alice):
    client, events = await stream_run(alice.token, {"input": "What is 17 * 23?"})
    assert client.headers["content-type"].startswith("text/event-stream")
    assert client.headers["cache-control"] == "no-cache"
    assert client.headers["x-accel-buffering"] == "no"
    frames = parse_sse(client.raw)
    assert frames[0]["retry"] > 0
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [f["id"] for f in frames if "id" in f] == [e["seq"] for e in events]
    assert events[0]["type"] == "run_started" and events[0]["agent"] == "chat"
    terminal = events[-1]
    assert terminal["type"] == "stream_complete" and terminal["status"] == "completed"
    assert [e["type"] for e in events].count("stream_complete") == 1
    assert "391" in terminal["final_output"]
    assert text_of(events) == terminal["final_output"] or text_of(events).endswith(terminal["final_output"])
    tool_called = next(e for e in events if e["type"] == "run_item" and e["name"] == "tool_called")
    assert tool_called["tool_name"] == "calculate" and "17" in tool_called["tool_arguments"]
    tool_output = next(e for e in events if e["type"] == "run_item" and e["name"] == "tool_output")
    assert tool_output["output"] == "391" and tool_output["tool_name"] == "calculate"
    run = await Run.objects.aget(pk=terminal["run_id"])
    assert run.status == "completed" and run.total_tokens == terminal["usage"]["total_tokens"] > 0
    stored = [e.data async for e in RunEvent.objects.filter(run=run).order_by("seq")]
    assert stored == events


async def test_reference_path_and_handoff(alice):
    _, events = await stream_run(
        alice.token, {"input": "Please calculate 12 + 30", "session_id": "123"}, "/assistant/stream"
    )
    updated = [e for e in events if e["type"] == "agent_updated"]
    assert [e["agent_name"] for e in updated][-1] == "Math Specialist"
    handoff = next(e for e in events if e["type"] == "run_item" and e["name"] == "handoff_occured")
    assert handoff["source_agent"] == "Assistant" and handoff["target_agent"] == "Math Specialist"
    assert events[-1]["status"] == "completed"


async def test_join_finished_run_and_resume(alice):
    _, events = await stream_run(alice.token, {"input": "Tell me something"})
    run_id, last = events[0]["run_id"], events[-1]["seq"]
    join = SSEClient("GET", f"/api/runs/{run_id}/stream", token=alice.token)
    assert await join.start() == 200
    assert await join.read_all() == events
    resumed = SSEClient("GET", f"/api/runs/{run_id}/stream?last_event_id=3", token=alice.token)
    await resumed.start()
    assert await resumed.read_all() == events[3:]
    header = SSEClient(
        "GET", f"/api/runs/{run_id}/stream", token=alice.token, headers=[(b"last-event-id", b"2")]
    )
    await header.start()
    assert await header.read_all() == events[2:]
    after_end = SSEClient("GET", f"/api/runs/{run_id}/stream?last_event_id={last}", token=alice.token)
    assert await after_end.start() == 204


async def test_stream_auth_and_validation(alice, bob):
    no_token = SSEClient("POST", "/api/agents/chat/stream", {"input": "hi"})
    assert await no_token.start() == 401
    await no_token.read_all()
    assert no_token.json()["error"]["code"] == "not_authenticated"
    bad_token = SSEClient("POST", "/api/agents/chat/stream", {"input": "hi"}, token="x" * 40)
    assert await bad_token.start() == 401
    for body, status in ((b"{oops", 400), ({"input": ""}, 400), ({"input": 3}, 400)):
        client = SSEClient("POST", "/api/agents/chat/stream", body, alice.token)
        assert await client.start() == status
        await client.read_all()
        assert "error" in client.json()
    unknown = SSEClient("POST", "/api/agents/nope/stream", {"input": "hi"}, alice.token)
    assert await unknown.start() == 404
    get = SSEClient("GET", "/api/agents/chat/stream", token=alice.token)
    assert await get.start() == 405
    assert await Run.objects.acount() == 0
    _, events = await stream_run(alice.token, {"input": "hi"})
    other = SSEClient("GET", f"/api/runs/{events[0]['run_id']}/stream", token=bob.token)
    assert await other.start() == 404
    bad_id = SSEClient("GET", f"/api/runs/{events[0]['run_id']}/stream?last_event_id=x", token=alice.token)
    assert await bad_id.start() == 400


async def test_body_over_upload_limit_is_refused_before_it_is_read(alice, settings):
    """413 with the JSON error, nothing started, as soon as the size is known (announced or read),
    whoever asks: the rest of an oversized body is never buffered."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = json.dumps({"input": "y" * 40_000}).encode()  # over AGENTS_MAX_INPUT_CHARS too
    whole = SSEClient("POST", "/api/agents/chat/stream", body, alice.token)
    assert await whole.start() == 413
    assert (await whole.read_all(), whole.json()["error"]["code"]) == ([], "too_large")

    # Sent in chunks without a length: refused after the chunk that crosses the limit.
    chunked = SSEClient("POST", "/api/agents/chat/stream", token=alice.token)
    for offset in range(0, 12_000, 4_000):
        chunk = body[offset : offset + 4_000]
        await chunked.comm.send_input({"type": "http.request", "body": chunk, "more_body": True})
    start = await chunked.comm.receive_output(5)
    assert start["status"] == 413
    await chunked.comm.wait(5)  # the consumer has left: the rest is never read

    # A length announced over the limit is refused with the first chunk, before authentication.
    announced = SSEClient(
        "POST", "/api/agents/chat/stream", body[:100], headers=[(b"content-length", str(len(body)).encode())]
    )
    assert await announced.start() == 413
    assert await Run.objects.acount() == 0

    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = None  # no limit configured: the input rules still apply
    unlimited = SSEClient("POST", "/api/agents/chat/stream", body, alice.token)
    assert await unlimited.start() == 400
    await unlimited.read_all()
    assert unlimited.json()["error"]["fields"]["input"]


async def test_client_leaving_during_the_upload_ends_the_consumer_quietly(alice):
    half = SSEClient("POST", "/api/agents/chat/stream", token=alice.token)
    await half.comm.send_input({"type": "http.request", "body": b'{"input": "he', "more_body": True})
    await half.disconnect()
    await half.comm.wait(5)  # raises whatever the consumer raised
    assert await Run.objects.acount() == 0


async def test_session_auth_needs_csrf(alice, client):
    # On the sync thread, whose connection the session fixture closes (a pool thread's would stay open).
    await sync_to_async(client.force_login)(alice)
    cookie = client.cookies["sessionid"].value
    headers = [(b"cookie", f"sessionid={cookie}".encode())]
    no_csrf = SSEClient("POST", "/api/agents/chat/stream", {"input": "hi"}, headers=headers)
    assert await no_csrf.start() == 403
    await no_csrf.read_all()
    assert "CSRF" in no_csrf.json()["error"]["message"]
    csrf = "a" * 32
    with_csrf = SSEClient(
        "POST",
        "/api/agents/chat/stream",
        {"input": "hi"},
        headers=[
            (b"cookie", f"sessionid={cookie}; csrftoken={csrf}".encode()),
            (b"x-csrftoken", csrf.encode()),
        ],
    )
    assert await with_csrf.start() == 200
    events = await with_csrf.read_all()
    assert events[-1]["type"] == "stream_complete"


CANCELS_ON_DISCONNECT = "/api/agents/chat/stream?on_disconnect=cancel"


async def stream_until_first_response(token, text, path="/api/agents/chat/stream"):
    """An SSE stream that starts a run, read up to the model's first response event."""
    client = SSEClient("POST", path, {"input": text}, token)
    await client.start()
    await client.read_until(lambda e: e["type"] == "raw_response")
    return client, client.events()[0]["run_id"]


async def test_disconnect_noticed_fast_and_run_continues(alice, settings):
    settings.OFFLINE_MODEL_DELAY = 0.05
    client, run_id = await stream_until_first_response(alice.token, "Tell me a long story about rivers")
    started = asyncio.get_running_loop().time()
    await client.disconnect()
    await client.comm.wait(timeout=1)  # the consumer returns promptly once told
    assert asyncio.get_running_loop().time() - started < 1
    run = await wait_finished(run_id, timeout=10)
    assert run.status == "completed"
    types = [t async for t in RunEvent.objects.filter(run=run).order_by("seq").values_list("type", flat=True)]
    assert types[0] == "run_started" and types[-1] == "stream_complete"


async def test_on_disconnect_cancel(alice, settings):
    settings.OFFLINE_MODEL_DELAY = 0.2
    client, run_id = await stream_until_first_response(alice.token, "A long story", CANCELS_ON_DISCONNECT)
    await client.disconnect()
    await client.comm.wait(timeout=1)
    run = await wait_finished(run_id, timeout=2)
    assert run.status == "cancelled"
    last = await RunEvent.objects.filter(run=run).order_by("-seq").afirst()
    assert last.type == "stream_complete" and last.data["status"] == "cancelled"


async def test_on_disconnect_cancel_does_not_queue_behind_the_sync_thread(alice, settings):
    """When many streams drop at once, each disconnect used to queue three trips on Django's one
    sync thread (stale-connection check, reading the run, recording the request) before its run
    stopped: 2,000 of them took 10-25 s to stop, spending model tokens meanwhile. A run of this
    process is now cancelled at once; its end records the request with its status."""
    import time

    from agents_app.runs.engine import get_engine

    settings.OFFLINE_MODEL_DELAY = 0.2
    client, run_id = await stream_until_first_response(alice.token, "A long story", CANCELS_ON_DISCONNECT)
    ctx = get_engine().executor.contexts[run_id]
    busy = asyncio.ensure_future(sync_to_async(time.sleep)(1.5))  # the sync thread is taken
    await asyncio.sleep(0.05)
    await client.disconnect()
    await asyncio.sleep(0.3)
    assert ctx.cancel_mode == "immediate" and not busy.done()
    await busy
    run = await wait_finished(run_id, timeout=3)
    assert run.status == "cancelled" and run.cancel_mode == "immediate"
    assert run.cancel_requested_at is not None and run.cancel_requested_at <= run.finished_at


async def test_tiny_channel_capacity_loses_nothing(alice, settings, monkeypatch):
    """Persist-then-publish: a full channel drops wake-ups; the reader fills the gaps from the DB."""
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 5}}
    }
    settings.RUN_EVENT_BATCH_SIZE = 1
    settings.RUN_EVENT_FLUSH_INTERVAL = 0
    settings.OFFLINE_MODEL_DELAY = 0.003  # one small batch per delta: many wake-ups
    replays = []
    real_replay, real_send = RunCursor.replay, RunStreamConsumer._send

    async def counting_replay(self, check_terminal=True):
        replays.append(self.last)
        return await real_replay(self, check_terminal)

    async def slow_send(self, data, ended):
        await asyncio.sleep(0.03)
        await real_send(self, data, ended)

    monkeypatch.setattr(RunCursor, "replay", counting_replay)
    monkeypatch.setattr(RunStreamConsumer, "_send", slow_send)
    _client, events = await stream_run(
        alice.token, {"input": "Write a detailed paragraph about the sea and ships"}
    )
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) > 20
    assert events[-1]["type"] == "stream_complete"
    assert len(replays) > 1, "expected the reader to fill at least one gap from the database"
    assert await RunEvent.objects.filter(run_id=events[0]["run_id"]).acount() == len(events)


async def test_local_readers_bypass_the_channel_layer(alice, recording_layer):
    """A stream of a run of this process gets its batches from the executor: no group message."""
    _client, events = await stream_run(alice.token, {"input": "Write a detailed paragraph about the sea"})
    assert events[-1]["type"] == "stream_complete" and len(events) > 10
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert recording_layer.called("group_send") == [], "nobody outside this process watched the run"


async def test_joining_a_local_run_needs_no_group(alice, settings, recording_layer):
    """A second reader of a live local run (join) is also served by the executor directly."""
    settings.OFFLINE_MODEL_DELAY = 0.05
    first = SSEClient("POST", "/api/agents/chat/stream", {"input": "Tell me a long story"}, alice.token)
    await first.start()
    await first.read_until(lambda e: e["type"] == "raw_response")
    run_id = first.events()[0]["run_id"]
    joiner = SSEClient("GET", f"/api/runs/{run_id}/stream", None, alice.token)
    assert await joiner.start() == 200
    joined = await joiner.read_all()
    started = await first.read_all()
    assert joined == started and joined[-1]["type"] == "stream_complete"
    assert recording_layer.called("group_add") == []


def test_serving_process_hands_the_gil_over_quickly(settings):
    """The sync thread waits for the GIL after each database round trip; the server shortens
    Python's 5 ms switch interval so that wait does not dominate a request's database work."""
    import sys

    import config.asgi  # noqa: F401  (applies the setting when the server loads it)

    assert settings.GIL_SWITCH_INTERVAL == 0.0002
    assert sys.getswitchinterval() == pytest.approx(settings.GIL_SWITCH_INTERVAL)


def test_serving_process_collects_young_garbage_less_often(settings):
    """Run objects live about a second; Python's 700-allocation young generation scanned them
    dozens of times a second under load, so the server raises it."""
    import gc

    import config.asgi  # noqa: F401  (applies the setting when the server loads it)

    assert settings.GC_GEN0_THRESHOLD == 20_000
    assert gc.get_threshold()[0] == settings.GC_GEN0_THRESHOLD


def _receivers() -> list[asyncio.Task]:
    tasks = [t for t in asyncio.all_tasks() if not t.done()]
    return [t for t in tasks if "LayerChannel._receive" in t.get_coro().__qualname__]


async def test_only_a_reader_of_another_process_s_run_gets_a_channel(
    alice, settings, monkeypatch, recording_layer
):
    """Channels gives every consumer a channel-layer channel and a receive task on it. A stream
    of a run of this process gets its batches from the executor and needs neither (memory per
    idle stream); a reader of another process's run gets one, for as long as it reads."""
    from agents_app.runs import read
    from agents_app.runs.engine import get_engine

    settings.OFFLINE_MODEL_DELAY = 0.02
    await get_engine().executor.ensure_started()  # its control channel is made once, not per stream
    recording_layer.calls.clear()
    client = SSEClient("POST", "/api/agents/chat/stream", {"input": "Tell me a long story"}, alice.token)
    assert await client.start() == 200
    await client.read_chunk()  # the run is going
    assert recording_layer.called("new_channel") == [] and _receivers() == []
    events = await client.read_all()
    assert events[-1]["type"] == "stream_complete" and recording_layer.called("new_channel") == []

    run_id = events[0]["run_id"]
    monkeypatch.setattr(read, "current_engine", lambda: None)  # as if from another process
    last = events[-1]["seq"]
    joiner = SSEClient("GET", f"/api/runs/{run_id}/stream?last_event_id={last}", None, alice.token)
    assert await joiner.start() == 204  # finished and read: nothing to follow, but it made a channel
    assert len(recording_layer.called("new_channel")) == 1
    for _ in range(50):
        if not _receivers():
            break
        await asyncio.sleep(0.01)
    assert _receivers() == [], "the channel's receive task outlived its reader"


async def test_idle_local_stream_keeps_alive_without_reading_the_db(alice, settings, slow_model, monkeypatch):
    """While the model thinks, the stream sends keep-alive comments; its polls read nothing from
    the database, because this process's executor hands over every batch of the run."""
    settings.SSE_KEEPALIVE_INTERVAL = 0.2
    slow_model["seconds"] = 1.2
    replays = []
    real_replay = RunCursor.replay

    async def counting_replay(self, check_terminal=True):
        replays.append(self.last)
        return await real_replay(self, check_terminal)

    monkeypatch.setattr(RunCursor, "replay", counting_replay)
    client, events = await stream_run(alice.token, {"input": "hello"})
    assert events[-1]["type"] == "stream_complete" and events[-1]["final_output"] == "done"
    assert client.raw.count(b": keep-alive\n\n") >= 3
    assert replays == []


async def test_a_finished_stream_ends_without_a_channel_layer_message(alice, recording_layer):
    """Once the response is complete the server delivers `http.disconnect` and the consumer
    leaves on it; ending a stream costs no channel-layer message (a Redis round trip)."""
    client = SSEClient("POST", "/api/agents/chat/stream", {"input": "What is 17 * 23?"}, alice.token)
    assert await client.start() == 200
    events = await client.read_all()  # ends with the http.disconnect a server sends
    assert events[-1]["type"] == "stream_complete"
    await client.comm.wait(timeout=1)  # the consumer has returned
    assert recording_layer.called("send") == []


async def test_a_session_stream_ends_when_the_session_does(alice, client, settings, slow_model):
    """Logged out in another tab: the stream opened with that session ends at the next check (the
    run goes on), and joining again is a 401."""
    settings.SSE_KEEPALIVE_INTERVAL = 0.5
    slow_model["seconds"] = 5
    started = SSEClient("POST", "/api/agents/chat/stream", {"input": "hi"}, alice.token)
    assert await started.start() == 200
    run_id = (await started.read_until(lambda e: e["type"] == "run_started"))[0]["run_id"]
    await sync_to_async(client.force_login)(alice)
    cookie = (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())
    joined = SSEClient("GET", f"/api/runs/{run_id}/stream", None, headers=[cookie])
    assert await joined.start() == 200
    await sync_to_async(client.logout)()
    await asyncio.wait_for(joined.read_all(timeout=3), 3)  # ends, well before the run does
    assert joined.done and (await Run.objects.aget(pk=run_id)).is_active
    again = SSEClient("GET", f"/api/runs/{run_id}/stream", None, headers=[cookie])
    assert await again.start() == 401
    await started.disconnect()


@pytest.mark.parametrize(
    "method,path,allow",
    [
        ("GET", "/api/agents/chat/stream", "POST"),
        ("TRACE", "/api/runs/00000000-0000-0000-0000-000000000000/stream", "GET"),
        ("PUT", "/v1/chat/completions", "POST"),
        ("GET", "/v1/responses", "POST"),
        ("PATCH", "/v1/responses/resp_0", "GET, DELETE"),
        ("GET", "/api/agents/chat/ui", "POST"),
        ("GET", "/api/agents/chat/ag-ui", "POST"),
    ],
)
async def test_a_method_a_stream_does_not_take_is_405_with_allow(alice, method, path, allow):
    """RFC 9110: a 405 names the methods that path takes."""
    client = SSEClient(method, path, None, alice.token)
    assert await client.start() == 405
    assert client.headers["allow"] == allow
    await client.read_chunk()
