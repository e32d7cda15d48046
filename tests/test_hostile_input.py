"""Input shaped to break a parser, not to be used: JSON nested a thousand levels deep, numbers that
overflow to infinity, stream positions that are digits to `str.isdigit` but not to `int`, or
longer than Python reads, or not UTF-8, and NULs in a path. Each is a 400 (or a socket's `error`
event) naming the problem, never a 500, and nothing is saved. (Each was a 500, or a socket closed
1011, before.)"""

import json

import pytest

from agents_app.models import Conversation, Run

from .streams import SSEClient, stream_run, ws_client

pytestmark = pytest.mark.django_db(transaction=True)

DEEP = "[" * 1000 + "]" * 1000  # past Python's recursion limit
OVER = json.dumps({"a": [[[[]]]]}).replace("[[[[]]]]", "[" * 70 + "]" * 70)  # past JSON_MAX_DEPTH
BAD_CURSORS = ["²", "1" * 4301, "-1", "1.5", "0x10", " 1"]


def with_context(context: str) -> str:
    return '{"input": "hi", "context": ' + context + "}"


async def nothing_saved() -> None:
    assert await Run.objects.acount() == 0 and await Conversation.objects.acount() == 0


@pytest.mark.parametrize(
    "path",
    [
        "/api/agents/chat/run",
        "/api/conversations/",
        "/api/agents/chat/stream",
        "/api/agents/chat/ui",
        "/api/agents/chat/ag-ui",
        "/v1/responses",
    ],
)
async def test_deep_nesting_is_a_400_everywhere(api_for, alice, path):
    for body in (with_context(DEEP), with_context(OVER)):
        if path.startswith("/api/agents/chat/run") or path.startswith("/api/conversations"):
            response = await api_for(alice).post(path, raw=body)  # DRF views (with a Content-Length)
            status, text = response.status_code, response.content.decode()
        else:
            client = SSEClient("POST", path, body.encode(), alice.token)  # the streaming consumers
            status = await client.start()
            await client.read_all()
            text = client.raw.decode()
        assert status == 400 and "nested deeper" in text, (path, status, text[:300])
    await nothing_saved()


async def test_numbers_that_overflow_are_a_400_naming_the_field(api_for, alice):
    api = api_for(alice)
    response = await api.post("/api/agents/chat/run", raw='{"input": "hi", "context": {"k": 1e999}}')
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "context.k": ["is a number too large to store (it overflows to infinity)"]
    }
    item = '{"input": [{"role": "user", "content": "hi", "extra": -1e999}]}'
    assert (await api.post("/api/agents/chat/run", raw=item)).status_code == 400
    metadata = b'{"model": "chat", "input": "hi", "metadata": {"k": 1e400}}'
    response = SSEClient("POST", "/v1/responses", metadata, alice.token)
    assert await response.start() == 400
    await response.read_all()
    assert json.loads(response.raw)["error"]["param"] == "metadata.k"
    for constant in ("NaN", "Infinity", "-Infinity"):
        assert (await api.post("/api/agents/chat/run", raw=with_context(constant))).status_code == 400
    await nothing_saved()


async def test_sockets_answer_with_an_error_event_and_stay_open(alice):
    ws = ws_client("chat", alice.token)
    assert (await ws.connect())[0]
    for text in (
        '{"type": "run", "input": "hi", "context": ' + DEEP + "}",
        '{"type": "run", "input": 1e999}',
    ):
        await ws.send_to(text_data=text)
        error = await ws.receive_json_from(5)
        assert error["type"] == "error" and error["code"] == "invalid", error
    _, events = await stream_run(alice.token, {"input": "hi"})
    for bad in BAD_CURSORS:
        await ws.send_json_to({"type": "resume", "run_id": events[0]["run_id"], "last_event_id": bad})
        error = await ws.receive_json_from(5)
        assert error["code"] == "invalid" and error["field"] == "last_event_id", error
    await ws.send_json_to({"type": "resume", "run_id": events[0]["run_id"], "last_event_id": "2"})
    assert (await ws.receive_json_from(5))["seq"] == 3  # still open, still serving
    await ws.disconnect()


async def test_bad_stream_positions_are_a_400(api_for, alice):
    _, events = await stream_run(alice.token, {"input": "hi"})
    run_id = events[0]["run_id"]
    for bad in [*(cursor.encode() for cursor in BAD_CURSORS), b"\xff"]:  # and a byte that is not UTF-8
        path = f"/api/runs/{run_id}/stream"
        header = SSEClient("GET", path, None, alice.token, headers=[(b"last-event-id", bad)])
        assert await header.start() == 400, bad[:10]
        await header.read_all()
        assert "last_event_id" in json.loads(header.raw)["error"]["fields"]
    query = SSEClient("GET", f"/api/runs/{run_id}/stream?last_event_id=%C2%B2", None, alice.token)
    assert await query.start() == 400
    raw = SSEClient("GET", f"/api/runs/{run_id}/stream", None, alice.token)
    raw.scope["query_string"] = b"last_event_id=\xff"
    assert await raw.start() == 400
    response_id = "resp_" + run_id.replace("-", "")
    for bad in ("%C2%B2", "1" * 4301):
        resumed = SSEClient(
            "GET", f"/v1/responses/{response_id}?stream=true&starting_after={bad}", None, alice.token
        )
        assert await resumed.start() == 400
        await resumed.read_all()
        assert json.loads(resumed.raw)["error"]["param"] == "starting_after"
    documents = await api_for(alice).get("/api/research/documents/?q=rivers&limit=%C2%B2")
    assert documents.status_code == 400 and "limit" in documents.json()["error"]["fields"]


async def test_a_nul_in_a_path_is_a_400(api_for, alice):
    api = api_for(alice)
    for response in (await api.get("/chat/session/a%00b"), await api.delete("/chat/session/a%00b")):
        assert response.status_code == 400
        assert "path" in response.json()["error"]["fields"]
