"""WebSocket consumer through the real ASGI application: auth, run, cancel, resume, bad messages."""

import time

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from agents_app.api.auth import CLOSE_FORBIDDEN_ORIGIN, CLOSE_NOT_FOUND, CLOSE_UNAUTHENTICATED, origin_allowed
from agents_app.models import Conversation, Run, RunEvent
from config.asgi import application

from .streams import conversation_ws, text_of, wait_finished, ws_client, ws_events_until_terminal

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
    host = (b"host", b"localhost:8000")
    good = ws_client("chat", headers=[cookie, host, (b"origin", b"http://localhost:8000")])
    await good.connect()
    await good.send_json_to({"type": "run", "input": "hello"})
    assert (await ws_events_until_terminal(good))[-1]["type"] == "stream_complete"
    await good.disconnect()
    # Another site: another host, another port of this host, a host ALLOWED_HOSTS refuses (even
    # when the Host header names it too), or no Host to compare with.
    for headers in (
        [host, (b"origin", b"http://evil.example")],
        [host, (b"origin", b"http://localhost:9999")],
        [(b"host", b"evil.example"), (b"origin", b"http://evil.example")],
        [(b"origin", b"http://localhost:8000")],
    ):
        evil = ws_client("chat", headers=[cookie, *headers])
        await evil.connect()
        assert (await evil.receive_output(1))["code"] == CLOSE_FORBIDDEN_ORIGIN, headers
    no_origin = ws_client("chat", headers=[cookie])
    await no_origin.connect()
    assert (await no_origin.receive_output(1))["code"] == CLOSE_UNAUTHENTICATED


async def test_behind_a_tls_proxy_the_origin_must_be_https(alice, client, settings):
    """The scheme counts too: behind a proxy that says the connection was HTTPS, a page of the same
    host over plain HTTP is another site."""
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    await sync_to_async(client.force_login)(alice)
    cookie = (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())
    behind = [cookie, (b"host", b"localhost"), (b"x-forwarded-proto", b"https")]
    plain = ws_client("chat", headers=[*behind, (b"origin", b"http://localhost")])
    await plain.connect()
    assert (await plain.receive_output(1))["code"] == CLOSE_FORBIDDEN_ORIGIN
    secure = ws_client("chat", headers=[*behind, (b"origin", b"https://localhost")])
    assert (await secure.connect())[0]
    await secure.disconnect()


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


async def test_on_disconnect_cancel_over_a_socket_does_not_wait_for_the_sync_thread(alice, settings):
    """As for SSE: a socket that leaves cancels its `on_disconnect=cancel` runs of this process
    at once, without a trip to the sync thread first; the run's end records the request."""
    import asyncio
    import time

    from agents_app.runs.engine import get_engine

    settings.OFFLINE_MODEL_DELAY = 0.2
    ws = await connected(alice.token)
    await ws.send_json_to({"type": "run", "input": "Tell me a long story", "on_disconnect": "cancel"})
    run_id = (await ws.receive_json_from(2))["run_id"]
    ctx = get_engine().executor.contexts[run_id]
    busy = asyncio.ensure_future(sync_to_async(time.sleep)(1.5))
    await asyncio.sleep(0.05)
    await ws.disconnect()
    assert ctx.cancel_mode == "immediate" and not busy.done()
    await busy
    run = await wait_finished(run_id, timeout=3)
    assert run.status == "cancelled" and run.cancel_requested_at is not None


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


async def test_a_database_error_looking_up_a_run_is_not_a_missing_run(alice, monkeypatch):
    """The socket used to answer any error of the run's lookup with `not_found`: a client told its
    run is gone while the database was only away for a moment. It says so, and the socket serves
    the next message once the database is back."""
    from django.db import OperationalError

    from agents_app.api import sockets

    ws = await connected(alice.token)
    await ws.send_json_to({"type": "run", "input": "hello"})
    run_id = (await ws_events_until_terminal(ws))[0]["run_id"]
    real = sockets.runs_for

    class Away:
        def filter(self, **kwargs):
            return self

        def first(self):
            raise OperationalError("database is locked")

    monkeypatch.setattr(sockets, "runs_for", lambda user: Away())
    await ws.send_json_to({"type": "resume", "run_id": run_id})
    assert (await ws.receive_json_from(2))["code"] == "unavailable"
    monkeypatch.setattr(sockets, "runs_for", real)
    await ws.send_json_to({"type": "resume", "run_id": run_id})
    assert (await ws_events_until_terminal(ws, run_id))[-1]["type"] == "stream_complete"
    await ws.disconnect()


