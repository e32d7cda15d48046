"""Human approval of tool calls: a run pauses on a call that needs approval (its SDK state stored
with an `approval_required` event), is decided over REST or a socket, and goes on from the
stored state: an approved call runs once, a rejected one never does."""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from agents_app.ai_agents import ops
from agents_app.models import Approval, ConversationItem, Run, RunEvent, RunPause
from agents_app.runs.approvals import end_cancelled, expire_pending
from agents_app.runs.engine import get_engine
from tokens_app.models import ApiToken, token_revoke

from .streams import SSEClient, conversation_ws, text_of, wait_finished, ws_client

pytestmark = pytest.mark.django_db(transaction=True)

LARGE = "refund order A17 250"
SMALL = "refund order A18 40"


@pytest.fixture
def refunds(monkeypatch) -> list[tuple[str, float]]:
    """The refunds the tool really made (the real tool runs, and is counted)."""
    made = []
    real = ops.refund_order.on_invoke_tool

    async def counting(context, arguments):
        parsed = json.loads(arguments)
        made.append((parsed["order_id"], parsed["amount"]))
        return await real(context, arguments)

    monkeypatch.setattr(ops.refund_order, "on_invoke_tool", counting)
    return made


async def stream_until(client: SSEClient, kind: str) -> list[dict]:
    return await client.read_until(lambda e: e["type"] == kind)


async def paused_stream(user, text: str = LARGE) -> tuple[SSEClient, dict]:
    """A run of `ops` streamed over SSE up to its pause: (the open stream, its approval_required)."""
    client = SSEClient("POST", "/api/agents/ops/stream", {"input": text}, user.token)
    assert await client.start() == 200
    events = await stream_until(client, "approval_required")
    return client, events[-1]


async def test_small_refund_runs_at_once(alice, refunds):
    client = SSEClient("POST", "/api/agents/ops/stream", {"input": SMALL}, alice.token)
    assert await client.start() == 200
    events = await client.read_all()
    assert [e["type"] for e in events if e["type"] == "approval_required"] == []
    assert refunds == [("A18", 40.0)]
    assert "refunded 40.00 on order A18" in text_of(events)


async def test_pause_is_stored_with_its_event(alice, refunds):
    client, pause = await paused_stream(alice)
    [call] = pause["approvals"]
    assert call["tool_name"] == "refund_order"
    assert call["arguments"] == {"order_id": "A17", "amount": 250.0}
    assert call["agent_name"] == "Ops" and call["call_id"]
    run = await sync_to_async(Run.objects.get)(pk=pause["run_id"])
    assert run.status == Run.Status.AWAITING_APPROVAL
    assert run.last_seq == pause["seq"] and run.worker_channel == ""
    assert await sync_to_async(RunPause.objects.filter(run=run).exists)()
    approval = await sync_to_async(Approval.objects.get)(pk=call["approval_id"])
    assert approval.status == Approval.Status.PENDING and approval.call_id == call["call_id"]
    assert refunds == []  # nothing ran
    # The stream stays open while the run waits.
    assert not client.done
    await client.disconnect()


