"""The AI SDK UI message stream adapter (docs/ai-sdk.md): the chunks it writes, its refusals in the
protocol's error shape, resume; and the `ai` package itself reading it (tests/node/ai_sdk.test.mjs)."""

import json

import pytest

from agents_app.api.ai_sdk import openapi_paths
from agents_app.api.ai_sdk_chunks import UIMessageTranslator
from agents_app.models import Conversation, Run, RunEvent

from .live_server import serving
from .node_clients import run_node_tests
from .streams import SSEClient, wait_finished

pytestmark = pytest.mark.django_db(transaction=True)


def chat_body(text="What is 17 * 23?", chat_id="chat-1", **extra) -> dict:
    message = {"id": "m1", "role": "user", "parts": [{"type": "text", "text": text}]}
    return {"id": chat_id, "messages": [message], "trigger": "submit-message", "messageId": None, **extra}


def chunks_of(raw: bytes) -> list:
    """The `data:` payloads of a UI message stream: chunk dicts, and the closing "[DONE]"."""
    out = []
    for block in raw.decode().split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: "):
                payload = line[6:]
                out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def assembled_text(chunks: list) -> str:
    return "".join(c["delta"] for c in chunks if isinstance(c, dict) and c["type"] == "text-delta")


async def read_to_end(client: SSEClient) -> SSEClient:
    while not client.done:
        await client.read_chunk(10)
    return client


async def ui_stream(token, body, slug="chat") -> tuple[SSEClient, list]:
    client = SSEClient("POST", f"/api/agents/{slug}/ui", body, token)
    assert await client.start() == 200, client.raw
    await read_to_end(client)
    return client, chunks_of(client.raw)


async def test_tool_call_run_as_ui_message_chunks(alice):
    client, chunks = await ui_stream(alice.token, chat_body())
    assert client.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert client.headers["content-type"].startswith("text/event-stream")
    run = await Run.objects.aget(owner=alice)
    assert chunks[0] == {
        "type": "start",
        "messageId": str(run.pk),
        "messageMetadata": {
            "run_id": str(run.pk),
            "conversation_id": str(run.conversation_id),
            "status": "running",
            "agent": "chat",
            "model": run.model,
        },
    }
    assert chunks[-1] == "[DONE]"
    finish = chunks[-2]
    assert finish["type"] == "finish" and finish["finishReason"] == "stop"
    assert finish["messageMetadata"]["usage"]["total_tokens"] == run.total_tokens > 0
    assert finish["messageMetadata"]["status"] == "completed"
    assert assembled_text(chunks) == run.final_output and "391" in run.final_output
    call = next(c for c in chunks if c["type"] == "tool-input-available")
    assert call["toolName"] == "calculate" and call["input"] == {"expression": "17 * 23"}
    result = next(c for c in chunks if c["type"] == "tool-output-available")
    assert result == {"type": "tool-output-available", "toolCallId": call["toolCallId"], "output": "391"}
    # Steps as streamText writes them: the tool call's step ends before the answer's.
    kinds = [c["type"] for c in chunks[:-1]]
    assert kinds.count("start-step") == kinds.count("finish-step") == 2
    assert kinds.index("tool-output-available") < kinds.index("finish-step") < kinds.index("text-start")
    # Every text part is opened once, then closed.
    ids = [c["id"] for c in chunks[:-1] if c["type"] == "text-start"]
    assert ids == [c["id"] for c in chunks[:-1] if c["type"] == "text-end"] and len(set(ids)) == len(ids)
    conversation = await Conversation.objects.aget(pk=run.conversation_id)
    assert conversation.session_key == "chat-1" and run.input == "What is 17 * 23?"


