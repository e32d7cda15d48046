"""Queued runs (`if_busy=enqueue` or `interrupt`): a run that arrives while its conversation is busy
waits, in the order the runs came, until the conversation is free, then starts running.

One run per conversation is `running` at a time (the database enforces it); any number may be
`queued`. A queued run's task announces it (`run_queued`), then tries to take its turn whenever a
run of its conversation ends in this process, and at least every QUEUE_POLL seconds for runs
that end in other processes.
"""

import asyncio
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from ..db import in_sync_thread
from ..models import Run
from .execute import RunContext

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
        """Hold a queued run until it runs; the run's events show it waiting."""
        run = ctx.run
        ahead = await in_sync_thread(_runs_ahead)(run)
        ctx.emit(
            {
                "type": "run_queued",
                "conversation_id": str(run.conversation_id),
                "position": len(ahead),
                "waiting_for": ahead[0] if ahead else None,
            }
        )
        while True:
            outcome = await in_sync_thread(_take_turn)(run)
            if outcome == "running":
                return
            if outcome == "gone":  # it was ended meanwhile (cancelled, swept): nothing to run
                raise asyncio.CancelledError
            await self.wait(run.conversation_id, QUEUE_POLL)


def _runs_ahead(run: Run) -> list[str]:
    """The conversation's active runs that come before this one, the running one first."""
    ahead = Run.objects.active().filter(conversation_id=run.conversation_id, created_at__lte=run.created_at)
    return [str(pk) for pk in ahead.exclude(pk=run.pk).values_list("pk", flat=True)]


def _take_turn(run: Run) -> str:
    """`running` if the run took its turn, `wait` if it must wait, `gone` if it is no longer queued."""
    conversation = Run.objects.filter(conversation_id=run.conversation_id)
    if conversation.filter(status__in=Run.CURRENT).exists():  # running, or awaiting approval
        return "wait"
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