async def test_approve_over_rest_resumes_the_same_stream(alice, api_for, refunds):
    client, pause = await paused_stream(alice)
    [call] = pause["approvals"]
    url = f"/api/runs/{pause['run_id']}/approvals/{call['approval_id']}"
    response = await api_for(alice).post(url, {"decision": "approve"})
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "approved" and response.json()["pending"] == 0
    events = await client.read_all(timeout=15)
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))  # one stream, no gap, nothing twice
    decided = [e for e in events if e["type"] == "approval_decided"]
    assert [(d["decision"], d["decided_by"], d["surface"]) for d in decided] == [
        ("approved", "alice", "rest")
    ]
    assert events[-1]["type"] == "stream_complete" and events[-1]["status"] == "completed"
    assert refunds == [("A17", 250.0)]  # once
    assert "refunded 250.00 on order A17" in events[-1]["final_output"]
    run = await wait_finished(pause["run_id"])
    assert run.status == Run.Status.COMPLETED and run.requests == 2
    stored = await sync_to_async(list)(RunEvent.objects.filter(run=run).values_list("seq", flat=True))
    assert stored == seqs
    # The chat page's transcript of the turn keeps the call and its decision.
    turn = (await api_for(alice).get(f"/api/runs/{run.pk}/turn")).json()
    steps = [(s["name"], s.get("decision")) for s in turn["steps"] if s["name"].startswith("approval")]
    assert steps == [("approval_required", None), ("approval_decided", "approved")]
    # A second decision on the same call: 409.
    again = await api_for(alice).post(url, {"decision": "reject"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "approval_decided"


async def test_reject_over_rest_never_runs_the_tool(alice, api_for, refunds):
    client, pause = await paused_stream(alice)
    [call] = pause["approvals"]
    url = f"/api/runs/{pause['run_id']}/approvals/{call['approval_id']}"
    response = await api_for(alice).post(url, {"decision": "reject", "reason": "too large"})
    assert response.status_code == 200
    events = await client.read_all(timeout=15)
    assert refunds == []
    answer = events[-1]["final_output"]
    assert "did not make the refund" in answer and "too large" in answer
    approval = await sync_to_async(Approval.objects.get)(pk=call["approval_id"])
    assert (approval.status, approval.reason, approval.surface) == ("rejected", "too large", "rest")


async def test_memory_holds_the_whole_turn_once(alice, api_for, refunds):
    client, pause = await paused_stream(alice)
    [call] = pause["approvals"]
    await api_for(alice).post(
        f"/api/runs/{pause['run_id']}/approvals/{call['approval_id']}", {"decision": "approve"}
    )
    events = await client.read_all(timeout=15)
    conversation_id = events[-1]["conversation_id"]
    items = await sync_to_async(list)(
        ConversationItem.objects.filter(conversation_id=conversation_id).values_list("data", flat=True)
    )
    kinds = [item.get("type") or item.get("role") for item in items]
    assert kinds == ["user", "function_call", "function_call_output", "message"], kinds


async def test_decide_over_a_socket(alice, refunds):
    ws = ws_client("ops", token=alice.token)
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "run", "input": LARGE})
    events = []
    while not events or events[-1]["type"] != "approval_required":
        events.append(await ws.receive_json_from(10))
    [call] = events[-1]["approvals"]
    # A bad decision is an error event and changes nothing.
    await ws.send_json_to({"type": "approve", "run_id": events[-1]["run_id"], "approval_id": "nope"})
    error = await ws.receive_json_from(5)
    assert error["type"] == "error" and error["field"] == "approval_id"
    await ws.send_json_to(
        {"type": "approve", "run_id": call and events[-1]["run_id"], "approval_id": call["approval_id"]}
    )
    while events[-1]["type"] != "stream_complete":
        events.append(await ws.receive_json_from(10))
    assert refunds == [("A17", 250.0)]
    decided = [e for e in events if e["type"] == "approval_decided"]
    assert decided[0]["surface"] == "websocket"
    await ws.disconnect()


async def test_rest_run_answers_the_pause(alice, api_for, refunds):
    response = await api_for(alice).post("/api/agents/ops/run", {"input": LARGE})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "awaiting_approval" and body["success"] is False
    [call] = body["approvals"]
    assert call["status"] == "pending" and call["arguments"]["order_id"] == "A17"
    listed = (await api_for(alice).get("/api/approvals/?status=pending")).json()
    assert [a["approval_id"] for a in listed["results"]] == [call["approval_id"]]


