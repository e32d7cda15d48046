"""The research manager: plan -> searches in parallel -> write, inside one Run, with a stored report.

Registered as the `research` agent, so REST, SSE, WebSocket, cancel and resume work as for any
agent. Every agent call goes through `ctx.stream_agent`, so the planner's, searchers' and
writer's own events are part of the run's stream, between our `research_progress` events.
"""

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.utils import timezone

from agents_app.db import in_sync_thread
from agents_app.models import Run
from agents_app.providers import register_structured_composer
from agents_app.registry import AgentSpec, register
from agents_app.runs.context import RunContext

from .ai_agents import (
    SearchContext,
    build_planner_agent,
    build_search_agent,
    build_writer_agent,
    search_backend,
    writer_input,
)
from .models import ResearchReport
from .offline_composers import compose_plan, compose_report

log = logging.getLogger(__name__)


@dataclass
class ResearchState:
    """What the run has learned so far; saved to the report even when the run stops early."""

    report: ResearchReport
    query: str
    plan: list[dict[str, str]] = field(default_factory=list)
    results: list[dict[str, Any] | None] = field(default_factory=list)

    def finished_results(self) -> list[dict[str, Any]]:
        return [r for r in self.results if r is not None]

    def sources(self) -> list[dict[str, Any]]:
        """Distinct sources of all finished searches, in the order they were first found."""
        seen: dict[Any, dict[str, Any]] = {}
        for result in self.finished_results():
            for src in result["sources"]:
                key = src.get("document_id") or src.get("source") or src.get("title")
                seen.setdefault(key, {k: src.get(k) for k in ("document_id", "title", "source")})
        return list(seen.values())


def input_problem(input: Any) -> str | None:
    """Why a run input cannot be researched (the spec's `input_problem`: refused at the start,
    on every surface), or None."""
    query = query_text(input)
    if not query:
        return "the research question is empty: send it as the input, or as the last user message"
    # The generic agent endpoints allow longer inputs than a research question.
    if len(query) > settings.RESEARCH_MAX_QUERY_CHARS:
        return f"the research question is longer than {settings.RESEARCH_MAX_QUERY_CHARS} characters"
    return None


def query_text(input: Any) -> str:
    """The research question: the run input, or the last user message of an input list."""
    if isinstance(input, str):
        return input.strip()
    for item in reversed(input or []):
        if isinstance(item, dict) and item.get("role", "user") == "user":
            content = item.get("content")
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            if isinstance(content, str) and content.strip():
                return content.strip()
    return ""


@in_sync_thread
def report_for_run(run: Run) -> ResearchReport:
    """The run's report; the API view and the pipeline both call this, whichever comes first creates it."""
    report, _ = ResearchReport.objects.get_or_create(
        run_id=run.pk, defaults={"owner_id": run.owner_id, "query": query_text(run.input)}
    )
    return report


async def _save(report: ResearchReport, **fields: Any) -> None:
    for name, value in fields.items():
        setattr(report, name, value)
    reports = ResearchReport.objects.filter(pk=report.pk)
    await in_sync_thread(reports.update)(updated_at=timezone.now(), **fields)


def _progress(
    ctx: RunContext, state: ResearchState, stage: str, completed: int, total: int, **extra: Any
) -> None:
    ctx.emit(
        {
            "type": "research_progress",
            "stage": stage,
            "completed": completed,
            "total": total,
            "plan": state.plan,
            "sources": extra.pop("sources", []),
            "report_id": state.report.pk,
            **extra,
        }
    )


async def research_pipeline(ctx: RunContext) -> dict[str, Any] | None:
    report = await report_for_run(ctx.run)
    state = ResearchState(report=report, query=report.query)
    # The run's trace (the executor opened it): planner, searches and writer in one.
    await _save(report, status=ResearchReport.Status.RUNNING, trace_id=ctx.run.trace_id)
    try:
        await _plan(ctx, state)
        if not ctx.cancelled:
            await _search_all(ctx, state)
        output = None if ctx.cancelled else await _write(ctx, state)
        if output is not None:
            return output
    except asyncio.CancelledError:
        # An immediate cancel, or the server stopping: record what was found so far, then let
        # the executor finish the run.
        status = ResearchReport.Status.INTERRUPTED if ctx.interrupted else ResearchReport.Status.CANCELLED
        await asyncio.shield(_stop(ctx, state, status))
        raise
    except Exception as exc:
        await _stop(ctx, state, ResearchReport.Status.FAILED, error=str(exc) or type(exc).__name__)
        raise
    # A cancel after the current turn: the stage in progress ended early and nothing more starts.
    await _stop(ctx, state, ResearchReport.Status.CANCELLED)
    return ctx.partial_output


async def _stop(ctx: RunContext, state: ResearchState, status: str, error: str = "") -> None:
    """A research that stops early: its report keeps what was found so far, and the run's output
    says where that report is (never the text of an inner agent cut short)."""
    ctx.partial_output = {"report_id": state.report.pk, "status": status, "plan": state.plan}
    await _save(
        state.report,
        status=status,
        error=error,
        plan=state.plan,
        search_results=state.finished_results(),
        sources=state.sources(),
        finished_at=timezone.now(),
    )


