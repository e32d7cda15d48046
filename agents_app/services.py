"""Write paths: starting, cancelling and sweeping runs. Views and consumers call these."""

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from . import prepared, providers
from .executor import Reader, current_executor, encode, events_message, get_executor, run_group
from .models import Conversation, Run, RunEvent
from .priority import Ticket
from .registry import AgentSpec
from .signals import run_interrupted

log = logging.getLogger(__name__)


class ServiceError(Exception):
    status = 400
    code = "invalid"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class ConversationBusy(ServiceError):
    status = 409
    code = "conversation_busy"


class TooManyRuns(ServiceError):
    status = 429
    code = "too_many_runs"


class RunNotActive(ServiceError):
    status = 409
    code = "run_not_active"


def _title_from(input: Any) -> str:
    text = (
        input
        if isinstance(input, str)
        else next(
            (i.get("content") for i in input if isinstance(i, dict) and isinstance(i.get("content"), str)), ""
        )
    )
    text = " ".join((text or "").split())
    return text[:80] + ("…" if len(text) > 80 else "")


def _resolve_conversation(user, spec: AgentSpec, conversation_id, session_key, input) -> Conversation | None:
    """The run's conversation; a new one (`created_now`, `_state.adding`) is not inserted yet:
    `_create_run` writes it together with the run."""
    if conversation_id:
        conversation = Conversation.objects.filter(pk=conversation_id, owner=user).first()
        if conversation is None:
            raise NotFound(f"conversation {conversation_id} not found")
        if conversation.agent != spec.slug:
            raise ServiceError(
                f"conversation {conversation_id} belongs to agent {conversation.agent!r}, not {spec.slug!r}",
                field="conversation_id",
            )
        return conversation
    if not spec.uses_memory and not session_key:
        return None
    if session_key:
        conversation, created = Conversation.objects.get_or_create(
            owner_id=user.pk, agent=spec.slug, session_key=session_key, defaults={"title": _title_from(input)}
        )
    else:
        # owner_id, not owner: the instance lives as long as the run and need not hold the user.
        conversation = Conversation(owner_id=user.pk, agent=spec.slug, title=_title_from(input))
        created = True
    # Read by the executor: a conversation created for this run has no memory to load.
    conversation.created_now = created
    return conversation


def create_run(
    *,
    user,
    spec: AgentSpec,
    input: Any,
    worker: str,
    context: dict | None = None,
    conversation_id: Any = None,
    session_key: str | None = None,
    on_disconnect: str = "continue",
) -> Run:
    """The database half of starting a run (sync), for callers already in the sync thread, so
    that checks, auth and run creation share one hop. `worker` is the control channel of the
    executor that will run it (`await get_executor().ensure_started()`); `launch_run` then
    hands the run over."""
    args = (user, spec, input, worker, context, conversation_id, session_key, on_disconnect)
    if settings.AGENTS_MAX_ACTIVE_RUNS_PER_USER <= 0:
        return _create_run(*args)
    # The count and the new run in one transaction, so simultaneous starts cannot all slip
    # under the limit; a refused start leaves nothing behind (not even a new conversation).
    with transaction.atomic():
        _check_active_runs(user)
        return _create_run(*args)


def _check_active_runs(user) -> None:
    limit = settings.AGENTS_MAX_ACTIVE_RUNS_PER_USER
    # Serializes this user's starts: a row lock on PostgreSQL (SQLite's write transactions
    # are serialized already: they begin IMMEDIATE).
    list(type(user).objects.select_for_update().filter(pk=user.pk).values_list("pk"))
    active = list(Run.objects.filter(owner=user, status__in=Run.ACTIVE))
    if len(active) >= limit:
        # Runs of a process that died do not count once they are found stale.
        active = [run for run in active if not _mark_interrupted_if_stale(run)]
    if len(active) >= limit:
        raise TooManyRuns(
            f"you already have {len(active)} active runs (the limit is {limit}): wait for one to end",
            limit=limit,
            active_run_ids=[str(run.pk) for run in active],
        )


def _create_run(user, spec, input, worker, context, conversation_id, session_key, on_disconnect) -> Run:
    conversation = _resolve_conversation(user, spec, conversation_id, session_key, input)
    info = providers.provider_info()
    now = timezone.now()
    # A new conversation goes in with its run (on PostgreSQL in the same statement).
    new = conversation is not None and conversation._state.adding
    for attempt in range(2):
        try:
            # Alone, the insert (one statement on PostgreSQL, with a new conversation too) is its
            # own transaction (autocommit): no BEGIN and COMMIT round trips on the way to the first
            # token. Inside a caller's transaction (the per-user limit) it takes a savepoint, so a
            # refusal leaves that transaction usable.
            nested = transaction.get_connection().in_atomic_block
            with transaction.atomic() if nested else contextlib.nullcontext():
                # Created already running: the executor of this process starts it right away.
                # owner_id: the run's instance (held by its readers and executor for the run's
                # life) need not keep the user, and with it the token that authenticated it.
                run = Run(
                    owner_id=user.pk,
                    agent=spec.slug,
                    conversation=conversation,
                    input=input,
                    context=context or {},
                    provider=info["provider"],
                    model=info["model"],
                    on_disconnect=on_disconnect,
                    status=Run.Status.RUNNING,
                    started_at=now,
                    heartbeat_at=now,
                    worker_channel=worker,
                )
                prepared.insert(*([conversation] if new else []), run)
                return run
        except IntegrityError:
            if new:
                raise  # nothing else runs in a conversation that did not exist
            active = Run.objects.filter(conversation=conversation, status__in=Run.ACTIVE).first()
            if active is not None and attempt == 0 and _mark_interrupted_if_stale(active):
                continue
            raise ConversationBusy(
                "this conversation already has an active run",
                active_run_id=str(active.pk) if active else None,
                conversation_id=str(conversation.pk) if conversation else None,
            ) from None
    raise AssertionError("unreachable")