async def test_others_get_404_and_staff_may_decide(alice, bob, make_user, api_for, refunds):
    client, pause = await paused_stream(alice)
    [call] = pause["approvals"]
    url = f"/api/runs/{pause['run_id']}/approvals/{call['approval_id']}"
    assert (await api_for(bob).post(url, {"decision": "approve"})).status_code == 404
    assert (await api_for(bob).get(f"/api/runs/{pause['run_id']}/approvals/")).status_code == 404
    assert (await api_for(bob).get("/api/approvals/")).json()["results"] == []
    assert refunds == []
    staff = await sync_to_async(make_user)("sam", is_staff=True)
    response = await api_for(staff).post(url, {"decision": "approve"})
    assert response.status_code == 200 and response.json()["decided_by"] == "sam"
    await client.read_all(timeout=15)
    assert refunds == [("A17", 250.0)]


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "decision"),
        ({"decision": "maybe"}, "decision"),
        ({"decision": "approve", "always": "yes"}, "always"),
        ({"decision": "reject", "always": True}, "always"),
        ({"decision": "reject", "reason": 5}, "reason"),
    ],
)
async def test_bad_decisions_change_nothing(alice, api_for, body, field):
    client, pause = await paused_stream(alice)
    [call] = pause["approvals"]
    response = await api_for(alice).post(f"/api/runs/{pause['run_id']}/approvals/{call['approval_id']}", body)
    assert response.status_code == 400 and response.json()["error"]["field"] == field
    approval = await sync_to_async(Approval.objects.get)(pk=call["approval_id"])
    assert approval.status == Approval.Status.PENDING
    await client.disconnect()


async def test_cancel_ends_a_paused_run(alice, api_for, refunds):
    client, pause = await paused_stream(alice)
    response = await api_for(alice).post(f"/api/runs/{pause['run_id']}/cancel", {})
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    events = await client.read_all(timeout=10)
    assert events[-1]["type"] == "stream_complete" and events[-1]["status"] == "cancelled"
    assert events[-1]["seq"] == pause["seq"] + 1
    [call] = pause["approvals"]
    approval = await sync_to_async(Approval.objects.get)(pk=call["approval_id"])
    assert approval.status == Approval.Status.REJECTED
    late = await api_for(alice).post(
        f"/api/runs/{pause['run_id']}/approvals/{call['approval_id']}", {"decision": "approve"}
    )
    assert late.status_code == 409
    assert refunds == []
    # The memory's call has an output (a model refuses a call without one), and the
    # conversation goes on.
    conversation_id = events[-1]["conversation_id"]
    items = await sync_to_async(list)(
        ConversationItem.objects.filter(conversation_id=conversation_id).values_list("data", flat=True)
    )
    outputs = [item for item in items if item.get("type") == "function_call_output"]
    assert [(o["call_id"], o["output"]) for o in outputs] == [
        (call["call_id"], "not run: the run was cancelled before it was decided")
    ]
    body = {"input": "hello", "conversation_id": conversation_id}
    again = await api_for(alice).post("/api/agents/ops/run", body)
    assert again.status_code == 200 and again.json()["status"] == "completed"


async def test_a_conversation_socket_sees_the_pause_on_connect(alice, refunds):
    client, pause = await paused_stream(alice)
    run = await sync_to_async(Run.objects.get)(pk=pause["run_id"])
    ws = conversation_ws(run.conversation_id, alice.token)
    assert (await ws.connect())[0]
    replayed = []
    while not replayed or replayed[-1]["type"] != "approval_required":
        replayed.append(await ws.receive_json_from(5))
    assert replayed[-1]["approvals"] == pause["approvals"]
    [call] = pause["approvals"]
    # Rejected through this socket (the per-agent socket approves, in test_decide_over_a_socket).
    await ws.send_json_to(
        {"type": "reject", "run_id": pause["run_id"], "approval_id": call["approval_id"], "reason": "no"}
    )
    while replayed[-1]["type"] != "stream_complete":
        replayed.append(await asyncio.wait_for(ws.receive_json_from(10), 15))
    assert [e["seq"] for e in replayed] == list(range(1, len(replayed) + 1))
    decided = [e for e in replayed if e["type"] == "approval_decided"]
    assert [(d["decision"], d["surface"], d["reason"]) for d in decided] == [("rejected", "websocket", "no")]
    assert refunds == [] and "did not make the refund" in replayed[-1]["final_output"]
    await ws.disconnect()
    await client.read_all(timeout=10)


