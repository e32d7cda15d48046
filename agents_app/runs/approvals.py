"""Decisions on the tool calls a paused run waits for, from any surface and any process.

A decision changes a run that no process runs, so it goes through the journal like every other
change of a run (`Journal.change`): checked against the stored state, recorded with its
`approval_decided` event in one transaction, published after the commit. The decision that leaves
no call pending also takes the run (`running`, on this process's control channel), in that same
transaction: of two processes deciding at once, one commits first and resumes the run, and the
other finds the call decided (409). The run then goes on here, from its stored SDK state.
"""

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from ..db import in_sync_thread
from ..errors import AlreadyDecided, NotFound, RunNotActive, ServiceError
from ..models import Approval, ConversationItem, Run, RunPause
from ..registry import get_spec
from .context import Resume
from .execute import call_body, unowned_complete
from .jobs import defer_run, in_workers
from .journal import COMMITTED
from .store import RunEnd

log = logging.getLogger(__name__)

DECISIONS = {"approve": Approval.Status.APPROVED, "reject": Approval.Status.REJECTED}
MAX_REASON = 2000
EXPIRE_BATCH = 100  # calls expired per check (the next check takes the rest)


def approval_body(approval: Approval) -> dict:
    """An approval as the API shows it: the call, and its decision."""
    return {
        **call_body(approval),
        "run_id": str(approval.run_id),
        "status": approval.status,
        "reason": approval.reason or None,
        "always": approval.always,
        "decided_by": approval.decided_by.get_username() if approval.decided_by_id else None,
        "surface": approval.surface or None,
        "created_at": approval.created_at.isoformat().replace("+00:00", "Z"),
        "decided_at": approval.decided_at.isoformat().replace("+00:00", "Z") if approval.decided_at else None,
    }


def check_decision(decision: Any, reason: Any, always: Any) -> tuple[str, str, bool]:
    """A decision's fields as a client sent them, or a 400 naming the one that is wrong."""
    if not isinstance(decision, str) or decision not in DECISIONS:
        raise ServiceError("decision must be 'approve' or 'reject'", field="decision")
    if reason is None:
        reason = ""
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise ServiceError(f"reason must be a string of at most {MAX_REASON} characters", field="reason")
    if always is None:
        always = False
    if not isinstance(always, bool):
        raise ServiceError("always must be true or false", field="always")
    if always and decision != "approve":
        raise ServiceError("always applies to 'approve' only", field="always")
    return decision, reason, always


async def decide(
    executor: Any,
    run_id: Any,
    approval_id: Any,
    decision: str,
    *,
    user: Any,
    surface: str,
    reason: str = "",
    always: bool = False,
) -> dict:
    """Record a decision (the caller has checked that `user` may decide on this run); returns its
    `approval_decided` event. The last decision of a pause resumes the run on `executor` (the
    running loop's `RunExecutor`)."""
    # In worker mode the run goes on in whichever worker takes its job (deferred with the decision).
    channel = Run.UNCLAIMED if in_workers() else await executor.ensure_started()
    change = _decision(
        str(run_id), str(approval_id), DECISIONS[decision], reason, always, user, surface, channel
    )
    event = await executor.journal.change(str(run_id), change)
    if event["pending"] == 0 and channel != Run.UNCLAIMED:
        await resume(executor, run_id)
    return event


def _decision(
    run_id: str,
    approval_id: str,
    status: str,
    reason: str,
    always: bool,
    user: Any,
    surface: str,
    channel: str,
) -> Callable[[datetime], dict]:
    def change(now: datetime) -> dict:
        # The run's row first, locked: every decision on a run (and its resume) goes one at a time.
        run = Run.objects.select_for_update().filter(pk=run_id).first()
        approval = Approval.objects.filter(pk=approval_id, run_id=run_id).first() if run else None
        if approval is None:
            raise NotFound(f"approval {approval_id} of run {run_id} not found")
        if approval.status != Approval.Status.PENDING:
            raise AlreadyDecided(
                f"approval {approval_id} was already decided: {approval.status}",
                approval_id=approval_id,
                status=approval.status,
            )
        if run.status != Run.Status.AWAITING_APPROVAL:
            raise RunNotActive(f"run {run_id} is {run.status}, not awaiting approval", status=run.status)
        approval.status, approval.reason, approval.always = status, reason, always
        approval.decided_by = user if user is not None and user.is_authenticated else None
        approval.surface, approval.decided_at = surface, now
        approval.save(update_fields=["status", "reason", "always", "decided_by", "surface", "decided_at"])
        pending = Approval.objects.filter(run_id=run_id, status=Approval.Status.PENDING).count()
        seq = run.last_seq + 1
        fields: dict[str, Any] = {"last_seq": seq}
        if not pending:  # the run goes on, here (or, unclaimed, in the worker that takes its job)
            fields.update(status=Run.Status.RUNNING, worker_channel=channel, heartbeat_at=now)
            if channel == Run.UNCLAIMED:
                defer_run(run_id, resume=True)
        Run.objects.filter(pk=run_id).update(**fields)
        return {
            "type": "approval_decided",
            "seq": seq,
            "run_id": run_id,
            "approval_id": approval_id,
            "call_id": approval.call_id,
            "tool_name": approval.tool_name,
            "decision": status,
            "reason": reason or None,
            "always": always,
            "decided_by": approval.decided_by.get_username() if approval.decided_by else None,
            "surface": surface,
            "pending": pending,
        }

    return change


