"""The AG-UI adapter (docs/ag-ui.md): RunAgentInput in, events built with `ag_ui.core` out, refusals
shaped as RUN_ERROR; and `@ag-ui/client`'s HttpAgent itself running agents (tests/node/ag_ui.test.mjs)."""

import json

import pytest
from ag_ui.core import Event
from pydantic import TypeAdapter

from agents_app.api.ag_ui import openapi_paths
from agents_app.api.ag_ui_events import AgUiTranslator
from agents_app.models import Conversation, ConversationItem, Run

from .live_server import serving
from .node_clients import run_node_tests
from .streams import SSEClient, wait_finished

pytestmark = pytest.mark.django_db(transaction=True)
EVENT = TypeAdapter(Event)


def run_input(text="what is 17 * 23?", thread_id="thread-1", run_id="client-run-1", **extra) -> dict:
    """A RunAgentInput as HttpAgent sends it: the whole history, the new user message last."""
    messages = [
        {"id": "u0", "role": "user", "content": "an earlier question"},
        {"id": "a0", "role": "assistant", "content": "an earlier answer"},
        {"id": "u1", "role": "user", "content": text},
    ]
    body = {"threadId": thread_id, "runId": run_id, "messages": messages, "state": {}, "tools": []}
    return {**body, "context": [], "forwardedProps": {}, **extra}


def data_frames(raw: bytes) -> list[str]:
    """Every frame of the stream must be a single `data:` line (no ids, comments or retry)."""
    blocks = [b for b in raw.decode().split("\n\n") if b]
    assert all(b.startswith("data: ") and "\n" not in b for b in blocks), blocks
    return [b[6:] for b in blocks]


async def ag_ui_stream(token, body, slug="chat") -> tuple[SSEClient, list[dict]]:
    client = SSEClient("POST", f"/api/agents/{slug}/ag-ui", body, token)
    assert await client.start() == 200
    while not client.done:
        await client.read_chunk(10)
    frames = data_frames(client.raw)
    for frame in frames:
        # Each event is a valid ag_ui.core event and exactly what its model serializes to.
        assert EVENT.validate_json(frame).model_dump_json(by_alias=True) == frame
    return client, [json.loads(f) for f in frames]


def types(events) -> list[str]:
    return [e["type"] for e in events]


def collapse(names: list[str]) -> list[str]:
    """Runs of the same content event type as one (deltas vary with the model's wording)."""
    out = []
    for name in names:
        if not (out and out[-1] == name and name.endswith(("_CONTENT", "_ARGS"))):
            out.append(name)
    return out


