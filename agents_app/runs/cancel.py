"""Cancelling a run, from any process: the request is recorded in the database and signalled to the
executor that owns the run (through its control channel); a run of this process stops at once."""

import logging
from datetime import datetime
from typing import Any

from channels.layers import get_channel_layer
from django.utils import timezone

from ..errors import RunNotActive, ServiceError
from ..models import Run
from .engine import current_engine

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
    run = await Run.objects.aget(pk=run_id)
    if run.is_active:
        await cancel_run(run)


async def cancel_run(run: Run, mode: str = "immediate") -> Run:
    """Record a cancel request and signal the executor that owns the run, in whichever process."""
    if mode not in CANCEL_MODES:
        raise ServiceError("mode must be 'immediate' or 'after_turn'", field="mode")
    if not run.is_active:
        raise RunNotActive(f"run {run.pk} is already {run.status}", status=run.status)
    now = timezone.now()
    # A run of this process cancelled immediately ends now and records the request itself (a
    # request already on record, e.g. an earlier `after_turn`, keeps its row as it is).
    if mode == "immediate" and run.cancel_requested_at is None and cancel_here(run.pk, now):
        run.cancel_requested_at, run.cancel_mode = now, mode
        return run
    await Run.objects.filter(pk=run.pk).aupdate(cancel_requested_at=now, cancel_mode=mode)
    run.cancel_requested_at, run.cancel_mode = now, mode
    engine = current_engine()
    if engine is not None and engine.executor.cancel_local(run.pk, mode):
        return run
    await run.arefresh_from_db(fields=["worker_channel", "status"])
    if run.worker_channel:
        try:
            await get_channel_layer().send(
                run.worker_channel, {"type": "run.cancel", "run_id": str(run.pk), "mode": mode}
            )
        except Exception:
            log.warning("could not signal the cancel of run %s; its owner reads it from the database", run.pk)
    # A run of a dead process is ended by the stale sweep; the heartbeat loop of a live owner
    # also picks the request up from the database.
    return run
