"""Run lifecycle: one active run per conversation, cancel modes, stale runs, stored events, admin."""

import asyncio
import time
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from agents_app.models import Conversation, ConversationItem, Run, RunEvent
from agents_app.runs.engine import sweep_stale_runs

from .streams import SSEClient, lifespan_shutdown, stream_run, stream_until_first_delta, ws_client

pytestmark = pytest.mark.django_db(transaction=True)


async def test_twenty_posts_to_one_conversation_give_one_run(api_for, alice, slow_model):
    slow_model["seconds"] = 0.5
    api = api_for(alice)
    conversation = await Conversation.objects.acreate(owner=alice, agent="chat")
    body = {"input": "hello", "conversation_id": str(conversation.pk)}
    responses = await asyncio.gather(*(api.post("/api/agents/chat/run", body) for _ in range(20)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] + [409] * 19
    winner = next(r for r in responses if r.status_code == 200).json()
    for busy in (r for r in responses if r.status_code == 409):
        error = busy.json()["error"]
        assert error["code"] == "conversation_busy" and error["active_run_id"] == winner["run_id"]
    assert await Run.objects.acount() == 1
    # Once it is over the conversation takes new runs again.
    assert (await api.post("/api/agents/chat/run", body)).status_code == 200


async def test_active_runs_per_user_are_capped_across_simultaneous_starts(
    api_for, alice, slow_model, settings
):
    settings.AGENTS_MAX_ACTIVE_RUNS_PER_USER = 3
    # Long enough that all 50 starts are in before the first runs end, on a loaded 2-core machine
    # too (at 0.5 s, with other suites running, later starts found the first three over).
    slow_model["seconds"] = 2.0
    api = api_for(alice)
    responses = await asyncio.gather(*(api.post("/api/agents/chat/run", {"input": "hi"}) for _ in range(50)))
    assert sorted(r.status_code for r in responses) == [200] * 3 + [429] * 47
    error = next(r for r in responses if r.status_code == 429).json()["error"]
    assert error["code"] == "too_many_runs" and error["limit"] == 3 and len(error["active_run_ids"]) == 3
    # A refused start leaves nothing behind (not even a new conversation).
    assert await Run.objects.acount() == await Conversation.objects.acount() == 3
    # Once they are over, alice may start again.
    assert (await api.post("/api/agents/chat/run", {"input": "hi"})).status_code == 200


async def test_a_busy_conversation_is_409_with_the_run_cap_on_too(api_for, alice, slow_model, settings):
    """With the cap on, the run is inserted inside the cap's transaction: the refused insert
    must not break that transaction (PostgreSQL aborts it) before the 409 is worked out."""
    settings.AGENTS_MAX_ACTIVE_RUNS_PER_USER = 5
    slow_model["seconds"] = 0.5
    api = api_for(alice)
    conversation = await Conversation.objects.acreate(owner=alice, agent="chat")
    body = {"input": "hello", "conversation_id": str(conversation.pk)}
    responses = await asyncio.gather(*(api.post("/api/agents/chat/run", body) for _ in range(4)))
    assert sorted(r.status_code for r in responses) == [200, 409, 409, 409]
    winner = next(r for r in responses if r.status_code == 200).json()
    for busy in (r for r in responses if r.status_code == 409):
        assert busy.json()["error"]["active_run_id"] == winner["run_id"]
    assert await Run.objects.acount() == 1


async def test_the_run_cap_over_sse_and_websocket(alice, bob, slow_model, settings):
    settings.AGENTS_MAX_ACTIVE_RUNS_PER_USER = 1
    slow_model["seconds"] = 2
    first = SSEClient("POST", "/api/agents/chat/stream", {"input": "one"}, alice.token)
    assert await first.start() == 200
    second = SSEClient("POST", "/api/agents/chat/stream", {"input": "two"}, alice.token)
    assert await second.start() == 429
    await second.read_all()
    assert second.json()["error"]["code"] == "too_many_runs"
    ws = ws_client("chat", token=alice.token)
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "run", "input": "three"})
    error = await ws.receive_json_from(5)
    assert error["type"] == "error" and error["code"] == "too_many_runs"
    await ws.disconnect()
    other = SSEClient("POST", "/api/agents/chat/stream", {"input": "bob's"}, bob.token)
    assert await other.start() == 200
    await first.disconnect()
    await other.disconnect()