async def test_chat_run_with_a_tool_call(alice):
    client, events = await ag_ui_stream(alice.token, run_input())
    assert client.headers["content-type"].startswith("text/event-stream")
    run = await Run.objects.select_related("conversation").aget(pk=client.headers["x-run-id"])
    assert collapse(types(events)) == [
        "RUN_STARTED",
        "STEP_STARTED",
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
        "TOOL_CALL_RESULT",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "STEP_FINISHED",
        "RUN_FINISHED",
    ]
    started, finished = events[0], events[-1]
    assert (started["threadId"], started["runId"]) == ("thread-1", "client-run-1")
    assert started["protocolVersion"] == "1.0"
    assert started["metadata"]["runId"] == str(run.pk)
    assert started["metadata"]["conversationId"] == str(run.conversation_id)
    assert (finished["threadId"], finished["runId"]) == ("thread-1", "client-run-1")
    assert finished["result"] == "17 * 23 = 391." == run.final_output
    assert finished["usage"][0]["totalTokens"] == run.total_tokens > 0
    assert "outcome" not in finished
    start = next(e for e in events if e["type"] == "TOOL_CALL_START")
    assert start["toolCallName"] == "calculate"
    args = "".join(e["delta"] for e in events if e["type"] == "TOOL_CALL_ARGS")
    assert json.loads(args) == {"expression": "17 * 23"}
    result = next(e for e in events if e["type"] == "TOOL_CALL_RESULT")
    assert (result["toolCallId"], result["content"], result["role"]) == (start["toolCallId"], "391", "tool")
    text = "".join(e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT")
    assert text == "17 * 23 = 391."
    assert next(e for e in events if e["type"] == "TEXT_MESSAGE_START")["role"] == "assistant"
    assert [e["stepName"] for e in events if e["type"].startswith("STEP_")] == ["Chat", "Chat"]
    # The thread is the caller's conversation; only the last user message is the run's input.
    assert run.conversation.session_key == "thread-1" and run.conversation.owner_id == alice.pk
    assert run.input == "what is 17 * 23?"

    again, more = await ag_ui_stream(alice.token, run_input("and 2 + 2?", run_id="client-run-2"))
    second = await Run.objects.aget(pk=again.headers["x-run-id"])
    assert second.conversation_id == run.conversation_id and second.input == "and 2 + 2?"
    assert more[-1]["runId"] == "client-run-2" and more[-1]["result"] == "2 + 2 = 4."


async def test_assistant_hands_off_in_steps(alice):
    _, events = await ag_ui_stream(alice.token, run_input("what is 12 + 30?"), slug="assistant")
    steps = [(e["type"], e["stepName"]) for e in events if e["type"].startswith("STEP_")]
    assert steps == [
        ("STEP_STARTED", "Assistant"),
        ("STEP_FINISHED", "Assistant"),
        ("STEP_STARTED", "Math Specialist"),
        ("STEP_FINISHED", "Math Specialist"),
    ]
    # The handoff is a step, not a tool call the client would be left to answer.
    assert [e["toolCallName"] for e in events if e["type"] == "TOOL_CALL_START"] == ["calculate"]
    assert events[-1]["type"] == "RUN_FINISHED" and events[-1]["result"] == "12 + 30 = 42."


async def test_research_stages_are_steps(alice):
    _, events = await ag_ui_stream(alice.token, run_input("solar power"), slug="research")
    stages = [e["stepName"] for e in events if e["type"] == "STEP_STARTED"]
    assert [s for s in stages if s in ("planning", "searching", "writing")] == [
        "planning",
        "searching",
        "writing",
    ]
    progress = [e["value"] for e in events if e["type"] == "CUSTOM" and e["name"] == "research_progress"]
    assert progress[0]["stage"] == "planning" and progress[-1]["stage"] == "writing"
    assert isinstance(events[-1]["result"], dict) and "markdown_report" in events[-1]["result"]


async def test_cancel_finishes_the_run_with_the_cancelled_outcome(alice, api_for, settings):
    settings.OFFLINE_MODEL_DELAY = 0.05
    client = SSEClient("POST", "/api/agents/chat/ag-ui", run_input("Tell me a long story"), alice.token)
    assert await client.start() == 200
    while b"TEXT_MESSAGE_CONTENT" not in client.raw:
        await client.read_chunk(5)
    response = await api_for(alice).post(f"/api/runs/{client.headers['x-run-id']}/cancel")
    assert response.status_code == 202
    while not client.done:
        await client.read_chunk(5)
    events = [json.loads(f) for f in data_frames(client.raw)]
    assert collapse(types(events))[-3:] == ["TEXT_MESSAGE_END", "STEP_FINISHED", "RUN_FINISHED"]
    assert events[-1]["outcome"] == {"type": "cancelled"} and "result" not in events[-1]


async def test_forwarded_on_disconnect_cancel(alice, settings):
    settings.OFFLINE_MODEL_DELAY = 0.1
    body = run_input("A long story", forwardedProps={"on_disconnect": "cancel"})
    client = SSEClient("POST", "/api/agents/chat/ag-ui", body, alice.token)
    assert await client.start() == 200
    while b"TEXT_MESSAGE_CONTENT" not in client.raw:
        await client.read_chunk(5)
    await client.disconnect()
    await client.comm.wait(timeout=1)
    assert (await wait_finished(client.headers["x-run-id"], timeout=3)).status == "cancelled"


async def test_a_busy_thread_is_a_409_unless_the_run_asks_to_wait(alice, settings):
    settings.OFFLINE_MODEL_DELAY = 0.02
    first = SSEClient("POST", "/api/agents/chat/ag-ui", run_input("Tell me a story"), alice.token)
    assert await first.start() == 200
    status, error = await refused(alice.token, run_input("what is 6 * 7?", run_id="second"))
    assert (status, error["code"]) == (409, "conversation_busy")
    assert error["metadata"]["active_run_id"] == first.headers["x-run-id"]
    body = run_input("what is 6 * 7?", run_id="second", forwardedProps={"if_busy": "enqueue"})
    _, events = await ag_ui_stream(alice.token, body)
    assert types(events)[:2] == ["RUN_STARTED", "CUSTOM"]
    assert events[1]["name"] == "run_queued" and events[1]["value"]["waitingFor"] == first.headers["x-run-id"]
    assert events[-1]["result"] == "6 * 7 = 42."
    assert events[-1]["usage"][0]["provider"] == "offline"
    run = await Run.objects.aget(pk=events[0]["metadata"]["runId"])
    assert events[0]["metadata"] == {"runId": str(run.pk), "conversationId": str(run.conversation_id)}
    await first.read_all()


async def refused(token, body, slug="chat") -> tuple[int, dict]:
    client = SSEClient("POST", f"/api/agents/{slug}/ag-ui", body, token)
    status = await client.start()
    await client.read_all()
    return status, client.json()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{oops", None),
        (b"[]", "non_field_errors"),
        ({"runId": "r", "messages": []}, "threadId"),
        ({"threadId": "t", "runId": "r", "messages": "hi"}, "messages"),
        (
            {"threadId": "t", "runId": "r", "messages": [{"id": "1", "role": "bogus", "content": "x"}]},
            "messages.0",
        ),
        (run_input(thread_id="x" * 129), "threadId"),
        (
            {"threadId": "t", "runId": "r", "messages": [{"id": "a", "role": "assistant", "content": "hi"}]},
            "messages",
        ),
        (run_input(text="   "), "messages"),
        (run_input(tools=[{"name": "f", "description": "a client tool"}]), "tools"),
        (run_input(forwardedProps={"on_disconnect": "later"}), "forwardedProps.on_disconnect"),
        (run_input(forwardedProps={"if_busy": "shout"}), "forwardedProps.if_busy"),
        (run_input(context=[{"description": "big", "value": "v" * 9000}]), "context"),
    ],
)
async def test_invalid_input_is_a_400_run_error_and_starts_nothing(alice, body, field):
    status, error = await refused(alice.token, body)
    assert status == 400
    assert error["type"] == "RUN_ERROR" and error["code"] in ("invalid", "parse_error")
    EVENT.validate_python(error)
    if field is not None:
        assert field in error["metadata"]["fields"]
        assert field == "non_field_errors" or error["message"].startswith(f"{field}: ")
    assert await Run.objects.acount() == 0 and await Conversation.objects.acount() == 0


