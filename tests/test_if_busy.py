"""A message to a conversation with an active run: `if_busy` = reject (409), enqueue (waits its turn,
in order) or interrupt (the active run is cancelled, then the new one runs), on every surface."""

import asyncio

import pytest

from agents_app.models import ConversationItem, Run

from .streams import SSEClient, text_of, ws_client, ws_events_until_terminal

pytestmark = pytest.mark.django_db(transaction=True)


async def start_stream(user, text: str, **body) -> SSEClient:
    client = SSEClient("POST", "/api/agents/chat/stream", {"input": text, **body}, user.token)
    assert await client.start() == 200
    await client.read_until(lambda e: e["type"] in ("run_started", "run_queued"))
    return client


def user_messages(items: list[dict]) -> list[str]:
    return [item["content"] for item in items if item.get("role") == "user"]


async def memory(conversation_id) -> list[dict]:
    items = ConversationItem.objects.filter(conversation_id=conversation_id).order_by("id")
    return [item.data async for item in items]


async def test_enqueue_runs_two_messages_one_after_the_other(alice, settings):
    settings.OFFLINE_MODEL_DELAY = 0.02
    first = await start_stream(alice, "Tell me a story about owls", session_id="s")
    second = await start_stream(alice, "What is 6 * 7?", session_id="s", if_busy="enqueue")
    first_run = first.events()[0]["run_id"]
    queued = second.events()[0]
    assert queued["type"] == "run_queued" and queued["seq"] == 1
    assert queued["waiting_for"] == first_run and queued["position"] == 1
    one, two = await first.read_all(), await second.read_all()
    assert one[-1]["status"] == two[-1]["status"] == "completed"
    assert [e["type"] for e in two[:2]] == ["run_queued", "run_started"]
    assert [e["seq"] for e in two] == list(range(1, len(two) + 1))
    assert "42" in text_of(two)
    first_run, second_run = await Run.objects.aget(pk=first_run), await Run.objects.aget(pk=queued["run_id"])
    assert second_run.started_at >= first_run.finished_at
    # Both answers are in the conversation's history, in order.
    items = await memory(first_run.conversation_id)
    assert user_messages(items) == ["Tell me a story about owls", "What is 6 * 7?"]
    roles = [item.get("role") or item.get("type") for item in items]
    assert roles.index("assistant") < [i for i, r in enumerate(roles) if r == "user"][1]


async def test_enqueued_runs_keep_their_order(alice, settings):
    settings.OFFLINE_MODEL_DELAY = 0.01
    first = await start_stream(alice, "Tell me a story", session_id="q")
    waiting = []
    for n in range(3):
        client = SSEClient(
            "POST",
            "/api/agents/chat/stream",
            {"input": f"message {n}", "session_id": "q", "if_busy": "enqueue"},
            alice.token,
        )
        assert await client.start() == 200
        await client.read_until(lambda e: e["type"] == "run_queued")
        waiting.append(client)
    await first.read_all()
    for client in waiting:
        assert (await client.read_all())[-1]["status"] == "completed"
    runs = [await Run.objects.aget(pk=c.events()[0]["run_id"]) for c in waiting]
    assert [run.started_at for run in runs] == sorted(run.started_at for run in runs)
    assert [c.events()[0]["position"] for c in waiting] == [1, 2, 3]
    items = await memory(runs[0].conversation_id)
    assert user_messages(items) == ["Tell me a story", "message 0", "message 1", "message 2"]


async def test_interrupt_cancels_the_active_run_then_runs(alice, settings):
    settings.OFFLINE_MODEL_DELAY = 0.05
    first = await start_stream(alice, "Tell me a long story about the sea", session_id="i")
    second = await start_stream(alice, "What is 2 + 2?", session_id="i", if_busy="interrupt")
    one, two = await first.read_all(), await second.read_all()
    assert one[-1]["type"] == "stream_complete" and one[-1]["status"] == "cancelled"
    assert two[-1]["type"] == "stream_complete" and two[-1]["status"] == "completed"
    assert "4" in two[-1]["final_output"]
    first_run = await Run.objects.aget(pk=one[0]["run_id"])
    assert first_run.status == "cancelled" and first_run.cancel_mode == "immediate"


