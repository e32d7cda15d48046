"""Executing one run: its agent (or pipeline) streamed through its `RunContext`, then its end with
exactly one terminal event, or its pause for approval of tool calls (`approval_required`, the
SDK's state stored with it), from which any process resumes it.
"""

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from agents import RunState, trace
from django.conf import settings

from .. import metrics, providers
from ..db import in_sync_thread
from ..models import Approval, Conversation, Run
from ..session import DjangoSession, MemoryWindow
from .context import Paused, Resume, RunContext
from .errors import JOURNAL_FAILED, RunTimeout, error_code, error_text
from .events import PAUSE_TYPE, final_output_json
from .journal import COMMITTED, REFUSED, VOID
from .store import Pause, RunEnd

log = logging.getLogger(__name__)

INTERRUPTED_BY_SHUTDOWN = "the run was interrupted: the server stopped before it finished"


async def execute(ctx: RunContext, wait_for_turn: Callable[[RunContext], Awaitable[None]]) -> None:
    """A run's whole life in its task; `wait_for_turn` holds a queued run until it may start."""
    run = ctx.run
    status, final, error, code = Run.Status.COMPLETED, None, "", ""
    began = ctx.began = time.monotonic()
    metrics.ACTIVE_RUNS.inc()
    who = {"run_id": str(run.pk), "user_id": run.owner_id, "agent": run.agent}
    # One line when a run starts (or resumes) and one when it ends (or pauses), never one per event.
    log.info(
        "run %s %s (agent %s, user %s)",
        run.pk,
        "restarted" if ctx.restart else "resumed" if ctx.resume else "started",
        run.agent,
        run.owner_id,
        extra={**who, "model": run.model},
    )
    try:
        if run.status == Run.Status.QUEUED:
            await wait_for_turn(ctx)
        if ctx.restart is not None:
            ctx.emit(ctx.restart.event())
        elif ctx.resume is None:
            metrics.RUNS_STARTED.labels(run.agent).inc()
            ctx.emit(
                {
                    "type": "run_started",
                    "conversation_id": str(run.conversation_id) if run.conversation_id else None,
                    "agent": run.agent,
                    "provider": run.provider,
                    "model": run.model,
                }
            )
        with _run_trace(ctx):
            final = await _within_run_timeout(_run_body(ctx))
        if isinstance(final, Paused):
            outcome = await _record_pause(ctx, final.result)
            if outcome == COMMITTED:
                metrics.ACTIVE_RUNS.dec()
                log.info("run %s paused: %d calls await approval", run.pk, len(final.result.interruptions))
                return
            final = None
            if outcome != VOID:  # the database refused the state or stayed away: the run fails
                ctx.lost = RuntimeError(f"its pause for approval could not be stored ({outcome})")
        if ctx.cancelled:
            status = Run.Status.CANCELLED
    except asyncio.CancelledError:
        if ctx.released:  # its worker stops: another one goes on with it (worker.release)
            await ctx.journal.flush()
            metrics.ACTIVE_RUNS.dec()
            log.info("run %s handed over to another worker", run.pk, extra=who)
            return
        status = Run.Status.CANCELLED
    except Exception as exc:
        status, error, code = Run.Status.FAILED, error_text(exc), error_code(exc)
        # A traceback only for faults of this server: upstream failures and limits say it all.
        log.warning("run %s failed (%s): %s", run.pk, code, error, exc_info=code == "internal_error")
    if ctx.lost is not None:
        status, code = Run.Status.FAILED, JOURNAL_FAILED
        error = f"the run's events could not be stored: {ctx.lost}"
    elif ctx.interrupted and status == Run.Status.CANCELLED:
        status, error, code = Run.Status.INTERRUPTED, INTERRUPTED_BY_SHUTDOWN, "interrupted"
    if status != Run.Status.COMPLETED and final is None:
        final = ctx.partial(status)
    await _finish(ctx, status, final_output_json(final), error, code)
    metrics.ACTIVE_RUNS.dec()
    metrics.RUNS_FINISHED.labels(run.agent, run.status).inc()
    metrics.RUN_DURATION.labels(run.agent, run.status).observe(time.monotonic() - began)
    if code.startswith("model_"):
        metrics.UPSTREAM_ERRORS.labels(code).inc()
    duration = round(time.monotonic() - began, 3)
    ended = {**who, "status": run.status, "error_code": code or None, "duration_s": duration, **ctx.usage}
    log.info(
        "run %s ended %s in %.2f s (%d tokens)",
        run.pk,
        run.status,
        duration,
        ctx.usage["total_tokens"],
        extra=ended,
    )


