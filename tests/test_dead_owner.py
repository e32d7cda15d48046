"""Runs of a process that died (SIGKILL, a lost machine) are not left hanging: the sweep ends
them `interrupted` keeping the text they had streamed, and a cancel ends them `cancelled` at once
when their process does not answer. The real kill of a real process is in tests/test_process_death.py."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from agents_app.models import Conversation, Run, RunEvent
from agents_app.runs import layer
from agents_app.runs.engine import sweep_stale_runs

pytestmark = pytest.mark.django_db(transaction=True)

DELTA = "response.output_text.delta"
COMPLETED = "response.completed"
USED = {"input_tokens": 90, "output_tokens": 10, "total_tokens": 100}


async def orphan(user, *, stale: bool, deltas=("Hello ", "wor")) -> Run:
    """A `running` run whose process is gone: its row names a control channel nobody reads, its
    events stop mid-answer (a handoff first: only the answering agent's text counts)."""
    conversation = await Conversation.objects.acreate(owner=user, agent="assistant")
    beat = timezone.now() - timedelta(seconds=60 if stale else 0)
    run = await Run.objects.acreate(
        owner=user, agent="assistant", conversation=conversation, input="x", status="running"
    )
    events = [
        {"type": "run_started", "agent": "assistant"},
        {"type": "raw_response", "event_type": DELTA, "delta": "Let me ask the writer. "},
        {"type": "agent_updated", "agent_name": "Writer"},
        {"type": "raw_response", "event_type": COMPLETED, "usage": USED},  # the first call's
        *({"type": "raw_response", "event_type": DELTA, "delta": d, "item_id": "m1"} for d in deltas),
    ]
    await RunEvent.objects.abulk_create(
        RunEvent(run=run, seq=seq, type=e["type"], data={**e, "seq": seq, "run_id": str(run.pk)})
        for seq, e in enumerate(events, 1)
    )
    channel = await layer.new_channel()  # no process receives on it
    await Run.objects.filter(pk=run.pk).aupdate(
        worker_channel=channel, heartbeat_at=beat, created_at=beat, last_seq=len(events)
    )
    return await Run.objects.aget(pk=run.pk)


async def test_a_cancel_ends_a_dead_process_s_run_at_once(alice, api_for, settings):
    run = await orphan(alice, stale=False)  # its heartbeat is fresh: the sweep would wait
    started = time.monotonic()
    response = await api_for(alice).post(f"/api/runs/{run.pk}/cancel")
    elapsed = time.monotonic() - started
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    assert elapsed < settings.RUN_OWNER_TIMEOUT + 1.5
    run = await Run.objects.aget(pk=run.pk)
    assert (run.status, run.final_output) == ("cancelled", "Hello wor")
    last = await RunEvent.objects.filter(run=run).alast()
    assert (last.seq, last.type, last.data["status"]) == (7, "stream_complete", "cancelled")
    assert last.data["final_output"] == "Hello wor" and run.last_seq == 7
    assert (run.requests, run.total_tokens) == (1, 100)  # the finished model call counts
    # The conversation takes a new message at once.
    body = {"input": "2 + 2?", "conversation_id": str(run.conversation_id)}
    assert (await api_for(alice).post("/api/agents/assistant/run", body)).status_code == 200
    # The transcript shows the cut answer.
    turn = (await api_for(alice).get(f"/api/runs/{run.pk}/turn")).json()
    assert turn["status"] == "cancelled" and "Hello wor" in turn["html"]


async def test_the_sweep_keeps_what_a_dead_process_s_run_had_written(alice, api_for):
    run = await orphan(alice, stale=True)
    silent = await orphan(alice, stale=True, deltas=())
    assert await sweep_stale_runs() == 2
    run, silent = await Run.objects.aget(pk=run.pk), await Run.objects.aget(pk=silent.pk)
    assert (run.status, run.error_code, run.final_output) == ("interrupted", "interrupted", "Hello wor")
    assert (silent.status, silent.final_output) == ("interrupted", None)
    turn = (await api_for(alice).get(f"/api/runs/{run.pk}/turn")).json()
    assert turn["status"] == "interrupted" and "Hello wor" in turn["html"]
    last = await RunEvent.objects.filter(run=run).alast()
    assert (last.seq, last.type, last.data["code"]) == (7, "error", "interrupted")
    # The tokens it had used count: on the run, and in its owner's usage (quotas read it).
    assert (run.requests, run.input_tokens, run.total_tokens) == (1, 90, 100)
    usage = (await api_for(alice).get("/api/usage/")).json()
    assert usage["total"]["total_tokens"] == 200, usage  # both runs' first calls