async def first_conversation(token) -> Conversation:
    """A conversation of the token's user, made by one finished run on the agent socket."""
    ws = await connected(token)
    await ws.send_json_to({"type": "run", "input": "What is 6 * 7?"})
    events = await ws_events_until_terminal(ws)
    await ws.disconnect()
    return await Conversation.objects.aget(pk=events[0]["conversation_id"])


async def test_conversation_socket_runs_continue_its_conversation(alice):
    conversation = await first_conversation(alice.token)
    ws = conversation_ws(conversation.pk, alice.token)
    assert (await ws.connect())[0]
    assert await ws.receive_nothing(0.2)  # no active run: nothing to stream on connect
    await ws.send_json_to({"type": "run", "input": "And 7 * 8?"})
    events = await ws_events_until_terminal(ws)
    assert events[0]["conversation_id"] == str(conversation.pk)
    assert events[-1]["type"] == "stream_complete" and "56" in events[-1]["final_output"]
    assert await Run.objects.filter(conversation=conversation).acount() == 2
    # Matching fields are accepted; a different conversation, agent or a session_id is not.
    await ws.send_json_to({"type": "run", "input": "1 + 1?", "conversation_id": str(conversation.pk)})
    assert (await ws_events_until_terminal(ws))[-1]["type"] == "stream_complete"
    for wrong in (
        {"conversation_id": "00000000-0000-0000-0000-000000000000"},
        {"agent": "research"},
        {"session_id": "123"},
    ):
        await ws.send_json_to({"type": "run", "input": "x", **wrong})
        error = await ws.receive_json_from(2)
        assert error["type"] == "error" and error["code"] == "invalid", error
        assert error["field"] == next(iter(wrong)), error
    assert await Run.objects.filter(conversation=conversation).acount() == 3
    await ws.disconnect()


async def test_conversation_socket_streams_the_active_run_on_connect(alice, settings):
    settings.OFFLINE_MODEL_DELAY = 0.05
    conversation = await first_conversation(alice.token)
    starter = await connected(alice.token)
    await starter.send_json_to(
        {"type": "run", "input": "Tell me a long story about rivers", "conversation_id": str(conversation.pk)}
    )
    run_id = (await starter.receive_json_from(2))["run_id"]
    await starter.receive_json_from(2)  # the run is under way
    ws = conversation_ws(conversation.pk, alice.token)
    assert (await ws.connect())[0]
    events = await ws_events_until_terminal(ws, run_id, timeout=10)
    # From its first event, every seq once, to the end; the text is the whole answer.
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "stream_complete" and events[-1]["status"] == "completed"
    assert text_of(events).endswith(events[-1]["final_output"])
    await starter.disconnect()
    await ws.disconnect()


async def test_conversation_socket_refuses_a_second_run_while_busy(alice, settings):
    """As REST's 409 does: an `error` event naming the active run; the socket stays usable."""
    settings.OFFLINE_MODEL_DELAY = 0.2
    conversation = await first_conversation(alice.token)
    ws = conversation_ws(conversation.pk, alice.token)
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "run", "input": "Tell me a long story about mountains"})
    run_id = (await ws.receive_json_from(2))["run_id"]
    await ws.send_json_to({"type": "run", "input": "and another"})
    busy = await ws_events_until_terminal(ws, timeout=5)
    error = next(e for e in busy if e["type"] == "error")
    assert error["code"] == "conversation_busy" and error["active_run_id"] == run_id
    await ws.send_json_to({"type": "cancel", "run_id": run_id})
    assert (await ws_events_until_terminal(ws, run_id, timeout=5))[-1]["status"] == "cancelled"
    await ws.disconnect()


async def test_conversation_socket_is_only_for_its_owner_and_its_runs(alice, bob):
    conversation = await first_conversation(alice.token)
    for token in (bob.token, alice.token):
        target = conversation.pk if token == bob.token else "00000000-0000-0000-0000-000000000000"
        ws = conversation_ws(target, token)
        await ws.connect()
        assert (await ws.receive_output(1)) == {"type": "websocket.close", "code": CLOSE_NOT_FOUND}
    anonymous = conversation_ws(conversation.pk, None)
    await anonymous.connect()
    assert (await anonymous.receive_output(1))["code"] == CLOSE_UNAUTHENTICATED
    # cancel and resume only take runs of this conversation.
    other = await first_conversation(alice.token)
    other_run = await Run.objects.filter(conversation=other).afirst()
    ws = conversation_ws(conversation.pk, alice.token)
    assert (await ws.connect())[0]
    for message in (
        {"type": "resume", "run_id": str(other_run.pk)},
        {"type": "cancel", "run_id": str(other_run.pk)},
    ):
        await ws.send_json_to(message)
        assert (await ws.receive_json_from(2))["code"] == "not_found"
    await ws.disconnect()