def _run_trace(ctx: RunContext):
    """The run's one SDK trace, whatever agents it runs (a pipeline's several included)."""
    run = ctx.run
    return trace(
        ctx.spec.title or run.agent,
        trace_id=run.trace_id,
        group_id=str(run.conversation_id) if run.conversation_id else None,
        metadata={"run_id": str(run.pk), "agent": run.agent, "user_id": str(run.owner_id)},
        disabled=not providers.tracing_on(),
    )


async def _run_body(ctx: RunContext) -> Any:
    if ctx.spec.pipeline is not None:
        return await ctx.spec.pipeline(ctx)
    run = ctx.run
    session = None
    if ctx.spec.uses_memory and run.conversation_id:
        cached = Run.conversation.is_cached(run)
        conversation = (
            run.conversation
            if cached
            else await in_sync_thread(Conversation.objects.get)(pk=run.conversation_id)
        )
        session = ctx.session = DjangoSession(
            conversation, empty=ctx.fresh_conversation, deferred=True, window=memory_window()
        )
        if ctx.restart is not None:
            session.restore(ctx.restart.memory)
    agent = ctx.spec.build(None)
    if ctx.resume is not None:
        state = await _decided_state(agent, ctx.resume, run.context or None)
        result = await ctx.stream_agent(agent, state, session=session)
    else:
        result = await ctx.stream_agent(
            agent,
            run.input,
            session=session,
            context=run.context or None,
            max_turns=settings.AGENTS_MAX_TURNS,
        )
    if result.interruptions and not ctx.cancelled:
        return Paused(result)
    return result.final_output


async def _decided_state(agent: Any, resume: Resume, context: Any) -> RunState:
    """The SDK state the run paused with, each pending call approved or rejected as decided (a
    rejected call's tool does not run; the model reads the rejection and its reason)."""
    state = await RunState.from_json(agent, resume.state, context_override=context)
    for item in state.get_interruptions():
        decision = resume.decisions.get(getattr(item.raw_item, "call_id", None))
        if decision is None:  # not decided (cannot happen: the run resumes once all are)
            state.reject(item, rejection_message="the call was not decided")
        elif decision.status == decision.Status.APPROVED:
            state.approve(item, always_approve=decision.always)
        else:
            state.reject(item, rejection_message=rejection_message(decision))
    return state


def rejection_message(decision: Any) -> str:
    """What the model reads of a rejected call."""
    who = f" by {decision.decided_by.get_username()}" if decision.decided_by_id else ""
    because = f": {decision.reason}" if decision.reason else ""
    return f"the call was rejected{who}{because}; it was not carried out"


async def _record_pause(ctx: RunContext, result: Any) -> str:
    """The run waits for decisions on its calls: its SDK state, its pending calls, its memory so
    far and its `approval_required` event, committed together; the journal's outcome (VOID: the
    run had ended meanwhile, the stale sweep)."""
    run = ctx.run
    pending = [_pending_call(ctx, item) for item in result.interruptions]
    state = result.to_state().to_json()
    memory = ctx.session.take_rows() if ctx.session is not None else []
    event = ctx.next_event({"type": PAUSE_TYPE, "approvals": [call_body(a) for a in pending]})
    fields = dict(
        status=Run.Status.AWAITING_APPROVAL,
        worker_channel="",
        heartbeat_at=None,
        response_id=ctx.response_id,
        current_turn=ctx.current_turn,
        **ctx.usage,
    )
    end = RunEnd(fields, run.agent, memory, run.owner_id, pause=Pause(state, pending))
    outcome = await ctx.journal.end(ctx.run_key, event, end)
    if outcome != COMMITTED:
        ctx.seq -= 1  # the run's end takes the pause's seq
        return outcome
    run.status = Run.Status.AWAITING_APPROVAL
    return outcome


def _pending_call(ctx: RunContext, item: Any) -> Approval:
    raw = item.raw_item
    try:
        arguments = json.loads(getattr(raw, "arguments", None) or "{}")
    except ValueError:
        arguments = {"raw": getattr(raw, "arguments", "")}
    return Approval(
        run_id=ctx.run.pk,
        call_id=getattr(raw, "call_id", None) or "",
        tool_name=item.tool_name or "",
        agent_name=item.agent.name if item.agent is not None else "",
        arguments=arguments,
    )


def call_body(approval: Approval) -> dict:
    """A pending call as `approval_required` shows it (the API's approvals add their decision)."""
    return {
        "approval_id": str(approval.pk),
        "tool_name": approval.tool_name,
        "arguments": approval.arguments,
        "agent_name": approval.agent_name,
        "call_id": approval.call_id,
    }


