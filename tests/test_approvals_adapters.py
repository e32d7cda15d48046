"""Approvals in the protocol adapters' own terms (docs/approvals.md): the AI SDK's tool approval
parts, AG-UI's interrupts; answers that repeat, that are wrong, or that are not the caller's to
give. The client packages themselves answering are in tests/node/ (ai_sdk, ag_ui)."""

import json

import pytest
from asgiref.sync import sync_to_async

from agents_app.api.ai_sdk_chunks import UIMessageTranslator
from agents_app.models import Approval, Run, RunEvent
from tokens_app.models import ApiToken, token_revoke

from .streams import SSEClient, wait_finished
from .test_ag_ui import ag_ui_stream, run_input
from .test_ai_sdk import chunks_of, read_to_end
from .test_approvals import LARGE, refunds  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db(transaction=True)


def ui_body(chat_id: str, message: dict) -> dict:
    return {"id": chat_id, "messages": [message], "trigger": "submit-message"}


def user_message(text: str = LARGE) -> dict:
    return {"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}


def answer_message(run_id: str, call: dict, approved: bool, reason: str | None = None) -> dict:
    """The assistant message as the `ai` package sends it back after `addToolApprovalResponse`."""
    approval = {"id": call["approval_id"], "approved": approved}
    if reason is not None:
        approval["reason"] = reason
    part = {
        "type": "tool-refund_order",
        "toolCallId": call["call_id"],
        "state": "approval-responded",
        "input": call["arguments"],
        "approval": approval,
    }
    return {"id": run_id, "role": "assistant", "parts": [{"type": "step-start"}, part]}


async def post_ui(token, body) -> SSEClient:
    client = SSEClient("POST", "/api/agents/ops/ui", body, token)
    await client.start()
    return await read_to_end(client)


async def paused_chat(user, chat_id: str = "refunds", on_disconnect: str = "continue") -> tuple[list, dict]:
    """A chat whose run paused: its response's chunks, and the pending call."""
    client = await post_ui(user.token, {**ui_body(chat_id, user_message()), "on_disconnect": on_disconnect})
    assert client.status == 200, client.raw
    chunks = chunks_of(client.raw)
    run = await Run.objects.aget(owner=user)
    approval = await Approval.objects.aget(run=run)
    call = {
        "approval_id": str(approval.pk),
        "call_id": approval.call_id,
        "arguments": approval.arguments,
        "run_id": str(run.pk),
    }
    return chunks, call


async def test_a_pause_ends_the_response_with_approval_requests(alice, refunds):  # noqa: F811
    # Even a run whose client's leaving cancels it: the response ended, the client did not leave.
    chunks, call = await paused_chat(alice, on_disconnect="cancel")
    kinds = [c if c == "[DONE]" else c["type"] for c in chunks]
    assert kinds[0] == "start" and kinds[-3:] == ["finish-step", "finish", "[DONE]"]
    tool = next(c for c in chunks if c != "[DONE]" and c["type"] == "tool-input-available")
    request = next(c for c in chunks if c != "[DONE]" and c["type"] == "tool-approval-request")
    assert request == {
        "type": "tool-approval-request",
        "approvalId": call["approval_id"],
        "toolCallId": tool["toolCallId"],
    }
    assert chunks[-2] == {
        "type": "finish",
        "finishReason": "tool-calls",
        "messageMetadata": {"run_id": call["run_id"], "status": "awaiting_approval"},
    }
    run = await Run.objects.aget(pk=call["run_id"])
    assert run.status == Run.Status.AWAITING_APPROVAL and refunds == []


async def test_answers_go_on_with_the_same_message_from_the_pause(alice, refunds):  # noqa: F811
    paused, call = await paused_chat(alice)
    body = ui_body("refunds", answer_message(call["run_id"], call, approved=True))
    client = await post_ui(alice.token, body)
    assert client.status == 200, client.raw
    chunks = chunks_of(client.raw)
    assert chunks[0] == {
        "type": "start",
        "messageId": call["run_id"],
        "messageMetadata": {
            "run_id": call["run_id"],
            "conversation_id": paused[0]["messageMetadata"]["conversation_id"],
            "status": "running",
        },
    }
    # Nothing of the paused response again: the agent, the tool's result, then the answer's step.
    assert chunks[1] == {"type": "message-metadata", "messageMetadata": {"agent_name": "Ops"}}
    assert chunks[2] == {
        "type": "tool-output-available",
        "toolCallId": call["call_id"],
        "output": "refunded 250.00 on order A17",
    }
    assert chunks[3] == {"type": "start-step"}
    assert chunks[-2]["type"] == "finish" and chunks[-2]["finishReason"] == "stop"
    run = await wait_finished(call["run_id"])
    assert run.status == Run.Status.COMPLETED and refunds == [("A17", 250.0)]
    approval = await Approval.objects.aget(pk=call["approval_id"])
    assert (approval.status, approval.surface) == ("approved", "ai_sdk")

    # The full replay of the run is the two responses, one after the other, as one message.
    events = [(e.seq, json.dumps(e.data)) async for e in RunEvent.objects.filter(run=run).order_by("seq")]
    whole = chunks_of(UIMessageTranslator().frames(events))
    tail = [c for c in chunks[1:] if c != "[DONE]"]
    assert whole[-len(tail) - 1 : -1] == tail

    # The same answer again (a client retrying): not decided twice, the rest of the run again.
    again = await post_ui(alice.token, body)
    assert again.status == 200 and chunks_of(again.raw)[1:] == chunks[1:]
    assert refunds == [("A17", 250.0)]


async def test_a_rejection_is_a_denied_output(alice, refunds):  # noqa: F811
    _paused, call = await paused_chat(alice)
    client = await post_ui(alice.token, ui_body("refunds", answer_message(call["run_id"], call, False, "no")))
    chunks = chunks_of(client.raw)
    assert chunks[2] == {"type": "tool-output-denied", "toolCallId": call["call_id"]}
    text = "".join(c["delta"] for c in chunks if c != "[DONE]" and c["type"] == "text-delta")
    assert "rejected by alice: no" in text
    assert refunds == []


@pytest.mark.parametrize(
    "approval, code, status",
    [
        ({"id": "not-a-uuid", "approved": True}, "not_found", 404),
        ({"id": "00000000-0000-4000-8000-000000000000", "approved": True}, "not_found", 404),
        ({"approved": True}, "invalid", 400),
        ({"id": "{call}", "approved": "yes"}, "invalid", 400),
        ({"id": "{call}", "approved": False, "reason": 5}, "invalid", 400),
        ({"id": "{call}", "approved": False, "reason": "x" * 2001}, "invalid", 400),
    ],
)
async def test_bad_answers_are_refused_and_decide_nothing(alice, approval, code, status):
    _paused, call = await paused_chat(alice)
    approval = {**approval, "id": call["approval_id"]} if approval.get("id") == "{call}" else approval
    message = answer_message(call["run_id"], call, True)
    message["parts"][1]["approval"] = approval
    client = await post_ui(alice.token, ui_body("refunds", message))
    assert client.status == status, client.raw
    assert client.json()["type"] == "error" and client.json()["code"] == code
    assert (await Approval.objects.aget(pk=call["approval_id"])).status == "pending"


async def test_only_the_runs_owner_in_that_chat_may_answer(alice, bob, refunds):  # noqa: F811
    _paused, call = await paused_chat(alice)
    body = ui_body("refunds", answer_message(call["run_id"], call, True))
    # Another user, even with the same chat id: 404, as if the call did not exist.
    assert (await post_ui(bob.token, body)).status == 404
    # The owner, in another chat or through another agent: 404.
    assert (await post_ui(alice.token, {**body, "id": "other-chat"})).status == 404
    wrong_agent = SSEClient("POST", "/api/agents/chat/ui", body, alice.token)
    assert await wrong_agent.start() == 404
    # A revoked token: 401.
    token = await ApiToken.objects.aget(user=alice)
    await sync_to_async(token_revoke)(token)
    assert (await post_ui(alice.token, body)).status == 401
    assert (await Approval.objects.aget(pk=call["approval_id"])).status == "pending"
    assert refunds == []


async def test_resume_of_a_paused_chat_ends_at_its_pause(alice):
    paused, _call = await paused_chat(alice)
    client = SSEClient("GET", "/api/agents/ops/ui/refunds/stream", None, alice.token)
    assert await client.start() == 200
    await read_to_end(client)
    assert chunks_of(client.raw) == paused


def test_the_translator_writes_nothing_through_after():
    call = {"call_id": "c1"}
    events = [
        {"type": "run_started"},
        {"type": "run_item", "name": "tool_called", **call, "tool_name": "t", "tool_arguments": "{}"},
        {"type": "approval_required", "approvals": [{"approval_id": "a1", **call}]},
        {"type": "approval_decided", **call, "decision": "rejected"},
        {"type": "run_item", "name": "tool_output", **call, "output": "no"},
    ]
    batch = [(seq, json.dumps({**e, "seq": seq, "run_id": "r"})) for seq, e in enumerate(events, 1)]
    denied = [{"type": "tool-output-denied", "toolCallId": "c1"}]
    assert chunks_of(UIMessageTranslator(after=3).frames(batch)) == denied
    translator = UIMessageTranslator()
    translator.frames(batch[:3])
    assert chunks_of(translator.paused_end())[-1] == "[DONE]"


async def paused_thread(user, thread_id: str = "ops-thread") -> tuple[list, dict]:
    """An AG-UI run of `ops` that ended with an interrupt (its client would cancel on leaving)."""
    body = run_input(LARGE, thread_id=thread_id, forwardedProps={"on_disconnect": "cancel"})
    _client, events = await ag_ui_stream(user.token, body, slug="ops")
    return events, events[-1]["outcome"]["interrupts"][0]


def resume_input(interrupt: dict, thread_id: str = "ops-thread", **answer) -> dict:
    entry = {"interruptId": interrupt["id"], "status": "resolved", "payload": {"approved": True}, **answer}
    return run_input("not read", thread_id=thread_id, run_id="client-run-2", resume=[entry])


async def test_ag_ui_pause_is_an_interrupt_and_resume_is_the_rest_of_the_run(alice, refunds):  # noqa: F811
    events, interrupt = await paused_thread(alice)
    kinds = [e["type"] for e in events]
    assert kinds[-4:] == ["TOOL_CALL_END", "CUSTOM", "STEP_FINISHED", "RUN_FINISHED"]
    run_id = events[0]["metadata"]["runId"]
    assert interrupt["reason"] == "tool_approval" and interrupt["toolCallId"] == events[-4]["toolCallId"]
    assert interrupt["metadata"] == {
        "toolName": "refund_order",
        "arguments": {"order_id": "A17", "amount": 250.0},
        "agentName": "Ops",
        "runId": run_id,
    }
    run = await Run.objects.aget(pk=run_id)
    assert run.status == Run.Status.AWAITING_APPROVAL  # the response ended, the run waits

    _client, rest = await ag_ui_stream(alice.token, resume_input(interrupt), slug="ops")
    assert rest[0]["type"] == "RUN_STARTED" and rest[0]["runId"] == "client-run-2"
    assert rest[0]["metadata"]["runId"] == run_id
    assert [e["type"] for e in rest[1:4]] == ["CUSTOM", "STEP_STARTED", "TOOL_CALL_RESULT"]
    assert rest[1]["name"] == "approval_decided" and rest[1]["value"]["surface"] == "ag_ui"
    assert rest[-1]["type"] == "RUN_FINISHED" and "refunded 250.00" in rest[-1]["result"]
    assert refunds == [("A17", 250.0)]
    assert (await wait_finished(run_id)).status == Run.Status.COMPLETED


@pytest.mark.parametrize(
    "entry, status, field",
    [
        ({"payload": {"approved": "yes"}}, 400, "resume.0.payload"),
        ({"payload": None}, 400, "resume.0.payload"),
        ({"payload": {"approved": False, "reason": 3}}, 400, "resume.0.payload.reason"),
        ({"status": "maybe"}, 400, None),
        ({"interruptId": "00000000-0000-4000-8000-000000000000"}, 404, None),
    ],
)
async def test_ag_ui_bad_resume_entries_decide_nothing(alice, entry, status, field):
    _events, interrupt = await paused_thread(alice)
    client = SSEClient("POST", "/api/agents/ops/ag-ui", resume_input(interrupt, **entry), alice.token)
    assert await client.start() == status
    await read_to_end(client)
    assert client.json()["type"] == "RUN_ERROR"
    if field:
        assert field in client.json()["metadata"]["fields"]
    approval = await Approval.objects.aget(pk=interrupt["id"])
    assert approval.status == "pending"


async def test_ag_ui_resume_only_in_the_runs_thread_by_its_owner(alice, bob):
    _events, interrupt = await paused_thread(alice)
    for token, body in [
        (bob.token, resume_input(interrupt)),
        (alice.token, resume_input(interrupt, thread_id="another-thread")),
    ]:
        client = SSEClient("POST", "/api/agents/ops/ag-ui", body, token)
        assert await client.start() == 404
    assert (await Approval.objects.aget(pk=interrupt["id"])).status == "pending"