async def _plan(ctx: RunContext, state: ResearchState) -> None:
    _progress(ctx, state, "planning", 0, 0)
    result = await ctx.stream_agent(build_planner_agent(), state.query, answering=False, max_turns=3)
    if ctx.cancelled or result.final_output is None:
        return
    seen: set[str] = set()
    for item in result.final_output.searches:
        query = " ".join(item.query.split())
        if query and query.lower() not in seen:
            seen.add(query.lower())
            state.plan.append({"query": query, "reason": item.reason.strip()})
    state.plan = state.plan[: max(1, settings.RESEARCH_MAX_SEARCHES)]
    if not state.plan:
        state.plan = [
            {"query": state.query, "reason": "The planner proposed no searches; search the question."}
        ]
    await _save(state.report, plan=state.plan)


async def _search_all(ctx: RunContext, state: ResearchState) -> None:
    total = len(state.plan)
    state.results = [None] * total
    _progress(ctx, state, "searching", 0, total)
    limit = asyncio.Semaphore(max(1, settings.RESEARCH_SEARCH_CONCURRENCY))
    completed = 0

    async def run_one(index: int, item: dict[str, str]) -> None:
        nonlocal completed
        async with limit:
            if ctx.cancelled:
                return
            try:
                # Not wait_for: on Python 3.11 it swallows a cancel that lands as the search ends.
                async with asyncio.timeout(settings.RESEARCH_SEARCH_TIMEOUT):
                    result = await _search(ctx, item)
            except Exception as exc:
                # One failed search costs its results, not the report.
                message = str(exc) or type(exc).__name__
                log.warning("research search %r failed: %s", item["query"], message)
                result = {**item, "status": "failed", "error": message, "summary": "", "sources": []}
        state.results[index] = result
        completed += 1
        _progress(
            ctx,
            state,
            "searching",
            completed,
            total,
            sources=result["sources"],
            search={
                "index": index,
                "query": item["query"],
                "status": result["status"],
                "error": result["error"],
            },
        )

    async with asyncio.TaskGroup() as group:
        for index, item in enumerate(state.plan):
            group.create_task(run_one(index, item))
    await _save(state.report, search_results=state.finished_results(), sources=state.sources())


async def _search(ctx: RunContext, item: dict[str, str]) -> dict[str, Any]:
    search_ctx = SearchContext(limit=settings.RESEARCH_SEARCH_RESULTS, user_id=ctx.run.owner_id)
    # The reason travels as a developer message so the user message is the search term alone.
    input = [
        {"role": "developer", "content": f"Reason for this search: {item['reason']}"},
        {"role": "user", "content": item["query"]},
    ]
    result = await ctx.stream_agent(
        build_search_agent(), input, answering=False, context=search_ctx, max_turns=4
    )
    sources = search_ctx.hits if search_backend() == "local" else _web_sources(result)
    summary = str(result.final_output or "")
    return {**item, "status": "completed", "error": "", "summary": summary, "sources": sources}


def _web_sources(result: Any) -> list[dict[str, Any]]:
    """The pages the hosted web search cited (url_citation annotations of the answer)."""
    sources: dict[str, dict[str, Any]] = {}
    for item in result.new_items:
        if item.type != "message_output_item":
            continue
        for part in getattr(item.raw_item, "content", None) or []:
            for note in getattr(part, "annotations", None) or []:
                if getattr(note, "type", "") == "url_citation" and note.url not in sources:
                    sources[note.url] = {
                        "document_id": None,
                        "title": note.title or note.url,
                        "source": note.url,
                        "snippet": "",
                        "score": 0.0,
                    }
    return list(sources.values())


async def _write(ctx: RunContext, state: ResearchState) -> dict[str, Any] | None:
    total = len(state.plan)
    _progress(ctx, state, "writing", total, total, sources=state.sources())
    writing = writer_input(state.query, state.finished_results())
    result = await ctx.stream_agent(build_writer_agent(), writing, answering=False)
    if ctx.cancelled or result.final_output is None:
        return None
    data = result.final_output
    await _save(
        state.report,
        status=ResearchReport.Status.COMPLETED,
        short_summary=data.short_summary,
        markdown_report=data.markdown_report,
        follow_up_questions=list(data.follow_up_questions),
        finished_at=timezone.now(),
    )
    return {
        "short_summary": data.short_summary,
        "markdown_report": data.markdown_report,
        "follow_up_questions": list(data.follow_up_questions),
        "report_id": state.report.pk,
    }


register_structured_composer("ResearchPlan", compose_plan)
register_structured_composer("ResearchReportData", compose_report)
register(
    AgentSpec(
        slug="research",
        title="Research",
        description="Plans searches, runs them in parallel over the documents (or the web), writes a report.",
        build=build_planner_agent,
        pipeline=research_pipeline,
        uses_memory=False,
        input_problem=input_problem,
    )
)
