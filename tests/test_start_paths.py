"""Every surface starts its runs through the engine's one `start_run`: the same Run row, the same
first events, whichever way the run came in."""

import asyncio
import json
import threading
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.db import connections

from agents_app.models import Conversation, Run, RunEvent
from agents_app.runs import start

from .streams import SSEClient, conversation_ws, stream_run, ws_client, ws_events_until_terminal

pytestmark = pytest.mark.django_db(transaction=True)

# Every module that starts runs, by the name it imported `start_run` under.
CALLERS = [
    "agents_app.api.rest",
    "agents_app.api.sse",
    "agents_app.api.sockets",
    "agents_app.api.openai_v1.chat",
    "agents_app.api.openai_v1.responses",
    "agents_app.api.ai_sdk",
    "agents_app.api.ag_ui",
    "agents_app.management.commands.run_agent",
    "research_app.services",
]


@pytest.fixture
def starts(monkeypatch) -> list[str]:
    """The surfaces' `start_run`, counted (the real one runs)."""
    calls = []
    for module in CALLERS:

        async def counting(*args, _module=module, **kwargs):
            calls.append(_module)
            return await start.start_run(*args, **kwargs)

        monkeypatch.setattr(f"{module}.start_run", counting)
    return calls


async def rest_run(alice, api_for):
    return (await api_for(alice).post("/api/agents/chat/run", {"input": "What is 2 + 2?"})).json()["run_id"]


async def reference_run(alice, api_for):
    body = {"input": "What is 2 + 2?", "session_id": "123"}
    return (await api_for(alice).post("/chat/run", body)).json()["run_id"]


async def sse_stream(alice, api_for):
    return (await stream_run(alice.token, {"input": "What is 2 + 2?"}))[1][0]["run_id"]


async def reference_stream(alice, api_for):
    _, events = await stream_run(alice.token, {"input": "What is 2 + 2?", "session_id": "7"}, "/chat/stream")
    return events[0]["run_id"]


async def socket_run(ws) -> str:
    """A run started over a socket, read to its end: its id."""
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "run", "input": "What is 2 + 2?"})
    events = await ws_events_until_terminal(ws)
    await ws.disconnect()
    return events[0]["run_id"]


async def websocket_run(alice, api_for):
    return await socket_run(ws_client("chat", token=alice.token))


async def research(alice, api_for):
    response = await api_for(alice).post("/api/research/", {"query": "How do volcanoes build islands?"})
    return response.json()["run_id"]


async def reference_research(alice, api_for):
    response = await api_for(alice).post("/research?query=How+do+volcanoes+build+islands%3F")
    return response.json()["run_id"]


async def conversation_socket(alice, api_for):
    conversation = await Conversation.objects.acreate(owner=alice, agent="chat")
    return await socket_run(conversation_ws(conversation.pk, alice.token))


async def v1_chat_completion(alice, api_for):
    body = {"model": "chat", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}
    client = SSEClient("POST", "/v1/chat/completions", body, alice.token)
    assert await client.start() == 200
    while not client.done:  # one JSON answer, once the run has ended
        await client.read_chunk()
    return str(uuid.UUID(client.json()["id"].removeprefix("chatcmpl-")))


async def v1_response(alice, api_for):
    body = {"model": "chat", "input": "What is 2 + 2?", "stream": True}
    _, events = await stream_run(alice.token, body, "/v1/responses")
    return str(uuid.UUID(events[0]["response"]["id"].removeprefix("resp_")))


async def ai_sdk_chat(alice, api_for):
    message = {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "What is 2 + 2?"}]}
    client = SSEClient("POST", "/api/agents/chat/ui", {"id": "chat-1", "messages": [message]}, alice.token)
    assert await client.start() == 200
    while not client.done:  # UI message chunks, then `data: [DONE]`
        await client.read_chunk()
    return json.loads(client.raw.split(b"\n\n")[0].removeprefix(b"data: "))["messageId"]


async def ag_ui_run(alice, api_for):
    body = {
        "threadId": "thread-1",
        "runId": "client-run-1",
        "messages": [{"id": "m1", "role": "user", "content": "What is 2 + 2?"}],
        "state": {},
        "tools": [],
        "context": [],
        "forwardedProps": {},
    }
    _, events = await stream_run(alice.token, body, "/api/agents/chat/ag-ui")
    return events[0]["metadata"]["runId"]


async def run_agent_command(alice, api_for):
    def command():  # in a thread of its own, as from a terminal: the command runs its own loop
        try:
            call_command("run_agent", "chat", "What is 2 + 2?", user=alice.username)
        finally:
            connections.close_all()

    await asyncio.to_thread(command)
    return str((await Run.objects.filter(owner=alice).order_by("-created_at").afirst()).pk)