async def launch_run(
    run: Run, spec: AgentSpec, reader: Reader | None = None, ticket: Ticket | None = None
) -> asyncio.Task:
    """Hand a run made by `create_run` to this process's executor."""
    return await get_executor().start(run, spec, reader, ticket)


async def run_start(
    *,
    user,
    spec: AgentSpec,
    input: Any,
    context: dict | None = None,
    conversation_id: Any = None,
    session_key: str | None = None,
    on_disconnect: str = "continue",
    reader: Reader | None = None,
) -> tuple[Run, asyncio.Task]:
    """Create a Run and hand it to this process's executor (`reader` gets every batch of it)."""
    executor = get_executor()
    # First-token priority covers the database work too (priority.py).
    ticket = executor.priority.ticket()
    try:
        worker = await executor.ensure_started()
        run = await sync_to_async(create_run)(
            worker=worker,
            user=user,
            spec=spec,
            input=input,
            context=context,
            conversation_id=conversation_id,
            session_key=session_key,
            on_disconnect=on_disconnect,
        )
        return run, await launch_run(run, spec, reader, ticket)
    except BaseException:
        ticket.end()  # refused or failed before the run was launched
        raise


def run_cancel_here(run_id: Any, requested_at: datetime | None = None) -> bool:
    """Cancel a run at once if this process runs it; False if it does not (or it is over).

    No database round trip before the cancel: the run's end records the request together
    with its status. When many streams with `on_disconnect=cancel` drop at once, their runs
    stop without queueing two trips each on Django's one sync thread first."""
    executor = current_executor()
    return executor is not None and executor.cancel_local(
        run_id, "immediate", unrecorded_at=requested_at or timezone.now()
    )


async def run_cancel_on_disconnect(run_id: Any) -> None:
    """A stream or socket with `on_disconnect=cancel` lost its client: cancel the run, from
    memory when this process runs it, else through the database and the owner's channel."""
    if run_cancel_here(run_id):
        return
    run = await Run.objects.aget(pk=run_id)
    if run.is_active:
        await run_cancel(run)


async def run_cancel(run: Run, mode: str = "immediate") -> Run:
    """Record a cancel request and signal the executor that owns the run, in whichever process."""
    if mode not in ("immediate", "after_turn"):
        raise ServiceError("mode must be 'immediate' or 'after_turn'", field="mode")
    if not run.is_active:
        raise RunNotActive(f"run {run.pk} is already {run.status}", status=run.status)
    now = timezone.now()
    # A run of this process cancelled immediately ends now and records the request itself (a
    # request already on record, e.g. an earlier `after_turn`, keeps its row as it is).
    if mode == "immediate" and run.cancel_requested_at is None and run_cancel_here(run.pk, now):
        run.cancel_requested_at, run.cancel_mode = now, mode
        return run
    await Run.objects.filter(pk=run.pk).aupdate(cancel_requested_at=now, cancel_mode=mode)
    run.cancel_requested_at, run.cancel_mode = now, mode
    if get_executor().cancel_local(run.pk, mode):
        return run
    await run.arefresh_from_db(fields=["worker_channel", "status"])
    if run.worker_channel:
        try:
            await get_channel_layer().send(
                run.worker_channel, {"type": "run.cancel", "run_id": str(run.pk), "mode": mode}
            )
        except Exception:
            log.warning("could not signal the cancel of run %s; its owner reads it from the database", run.pk)
    # A run still queued in a dead process is swept by the stale check; the heartbeat
    # loop of a live owner also picks the request up from the database.
    return run


def _mark_interrupted_if_stale(run: Run) -> bool:
    """Mark a run whose process died as interrupted, with its terminal event. True if it was stale."""
    cutoff = timezone.now() - timedelta(seconds=settings.RUN_STALE_AFTER)
    beat = run.heartbeat_at or run.created_at
    if run.status not in Run.ACTIVE or beat >= cutoff:
        return False
    error = "the process running this run stopped (stale heartbeat)"
    with transaction.atomic():
        updated = Run.objects.filter(pk=run.pk, status__in=Run.ACTIVE).update(
            status=Run.Status.INTERRUPTED, finished_at=timezone.now(), error=error, error_code="interrupted"
        )
        if not updated:
            return False
        last = RunEvent.objects.filter(run=run).aggregate(m=Max("seq"))["m"] or 0
        event = {
            "type": "error",
            "seq": last + 1,
            "run_id": str(run.pk),
            "message": "the run was interrupted: the process running it stopped",
            "code": "interrupted",
        }
        RunEvent.objects.create(run=run, seq=last + 1, type="error", data=event)
        run_interrupted.send(sender=Run, run=run, error=error)
    run.refresh_from_db()
    try:
        async_to_sync(get_channel_layer().group_send)(
            run_group(run.pk), events_message([event], [encode(event)])
        )
    except Exception:
        # Readers poll the database when idle; the event is stored either way.
        log.warning("could not publish the interruption of run %s", run.pk, exc_info=True)
    return True


def runs_sweep_stale() -> int:
    """Mark every stale active run interrupted (start-up and periodic sweep)."""
    cutoff = timezone.now() - timedelta(seconds=settings.RUN_STALE_AFTER)
    candidates = Run.objects.filter(status__in=Run.ACTIVE, created_at__lt=cutoff)
    return sum(_mark_interrupted_if_stale(run) for run in candidates)


def run_refresh_liveness(run: Run) -> Run:
    """Called on reads: a stale active run is reported as interrupted, never `running` forever."""
    if run.is_active:
        _mark_interrupted_if_stale(run)
    return run
