"""The same authorization on every surface: each endpoint that names one of Alice's objects, asked
with no credentials, a bad token, Alice's own expired and revoked tokens, Bob's token, staff's
token and Alice's own. Only Alice gets it; anyone else authenticated gets the answer a missing
object gets (never a 403 that confirms it exists), and an unauthenticated caller a 401. A session
needs its CSRF token for every unsafe request; a token needs none."""

import json
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.utils import timezone

from agents_app.models import Run
from config.asgi import application
from research_app.models import ResearchReport
from tokens_app.models import token_create, token_revoke

from .streams import SSEClient, stream_run, wait_finished

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def objects(alice, api_for):
    """Alice's run, conversation, response, report and chat."""
    _client, events = await stream_run(alice.token, {"input": "hi", "session_id": "s-1"})
    run = await wait_finished(events[0]["run_id"])
    created = await api_for(alice).post("/api/research/", {"query": "volcanoes"})
    report = await ResearchReport.objects.aget(pk=created.json()["report_id"])
    await wait_finished(report.run_id)
    return {
        "run": run.pk,
        "conversation": run.conversation_id,
        "response": f"resp_{run.pk.hex}",
        "report": report.pk,
    }


def endpoints(o: dict) -> list[tuple[str, str, dict | None]]:
    """(method, path, body) of every REST or SSE endpoint that names one of the objects."""
    return [
        ("GET", f"/api/runs/{o['run']}/", None),
        ("GET", f"/api/runs/{o['run']}/events", None),
        ("GET", f"/api/runs/{o['run']}/turn", None),
        ("POST", f"/api/runs/{o['run']}/cancel", {}),
        ("GET", f"/api/runs/{o['run']}/stream", None),
        ("GET", f"/api/conversations/{o['conversation']}/", None),
        ("PATCH", f"/api/conversations/{o['conversation']}/", {"title": "mine now"}),
        ("GET", f"/api/conversations/{o['conversation']}/items", None),
        ("GET", f"/api/conversations/{o['conversation']}/turns", None),
        ("DELETE", f"/api/conversations/{o['conversation']}/", None),
        ("POST", "/api/agents/chat/run", {"input": "hi", "conversation_id": str(o["conversation"])}),
        ("POST", "/api/agents/chat/stream", {"input": "hi", "conversation_id": str(o["conversation"])}),
        ("GET", f"/api/research/{o['report']}/", None),
        ("GET", f"/v1/responses/{o['response']}", None),
        ("GET", f"/v1/responses/{o['response']}?stream=true", None),
        ("POST", f"/v1/responses/{o['response']}/cancel", {}),
        ("DELETE", f"/v1/responses/{o['response']}", None),
        ("POST", "/v1/responses", {"model": "chat", "input": "hi", "previous_response_id": o["response"]}),
    ]


def dead_tokens(alice) -> dict[str, str]:
    """Keys of Alice's that no longer work: one expired, one revoked."""
    _token, expired = token_create(alice, "expired", timezone.now() + timedelta(milliseconds=1))
    token, revoked = token_create(alice, "revoked")
    token_revoke(token)
    return {"expired token": expired, "revoked token": revoked}


async def call(method: str, path: str, body, token: str | None, headers=()) -> tuple[int, bytes]:
    """Through the real ASGI application (Django views and the Channels consumers alike)."""
    raw_body = json.dumps(body).encode() if body is not None else b""
    client = SSEClient(
        method, path, raw_body, token, headers=[(b"content-length", str(len(raw_body)).encode()), *headers]
    )
    status = await client.start(timeout=10)
    if status == 200 and client.headers.get("content-type", "").startswith("text/event-stream"):
        await client.read_chunk(10)  # a stream that opened: enough to know it served the object
    else:
        await client.read_all(10)
    # The client leaves, as a real one does: the request's thread gives its database connection
    # back (on PostgreSQL a pool of DB_POOL_MAX_SIZE; requests left open would exhaust it).
    await client.disconnect()
    await client.comm.wait(10)
    return status, client.raw


UNAUTHENTICATED = ["nobody", "bad token", "expired token", "revoked token"]