async def test_a_revoked_token_cannot_decide(alice, api_for, refunds):
    client, pause = await paused_stream(alice)
    [call] = pause["approvals"]
    key = await sync_to_async(ApiToken.objects.get)(user=alice)
    await sync_to_async(token_revoke)(key)
    response = await api_for(alice).post(
        f"/api/runs/{pause['run_id']}/approvals/{call['approval_id']}", {"decision": "approve"}
    )
    assert response.status_code == 401
    approval = await sync_to_async(Approval.objects.get)(pk=call["approval_id"])
    assert approval.status == Approval.Status.PENDING and refunds == []
    await client.disconnect()


async def conversation_of(run_id) -> str:
    return str((await sync_to_async(Run.objects.get)(pk=run_id)).conversation_id)


async def test_if_busy_reject_names_the_paused_run(alice, api_for, refunds):
    client, pause = await paused_stream(alice)
    body = {"input": "hello", "conversation_id": await conversation_of(pause["run_id"])}
    response = await api_for(alice).post("/api/agents/ops/run", body)
    assert response.status_code == 409
    assert response.json()["error"]["active_run_id"] == pause["run_id"]
    await client.disconnect()


async def test_if_busy_enqueue_waits_for_the_decision(alice, api_for, refunds):
    client, pause = await paused_stream(alice)
    body = {"input": "hello", "conversation_id": await conversation_of(pause["run_id"]), "if_busy": "enqueue"}
    second = SSEClient("POST", "/api/agents/ops/stream", body, alice.token)
    assert await second.start() == 200
    queued = await stream_until(second, "run_queued")
    assert queued[-1]["waiting_for"] == pause["run_id"]
    await asyncio.sleep(0.3)  # it waits: the conversation's run is awaiting approval
    assert not any(e["type"] == "run_started" for e in second.events())
    [call] = pause["approvals"]
    await api_for(alice).post(
        f"/api/runs/{pause['run_id']}/approvals/{call['approval_id']}", {"decision": "approve"}
    )
    first = await client.read_all(timeout=15)
    later = await second.read_all(timeout=15)
    assert first[-1]["status"] == "completed" and later[-1]["status"] == "completed"
    assert refunds == [("A17", 250.0)]


async def test_if_busy_interrupt_rejects_the_pending_calls(alice, api_for, refunds):
    client, pause = await paused_stream(alice)
    body = {
        "input": "hello",
        "conversation_id": await conversation_of(pause["run_id"]),
        "if_busy": "interrupt",
    }
    second = SSEClient("POST", "/api/agents/ops/stream", body, alice.token)
    assert await second.start() == 200
    first = await client.read_all(timeout=15)
    decided = [e for e in first if e["type"] == "approval_decided"]
    assert [(d["decision"], d["reason"], d["surface"]) for d in decided] == [
        ("rejected", "interrupted", "interrupt")
    ]
    assert first[-1]["status"] == "completed" and "interrupted" in first[-1]["final_output"]
    assert (await second.read_all(timeout=15))[-1]["status"] == "completed"
    assert refunds == []


async def test_a_call_waiting_too_long_expires(alice, settings, refunds):
    client, _pause = await paused_stream(alice)
    settings.AGENTS_APPROVAL_TIMEOUT = 0.05
    await asyncio.sleep(0.1)
    assert await expire_pending(get_engine().executor) == 1
    events = await client.read_all(timeout=15)
    decided = [e for e in events if e["type"] == "approval_decided"]
    assert [(d["decision"], d["reason"], d["surface"], d["decided_by"]) for d in decided] == [
        ("rejected", "expired", "expiry", None)
    ]
    assert events[-1]["status"] == "completed" and refunds == []
    assert await expire_pending(get_engine().executor) == 0


