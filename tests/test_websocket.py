"""WebSocket consumer through the real ASGI application: auth, run, cancel, resume, bad messages."""

import pytest
from asgiref.sync import sync_to_async

from agents_app.auth import CLOSE_FORBIDDEN_ORIGIN, CLOSE_UNAUTHENTICATED
from agents_app.models import Run, RunEvent

from .streams import text_of, ws_client, ws_events_until_terminal

pytestmark = pytest.mark.django_db(transaction=True)


async def connected(token, slug="chat", **kwargs):
    ws = ws_client(slug, token, **kwargs)
    ok, _ = await ws.connect()
    assert ok
    return ws


async def test_run_streams_events(alice):
    ws = await connected(alice.token)
    await ws.send_json_to({"type": "run", "input": "What is 6 * 7?"})
    events = await ws_events_until_terminal(ws)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "run_started"
    assert events[-1]["type"] == "stream_complete" and "42" in events[-1]["final_output"]
    assert text_of(events).endswith(events[-1]["final_output"])
    assert await ws.receive_nothing(0.2)
    await ws.disconnect()


async def test_unauthenticated_socket_closed(alice):
    ws = ws_client("chat")
    await ws.connect()
    assert (await ws.receive_output(1)) == {"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED}
    bad = ws_client("chat", token="nope")
    await bad.connect()
    assert (await bad.receive_output(1))["code"] == CLOSE_UNAUTHENTICATED


async def test_query_string_token_is_ignored(alice):
    from channels.testing import WebsocketCommunicator

    from config.asgi import application

    ws = WebsocketCommunicator(application, f"/ws/agents/chat/?token={alice.token}")
    await ws.connect()
    assert (await ws.receive_output(1))["code"] == CLOSE_UNAUTHENTICATED


async def test_subprotocol_token_and_session_origin(alice, client):
    ws = ws_client("chat", subprotocols=["agents.v1", f"token.{alice.token}"])
    ok, subprotocol = await ws.connect()
    assert ok and subprotocol == "agents.v1"
    await ws.send_json_to({"type": "run", "input": "hello"})
    assert (await ws_events_until_terminal(ws))[-1]["type"] == "stream_complete"
    await ws.disconnect()

    # On the sync thread, whose connection the session fixture closes (a pool thread's would stay open).
    await sync_to_async(client.force_login)(alice)
    cookie = (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())
    good = ws_client("chat", headers=[cookie, (b"origin", b"http://localhost:8000")])
    await good.connect()
    await good.send_json_to({"type": "run", "input": "hello"})
    assert (await ws_events_until_terminal(good))[-1]["type"] == "stream_complete"
    await good.disconnect()
    evil = ws_client("chat", headers=[cookie, (b"origin", b"http://evil.example")])
    await evil.connect()
    assert (await evil.receive_output(1))["code"] == CLOSE_FORBIDDEN_ORIGIN
    no_origin = ws_client("chat", headers=[cookie])
    await no_origin.connect()
    assert (await no_origin.receive_output(1))["code"] == CLOSE_UNAUTHENTICATED


@pytest.mark.parametrize(
    "raw,code",
    [
        ("not json", "invalid"),
        ("[1]", "invalid"),
        ('{"type": "dance"}', "invalid"),
        ('{"type": "run", "input": ""}', "invalid"),
        ('{"type": "run", "input": 5}', "invalid"),
        ('{"type": "run", "input": "hi", "agent": "nope"}', "not_found"),
        ('{"type": "cancel"}', "invalid"),
        ('{"type": "cancel", "run_id": "00000000-0000-0000-0000-000000000000"}', "not_found"),
        ('{"type": "resume", "run_id": "garbage"}', "not_found"),
    ],
)
async def test_bad_messages_get_error_and_socket_stays_usable(alice, raw, code):
    ws = await connected(alice.token)
    await ws.send_to(text_data=raw)
    error = await ws.receive_json_from(2)
    assert error["type"] == "error" and error["code"] == code and error["message"]
    assert await Run.objects.acount() == 0
    await ws.send_json_to({"type": "run", "input": "still there?"})
    assert (await ws_events_until_terminal(ws))[-1]["type"] == "stream_complete"
    await ws.disconnect()


async def test_cancel_from_second_socket_and_resume(alice, settings):
    settings.OFFLINE_MODEL_DELAY = 0.2
    first = await connected(alice.token)
    await first.send_json_to({"type": "run", "input": "Tell me a long story about mountains"})
    started = await first.receive_json_from(2)
    run_id = started["run_id"]
    second = await connected(alice.token)
    await second.send_json_to({"type": "cancel", "run_id": run_id})
    events = [started, *await ws_events_until_terminal(first, run_id, timeout=2)]
    assert events[-1]["type"] == "stream_complete" and events[-1]["status"] == "cancelled"
    run = await Run.objects.aget(pk=run_id)
    assert run.status == "cancelled" and run.cancel_requested_at is not None
    await second.send_json_to({"type": "resume", "run_id": run_id, "last_event_id": 2})
    resumed = await ws_events_until_terminal(second, run_id)
    assert resumed == events[2:]
    assert await RunEvent.objects.filter(run_id=run_id).acount() == len(events)
    await first.disconnect()
    await second.disconnect()


async def test_other_users_run_is_invisible(alice, bob):
    ws = await connected(alice.token)
    await ws.send_json_to({"type": "run", "input": "hello"})
    run_id = (await ws_events_until_terminal(ws))[0]["run_id"]
    spy = await connected(bob.token)
    for message in ({"type": "resume", "run_id": run_id}, {"type": "cancel", "run_id": run_id}):
        await spy.send_json_to(message)
        assert (await spy.receive_json_from(2))["code"] == "not_found"
    await ws.disconnect()
    await spy.disconnect()
