"""`manage.py prune`: past their retention, stream events (not a run's summary or terminal event),
traces (and those of deleted runs) and, when asked, idle conversations go; recent ones and active
runs stay, and a run streaming meanwhile is unaffected."""

import asyncio
import datetime as dt
import io

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.utils import timezone

from agents_app.models import Conversation, Run, RunEvent
from traces_app.models import Span, Trace

from .streams import SSEClient, stream_run, wait_finished

pytestmark = pytest.mark.django_db(transaction=True)


async def aged(run_id, days: int) -> Run:
    """A finished run made `days` old."""
    when = timezone.now() - dt.timedelta(days=days)
    await Run.objects.filter(pk=run_id).aupdate(finished_at=when, created_at=when)
    return await Run.objects.aget(pk=run_id)


async def a_trace(pk: str, run_id=None, days: int = 0) -> None:
    trace = await Trace.objects.acreate(id=pk, workflow_name="w", run_id=run_id)
    await Span.objects.acreate(id=f"span_{pk}", trace=trace, span_type="agent")
    when = timezone.now() - dt.timedelta(days=days)
    await Trace.objects.filter(pk=pk).aupdate(created_at=when)


def prune() -> str:
    out = io.StringIO()
    call_command("prune", "--batch-size", "3", stdout=out)
    return out.getvalue()


async def test_old_events_and_traces_go_summaries_and_recent_ones_stay(alice, settings):
    settings.RETAIN_RUN_EVENTS_DAYS, settings.RETAIN_TRACES_DAYS = 30, 30
    _c, old_events = await stream_run(alice.token, {"input": "what is 2 + 2?"})
    _c, new_events = await stream_run(alice.token, {"input": "hello"})
    old = await aged(old_events[0]["run_id"], 40)
    new = await wait_finished(new_events[0]["run_id"])
    deleted = await Run.objects.acreate(owner=alice, agent="chat", input="x", status="completed")
    # Ids of the test's own: the runs' real traces are exported meanwhile, at the SDK's pace.
    await a_trace("t-old", old.pk, days=40)
    await a_trace("t-new", new.pk)
    await a_trace("t-orphan", deleted.pk)
    await deleted.adelete()

    report = await sync_to_async(prune)()
    assert "done:" in report
    kept = [e async for e in RunEvent.objects.filter(run=old).values_list("type", flat=True)]
    assert kept == ["stream_complete"]  # the run's end stays: a join still ends
    assert await RunEvent.objects.filter(run=new).acount() == len(new_events)
    old = await Run.objects.aget(pk=old.pk)
    assert "4" in old.final_output and old.total_tokens > 0  # the summary stays
    ours = ["t-old", "t-new", "t-orphan"]
    assert [t async for t in Trace.objects.filter(pk__in=ours).values_list("pk", flat=True)] == ["t-new"]
    assert await Span.objects.filter(trace_id__in=ours).acount() == 1
    join = SSEClient("GET", f"/api/runs/{old.pk}/stream", None, alice.token)
    assert await join.start() == 200
    assert [e["type"] for e in await join.read_all()] == ["stream_complete"]


async def test_idle_conversations_go_when_asked_and_a_live_run_is_untouched(alice, settings, slow_model):
    settings.RETAIN_RUN_EVENTS_DAYS = 1
    _c, events = await stream_run(alice.token, {"input": "hello"})
    idle = await Conversation.objects.aget(pk=events[0]["conversation_id"])
    await Conversation.objects.filter(pk=idle.pk).aupdate(updated_at=timezone.now() - dt.timedelta(days=100))
    await prune_async()
    assert await Conversation.objects.filter(pk=idle.pk).aexists()  # off by default
    settings.RETAIN_IDLE_CONVERSATIONS_DAYS = 90

    slow_model["seconds"] = 1.5  # a run streams while the prune runs
    live = SSEClient("POST", "/api/agents/chat/stream", {"input": "hi"}, alice.token)
    assert await live.start() == 200
    live_run = (await live.read_until(lambda e: e["type"] == "run_started"))[0]["run_id"]
    await Run.objects.filter(pk=live_run).aupdate(created_at=timezone.now() - dt.timedelta(days=5))
    await asyncio.gather(prune_async(), asyncio.sleep(0))
    streamed = await live.read_all(timeout=10)
    assert streamed[-1]["type"] == "stream_complete"
    assert await RunEvent.objects.filter(run_id=live_run).acount() == streamed[-1]["seq"]
    assert not await Conversation.objects.filter(pk=idle.pk).aexists()
    assert not await Run.objects.filter(conversation_id=idle.pk).aexists()


async def prune_async() -> None:
    await sync_to_async(prune)()