async def test_unknown_agent_and_unauthenticated(alice):
    status, error = await refused(alice.token, run_input(), slug="nope")
    assert (status, error["type"], error["code"]) == (404, "RUN_ERROR", "not_found")
    assert "chat" in error["metadata"]["agents"]
    status, error = await refused(None, run_input())
    assert (status, error["type"], error["code"]) == (401, "RUN_ERROR", "not_authenticated")
    status, _ = await refused("x" * 40, run_input())
    assert status == 401
    get = SSEClient("GET", "/api/agents/chat/ag-ui", token=alice.token)
    assert await get.start() == 405
    assert await Run.objects.acount() == 0


async def test_another_users_thread_id_names_a_conversation_of_ones_own(alice, bob):
    first, _ = await ag_ui_stream(alice.token, run_input(thread_id="shared"))
    alices = await Run.objects.select_related("conversation").aget(pk=first.headers["x-run-id"])
    items = [i.data async for i in ConversationItem.objects.filter(conversation=alices.conversation_id)]
    other, events = await ag_ui_stream(bob.token, run_input("hello", thread_id="shared"))
    bobs = await Run.objects.select_related("conversation").aget(pk=other.headers["x-run-id"])
    assert bobs.conversation_id != alices.conversation_id and bobs.conversation.owner_id == bob.pk
    assert events[0]["metadata"]["conversationId"] == str(bobs.conversation_id)
    after = [i.data async for i in ConversationItem.objects.filter(conversation=alices.conversation_id)]
    assert after == items and await Run.objects.filter(conversation=alices.conversation_id).acount() == 1


async def test_context_is_kept_with_the_run(alice):
    context = [{"description": "the user's city", "value": "Lisbon"}]
    client, _ = await ag_ui_stream(alice.token, run_input(context=context))
    run = await Run.objects.aget(pk=client.headers["x-run-id"])
    assert run.context == {"ag_ui_context": context}


def translated(events: list[dict]) -> list[dict]:
    translator = AgUiTranslator("t", "r")
    out = [e.model_dump(mode="json", by_alias=True) for event in events for e in translator.translate(event)]
    for event in out:
        EVENT.validate_python(event)
    return out


def delta(seq, text, kind="response.output_text.delta", item="msg_1") -> dict:
    return {
        "type": "raw_response",
        "seq": seq,
        "run_id": "R",
        "event_type": kind,
        "delta": text,
        "item_id": item,
    }


