"""Cancelling a run, from any process: the request is recorded in the database and signalled to the
executor that owns the run (through its control channel); a run of this process stops at once."""

import logging
from datetime import datetime
from typing import Any

from django.utils import timezone

from ..db import in_sync_thread
from ..errors import RunNotActive, ServiceError
from ..models import Run
from . import layer
from .approvals import end_paused
from .engine import current_engine, get_engine
from .execute import unowned_complete
from .journal import COMMITTED
from .store import RunEnd
from .sweep import journalled

log = logging.getLogger(__name__)

CANCEL_MODES = ("immediate", "after_turn")


def cancel_here(run_id: Any, requested_at: datetime | None = None) -> bool:
    """Cancel a run at once if this process runs it; False if it does not (or it is over).

    No database round trip before the cancel: the run's end records the request together
    with its status. When many streams with `on_disconnect=cancel` drop at once, their runs
    stop without queueing two trips each on Django's one sync thread first."""
    engine = current_engine()
    return engine is not None and engine.executor.cancel_local(
        run_id, "immediate", unrecorded_at=requested_at or timezone.now()
    )


async def cancel_on_disconnect(run_id: Any) -> None:
    """A stream or socket with `on_disconnect=cancel` lost its client: cancel the run, from
    memory when this process runs it, else through the database and the owner's channel."""
    if cancel_here(run_id):
        return
    run = await in_sync_thread(Run.objects.filter(pk=run_id).first)()
    if run is not None and run.is_active:
        await cancel_run(run)


async def cancel_run(run: Run, mode: str = "immediate") -> Run:
    """Record a cancel request and signal the executor that owns the run, in whichever process."""
    _check(run, mode)
    now = timezone.now()
    if run.status == Run.Status.AWAITING_APPROVAL:
        # No process runs it: it ends now, in either mode (its next turn would wait on a person).
        await in_sync_thread(_record)(run, now, mode)
        if run.status == Run.Status.AWAITING_APPROVAL and await end_paused(get_engine().journal, run):
            await in_sync_thread(run.refresh_from_db)()
            return run
        # It resumed meanwhile: its new owner got the request with the row.
    # A run of this process cancelled immediately ends now and records the request itself (a
    # request already on record, e.g. an earlier `after_turn`, keeps its row as it is).
    if mode == "immediate" and run.cancel_requested_at is None and cancel_here(run.pk, now):
        run.cancel_requested_at, run.cancel_mode = now, mode
        return run
    await in_sync_thread(_record)(run, now, mode)
    engine = current_engine()
    if engine is not None and engine.executor.cancel_local(run.pk, mode):
        return run
    if not run.is_claimed:
        # Worker mode, no worker has it yet: it ends now and never starts, in either mode (a
        # worker claiming it meanwhile gets the request with its row, and the signal below).
        if await end_orphan(run):
            return run
        await in_sync_thread(run.refresh_from_db)(fields=["worker_channel", "status"])
    if run.worker_channel and run.is_active and run.is_claimed:
        try:
            await layer.send(run.worker_channel, _signal(run, mode))
        except Exception:
            log.warning("could not signal the cancel of run %s; its owner reads it from the database", run.pk)
        # The heartbeat loop of a live owner also picks the request up from the database. An owner
        # that does not answer is dead: its run ends now, not at the stale sweep.
        if mode == "immediate" and not await get_engine().executor.owner_answers(run.worker_channel):
            await end_orphan(run)
    return run


async def end_orphan(run: Run) -> bool:
    """End, `cancelled`, a run whose process did not answer (or that no worker has claimed yet):
    with its text so far and the usage of its finished model calls, numbered after its last
    stored event; True if this ended it (False: it ended, or moved, meanwhile)."""
    text, usage = await in_sync_thread(journalled)(run.pk, run.agent)
    event = unowned_complete(run, text, usage, Run.Status.CANCELLED)
    fields = {"status": Run.Status.CANCELLED, "final_output": text, **usage}
    end = RunEnd(fields, run.agent, owner_id=run.owner_id, orphan_of=run.worker_channel)
    claimed = run.is_claimed
    ended = await get_engine().journal.end(str(run.pk), event, end) == COMMITTED
    if ended:
        if claimed:
            log.warning("run %s cancelled for its process, which did not answer", run.pk)
        await in_sync_thread(run.refresh_from_db)()
    return ended


def cancel_run_from_sync(run: Run, mode: str = "immediate") -> None:
    """`cancel_run` for sync code (an admin action): the request recorded, and its owner, in
    this process or another, signalled through the channel layer."""
    _check(run, mode)
    _record(run, timezone.now(), mode)
    if run.worker_channel and run.is_claimed:  # an unclaimed run's worker finds the request
        try:
            layer.send_from_sync(run.worker_channel, _signal(run, mode))
        except Exception:
            log.warning("could not signal the cancel of run %s; its owner reads it from the database", run.pk)


def _check(run: Run, mode: str) -> None:
    if mode not in CANCEL_MODES:
        raise ServiceError("mode must be 'immediate' or 'after_turn'", field="mode")
    if not run.is_active:
        raise RunNotActive(f"run {run.pk} is already {run.status}", status=run.status)


def _record(run: Run, now: datetime, mode: str) -> None:
    """The request on the run's row; `run` gets the row's owner and status as they are now."""
    Run.objects.filter(pk=run.pk).update(cancel_requested_at=now, cancel_mode=mode)
    run.refresh_from_db(fields=["worker_channel", "status"])
    run.cancel_requested_at, run.cancel_mode = now, mode


def _signal(run: Run, mode: str) -> dict:
    return {"type": layer.CANCEL, "run_id": str(run.pk), "mode": mode}