async def test_the_chat_id_is_the_conversation_and_only_the_last_message_is_sent(alice):
    await ui_stream(alice.token, chat_body("My name is Ada", chat_id="c-2"))
    # A history that says otherwise: only its last message is read.
    history = [
        {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "My name is Zed"}]},
        {"id": "a1", "role": "assistant", "parts": [{"type": "text", "text": "Hello Zed"}]},
        {
            "id": "m2",
            "role": "user",
            "parts": [{"type": "text", "text": "What"}, {"type": "text", "text": "is my name?"}],
        },
    ]
    _client, chunks = await ui_stream(alice.token, {"id": "c-2", "messages": history})
    runs = [r async for r in Run.objects.filter(owner=alice).order_by("created_at")]
    assert [r.input for r in runs] == ["My name is Ada", "What\nis my name?"]
    assert runs[0].conversation_id == runs[1].conversation_id
    answer = assembled_text(chunks)
    assert "Ada" in answer and "Zed" not in answer  # the server's memory, not the resent history


def raw(event_type: str, **fields) -> dict:
    return {"type": "raw_response", "event_type": event_type, **fields}


def item(name: str, **fields) -> dict:
    return {"type": "run_item", "name": name, **fields}


def kinds(chunks: list) -> list[str]:
    return [c if c == "[DONE]" else c["type"] for c in chunks]


def test_translator_handoff_reasoning_cancel_and_error_chunks():
    """Events the offline chat run does not produce, translated one by one."""
    events = [
        {"type": "run_queued", "conversation_id": "c", "position": 1},
        {"type": "run_started", "conversation_id": "c", "agent": "assistant", "model": "m"},
        raw("response.reasoning_summary_text.delta", delta="hm", item_id="rs"),
        raw("response.output_text.delta", delta="Over", item_id="t1"),
        raw("response.completed", response_id="resp"),
        item("handoff_requested", tool_name="transfer_to_math", tool_arguments="{}", call_id="h1"),
        item("handoff_occured", source_agent="Assistant", target_agent="Math"),
        {"type": "agent_updated", "agent_name": "Math"},
        raw("response.output_text.delta", delta="4", item_id="t2"),
        {"type": "stream_complete", "status": "cancelled", "final_output": "4", "conversation_id": "c"},
    ]
    translator = UIMessageTranslator()
    batch = [(seq, json.dumps({**e, "seq": seq, "run_id": "r-1"})) for seq, e in enumerate(events, 1)]
    chunks = chunks_of(translator.frames(batch[:4]) + translator.frames(batch[4:]))
    assert kinds(chunks) == [
        "start", "message-metadata", "start-step", "reasoning-start", "reasoning-delta",
        "text-start", "text-delta", "text-end", "reasoning-end",
        "tool-input-available", "tool-output-available", "message-metadata", "finish-step",
        "start-step", "text-start", "text-delta", "text-end", "finish-step",
        "message-metadata", "abort", "[DONE]",
    ]  # fmt: skip
    assert chunks[0]["messageMetadata"]["status"] == "queued"
    assert chunks[1]["messageMetadata"]["agent"] == "assistant"
    assert chunks[10] == {
        "type": "tool-output-available",
        "toolCallId": "h1",
        "output": {"source_agent": "Assistant", "target_agent": "Math"},
    }
    assert chunks[18]["messageMetadata"]["status"] == "cancelled"

    failed = UIMessageTranslator()
    error = {"type": "error", "seq": 1, "run_id": "r-1", "code": "model_unavailable", "message": "down"}
    chunks = chunks_of(failed.frames([(1, json.dumps(error))]))
    assert kinds(chunks) == ["start", "message-metadata", "error", "[DONE]"]
    assert chunks[1]["messageMetadata"]["error_code"] == "model_unavailable"
    assert chunks[2]["errorText"] == "down"