# Event sequences the live offline agents do not produce; the node test runs each through
# @ag-ui/client's verifyEvents too.
SYNTHETIC = {
    "queued_then_error": [
        {
            "type": "run_queued",
            "seq": 1,
            "run_id": "R",
            "conversation_id": "C",
            "position": 1,
            "waiting_for": "W",
        },
        {"type": "run_started", "seq": 2, "run_id": "R", "agent": "chat", "provider": "p", "model": "m"},
        {"type": "agent_updated", "seq": 3, "run_id": "R", "agent_name": "Chat"},
        delta(4, "Hel"),
        {
            "type": "error",
            "seq": 5,
            "run_id": "R",
            "message": "the model failed",
            "code": "model_unavailable",
        },
    ],
    "reasoning_then_text": [
        {"type": "run_started", "seq": 1, "run_id": "R", "agent": "chat", "provider": "p", "model": "m"},
        delta(2, "Think", "response.reasoning_summary_text.delta", "rs_1"),
        delta(3, "ing", "response.reasoning_summary_text.delta", "rs_1"),
        delta(4, "Hi"),
        delta(5, "Again", item="msg_2"),
        {
            "type": "stream_complete",
            "seq": 6,
            "run_id": "R",
            "final_output": "HiAgain",
            "status": "completed",
        },
    ],
}


def test_translation_of_errors_queues_and_reasoning():
    events = translated(SYNTHETIC["queued_then_error"])
    assert types(events) == [
        "RUN_STARTED",
        "CUSTOM",
        "STEP_STARTED",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "STEP_FINISHED",
        "RUN_ERROR",
    ]
    assert events[1]["value"] == {"position": 1, "waitingFor": "W"}
    assert (events[-1]["message"], events[-1]["code"]) == ("the model failed", "model_unavailable")
    events = translated(SYNTHETIC["reasoning_then_text"])
    assert types(events) == [
        "RUN_STARTED",
        "REASONING_START",
        "REASONING_MESSAGE_START",
        "REASONING_MESSAGE_CONTENT",
        "REASONING_MESSAGE_CONTENT",
        "REASONING_MESSAGE_END",
        "REASONING_END",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "RUN_FINISHED",
    ]
    assert events[7]["messageId"] != events[10]["messageId"]
    assert "usage" not in events[-1] and events[-1]["result"] == "HiAgain"


def test_openapi_paths():
    post = openapi_paths()["/api/agents/{slug}/ag-ui"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["threadId", "runId", "messages"]
    assert "text/event-stream" in post["responses"]["200"]["content"]
    assert {"400", "401", "404"} <= post["responses"].keys()


@pytest.fixture(scope="module")
def live_url(django_db_setup, django_db_blocker):
    with serving(OFFLINE_MODEL_DELAY="0.02") as url:
        yield url


@pytest.mark.live
async def test_http_agent_runs_the_agents(live_url, alice, tmp_path):
    synthetic = tmp_path / "synthetic.json"
    synthetic.write_text(json.dumps({name: translated(events) for name, events in SYNTHETIC.items()}))
    run_node_tests("ag_ui.test.mjs", live_url, alice.token, SYNTHETIC_EVENTS=str(synthetic))
    threads = {c.session_key async for c in Conversation.objects.filter(owner=alice)}
    assert {"node-chat", "node-assistant"} <= threads
    chat = await Conversation.objects.aget(owner=alice, session_key="node-chat")
    assert [r.input async for r in Run.objects.filter(conversation=chat).order_by("created_at")] == [
        "what is 17 * 23?",
        "and 2 + 2?",
    ]


def test_a_restarted_turn_closes_its_message_and_names_what_it_cut():
    """Worker mode: the CUSTOM `turn_restarted` names the messages and tool calls of the cut turn
    (a client drops them); the turn streams again in a new message. Every event valid AG-UI."""
    out = translated(
        [
            {"type": "run_started", "seq": 1, "run_id": "R", "conversation_id": "c"},
            {"type": "run_item", "seq": 2, "run_id": "R", "name": "tool_called", "call_id": "k1",
             "tool_name": "calculate", "tool_arguments": "{}"},
            delta(3, "6*7 ", item="cut"),
            {"type": "turn_restarted", "seq": 4, "run_id": "R", "turn": 2, "reason": "stopped",
             "after_seq": 2},
            delta(5, "6*7 = 42.", item="again"),
        ]
    )  # fmt: skip
    names = [e["type"] for e in out]
    custom = next(e for e in out if e["type"] == "CUSTOM" and e["name"] == "turn_restarted")
    assert custom["value"] == {"turn": 2, "reason": "stopped", "discardIds": ["R:3"]}
    at = out.index(custom)
    assert names[at - 1] == "TEXT_MESSAGE_END" and out[at - 1]["messageId"] == "R:3"
    assert out[at + 1]["type"] == "TEXT_MESSAGE_START" and out[at + 1]["messageId"] == "R:5"
