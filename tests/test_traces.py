"""Traces: every run's Agents SDK trace stored in the database (agents, model calls, tools,
handoffs, with timings and errors), linked from its run, drawn for staff in the admin."""

import asyncio

import pytest
from agents.tracing import flush_traces
from asgiref.sync import sync_to_async
from django.contrib.admin.utils import quote
from django.test import Client
from django.urls import reverse

from agents_app.models import Run
from traces_app.models import Span, Trace

from .streams import stream_run, wait_finished

pytestmark = pytest.mark.django_db(transaction=True)


async def traced_run(user, body: dict, path: str = "/api/agents/assistant/stream") -> tuple[Run, Trace]:
    _client, events = await stream_run(user.token, body, path=path)
    run = await wait_finished(events[0]["run_id"])
    await sync_to_async(flush_traces)()  # the processor writes every 5 s; the test does not wait
    return run, await Trace.objects.aget(pk=run.trace_id)


async def spans_of(trace: Trace) -> list[Span]:
    return [span async for span in trace.spans.order_by("started_at", "id")]


async def test_a_run_with_a_handoff_and_a_tool_stores_its_span_tree(alice):
    run, trace = await traced_run(alice, {"input": "What is 17 * 23?"})
    assert trace.run_id == run.pk and trace.workflow_name == "Assistant"
    assert trace.metadata["run_id"] == str(run.pk) and trace.group_id == str(run.conversation_id)
    spans = await spans_of(trace)
    by_name = {(span.span_type, span.name): span for span in spans}
    assistant = by_name[("agent", "Assistant")]
    handoff = next(span for span in spans if span.span_type == "handoff")
    math = next(span for span in spans if span.span_type == "agent" and span.name != "Assistant")
    tool = by_name[("function", "calculate")]
    assert handoff.name == f"Assistant → {math.name}"
    parents = {span.id: span.parent_id for span in spans}

    def agent_of(span: Span) -> str:
        """The agent span a span is under (through the SDK's turn spans)."""
        parent = parents[span.id]
        while parent and parent not in (assistant.id, math.id):
            parent = parents[parent]
        return parent

    # The handoff and the first model call under the assistant; the tool and the next model
    # calls under the specialist; both agents under the run's task.
    assert agent_of(handoff) == assistant.id and agent_of(tool) == math.id
    generations = [span for span in spans if span.span_type == "generation"]
    assert [agent_of(span) for span in generations] == [assistant.id, math.id, math.id]
    assert all(span.input_tokens is not None for span in generations)
    assert assistant.parent_id == math.parent_id and math.parent_id
    # Order: the assistant, its handoff, then the specialist and its tool.
    assert assistant.started_at <= handoff.started_at <= math.started_at <= tool.started_at
    assert "391" in str(tool.data["output"]) and tool.error is None
    assert trace.span_count == len(spans) and trace.error_count == 0
    assert trace.duration_ms is not None and all(span.duration_ms is not None for span in spans)


async def test_a_failing_tool_marks_its_span(alice, start_fake, use_fake):
    use_fake(start_fake(tool_calls={"calculate": {"no_such_argument": 1}}, text="I could not."))
    run, trace = await traced_run(alice, {"input": "What is 2 + 2?"}, path="/api/agents/chat/stream")
    assert run.status == "completed"  # the agent was told, and went on
    tool = await Span.objects.aget(trace=trace, span_type="function")
    assert tool.name == "calculate" and tool.error is not None
    assert trace.error_count == 1


async def test_a_research_run_is_one_trace(alice):
    _run, trace = await traced_run(alice, {"input": "volcanoes"}, path="/api/agents/research/stream")
    names = {span.name for span in await spans_of(trace) if span.span_type == "agent"}
    assert {"Research planner", "Research searcher", "Research writer"} <= names
    assert trace.workflow_name == "Research"


async def test_staff_see_the_trace_page_and_others_do_not(alice, make_user):
    run, trace = await traced_run(alice, {"input": "What is 17 * 23?"})
    sam = await sync_to_async(make_user)("sam", is_staff=True, is_superuser=True)

    def page(user, path: str) -> tuple[int, str]:
        client = Client()
        client.force_login(user)
        response = client.get(path)
        return response.status_code, response.content.decode()

    get = sync_to_async(page)
    trace_url = reverse("admin:traces_app_trace_change", args=[quote(trace.pk)])
    status, trace_page = await get(sam, trace_url)
    assert (
        status == 200 and "calculate" in trace_page and "<svg" in trace_page and "Assistant →" in trace_page
    )
    assert f"/admin/agents_app/run/{run.pk}/change/" in trace_page
    assert trace_url in (await get(sam, f"/admin/agents_app/run/{run.pk}/change/"))[1]
    assert (
        trace.pk
        in (await get(sam, "/admin/traces_app/trace/?status=ok&run__agent=assistant&duration=lt1"))[1]
    )
    assert trace.pk not in (await get(sam, "/admin/traces_app/trace/?status=error"))[1]
    assert trace.pk not in (await get(sam, "/admin/traces_app/trace/?duration=gt60"))[1]
    assert (await get(alice, trace_url))[0] == 302  # to the admin login


async def test_a_trace_written_over_several_batches_sums_all_its_spans():
    """A trace stored by one batch gets the spans of the next added to its counts and times."""
    from agents import custom_span, trace
    from agents.tracing import SpanError

    from agents_app import providers

    providers.configure_tracing()
    with trace("Batches", trace_id="trace_" + "b" * 32):
        with custom_span("first"):
            pass
        await asyncio.to_thread(flush_traces)  # the trace and its first span
        with custom_span("second") as second:
            second.set_error(SpanError(message="it broke", data=None))
    await asyncio.to_thread(flush_traces)
    stored = await Trace.objects.aget(pk="trace_" + "b" * 32)
    first, second = await spans_of(stored)
    assert (first.name, second.name) == ("first", "second") and second.error["message"] == "it broke"
    assert stored.span_count == 2 and stored.error_count == 1
    assert (stored.started_at, stored.ended_at) == (first.started_at, second.ended_at)
    assert stored.duration_ms == round((second.ended_at - first.started_at).total_seconds() * 1000)


async def test_text_no_database_can_store_does_not_lose_the_batch():
    """A NUL or a lone surrogate in a span's data or name (a tool's output, say) is replaced, and a
    run id that is none is dropped, rather than fail the batch's transaction and lose every other
    run's spans with it."""
    from agents import custom_span, trace

    from agents_app import providers

    providers.configure_tracing()
    with trace("Odd text", trace_id="trace_" + "c" * 32, metadata={"run_id": "not a run's"}):
        with custom_span("plain", data={"text": "fine"}):
            pass
        with custom_span("odd\x00name", data={"text": "a\x00b \ud800 c", "odd\x00key": 1}):
            pass
    await asyncio.to_thread(flush_traces)
    stored = await Trace.objects.aget(pk="trace_" + "c" * 32)
    plain, odd = await spans_of(stored)
    assert plain.data["data"] == {"text": "fine"} and stored.span_count == 2 and stored.run_id is None
    assert odd.name == "odd\ufffdname" and odd.data["data"] == {
        "text": "a\ufffdb \ufffd c",
        "odd\ufffdkey": 1,
    }