async def reject_pending(executor: Any, run: Run, reason: str, surface: str) -> None:
    """Reject every call a paused run waits for (no one decided: `interrupted`, `expired`); the
    run then goes on, here, and ends its answer."""
    pending = await in_sync_thread(_pending_ids)(run.pk)
    for approval_id in pending:
        await decide(executor, run.pk, approval_id, "reject", user=None, surface=surface, reason=reason)


async def expire_pending(executor: Any) -> int:
    """Reject the calls that waited longer than AGENTS_APPROVAL_TIMEOUT (`expired`); how many.
    Every process checks now and then (with its stale sweep): whichever comes first decides, the
    others find the calls decided."""
    expired = 0
    for run_id, approval_id in await in_sync_thread(_expired_ids)():
        try:
            await decide(
                executor, run_id, approval_id, "reject", user=None, surface="expiry", reason="expired"
            )
        except (AlreadyDecided, RunNotActive, NotFound):
            continue
        expired += 1
    return expired


async def end_cancelled(executor: Any) -> int:
    """End the paused runs whose cancel was only recorded (the admin's cancel action is sync code
    with no engine to end them; every process checks with its stale sweep); how many."""
    cancelled = Run.objects.filter(status=Run.Status.AWAITING_APPROVAL, cancel_requested_at__isnull=False)
    runs = await in_sync_thread(list)(cancelled[:EXPIRE_BATCH])
    return sum([await end_paused(executor.journal, run) for run in runs])


def _pending_ids(run_id: Any) -> list:
    return list(
        Approval.objects.filter(run_id=run_id, status=Approval.Status.PENDING).values_list("pk", flat=True)
    )


def _expired_ids() -> list[tuple]:
    cutoff = timezone.now() - timedelta(seconds=settings.AGENTS_APPROVAL_TIMEOUT)
    expired = Approval.objects.filter(status=Approval.Status.PENDING, created_at__lt=cutoff)
    return list(expired.order_by("created_at").values_list("run_id", "pk")[:EXPIRE_BATCH])


async def resume(executor: Any, run_id: Any) -> None:
    """Go on with a run this process took at its last decision, from its stored state."""
    run, state = await in_sync_thread(_resumed)(run_id)
    executor.resume(run, get_spec(run.agent), state)


def _resumed(run_id: Any) -> tuple[Run, Resume]:
    return Run.objects.select_related("conversation").get(pk=run_id), resume_from(run_id)


def resume_from(run_id: Any) -> Resume:
    """What a decided run goes on from: its stored SDK state and the decisions on its calls."""
    state = RunPause.objects.get(run_id=run_id).state
    decisions = {a.call_id: a for a in Approval.objects.select_related("decided_by").filter(run_id=run_id)}
    return Resume(state, decisions)


async def end_paused(journal: Any, run: Run, status: str = Run.Status.CANCELLED) -> bool:
    """End a run that waits for approval (a cancel): its pending calls end rejected and its
    stream with `stream_complete`; True if this ended it (False: it had resumed or ended).

    The conversation's memory holds the calls (stored at the pause): each gets an output saying it
    was not run, as a model expects every call it made to have one (OpenAI's API refuses a
    conversation with a call and no output)."""
    event = unowned_complete(run, None, run.usage, status)
    fields = {"status": status, **run.usage}
    memory = await in_sync_thread(_unanswered_calls)(
        run, f"not run: the run was {status} before it was decided"
    )
    end = RunEnd(fields, run.agent, memory, owner_id=run.owner_id, ends_pause=True)
    return await journal.end(str(run.pk), event, end) == COMMITTED


def _unanswered_calls(run: Run, output: str) -> list[ConversationItem]:
    """Outputs for the calls a paused run's memory holds without one (none if it keeps no memory)."""
    if run.conversation_id is None or not RunPause.objects.filter(run=run).exists():
        return []
    calls = Approval.objects.filter(run=run, status=Approval.Status.PENDING).values_list("call_id", flat=True)
    remembered = ConversationItem.objects.filter(
        conversation_id=run.conversation_id, data__call_id__in=list(calls)
    )
    answered = {
        data.get("call_id")
        for data in remembered.filter(data__type="function_call_output").values_list("data", flat=True)
    }
    asked = [
        data.get("call_id")
        for data in remembered.filter(data__type="function_call").values_list("data", flat=True)
    ]
    return [
        ConversationItem(
            conversation_id=run.conversation_id,
            data={"type": "function_call_output", "call_id": call_id, "output": output},
        )
        for call_id in asked
        if call_id not in answered
    ]