async def test_reject_is_the_default_and_answers_409(alice, api_for, settings):
    settings.OFFLINE_MODEL_DELAY = 0.05
    first = await start_stream(alice, "Tell me a long story", session_id="r")
    active = first.events()[0]["run_id"]
    api = api_for(alice)
    for body in (
        {"input": "again", "session_id": "r"},
        {"input": "again", "session_id": "r", "if_busy": "reject"},
    ):
        response = await api.post("/api/agents/chat/run", body)
        assert response.status_code == 409
        error = response.json()["error"]
        assert error["code"] == "conversation_busy" and error["active_run_id"] == active
    bad = await api.post("/api/agents/chat/run", {"input": "x", "if_busy": "later"})
    assert bad.status_code == 400 and "if_busy" in bad.json()["error"]["fields"]
    assert await Run.objects.acount() == 1
    await first.read_all()


async def test_enqueue_over_rest_the_reference_path_and_a_socket(alice, api_for, settings):
    """The REST run (and the reference `/chat/run`) waits for its turn and answers once it ran; a
    socket's queued run streams `run_queued`, then the run."""
    settings.OFFLINE_MODEL_DELAY = 0.02
    first = await start_stream(alice, "Tell me a story about hills", session_id="123")
    rest = asyncio.ensure_future(
        api_for(alice).post(
            "/chat/run", {"input": "What is 3 * 3?", "session_id": "123", "if_busy": "enqueue"}
        )
    )
    ws = ws_client("chat", token=alice.token)
    assert (await ws.connect())[0]
    conversation = first.events()[0]["conversation_id"]
    await ws.send_json_to(
        {"type": "run", "input": "What is 5 * 5?", "conversation_id": conversation, "if_busy": "enqueue"}
    )
    socket_events = await ws_events_until_terminal(ws, timeout=20)
    await ws.disconnect()
    assert socket_events[0]["type"] == "run_queued" and socket_events[-1]["status"] == "completed"
    response = await rest
    assert response.status_code == 200 and "9" in response.json()["final_output"]
    assert (await first.read_all())[-1]["status"] == "completed"
    items = await memory(conversation)
    assert user_messages(items)[0] == "Tell me a story about hills" and len(user_messages(items)) == 3


async def test_a_queued_run_can_be_cancelled_before_it_runs(alice, api_for, slow_model):
    slow_model["seconds"] = 1.5
    first = await start_stream(alice, "Tell me a long story", session_id="c")
    second = await start_stream(alice, "and then?", session_id="c", if_busy="enqueue")
    queued_id = second.events()[0]["run_id"]
    response = await api_for(alice).post(f"/api/runs/{queued_id}/cancel")
    assert response.status_code == 202
    events = await second.read_all(timeout=5)
    assert [e["type"] for e in events] == ["run_queued", "stream_complete"]
    assert events[-1]["status"] == "cancelled"
    run = await Run.objects.aget(pk=queued_id)
    assert run.status == "cancelled" and run.started_at is None
    assert (await first.read_all())[-1]["status"] == "completed"


async def test_a_conversation_socket_streams_the_running_run_then_the_queued_one(alice, slow_model):
    from channels.testing import WebsocketCommunicator

    from config.asgi import application

    slow_model["seconds"] = 0.5
    first = await start_stream(alice, "first", session_id="w")
    second = await start_stream(alice, "second", session_id="w", if_busy="enqueue")
    conversation = first.events()[0]["conversation_id"]
    ws = WebsocketCommunicator(
        application,
        f"/ws/conversations/{conversation}/",
        headers=[(b"authorization", f"Token {alice.token}".encode())],
    )
    assert (await ws.connect())[0]
    first_id, second_id = first.events()[0]["run_id"], second.events()[0]["run_id"]
    events = await ws_events_until_terminal(ws, first_id)
    events += await ws_events_until_terminal(ws, second_id)
    await ws.disconnect()
    assert [e for e in events if e["run_id"] == first_id] == await first.read_all()
    two = [e for e in events if e["run_id"] == second_id]
    assert two == await second.read_all() and two[0]["type"] == "run_queued"
