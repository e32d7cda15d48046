"""REST: auth, owner isolation, validation, the reference paths, and that runs do not serialise the server."""

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async

from agents_app.models import Conversation, Run

pytestmark = pytest.mark.django_db(transaction=True)


async def test_health_is_open(api_for):
    response = await api_for(None).get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize(
    "method,path",
    [
        ("get", "/api/agents/"),
        ("get", "/api/agents/chat/info"),
        ("post", "/api/agents/chat/run"),
        ("post", "/chat/run"),
        ("get", "/chat/info"),
        ("get", "/api/conversations/"),
        ("get", "/api/runs/"),
    ],
)
async def test_auth_required(api_for, method, path):
    response = await getattr(api_for(None), method)(path)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


async def test_bad_token_rejected(api_for, alice):
    api = api_for(None)
    response = await api.get("/api/agents/", Authorization="Token nope")
    assert response.status_code == 401


async def test_agent_list_and_info(api_for, alice):
    api = api_for(alice)
    agents = (await api.get("/api/agents/")).json()
    slugs = {a["slug"] for a in agents}
    assert {"chat", "assistant"} <= slugs
    info = (await api.get("/api/agents/assistant/info")).json()
    assert info["provider"] == "offline"
    assert info["handoffs"] == ["Math Specialist", "Writing Specialist"]
    assert info["endpoints"]["run"] == "/api/agents/assistant/run"
    chat = (await api.get("/chat/info")).json()
    assert {t["name"] for t in chat["tools"]} == {"calculate", "current_time", "roll_dice"}
    assert isinstance(chat["instructions"], str) and chat["instructions"]


async def test_unknown_agent_is_404(api_for, alice):
    api = api_for(alice)
    response = await api.post("/api/agents/nope/run", {"input": "hi"})
    assert response.status_code == 404
    assert "nope" in response.json()["error"]["message"]
    assert (await api.get("/api/agents/nope/info")).status_code == 404