@pytest.mark.parametrize("who", [*UNAUTHENTICATED, "bob", "staff"])
async def test_nobody_but_the_owner_reaches_an_object(objects, alice, bob, make_user, who):
    staff = await sync_to_async(make_user)("sam", is_staff=True, is_superuser=True)
    tokens = {"nobody": None, "bad token": "0" * 40, "bob": bob.token, "staff": staff.token}
    tokens.update(await sync_to_async(dead_tokens)(alice))
    token = tokens[who]
    runs_before = await Run.objects.acount()
    for method, path, body in endpoints(objects):
        status, raw = await call(method, path, body, token)
        expected = 401 if who in UNAUTHENTICATED else 404
        assert status == expected, (who, method, path, status, raw[:200])
    assert await Run.objects.acount() == runs_before  # nothing started on Alice's objects
    conversation = await alice.conversations.aget(pk=objects["conversation"])
    assert conversation.title != "mine now"


async def test_the_owner_reaches_every_object(objects, alice):
    readable = [(m, p, b) for m, p, b in endpoints(objects) if m == "GET"]
    for method, path, body in [*readable, endpoints(objects)[6]]:  # every read, and the rename
        status, raw = await call(method, path, body, alice.token)
        assert status == 200, (method, path, status, raw[:200])


@pytest.mark.parametrize("who", ["bob", "staff"])
async def test_sockets_treat_another_users_objects_as_missing(objects, bob, make_user, who):
    user = bob if who == "bob" else await sync_to_async(make_user)("sam", is_staff=True)
    auth = [(b"authorization", f"Token {user.token}".encode())]
    conversation = WebsocketCommunicator(
        application, f"/ws/conversations/{objects['conversation']}/", headers=auth
    )
    await conversation.connect()
    assert (await conversation.receive_output(2))["code"] == 4404
    ws = WebsocketCommunicator(application, "/ws/agents/chat/", headers=auth)
    assert (await ws.connect())[0]
    for message in (
        {"type": "resume", "run_id": str(objects["run"])},
        {"type": "cancel", "run_id": str(objects["run"])},
        {"type": "run", "input": "hi", "conversation_id": str(objects["conversation"])},
    ):
        await ws.send_to(text_data=json.dumps(message))
        reply = await ws.receive_json_from(5)
        assert reply["type"] == "error" and reply["code"] == "not_found", (message, reply)
    await ws.disconnect()


@pytest.mark.parametrize("who", ["expired token", "revoked token"])
async def test_sockets_refuse_dead_tokens(objects, alice, who):
    key = (await sync_to_async(dead_tokens)(alice))[who]
    auth = [(b"authorization", f"Token {key}".encode())]
    for path in ("/ws/agents/chat/", f"/ws/conversations/{objects['conversation']}/"):
        ws = WebsocketCommunicator(application, path, headers=auth)
        await ws.connect()
        assert (await ws.receive_output(2))["code"] == 4401


def session_cookies(user) -> tuple[list[tuple[bytes, bytes]], str]:
    client = Client()
    client.force_login(user)
    client.get("/account/")  # sets the CSRF cookie
    cookies = "; ".join(f"{name}={morsel.value}" for name, morsel in client.cookies.items())
    return [(b"cookie", cookies.encode())], client.cookies["csrftoken"].value


async def test_a_session_needs_csrf_for_unsafe_requests_a_token_does_not(objects, alice):
    cookie, csrf = await sync_to_async(session_cookies)(alice)
    unsafe = [(m, p, b) for m, p, b in endpoints(objects) if m != "GET"]
    runs_before = await Run.objects.acount()
    for method, path, body in unsafe:
        status, raw = await call(method, path, body, None, headers=cookie)
        assert status == 403 and b"CSRF" in raw, (method, path, status, raw[:200])
    assert await Run.objects.acount() == runs_before
    # The same session reads without one, and writes with one; a token writes without one.
    reads = [(m, p, b) for m, p, b in endpoints(objects) if m == "GET"]
    for method, path, body in reads:
        assert (await call(method, path, body, None, headers=cookie))[0] == 200, path
    rename = ("PATCH", f"/api/conversations/{objects['conversation']}/", {"title": "by session"})
    with_csrf = [*cookie, (b"x-csrftoken", csrf.encode())]
    assert (await call(*rename, None, headers=with_csrf))[0] == 200
    assert (await call(*rename[:2], {"title": "by token"}, alice.token))[0] == 200