async def test_busy_conversation_over_sse(api_for, alice, settings):
    settings.OFFLINE_MODEL_DELAY = 0.05
    first = SSEClient(
        "POST", "/api/agents/chat/stream", {"input": "long story", "session_id": "s"}, alice.token
    )
    await first.start()
    await first.read_until(lambda e: e["type"] == "run_started")
    second = SSEClient("POST", "/api/agents/chat/stream", {"input": "again", "session_id": "s"}, alice.token)
    assert await second.start() == 409
    await second.read_all()
    assert second.json()["error"]["active_run_id"] == first.events()[0]["run_id"]
    await first.read_all()


async def start_slow_stream(alice, settings, text="Tell me a long story about forests"):
    settings.OFFLINE_MODEL_DELAY = 0.1
    client = SSEClient("POST", "/api/agents/chat/stream", {"input": text}, alice.token)
    await client.start()
    await client.read_until(lambda e: e["type"] == "raw_response")
    return client, client.events()[0]["run_id"]


async def test_cancel_immediate_keeps_partial_output_and_usage(api_for, alice, settings):
    client, run_id = await start_slow_stream(alice, settings)
    response = await api_for(alice).post(f"/api/runs/{run_id}/cancel", {"mode": "immediate"})
    assert response.status_code == 202
    events = await client.read_all(timeout=2)
    terminal = events[-1]
    assert terminal["type"] == "stream_complete" and terminal["status"] == "cancelled"
    run = await Run.objects.aget(pk=run_id)
    assert run.status == "cancelled" and run.cancel_mode == "immediate"
    partial = "".join(e["delta"] for e in events if e.get("event_type") == "response.output_text.delta")
    assert run.final_output == partial and partial
    again = await api_for(alice).post(f"/api/runs/{run_id}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "run_not_active"


async def test_cancel_after_turn_finishes_the_turn(api_for, alice, settings):
    client, run_id = await start_slow_stream(alice, settings, "What is 2 + 2?")
    assert (
        await api_for(alice).post(f"/api/runs/{run_id}/cancel", {"mode": "after_turn"})
    ).status_code == 202
    events = await client.read_all(timeout=10)
    assert events[-1]["status"] == "cancelled"
    run = await Run.objects.aget(pk=run_id)
    assert run.status == "cancelled" and run.cancel_mode == "after_turn"
    assert run.requests >= 1


async def test_cancel_bad_mode(api_for, alice, settings):
    client, run_id = await start_slow_stream(alice, settings)
    response = await api_for(alice).post(f"/api/runs/{run_id}/cancel", {"mode": "later"})
    assert response.status_code == 400 and "mode" in response.json()["error"]["fields"]
    await api_for(alice).post(f"/api/runs/{run_id}/cancel")
    await client.read_all()


async def test_stale_run_is_interrupted_on_read_and_sweep(api_for, alice, settings):
    conversation = await Conversation.objects.acreate(owner=alice, agent="chat")
    old = timezone.now() - timedelta(seconds=settings.RUN_STALE_AFTER + 5)
    dead = await Run.objects.acreate(
        owner=alice, agent="chat", conversation=conversation, input="x", status="running"
    )
    await Run.objects.filter(pk=dead.pk).aupdate(heartbeat_at=old, created_at=old)
    body = (await api_for(alice).get(f"/api/runs/{dead.pk}/")).json()
    assert body["status"] == "interrupted"
    terminal = await RunEvent.objects.aget(run=dead)
    assert terminal.type == "error" and terminal.data["code"] == "interrupted"
    # The conversation is usable again.
    response = await api_for(alice).post(
        "/api/agents/chat/run", {"input": "hi", "conversation_id": str(conversation.pk)}
    )
    assert response.status_code == 200
    other = await Run.objects.acreate(owner=alice, agent="chat", input="y", status="queued")
    await Run.objects.filter(pk=other.pk).aupdate(created_at=old)
    assert await sweep_stale_runs() == 1
    assert (await Run.objects.aget(pk=other.pk)).status == "interrupted"
    join = SSEClient("GET", f"/api/runs/{other.pk}/stream", token=alice.token)
    assert await join.start() == 200
    assert (await join.read_all())[-1]["code"] == "interrupted"


async def test_a_conversation_held_by_a_dead_process_s_run_takes_a_new_one(alice, settings):
    """The run that holds the conversation is stale (its process died, nobody read it yet): a
    new start ends it `interrupted` and goes ahead, over SSE as over REST."""
    conversation = await Conversation.objects.acreate(owner=alice, agent="chat")
    old = timezone.now() - timedelta(seconds=settings.RUN_STALE_AFTER + 5)
    dead = await Run.objects.acreate(
        owner=alice, agent="chat", conversation=conversation, input="x", status="running"
    )
    await Run.objects.filter(pk=dead.pk).aupdate(heartbeat_at=old, created_at=old)
    _, events = await stream_run(alice.token, {"input": "hi", "conversation_id": str(conversation.pk)})
    assert events[-1]["status"] == "completed"
    assert (await Run.objects.aget(pk=dead.pk)).status == "interrupted"


async def test_live_run_is_not_swept(api_for, alice, settings):
    client, run_id = await start_slow_stream(alice, settings)
    assert await sweep_stale_runs() == 0
    await asyncio.sleep(1.2)  # heartbeats keep it fresh
    assert (await Run.objects.aget(pk=run_id)).heartbeat_at > timezone.now() - timedelta(seconds=1)
    await api_for(alice).post(f"/api/runs/{run_id}/cancel")
    await client.read_all()


async def test_events_endpoint_paginates(api_for, alice):
    api = api_for(alice)
    body = (await api.post("/api/agents/chat/run", {"input": "Tell me about the weather"})).json()
    total = await RunEvent.objects.filter(run_id=body["run_id"]).acount()
    page = (await api.get(f"/api/runs/{body['run_id']}/events/?after=2&limit=3")).json()
    assert page["count"] == total - 2
    assert [e["seq"] for e in page["results"]] == [3, 4, 5]
    assert page["next"]
    assert (await api.get(f"/api/runs/{body['run_id']}/events/?after=x")).status_code == 400
    last = (await api.get(f"/api/runs/{body['run_id']}/events/?after={total - 1}")).json()["results"]
    assert last[0]["type"] == "stream_complete"


async def test_run_list_filters(api_for, alice):
    api = api_for(alice)
    await api.post("/api/agents/chat/run", {"input": "one"})
    await api.post("/api/agents/assistant/run", {"input": "two"})
    assert (await api.get("/api/runs/?agent=assistant")).json()["count"] == 1
    assert (await api.get("/api/runs/?status=completed")).json()["count"] == 2
    conversation = (await api.get("/api/runs/?agent=chat")).json()["results"][0]["conversation"]
    assert (await api.get(f"/api/runs?conversation={conversation}")).json()["count"] == 1
    for query, field in (("status=done", "status"), ("conversation=not-a-uuid", "conversation")):
        response = await api.get(f"/api/runs/?{query}")
        assert response.status_code == 400, response.content
        assert response.json()["error"]["fields"][field]


async def test_run_paths_take_the_slash_or_leave_it(api_for, alice):
    api = api_for(alice)
    run_id = (await api.post("/api/agents/chat/run", {"input": "one"})).json()["run_id"]
    paths = (("/api/runs", ""), (f"/api/runs/{run_id}", ""), (f"/api/runs/{run_id}/events", "?after=1"))
    for path, query in paths:
        plain, slashed = await api.get(path + query), await api.get(path + "/" + query)
        assert plain.status_code == slashed.status_code == 200, (path, plain.status_code)
        assert plain.json() == slashed.json()


async def test_admin_pages_and_cancel_action(api_for, alice, admin_client, settings):
    body = (await api_for(alice).post("/api/agents/chat/run", {"input": "What is 3 * 3?"})).json()
    run_id, conversation_id = body["run_id"], body["conversation_id"]
    get = sync_to_async(admin_client.get)
    for path in (
        "/admin/agents_app/run/",
        "/admin/agents_app/run/?status__exact=completed&agent=chat",
        "/admin/agents_app/run/?error_code=model_rate_limited",
        f"/admin/agents_app/run/?q={run_id}",
        f"/admin/agents_app/run/{run_id}/change/",
        f"/admin/agents_app/run/{run_id}/change/?events_page=2",
        "/admin/agents_app/conversation/",
        f"/admin/agents_app/conversation/{conversation_id}/change/",
        "/admin/agents_app/runevent/",
        "/admin/tokens_app/apitoken/",
    ):
        response = await get(path)
        assert response.status_code == 200, path
    page = (await get(f"/admin/agents_app/run/{run_id}/change/")).content.decode()
    assert "stream_complete" in page and "calculate" in page
    listing = (await get(f"/admin/agents_app/run/?q={run_id}")).content.decode()
    assert run_id[:8] in listing
    assert "By error code" in listing  # staff tell upstream failures from this server's own


async def test_admin_run_page_folds_a_long_stream_into_its_message(alice, admin_client):
    run = await Run.objects.acreate(owner=alice, agent="chat", input="x", status="completed")
    delta = {"type": "raw_response", "event_type": "response.output_text.delta", "item_id": "msg_1"}
    await RunEvent.objects.abulk_create(
        [
            RunEvent(run=run, seq=i, type="raw_response", data={**delta, "seq": i, "delta": f"tok{i:03d} "})
            for i in range(1, 121)
        ]
    )
    page = (await sync_to_async(admin_client.get)(f"/admin/agents_app/run/{run.pk}/change/")).content.decode()
    assert "tok001" in page and "tok120" in page and "120 deltas, seq 1\u2013120" in page


async def test_admin_cancel_action(alice, admin_client, settings):
    client, run_id = await start_slow_stream(alice, settings)
    post = sync_to_async(admin_client.post)
    response = await post("/admin/agents_app/run/", {"action": "cancel_runs", "_selected_action": [run_id]})
    assert response.status_code == 302
    events = await client.read_all(timeout=3)
    assert events[-1]["status"] == "cancelled"


async def test_reader_in_another_process_gets_the_run_through_its_group(alice, settings, monkeypatch):
    """A reader outside the owning process joins the run's group and sends `run.watch` to the
    owner's control channel; from then on the owner publishes the run's batches to the group."""

    from agents_app.registry import get_spec
    from agents_app.runs import read
    from agents_app.runs.engine import get_engine
    from agents_app.runs.start import RunRequest, start_run

    settings.OFFLINE_MODEL_DELAY = 0.05
    run = await start_run(RunRequest(user=alice, spec=get_spec("chat"), input="Tell me a long story"))
    engine = get_engine()
    task = engine.executor.tasks[str(run.pk)]
    assert run.worker_channel == engine.executor.channel_name
    assert str(run.pk) not in engine.hub.watched
    inbox = read.Inbox()
    channel = read.LayerChannel(inbox)
    monkeypatch.setattr(read, "current_engine", lambda: None)  # as if in another process
    follower = read.RunCursor(run.pk)
    await follower.follow(run, channel)
    assert follower.local is False
    events = []
    while not follower.ended:
        await asyncio.wait_for(inbox.wait(), timeout=5)
        messages = inbox.take()
        assert {m["type"] for m in messages} == {"run.events"}
        for message in messages:
            batch, _ended = await follower.on_message(message)
            events += [seq for seq, _text in batch]
    await follower.unfollow(channel)
    await channel.close()
    await task
    assert str(run.pk) not in engine.hub.watched  # forgotten once the run is over
    stored = [seq async for seq in RunEvent.objects.filter(run=run).values_list("seq", flat=True)]
    assert events == stored and len(events) > 10


async def test_a_follower_cancelled_as_new_events_arrive_stops(alice):
    """A RunFollower (the commands' reader) waited for new events with `asyncio.wait_for`,
    which on Python 3.11 swallows a cancel that lands just as the wait ends: the reader then
    went on following the run. The cancel is walked across the loop turns after a wake-up; the
    follower's pump stops with its reader."""
    from agents_app.runs.read import RunFollower

    run = await Run.objects.acreate(owner=alice, agent="chat", input="x", status="running")

    async def read(follower):
        async for _ in follower.events(run):
            pass

    stuck, pumps = [], []
    for turns in range(8):
        follower = RunFollower()
        reader = asyncio.create_task(read(follower))
        await asyncio.sleep(0.05)  # replayed nothing, now waiting for events
        follower.inbox.wake()
        for _ in range(turns):
            await asyncio.sleep(0)
        reader.cancel()
        await asyncio.wait([reader], timeout=0.5)
        if not reader.done():
            stuck.append(turns)
            reader.cancel()
            await asyncio.wait([reader], timeout=1)
        await asyncio.sleep(0)
        pumps.append(follower.reader.pump)
    assert stuck == [], f"readers cancelled after these loop turns kept reading: {stuck}"
    assert all(pump is not None and pump.done() for pump in pumps)


async def test_shutdown_interrupts_the_runs_that_outlast_the_grace(alice, settings):
    settings.OFFLINE_MODEL_DELAY, settings.RUN_SHUTDOWN_GRACE = 0.05, 0.1
    client = await stream_until_first_delta(alice)
    await lifespan_shutdown()
    events = await client.read_all()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "error" and events[-1]["code"] == "interrupted"
    run = await Run.objects.aget(pk=events[0]["run_id"])
    assert (run.status, run.error_code, run.last_seq) == ("interrupted", "interrupted", events[-1]["seq"])
    assert run.final_output and run.final_output in "".join(e.get("delta", "") for e in events)
    # Like a run whose process died, it leaves the conversation's memory as it was.
    assert not await ConversationItem.objects.filter(conversation_id=run.conversation_id).aexists()


async def test_shutdown_lets_runs_finish_within_the_grace(alice, settings):
    settings.OFFLINE_MODEL_DELAY, settings.RUN_SHUTDOWN_GRACE = 0.02, 10
    client = await stream_until_first_delta(alice)
    started = time.monotonic()
    await lifespan_shutdown()
    assert time.monotonic() - started < 5  # it waited for the run, not for the whole grace
    events = await client.read_all()
    assert events[-1]["type"] == "stream_complete" and events[-1]["status"] == "completed"


@pytest.mark.django_db
def test_a_started_run_holds_no_user_or_token():
    """A run's instance lives as long as the run (its executor and its readers hold it); it used
    to keep the user it was created with, and through the one-to-one cache the token that
    authenticated the request: memory per idle stream for nothing."""
    from django.contrib.auth import get_user_model

    from agents_app.registry import get_spec
    from agents_app.runs.start import RunRequest, create_run
    from tokens_app.auth import authenticate_key
    from tokens_app.models import token_create

    user = get_user_model().objects.create_user("carol", password="pw")
    token = authenticate_key(token_create(user, "t")[1])
    for session_key in (None, "s-1"):
        run, _fresh = create_run(RunRequest(token.user, get_spec("chat"), "hi", session_key=session_key), "w")
        assert run.owner_id == user.pk and run.conversation.owner_id == user.pk
        assert not Run.owner.is_cached(run)
        assert not Conversation.owner.is_cached(run.conversation)
        Run.objects.filter(pk=run.pk).update(status="completed")


async def test_runs_of_a_built_in_agent_share_one_agent(alice, monkeypatch):
    """The chat agent is built once, not per run; runs on it at once still keep apart."""
    from agents_app.runs.context import RunContext

    agents = []
    stream_agent = RunContext.stream_agent

    async def recording(self, agent, input, **kwargs):
        agents.append(agent)
        return await stream_agent(self, agent, input, **kwargs)

    monkeypatch.setattr(RunContext, "stream_agent", recording)
    (_, first), (_, second) = await asyncio.gather(
        stream_run(alice.token, {"input": "hello there"}), stream_run(alice.token, {"input": "what is 6 * 7"})
    )
    assert len(agents) == 2 and agents[0] is agents[1]
    assert first[-1]["status"] == second[-1]["status"] == "completed"
    assert "42" in second[-1]["final_output"] and "42" not in first[-1]["final_output"]