# Each surface: the module that starts its runs, the agent, and whether the run has a
# conversation (a stateless Chat Completion's input carries its whole history).
SURFACES = {
    rest_run: ("agents_app.api.rest", "chat", True),
    reference_run: ("agents_app.api.rest", "chat", True),
    sse_stream: ("agents_app.api.sse", "chat", True),
    reference_stream: ("agents_app.api.sse", "chat", True),
    websocket_run: ("agents_app.api.sockets", "chat", True),
    conversation_socket: ("agents_app.api.sockets", "chat", True),
    v1_chat_completion: ("agents_app.api.openai_v1.chat", "chat", False),
    v1_response: ("agents_app.api.openai_v1.responses", "chat", True),
    ai_sdk_chat: ("agents_app.api.ai_sdk", "chat", True),
    ag_ui_run: ("agents_app.api.ag_ui", "chat", True),
    research: ("research_app.services", "research", False),
    reference_research: ("research_app.services", "research", False),
    run_agent_command: ("agents_app.management.commands.run_agent", "chat", True),
}


@pytest.mark.parametrize("surface", SURFACES, ids=[surface.__name__ for surface in SURFACES])
async def test_every_surface_starts_its_run_through_start_run(surface, alice, api_for, starts):
    caller, agent, has_conversation = SURFACES[surface]
    run_id = await surface(alice, api_for)
    assert starts == [caller]
    run = await Run.objects.aget(pk=run_id)
    for _ in range(100):  # the research endpoint answers before its run ends
        if not run.is_active:
            break
        await asyncio.sleep(0.05)
        await run.arefresh_from_db()
    assert (run.owner_id, run.agent, run.status) == (alice.pk, agent, "completed")
    assert (run.provider, run.model) == ("offline", "offline-echo-1")
    assert run.worker_channel and run.started_at and run.heartbeat_at and run.finished_at
    assert run.on_disconnect == "continue" and run.last_seq > 1
    assert (run.conversation_id is not None) == has_conversation
    events = [e.data async for e in RunEvent.objects.filter(run=run).order_by("seq")]
    assert events[0] == {
        "type": "run_started",
        "seq": 1,
        "run_id": str(run.pk),
        "conversation_id": str(run.conversation_id) if run.conversation_id else None,
        "agent": agent,
        "provider": "offline",
        "model": "offline-echo-1",
    }
    assert events[-1]["type"] == "stream_complete" and events[-1]["seq"] == run.last_seq
    assert json.loads(json.dumps(events[-1]["usage"])) == run.usage


def test_no_surface_starts_a_run_another_way():
    """Only `start_run` creates runs: nothing else in the project calls `create_run` or inserts one."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parent.parent
    creating = re.compile(r"\bcreate_run\(|\bRun\(|\bRun\.objects\.a?(create|bulk_create|get_or_create)\(")
    offenders = []
    for path in [*root.glob("agents_app/**/*.py"), *root.glob("research_app/**/*.py")]:
        if "migrations" in path.parts or path.name in ("start.py", "models.py"):
            continue
        if creating.search(path.read_text()):
            offenders.append(str(path.relative_to(root)))
    assert offenders == []


async def test_a_run_outliving_its_request_does_its_database_work_off_the_request_thread(alice):
    """Django runs each request in its own sync thread (asgiref's ThreadSensitiveContext), which
    nothing closes after the request: a run's task must not send its database calls there (on
    PostgreSQL each such thread kept a pooled connection). Research runs, whose pipeline writes
    its report as it goes, started from four requests open connections in the same few threads."""
    from asgiref.sync import ThreadSensitiveContext
    from django.db.backends.signals import connection_created

    from agents_app.runs.read import wait_for_end
    from research_app.services import research_start

    threads, request_threads, runs = set(), set(), []

    def opened(sender, connection, **kwargs):
        threads.add(threading.current_thread())

    connection_created.connect(opened)
    try:
        for n in range(4):
            async with ThreadSensitiveContext():  # what Django's ASGI handler wraps a request in
                request_threads.add(await sync_to_async(threading.current_thread)())
                run, _report = await research_start(user=alice, query=f"How do volcanoes form? ({n})")
            runs.append(run)
        await asyncio.wait_for(asyncio.gather(*map(wait_for_end, runs)), 30)
    finally:
        connection_created.disconnect(opened)
    assert await Run.objects.filter(status="completed").acount() == 4
    runs_threads = threads - request_threads
    assert len(runs_threads) <= 2, [thread.name for thread in runs_threads]