def test_a_restarted_turn_closes_its_parts_and_names_them():
    """Worker mode: a turn cut by a dead worker is done again; the client learns which parts and
    tool calls were the cut turn's, and the turn streams again in new parts."""
    events = [
        {"type": "run_started", "conversation_id": "c", "agent": "chat", "model": "m"},
        raw("response.completed", response_id="resp"),
        item("tool_called", tool_name="calculate", tool_arguments="{}", call_id="k1"),
        item("tool_output", call_id="k1", output="42"),
        raw("response.output_text.delta", delta="6*7 ", item_id="cut"),
        {"type": "turn_restarted", "turn": 2, "reason": "the worker running it stopped", "after_seq": 4},
        raw("response.output_text.delta", delta="6*7 = 42.", item_id="again"),
        {
            "type": "stream_complete",
            "status": "completed",
            "final_output": "6*7 = 42.",
            "conversation_id": "c",
        },
    ]
    translator = UIMessageTranslator()
    batch = [(seq, json.dumps({**e, "seq": seq, "run_id": "r-1"})) for seq, e in enumerate(events, 1)]
    chunks = chunks_of(translator.frames(batch))
    restarted = next(c for c in chunks if c != "[DONE]" and c["type"] == "data-turn-restarted")
    assert restarted["data"] == {
        "turn": 2,
        "reason": "the worker running it stopped",
        "discardPartIds": ["cut"],
    }
    at = chunks.index(restarted)
    assert {"type": "text-end", "id": "cut"} in chunks[:at]
    assert {"type": "text-start", "id": "again"} in chunks[at:]


def last_message(role="user", **message) -> bytes:
    return json.dumps({"id": "c", "messages": [{"role": role, **message}]}).encode()


@pytest.mark.parametrize(
    "raw, fields",
    [
        (b"{not json", None),
        (b"[]", "non_field_errors"),
        (json.dumps({"messages": chat_body()["messages"]}).encode(), "id"),
        (json.dumps(chat_body(chat_id="")).encode(), "id"),
        (json.dumps(chat_body(chat_id="x" * 129)).encode(), "id"),
        (json.dumps({**chat_body(), "id": 42}).encode(), "id"),
        (json.dumps({**chat_body(), "messages": []}).encode(), "messages"),
        (json.dumps({**chat_body(), "trigger": "nope"}).encode(), "trigger"),
        (last_message("assistant", parts=[{"type": "text", "text": "hi"}]), "messages"),
        (last_message(parts=[{"type": "text", "text": "  "}]), "messages"),
        (last_message(parts=[{"type": "file", "url": "data:,x", "mediaType": "text/plain"}]), "messages"),
        (last_message(content="no parts"), "messages"),
    ],
)
async def test_bad_input_is_a_400_error_chunk_and_starts_nothing(alice, raw, fields):
    client = SSEClient("POST", "/api/agents/chat/ui", raw, alice.token)
    assert await client.start() == 400
    await read_to_end(client)
    body = client.json()
    assert body["type"] == "error" and body["code"] in ("invalid", "parse_error") and body["errorText"]
    if fields:
        assert fields in body["fields"], body
    assert client.headers["content-type"] == "application/json"
    assert not await Run.objects.aexists() and not await Conversation.objects.aexists()


async def test_unknown_agent_unauthenticated_and_wrong_method(alice):
    client = SSEClient("POST", "/api/agents/nope/ui", chat_body(), alice.token)
    assert await client.start() == 404
    await read_to_end(client)
    assert client.json()["code"] == "not_found" and "nope" in client.json()["errorText"]

    client = SSEClient("POST", "/api/agents/chat/ui", chat_body())
    assert await client.start() == 401
    await read_to_end(client)
    assert client.json()["type"] == "error" and client.json()["code"] == "not_authenticated"
    assert client.headers["www-authenticate"] == "Token"

    client = SSEClient("GET", "/api/agents/chat/ui", None, alice.token)
    assert await client.start() == 405
    await read_to_end(client)
    assert client.json()["code"] == "method_not_allowed"
    assert not await Run.objects.aexists()


async def test_busy_chat_is_a_409_error_chunk(alice, slow_model):
    first = SSEClient("POST", "/api/agents/chat/ui", chat_body(chat_id="busy"), alice.token)
    assert await first.start() == 200
    second = SSEClient("POST", "/api/agents/chat/ui", chat_body(chat_id="busy"), alice.token)
    assert await second.start() == 409
    await read_to_end(second)
    run = await Run.objects.aget(owner=alice)
    assert second.json()["code"] == "conversation_busy" and second.json()["active_run_id"] == str(run.pk)
    await first.disconnect()


