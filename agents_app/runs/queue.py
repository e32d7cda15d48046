"""Queued runs (`if_busy=enqueue` or `interrupt`): a run that arrives while its conversation is busy
waits, in the order the runs came, until the conversation is free, then starts running.

One run per conversation is `running` at a time (the database enforces it); any number may be
`queued`. A queued run's task tries to take its turn, announces that it waits (`run_queued`) if
it must, then tries again whenever a run of its conversation ends in this process, and at least
every QUEUE_POLL seconds for runs that end in other processes. In worker mode every run is
queued until its worker takes its turn.
"""

import asyncio
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from ..db import in_sync_thread
from ..models import Run, RunEvent
from .context import RunContext

QUEUE_POLL = 0.5  # seconds between a queued run's checks for runs ended in other processes


class Turns:
    """Wakes the queued runs of a conversation when one of its runs ends here (one per event loop)."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Event] = {}

    def ended(self, conversation_id: Any) -> None:
        event = self._waiting.pop(str(conversation_id), None)
        if event is not None:
            event.set()

    async def wait(self, conversation_id: Any, timeout: float) -> None:
        event = self._waiting.setdefault(str(conversation_id), asyncio.Event())
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            pass

    async def wait_for_turn(self, ctx: RunContext) -> None:
        """Hold a queued run until it runs; a run that must wait says so first (`run_queued`)."""
        run = ctx.run
        outcome, ahead = await in_sync_thread(_first_try)(run)
        if outcome == "wait":
            ctx.emit(queued_body(run, ahead))
        while outcome != "running":
            if outcome == "gone":  # it was ended meanwhile (cancelled, swept): nothing to run
                raise asyncio.CancelledError
            await self.wait(run.conversation_id, QUEUE_POLL)
            outcome = await in_sync_thread(_take_turn)(run)


def queued_body(run: Run, ahead: list[str]) -> dict:
    """A `run_queued` event: the runs of its conversation it waits for (none: it waits for a
    worker), the running one first."""
    return {
        "type": "run_queued",
        "conversation_id": str(run.conversation_id) if run.conversation_id else None,
        "position": len(ahead),
        "waiting_for": ahead[0] if ahead else None,
    }


def announce_waiting(run: Run, fresh: bool) -> dict:
    """Worker mode: a run's first event, stored with its row and its job (in the admission's
    transaction, before any worker can number events of its own): it waits to be taken. `fresh`:
    its conversation was created with it (no run is ahead)."""
    body = queued_body(run, ahead=_runs_ahead(run) if run.conversation_id and not fresh else [])
    event = {"type": body["type"], "seq": 1, "run_id": str(run.pk), **body}  # as `next_event` numbers
    RunEvent.objects.create(run=run, seq=1, type=event["type"], data=event)
    return event


def _first_try(run: Run) -> tuple[str, list[str]]:
    """`_take_turn`, and the runs ahead of this one when it must wait."""
    outcome = _take_turn(run)
    return outcome, _runs_ahead(run) if outcome == "wait" else []


def _runs_ahead(run: Run) -> list[str]:
    """The conversation's active runs that come before this one, the running one first."""
    ahead = Run.objects.active().filter(conversation_id=run.conversation_id, created_at__lte=run.created_at)
    return [str(pk) for pk in ahead.exclude(pk=run.pk).values_list("pk", flat=True)]


def _take_turn(run: Run) -> str:
    """`running` if the run took its turn, `wait` if it must wait, `gone` if it is no longer queued.
    A run with no conversation (worker mode queues every run) waits for nobody."""
    conversation = Run.objects.filter(conversation_id=run.conversation_id)
    if run.conversation_id is None:
        conversation = Run.objects.filter(pk=run.pk)
    elif conversation.filter(status__in=Run.CURRENT).exists():  # running, or awaiting approval
        return "wait"
    else:
        first = conversation.filter(status=Run.Status.QUEUED).order_by("created_at", "pk").first()
        if first is None or first.pk != run.pk:
            still_queued = conversation.filter(pk=run.pk, status=Run.Status.QUEUED).exists()
            return "wait" if still_queued else "gone"
    now = timezone.now()
    try:
        with transaction.atomic():
            taken = conversation.filter(pk=run.pk, status=Run.Status.QUEUED).update(
                status=Run.Status.RUNNING, started_at=now, heartbeat_at=now
            )
    except IntegrityError:
        return "wait"  # a run that did not queue started first
    if not taken:
        return "gone"
    run.status, run.started_at, run.heartbeat_at = Run.Status.RUNNING, now, now
    return "running"
