"""Input no database can store (NUL characters, lone surrogates), numbers it cannot take, and
input items a run cannot use: a 400 naming the field on every way in, and nothing saved.
(On PostgreSQL each of these was a 500 before.)"""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from agents_app.models import Conversation, Run
from research_app.models import Document

from .streams import SSEClient, ws_client

pytestmark = pytest.mark.django_db(transaction=True)

NUL_BODIES = [
    ("/api/agents/chat/run", {"input": "a\x00b"}, "input"),
    ("/api/agents/chat/run", {"input": [{"role": "user", "content": "hi\x00"}]}, "input.0.content"),
    ("/api/agents/chat/run", {"input": "hi", "context": {"k\x00": "v"}}, "context"),
    ("/api/agents/chat/run", {"input": "hi", "session_id": "s\x00"}, "session_id"),
    ("/chat/run", {"input": "\ud800"}, "input"),
    ("/api/research/", {"query": "streams\x00"}, "query"),
    ("/api/conversations/", {"agent": "chat", "title": "t\ud83d"}, "title"),
]


def raw_json(body) -> str:
    """JSON with the escapes a client sends (`\\u0000`, `\\ud800`), as json.dumps writes them."""
    return json.dumps(body)


async def counts() -> tuple[int, int, int]:
    return await Run.objects.acount(), await Conversation.objects.acount(), await Document.objects.acount()


@pytest.mark.parametrize("path,body,field", NUL_BODIES)
async def test_unstorable_text_is_refused_naming_the_field(api_for, alice, path, body, field):
    before = await counts()
    response = await api_for(alice).post(path, raw=raw_json(body))
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert "cannot be stored" in error["message"]
    assert field in error["message"] or field in error.get("fields", {}), error
    assert await counts() == before


async def test_sse_and_socket_refuse_it_too(alice):
    client = SSEClient("POST", "/api/agents/chat/stream", raw_json({"input": "a\x00"}).encode(), alice.token)
    assert await client.start() == 400
    await client.read_all()
    assert json.loads(client.raw)["error"]["code"] == "invalid"
    body = {"model": "chat", "messages": [{"role": "user", "content": "\x00"}]}
    openai = SSEClient("POST", "/v1/chat/completions", raw_json(body).encode(), alice.token)
    assert await openai.start() == 400
    await openai.read_all()
    assert json.loads(openai.raw)["error"]["param"] == "messages.0.content"
    ws = ws_client("chat", alice.token)
    await ws.connect()
    await ws.send_to(text_data=raw_json({"type": "run", "input": "\ud800 hi"}))
    error = await ws.receive_json_from(5)
    assert error["type"] == "error" and error["code"] == "invalid" and "input" in error["fields"]
    await ws.disconnect()
    assert await Run.objects.acount() == 0


async def test_query_parameters_and_uploads(api_for, alice):
    api = api_for(alice)
    for path in (
        "/api/conversations/?search=%00",
        "/api/runs/?agent=chat%00",
        "/api/research/documents/?q=a%00",
    ):
        response = await api.get(path)
        assert response.status_code == 400, path
        assert "cannot be stored" in response.json()["error"]["message"]
    reference = await api.post("/research?query=a%00b")
    assert reference.status_code == 400
    uploaded = await api.client.post(
        "/api/research/documents/",
        {"file": SimpleUploadedFile("notes.md", b"# Notes\n\nsome\x00text")},
        headers={"Authorization": f"Token {alice.token}"},
    )
    assert uploaded.status_code == 400 and "body" in uploaded.json()["error"]["message"]
    assert await Document.objects.acount() == 0


async def test_numbers_a_database_cannot_take(api_for, alice):
    api = api_for(alice)
    huge = "1" + "0" * 20
    capped = await api.get("/api/runs/?limit=9999999999")  # more than a page holds: a full page
    assert capped.status_code == 200
    for path in (f"/api/runs/?limit={huge}", "/api/runs/?limit=0"):
        response = await api.get(path)
        assert response.status_code == 400 and "limit" in response.json()["error"]["fields"], path
    for path in (
        f"/api/runs/?offset={huge}",
        f"/api/conversations/?offset={huge}",
        f"/api/research/?offset={huge}",
    ):
        response = await api.get(path)
        assert response.status_code == 400, path
        assert "offset" in response.json()["error"]["fields"]