async def resume(token, chat_id, slug="chat") -> SSEClient:
    """GET the resume endpoint (`chat_id` as the server sees it: servers decode the path)."""
    client = SSEClient("GET", f"/api/agents/{slug}/ui/{chat_id}/stream", None, token)
    await client.start()
    await read_to_end(client)
    return client


async def test_resume_replays_the_active_run_from_its_start(alice, bob, slow_model):
    slow_model["seconds"] = 1.5  # the run outlasts the requests before the resume
    first = SSEClient("POST", "/api/agents/chat/ui", chat_body("hello", chat_id="c/1"), alice.token)
    assert await first.start() == 200
    await first.read_chunk()  # the `start` chunk: the run is live
    await first.disconnect()  # the run goes on (on_disconnect continue)
    run = await Run.objects.aget(owner=alice)

    # Another user's chat id has nothing to resume, and shows nothing of it.
    other = await resume(bob.token, "c/1")
    assert other.status == 204 and other.raw == b""
    anonymous = await resume(None, "c/1")
    assert anonymous.status == 401 and anonymous.json()["code"] == "not_authenticated"
    assert (await resume(alice.token, "c/1", slug="nope")).status == 404
    too_long = await resume(alice.token, "x" * 129)
    assert too_long.status == 400 and "chat_id" in too_long.json()["fields"]

    resumed = await resume(alice.token, "c/1")
    assert resumed.status == 200 and resumed.headers["x-vercel-ai-ui-message-stream"] == "v1"
    chunks = chunks_of(resumed.raw)
    assert chunks[0]["type"] == "start" and chunks[0]["messageId"] == str(run.pk)
    assert chunks[-2]["type"] == "finish" and chunks[-1] == "[DONE]"
    run = await wait_finished(run.pk)
    assert assembled_text(chunks) == run.final_output == "done"

    # The run has ended: nothing to resume.
    idle = await resume(alice.token, "c/1")
    assert idle.status == 204 and idle.raw == b""


async def test_resume_of_a_finished_run_translates_the_same(alice):
    """A replay from the journal gives the very chunks the live stream gave."""
    _client, live = await ui_stream(alice.token, chat_body())
    run = await Run.objects.aget(owner=alice)
    batch = [(e.seq, json.dumps(e.data)) async for e in RunEvent.objects.filter(run=run).order_by("seq")]
    assert chunks_of(UIMessageTranslator().frames(batch)) == live


async def test_agent_without_memory_ignores_the_chat_id(alice):
    _client, chunks = await ui_stream(alice.token, chat_body("solar power", chat_id="r-1"), slug="research")
    run = await Run.objects.aget(owner=alice)
    assert run.agent == "research" and run.conversation_id is None
    assert chunks[-2]["type"] == "finish" and chunks[-1] == "[DONE]"
    assert any(c["type"] == "data-research-progress" for c in chunks[:-1])
    assert assembled_text(chunks)
    resumed = await resume(alice.token, "r-1", slug="research")
    assert resumed.status == 204


def test_openapi_paths_document_both_endpoints():
    paths = openapi_paths()
    post = paths["/api/agents/{slug}/ui"]["post"]
    assert {"200", "400", "401", "404"} <= post["responses"].keys()
    assert "text/event-stream" in post["responses"]["200"]["content"]
    get = paths["/api/agents/{slug}/ui/{chat_id}/stream"]["get"]
    assert {"200", "204", "404"} <= get["responses"].keys()


@pytest.fixture(scope="module")
def live_url(django_db_setup, django_db_blocker):
    with serving() as url:
        yield url


@pytest.mark.live
def test_the_ai_package_reads_the_stream(live_url, alice):
    run_node_tests("ai_sdk.test.mjs", live_url, alice.token)