async def test_a_long_lived_socket_does_not_keep_the_runs_it_has_finished(alice, monkeypatch):
    """Each followed run has a cursor that the pump visits on every wake-up: ended runs'
    cursors are dropped, so a socket open all day costs what its live runs cost."""
    import gc
    import weakref

    from agents_app.runs import read

    cursors = weakref.WeakSet()
    made = []

    class Tracked(read.RunCursor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            cursors.add(self)
            made.append(self.run_id)

    monkeypatch.setattr(read, "RunCursor", Tracked)
    ws = await connected(alice.token)
    for n in range(4):
        await ws.send_json_to({"type": "run", "input": f"What is {n} + 1?"})
        run_id = (await ws_events_until_terminal(ws))[0]["run_id"]
        await ws.send_json_to({"type": "resume", "run_id": run_id, "last_event_id": 1})
        assert (await ws_events_until_terminal(ws, run_id))[-1]["type"] == "stream_complete"
    assert await ws.receive_nothing(0.2)  # the consumer is past its last send
    assert len(made) == 8  # each run started and each resume had one
    gc.collect()
    assert len(cursors) == 0
    # The socket still serves: a resume of a finished run replays it again.
    await ws.send_json_to({"type": "resume", "run_id": run_id, "last_event_id": 0})
    assert (await ws_events_until_terminal(ws, run_id))[0]["type"] == "run_started"
    await ws.disconnect()


@pytest.mark.parametrize(
    "origin,host,secure,allowed",
    [
        ("https://example.com", "example.com", True, True),
        ("https://example.com:443", "example.com", True, True),
        ("https://example.com", "example.com:443", True, True),
        ("http://example.com:8080", "example.com:8080", False, True),
        ("http://example.com:8080", "example.com", False, False),
        ("http://example.com", "example.com:8080", False, False),
        ("http://example.com", "example.com", True, False),  # a plain page to an HTTPS site
        ("https://example.com", "example.com", False, False),
        ("http://other.example", "other.example", False, False),  # not in ALLOWED_HOSTS
        ("https://app.partner.example", "example.com", True, True),  # CSRF_TRUSTED_ORIGINS
        ("https://spa.example", "example.com", False, True),  # CORS_ALLOWED_ORIGINS
        ("null", "example.com", False, False),
        ("ftp://example.com", "example.com", False, False),
    ],
)
def test_origin_check_compares_scheme_host_and_port(settings, origin, host, secure, allowed):
    settings.ALLOWED_HOSTS = ["example.com"]
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.partner.example"]
    settings.CORS_ALLOWED_ORIGINS = ["https://spa.example"]
    assert origin_allowed(origin, host, secure) is allowed


async def session_socket(client, user):
    await sync_to_async(client.force_login)(user)
    cookie = (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())
    ws = ws_client("chat", headers=[cookie, (b"host", b"localhost"), (b"origin", b"http://localhost")])
    assert (await ws.connect())[0]
    return ws


async def test_logging_out_elsewhere_closes_a_session_socket(alice, client, settings):
    settings.SSE_KEEPALIVE_INTERVAL = 0.5
    ws = await session_socket(client, alice)
    await sync_to_async(client.logout)()  # another tab: the session is flushed
    ended = time.monotonic()
    event = await ws.receive_json_from(3)
    assert (event["type"], event["code"]) == ("error", "session_ended")
    assert (await ws.receive_output(3))["code"] == 4401
    assert time.monotonic() - ended < 0.5 + 0.5


async def test_a_message_after_the_session_ended_starts_nothing(alice, client, settings):
    settings.SSE_KEEPALIVE_INTERVAL = 60  # the message is refused without waiting for a check
    ws = await session_socket(client, alice)
    alice.is_active = False
    await alice.asave(update_fields=["is_active"])
    await ws.send_json_to({"type": "run", "input": "hi"})
    assert (await ws.receive_json_from(3))["code"] == "session_ended"
    assert (await ws.receive_output(3))["code"] == 4401
    assert await Run.objects.acount() == 0