async def test_staff_decide_in_the_admin_and_the_timeline_shows_it(alice, bob, make_user, api_for, refunds):
    paused = (await api_for(alice).post("/api/agents/ops/run", {"input": LARGE})).json()
    [call] = paused["approvals"]
    staff = await sync_to_async(make_user)("sam", is_staff=True, is_superuser=True)
    admin = AsyncClient()
    await admin.aforce_login(staff)
    page = await admin.get("/admin/agents_app/approval/?status__exact=pending")
    assert page.status_code == 200
    html = page.content.decode()
    assert "refund_order" in html and f'value="reject:{call["approval_id"]}"' in html
    # Not staff: sent to the login page, nothing decided.
    other = AsyncClient()
    await other.aforce_login(bob)
    refused = await other.post("/admin/approvals/decide", {"decision": f"approve:{call['approval_id']}"})
    assert refused.status_code == 302 and "/admin/login/" in refused["Location"]
    assert (await sync_to_async(Approval.objects.get)(pk=call["approval_id"])).status == "pending"
    decided = await admin.post(
        "/admin/approvals/decide",
        {"decision": f"reject:{call['approval_id']}", f"reason-{call['approval_id']}": "not today"},
    )
    assert decided.status_code == 302
    run = await wait_finished(paused["run_id"])
    approval = await sync_to_async(Approval.objects.select_related("decided_by").get)(pk=call["approval_id"])
    assert (approval.status, approval.surface, approval.decided_by.username) == ("rejected", "admin", "sam")
    assert "not today" in run.final_output and refunds == []
    timeline = (await admin.get(f"/admin/agents_app/run/{run.pk}/change/")).content.decode()
    assert "awaits approval" in timeline and "by sam via admin" in timeline
    # A bad decision is a message on the list, not an error page.
    bad = await admin.post("/admin/approvals/decide", {"decision": "approve:nope"})
    assert bad.status_code == 302


async def test_the_admins_cancel_of_a_paused_run_is_carried_out(alice, make_user, api_for, refunds):
    paused = (await api_for(alice).post("/api/agents/ops/run", {"input": LARGE})).json()
    staff = await sync_to_async(make_user)("sam", is_staff=True, is_superuser=True)
    admin = AsyncClient()
    await admin.aforce_login(staff)
    body = {"action": "cancel_runs", "_selected_action": [paused["run_id"]]}
    assert (await admin.post("/admin/agents_app/run/", body)).status_code == 302
    run = await sync_to_async(Run.objects.get)(pk=paused["run_id"])
    assert run.status == Run.Status.AWAITING_APPROVAL and run.cancel_requested_at is not None
    # Sync code has no engine to end it: every process's periodic check does.
    assert await end_cancelled(get_engine().executor) == 1
    run = await wait_finished(paused["run_id"])
    assert run.status == Run.Status.CANCELLED
    assert (await sync_to_async(Approval.objects.get)(run=run)).status == Approval.Status.REJECTED
    assert await end_cancelled(get_engine().executor) == 0


async def test_every_page_shows_the_pending_count_and_the_approvals_page_lists_them(alice, bob, api_for):
    paused = (await api_for(alice).post("/api/agents/ops/run", {"input": LARGE})).json()
    [call] = paused["approvals"]
    browser = AsyncClient()
    await browser.aforce_login(alice)
    for path in ("/", "/account/", "/research/"):
        html = (await browser.get(path)).content.decode()
        assert 'href="/approvals/"' in html and 'aria-label="1 waiting">1</span>' in html, path
    listed = (await browser.get("/approvals/")).content.decode()
    conversation = await conversation_of(paused["run_id"])
    assert "Ops wants to run refund_order" in listed and f'href="/c/{conversation}/"' in listed
    other = AsyncClient()
    await other.aforce_login(bob)
    assert 'href="/approvals/"' not in (await other.get("/account/")).content.decode()
    assert "Nothing waits for you." in (await other.get("/approvals/")).content.decode()
    url = f"/api/runs/{paused['run_id']}/approvals/{call['approval_id']}"
    await api_for(alice).post(url, {"decision": "approve"})
    await wait_finished(paused["run_id"])
    assert 'href="/approvals/"' not in (await browser.get("/account/")).content.decode()