@pytest.mark.parametrize(
    "item,problem",
    [
        ({"type": "mystery", "content": "x"}, "not 'mystery'"),
        ({"type": "function_call", "call_id": "c1"}, "needs name, arguments"),
        ({"type": "function_call_output", "output": "1"}, "needs call_id"),
        ({"content": "no role"}, "not None"),
        # Each was a 500 (schemathesis): a type or field of the wrong JSON type, content parts
        # the model cannot take.
        ({"role": "user", "content": "x", "type": {}}, "not {}"),
        ({"type": "function_call_output", "call_id": [], "output": "1"}, "call_id must be a string"),
        ({"type": "function_call_output", "call_id": "c", "output": {}}, "output must be a string or array"),
        ({"role": "user", "content": [{}, 16211]}, "content parts are objects of type"),
        ({"role": "user", "content": [{"type": "input_text"}]}, "needs its text"),
        ({"role": "assistant", "content": [{"type": "input_text", "text": "hi"}]}, None),
    ],
)
async def test_input_items_a_run_cannot_use(api_for, alice, item, problem):
    response = await api_for(alice).post("/api/agents/chat/run", {"input": [item]})
    if problem is None:  # the control: a well-formed item runs
        assert response.status_code != 400, response.json()
        return
    assert response.status_code == 400
    assert problem in response.json()["error"]["message"]
    assert await Run.objects.acount() == 0


@pytest.mark.parametrize(
    "path,field",
    [
        ("/api/runs/?offset=null", "offset"),
        ("/api/runs/?limit=-5", "limit"),
        ("/api/conversations/?limit=0", "limit"),
        ("/api/approvals/?status=", "status"),
        ("/api/runs/?agent=", "agent"),
        ("/api/runs/?conversation=", "conversation"),
        ("/api/usage/?to=", "to"),
        ("/api/research/documents/?q=rivers&offset=-1", "offset"),
    ],
)
async def test_query_values_the_schema_refuses_are_400s(api_for, alice, path, field):
    """DRF reads a limit or offset it cannot parse as the default, and an empty filter as none:
    the schema says neither is valid, so both are refused naming the parameter."""
    response = await api_for(alice).get(path)
    assert response.status_code == 400, path
    assert field in response.json()["error"]["fields"], path


async def test_ranges_and_conversations_the_schema_allows(api_for, alice):
    api = api_for(alice)
    # Any range: only the days with usage come back (`from` after `to`: none).
    for query in ("from=2000-01-01", "from=2026-03-16&to=2026-01-05"):
        response = await api.get(f"/api/usage/?{query}")
        assert response.status_code == 200 and response.json()["days"] == [], query
    # A conversation of another agent is a conflict with the conversation, not a malformed request.
    conversation = (await api.post("/api/conversations/", {"agent": "ops"})).json()
    wrong = await api.post("/api/agents/chat/run", {"input": "hi", "conversation_id": conversation["id"]})
    assert wrong.status_code == 409 and wrong.json()["error"]["code"] == "conversation_of_another_agent"
    # A misspelt field of a new conversation is refused, not ignored.
    typo = await api.post("/api/conversations/", {"agent": "chat", "titel": "x"})
    assert typo.status_code == 400 and "titel" in typo.json()["error"]["fields"]
    # Text fields take text only.
    number = await api.patch(f"/api/conversations/{conversation['id']}/", {"title": 0})
    assert number.status_code == 400 and "title" in number.json()["error"]["fields"]
    # The research agent needs a question: refused at the start, not a failed run.
    question = await api.post("/api/agents/research/run", {"input": [{"role": "assistant", "content": "x"}]})
    assert question.status_code == 400 and "question" in question.json()["error"]["message"]


async def test_missing_objects_are_404s_in_the_api_shape(api_for, alice):
    api = api_for(alice)
    for path in (
        "/api/runs/00000000-0000-0000-0000-000000000000/",
        "/api/conversations/00000000-0000-0000-0000-000000000000/",
        "/api/runs/00000000-0000-0000-0000-000000000000/events",
        "/api/research/999999/",
    ):
        response = await api.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found", (path, response.json())