async def test_run_returns_reference_shape(api_for, alice):
    api = api_for(alice)
    response = await api.post("/chat/run", {"input": "Hello there", "session_id": "123"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["success"] is True and body["error"] is None
    assert body["session_id"] == "123"
    assert isinstance(body["final_output"], str) and body["final_output"]
    assert body["usage"]["requests"] >= 1 and body["usage"]["total_tokens"] > 0
    run = await Run.objects.aget(pk=body["run_id"])
    assert run.status == "completed" and run.total_tokens == body["usage"]["total_tokens"]
    assert str(run.conversation_id) == body["conversation_id"]


async def test_session_id_is_per_user(api_for, alice, bob):
    first = (await api_for(alice).post("/chat/run", {"input": "hi", "session_id": "123"})).json()
    again = (await api_for(alice).post("/chat/run", {"input": "hi again", "session_id": "123"})).json()
    other = (await api_for(bob).post("/chat/run", {"input": "hi", "session_id": "123"})).json()
    assert first["conversation_id"] == again["conversation_id"]
    assert other["conversation_id"] != first["conversation_id"]


INVALID_BODIES = [
    ({"input": ""}, "input"),
    ({"input": "   "}, "input"),
    ({"input": 42}, "input"),
    ({"input": []}, "input"),
    ({"input": ["not an object"]}, "input"),
    ({"input": [{"role": "user"}]}, "input"),  # no content: the model would refuse it
    ({"input": [{"text": "hi"}]}, "input"),  # neither a message nor a typed item
    ({"input": [{"role": "user", "content": 5}]}, "input"),
    ({}, "input"),
    ({"input": "hi", "context": "nope"}, "context"),
    ({"input": "hi", "session_id": 5 * "x" * 100}, "session_id"),
    ({"input": "hi", "on_disconnect": "explode"}, "on_disconnect"),
    ({"input": "x" * 40_000}, "input"),
    ({"input": "hi", "conversation_id": "not-a-uuid"}, "conversation_id"),
]


@pytest.mark.parametrize("body,field", INVALID_BODIES)
async def test_validation_errors_create_nothing(api_for, alice, body, field):
    response = await api_for(alice).post("/api/agents/chat/run", body)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert field in error["fields"]
    assert await Run.objects.acount() == 0
    assert await Conversation.objects.acount() == 0


async def test_null_conversation_fields_mean_a_new_conversation(api_for, alice):
    api = api_for(alice)
    nulls = {"input": "hi", "conversation_id": None, "session_id": None}
    first = await api.post("/api/agents/chat/run", nulls)
    second = await api.post("/api/agents/chat/run", {"input": "hi", "conversation_id": None})
    assert first.status_code == second.status_code == 200, first.content
    assert first.json()["conversation_id"] != second.json()["conversation_id"]


async def test_input_items_in_both_forms_are_accepted(api_for, alice):
    items = [
        {"role": "user", "content": "Remember the number 7."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What was it?"}]},
    ]
    response = await api_for(alice).post("/api/agents/chat/run", {"input": items})
    assert response.status_code == 200, response.content


async def test_malformed_json_and_non_object(api_for, alice):
    api = api_for(alice)
    response = await api.post("/api/agents/chat/run", raw="{not json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"
    response = await api.post("/api/agents/chat/run", raw="[1, 2]")
    assert response.status_code == 400
    assert await Run.objects.acount() == 0


async def test_body_over_upload_limit(api_for, alice, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    response = await api_for(alice).post("/api/agents/chat/run", {"input": "y" * 20_000})
    assert response.status_code in (400, 413)
    assert "error" in response.json()
    assert await Run.objects.acount() == 0


async def test_owner_isolation(api_for, alice, bob):
    body = (await api_for(alice).post("/api/agents/chat/run", {"input": "secret plans"})).json()
    conversation, run = body["conversation_id"], body["run_id"]
    bob_api, alice_api = api_for(bob), api_for(alice)
    for path in (
        f"/api/conversations/{conversation}/",
        f"/api/conversations/{conversation}/items/",
        f"/api/runs/{run}/",
        f"/api/runs/{run}/events/",
    ):
        assert (await bob_api.get(path)).status_code == 404, path
        assert (await alice_api.get(path)).status_code == 200, path
    assert (await bob_api.get("/api/runs/")).json()["count"] == 0
    assert (await bob_api.get("/api/conversations/")).json()["count"] == 0
    assert (await bob_api.delete(f"/api/conversations/{conversation}/")).status_code == 404
    assert (await bob_api.post(f"/api/runs/{run}/cancel")).status_code == 404
    response = await bob_api.post("/api/agents/chat/run", {"input": "hi", "conversation_id": conversation})
    assert response.status_code == 404
    assert await Run.objects.filter(owner=bob).acount() == 0


async def test_conversation_rename_delete_items(api_for, alice):
    api = api_for(alice)
    body = (await api.post("/api/agents/chat/run", {"input": "My name is Ada."})).json()
    path = f"/api/conversations/{body['conversation_id']}/"
    renamed = await api.patch(path, {"title": "About Ada"})
    assert renamed.status_code == 200 and renamed.json()["title"] == "About Ada"
    items = (await api.get(path + "items/")).json()
    assert items["count"] >= 2
    assert items["results"][0]["data"]["role"] == "user"
    assert (await api.delete(path)).status_code == 204
    assert (await api.get(path)).status_code == 404


async def test_conversation_of_other_agent_rejected(api_for, alice):
    api = api_for(alice)
    body = (await api.post("/api/agents/chat/run", {"input": "hi"})).json()
    response = await api.post(
        "/api/agents/assistant/run", {"input": "hi", "conversation_id": body["conversation_id"]}
    )
    assert response.status_code == 409
    assert response.json()["error"]["field"] == "conversation_id"
    assert response.json()["error"]["code"] == "conversation_of_another_agent"


async def test_twenty_concurrent_runs_do_not_serialise(api_for, alice, slow_model, admin_client):
    """20 runs of a 1 s model finish in about 1 s in all, and the admin answers meanwhile."""
    api = api_for(alice)

    async def admin_latency():
        await asyncio.sleep(0.3)
        started = time.monotonic()
        response = await sync_to_async(admin_client.get)("/admin/")
        assert response.status_code == 200
        return time.monotonic() - started

    started = time.monotonic()
    *responses, admin_seconds = await asyncio.gather(
        *(api.post("/api/agents/chat/run", {"input": f"question {i}"}) for i in range(20)), admin_latency()
    )
    elapsed = time.monotonic() - started
    assert [r.status_code for r in responses] == [200] * 20
    assert all(r.json()["final_output"] == "done" for r in responses)
    assert slow_model["calls"] == 20
    assert elapsed < 4, f"20 concurrent 1 s runs took {elapsed:.1f} s"
    assert admin_seconds < 1.0, f"admin took {admin_seconds:.2f} s while runs were going"