async def _within_run_timeout(body: Awaitable[Any]) -> Any:
    """The run's body, ended by RunTimeout past AGENTS_RUN_TIMEOUT (a TimeoutError of its own,
    a tool's say, stays what it is)."""
    limit = settings.AGENTS_RUN_TIMEOUT
    if not limit:
        return await body
    deadline = asyncio.timeout(limit)
    try:
        async with deadline:
            return await body
    except TimeoutError:
        if deadline.expired():
            raise RunTimeout(f"the run took longer than its limit of {limit:g} s") from None
        raise


def memory_window() -> MemoryWindow | None:
    """What a run sends the model of its conversation (AGENTS_MEMORY_MAX_ITEMS, _MAX_TOKENS)."""
    items, tokens = settings.AGENTS_MEMORY_MAX_ITEMS, settings.AGENTS_MEMORY_MAX_TOKENS
    return MemoryWindow(items, tokens) if items or tokens else None


async def _finish(ctx: RunContext, status: str, final: Any, error: str, code: str) -> None:
    # A cancel arriving now (a second request, the heartbeat finding the first one in the
    # database, shutdown) must neither interrupt the end nor end this task before it: the
    # task's end drops the run's local readers, which must get the terminal event.
    ending = asyncio.ensure_future(_record_end(ctx, status, final, error, code))
    while True:
        try:
            await asyncio.shield(ending)
            return
        except asyncio.CancelledError:
            if ending.cancelled():
                raise
            asyncio.current_task().uncancel()  # this task is ending anyway, once it is written


def stream_complete(
    final: Any, usage: dict, current_turn: int, conversation_id: str | None, status: str, response_id: str
) -> dict:
    """The body of a run's `stream_complete` event (completed or cancelled)."""
    return {
        "type": "stream_complete",
        "final_output": final,
        "usage": usage,
        "current_turn": current_turn,
        "conversation_id": conversation_id,
        "status": status,
        "response_id": response_id or None,
    }


def unowned_complete(run: Run, final: Any, usage: dict, status: str) -> dict:
    """The `stream_complete` event of a run no process runs (a paused run cancelled, an orphaned
    run's cancel): its seq is the run's next, given when the journal stores it."""
    conversation_id = str(run.conversation_id) if run.conversation_id else None
    body = stream_complete(final, usage, run.current_turn, conversation_id, status, run.response_id)
    return {"type": body["type"], "seq": None, "run_id": str(run.pk), **body}


async def _record_end(ctx: RunContext, status: str, final: Any, error: str, code: str) -> None:
    """The run's final state and its terminal event, committed together by the journal: no reader
    ever sees one without the other. Everything the run emitted before is stored first."""
    run = ctx.run
    fields = dict(
        status=status,
        final_output=final,
        error=error,
        error_code=code,
        response_id=ctx.response_id,
        current_turn=ctx.current_turn,
        **ctx.usage,
    )
    if ctx.unrecorded_cancel_at is not None:
        fields.update(cancel_requested_at=ctx.unrecorded_cancel_at, cancel_mode=ctx.cancel_mode)
    if ctx.lost is not None:
        ctx.seq = ctx.journal.next_seq(ctx.run_key) - 1  # right after the last event stored
    # A failed or interrupted run leaves the conversation's memory as it was: its input
    # (which may be what made it fail) would otherwise be replayed to every later run of
    # the conversation, and a retry would repeat it. The run keeps its input and events.
    keeps_memory = status not in (Run.Status.FAILED, Run.Status.INTERRUPTED)
    memory = ctx.session.take_rows() if ctx.session is not None and keeps_memory else []
    conversation_id = str(run.conversation_id) if run.conversation_id else None
    if status in (Run.Status.COMPLETED, Run.Status.CANCELLED):
        usage, turn = ctx.usage, ctx.current_turn
        terminal = stream_complete(final, usage, turn, conversation_id, status, ctx.response_id)
    else:
        terminal = {"type": "error", "message": error, "code": code}
    event = ctx.next_event(terminal)
    outcome = await ctx.journal.end(ctx.run_key, event, RunEnd(fields, run.agent, memory, run.owner_id))
    if outcome == REFUSED:
        # Something in the result (the output, the memory) is what the database refused: the run
        # ends failed without it, under the same seq.
        error = "the run's result could not be stored"
        fields = {"status": Run.Status.FAILED, "error": error, "error_code": JOURNAL_FAILED, **ctx.usage}
        # Numbered after the run's last stored event (those in the refused batch may be lost).
        seq = ctx.journal.next_seq(ctx.run_key)
        event = {"type": "error", "seq": seq, "run_id": ctx.run_key, "message": error, "code": JOURNAL_FAILED}
        outcome = await ctx.journal.end(ctx.run_key, event, RunEnd(fields, run.agent, owner_id=run.owner_id))
    if outcome not in ("committed", "void"):
        log.error("the end of run %s could not be stored (%s); the stale sweep will end it", run.pk, outcome)
    else:
        run.status = fields["status"]
