"""Starting a run: the one start path of every surface (REST, SSE, WebSocket, the reference
paths, research, the management commands).

`start_run` checks the caller's limits, finds or creates the conversation, writes the Run row
(`running`, or `queued` behind a busy conversation's runs) and hands it to this process's
executor. A busy conversation gets the caller's choice (`if_busy`): `reject` (409 with the active
run's id), `enqueue` (the run waits for the runs before it, in order) or `interrupt` (the active
runs are cancelled, then the new run starts).
"""

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from .. import providers
from ..db import in_sync_thread
from ..errors import (
    AlreadyDecided,
    ConversationBusy,
    NotFound,
    RunNotActive,
    ServiceError,
    TooManyRuns,
    WrongAgent,
)
from ..models import Conversation, Run
from ..registry import AgentSpec
from ..usage import daily_quota, quota_reservation
from .approvals import reject_pending
from .cancel import cancel_run
from .events import encode
from .jobs import defer_run, in_workers
from .lifespan import start_engine
from .publish import Reader, events_message
from .queue import announce_waiting
from .read import refresh_liveness
from .sweep import stale_cutoff

IF_BUSY = ("reject", "enqueue", "interrupt")


@dataclass
class RunRequest:
    """What a start asks for; the surfaces make one from what the client sent."""

    user: Any
    spec: AgentSpec
    input: Any
    context: dict = field(default_factory=dict)
    conversation_id: Any = None
    session_key: str | None = None
    on_disconnect: str = "continue"
    if_busy: str = "reject"
    # False: the run has no conversation (its input carries the whole history, as the stateless
    # OpenAI-compatible endpoints send it) even for an agent that keeps memory.
    memory: bool = True
    # Stored with the run (Run.options): `events`, and what a protocol adapter keeps.
    options: dict = field(default_factory=dict)


async def start_run(request: RunRequest | Callable[[], RunRequest], reader: Reader | None = None) -> Run:
    """Create a run and hand it to this process's executor; returns the Run (its end is waited
    for by reading its events: `read.wait_for_end`, or a `RunReader`).

    `request` may also be a function that makes the request in the start's own trip to the
    database, so that a surface whose authentication needs the database (the SSE consumer)
    costs one trip, not two. `reader` gets every batch of the run's events from the first on.
    Raises a ServiceError (nothing is started) for a conversation that is not the caller's or
    is busy (`reject`), or when the caller has too many active runs."""
    engine = await start_engine()
    # In worker mode the run waits, unclaimed, for a worker to take its job.
    worker = Run.UNCLAIMED if in_workers() else engine.executor.channel_name
    try:
        request, run, fresh, first = await in_sync_thread(_admit)(request, worker)
    except ConversationBusy as busy:
        # A run left active by a process that died no longer holds the conversation.
        if not await _swept(busy.extra.get("active_run_id")):
            raise
        request, run, fresh, first = await in_sync_thread(_admit)(request, worker)
    if worker != Run.UNCLAIMED:
        engine.executor.launch(run, request.spec, reader=reader, fresh_conversation=fresh)
    else:  # the first event, stored at admission, published now that it is committed
        await engine.hub.publish(events_message(str(run.pk), [first["seq"]], [encode(first)], False))
    if request.if_busy == "interrupt" and run.status == Run.Status.QUEUED:
        await _cancel_others(engine.executor, run)
    return run


def _admit(
    request: RunRequest | Callable[[], RunRequest], worker: str
) -> tuple[RunRequest, Run, bool, dict | None]:
    if callable(request):
        request = request()
    if request.if_busy not in IF_BUSY:
        raise ServiceError(f"if_busy must be one of {', '.join(IF_BUSY)}", field="if_busy")
    check = request.spec.input_problem
    problem = check(request.input) if check is not None else None
    if problem:
        raise ServiceError(problem, field="input")
    if worker != Run.UNCLAIMED:
        return (request, *create_run(request, worker), None)
    with transaction.atomic():  # worker mode: the run, its first event and its job, or nothing
        run, fresh = create_run(request, worker)
        first = announce_waiting(run, fresh)
        defer_run(run.pk, fresh)
    return request, run, fresh, first


async def _swept(run_id: str | None) -> bool:
    """True if that run was active only because its process died (it is ended now)."""
    run = await in_sync_thread(Run.objects.filter(pk=run_id).first)() if run_id else None
    if run is None or not run.is_active:
        return run is not None
    await refresh_liveness(run)
    return not run.is_active


async def _cancel_others(executor: Any, run: Run) -> None:
    """`interrupt`: the conversation's other active runs are cancelled; the new one is next. A run
    awaiting approval has its pending calls rejected (`interrupted`) instead, and ends its answer."""
    others = Run.objects.active().filter(conversation_id=run.conversation_id).exclude(pk=run.pk)
    for other in await in_sync_thread(list)(others):
        try:
            if other.status == Run.Status.AWAITING_APPROVAL:
                await reject_pending(executor, other, "interrupted", surface="interrupt")
            else:
                await cancel_run(other)
        except (RunNotActive, AlreadyDecided):
            pass  # it ended (or was decided) meanwhile


def create_run(request: RunRequest, worker: str, queue: bool = False) -> tuple[Run, bool]:
    """The database half of a start (in the sync thread): the Run row, and whether its
    conversation is new (it has no memory to read). `worker` is the control channel of the
    executor that will run it, or Run.UNCLAIMED in worker mode: the run is queued with its job,
    for a worker to take. `queue`: queue it even if the conversation looks free. A refused start
    leaves nothing behind, not even a new conversation.

    On PostgreSQL a transaction only for the per-user cap or a quota (their checks and the insert
    hold the user's row lock): each costs two more round trips, on the way to the first token;
    without one, a new conversation whose run could not be inserted is deleted again. On SQLite
    always one: a commit costs more than the statements it holds."""
    capped = settings.AGENTS_MAX_ACTIVE_RUNS_PER_USER > 0
    quota = daily_quota(request.user.pk)
    atomic = capped or quota > 0 or connection.vendor == "sqlite"
    conversation, fresh = None, False
    try:
        with transaction.atomic() if atomic else contextlib.nullcontext():
            if capped or quota:
                # Serializes this user's starts: a row lock on PostgreSQL (SQLite's write
                # transactions are serialized already: they begin IMMEDIATE).
                list(
                    type(request.user)
                    .objects.select_for_update()
                    .filter(pk=request.user.pk)
                    .values_list("pk")
                )
            if capped:
                _check_active_runs(request.user)
            reserved = quota_reservation(request.user.pk, quota, timezone.now()) if quota else 0
            conversation, fresh = _conversation(request)
            try:
                run = _new_run(request, conversation, fresh, worker, queue)
                run.reserved_tokens = reserved
                run.save(force_insert=True)
            except BaseException:
                if fresh and not atomic:
                    conversation.delete()
                raise
            return run, fresh
    except IntegrityError:
        if conversation is not None and not Conversation.objects.filter(pk=conversation.pk).exists():
            # Deleted while this run was being inserted (conversations.conversation_delete).
            raise NotFound(f"conversation {conversation.pk} not found") from None
        # Another start took the conversation a moment ago (one running run per conversation).
        if conversation is None or fresh or queue:
            raise
        if request.if_busy == "reject":
            raise _busy(conversation, _active_run(conversation)) from None
        return create_run(request, worker, queue=True)


def _new_run(
    request: RunRequest, conversation: Conversation | None, fresh: bool, worker: str, queue: bool
) -> Run:
    busy = None if fresh or conversation is None else _active_run(conversation)
    if busy is not None and request.if_busy == "reject":
        raise _busy(conversation, busy)
    waits = queue or busy is not None or worker == Run.UNCLAIMED
    info = providers.provider_info()
    now = timezone.now()
    # owner_id, not owner: the run's instance (held by its readers and executor for the run's
    # life) need not keep the user, and with it the token that authenticated it.
    return Run(
        owner_id=request.user.pk,
        agent=request.spec.slug,
        conversation=conversation,
        input=request.input,
        context=request.context or {},
        provider=info["provider"],
        model=info["model"],
        on_disconnect=request.on_disconnect,
        options=request.options,
        status=Run.Status.QUEUED if waits else Run.Status.RUNNING,
        started_at=None if waits else now,
        heartbeat_at=now,
        worker_channel=worker,
        last_seq=1 if worker == Run.UNCLAIMED else 0,  # worker mode: its `run_queued` (announce_waiting)
    )


def _conversation(request: RunRequest) -> tuple[Conversation | None, bool]:
    """The run's conversation and whether it is new (created here)."""
    user, spec = request.user, request.spec
    if request.conversation_id:
        conversation = Conversation.objects.filter(pk=request.conversation_id, owner=user).first()
        if conversation is None:
            raise NotFound(f"conversation {request.conversation_id} not found")
        if conversation.agent != spec.slug:
            raise WrongAgent(
                f"conversation {request.conversation_id} belongs to agent {conversation.agent!r}, "
                f"not {spec.slug!r}",
                field="conversation_id",
            )
        if not conversation.title:  # created empty (POST /api/conversations/): named by its first message
            conversation.title = title_from(request.input)
            conversation.save(update_fields=["title"])
        return conversation, False
    if not request.memory:
        return None, False
    title = title_from(request.input)
    if request.session_key:
        return Conversation.objects.get_or_create(
            owner_id=user.pk, agent=spec.slug, session_key=request.session_key, defaults={"title": title}
        )
    if not spec.uses_memory:
        return None, False
    return Conversation.objects.create(owner_id=user.pk, agent=spec.slug, title=title), True


def _active_run(conversation: Conversation) -> Run | None:
    return Run.objects.active().filter(conversation=conversation).first()


def _busy(conversation: Conversation, active: Run | None) -> ConversationBusy:
    return ConversationBusy(
        "this conversation already has an active run",
        active_run_id=str(active.pk) if active else None,
        conversation_id=str(conversation.pk),
    )


def _check_active_runs(user) -> None:
    """The per-user cap (AGENTS_MAX_ACTIVE_RUNS_PER_USER), across processes. Runs of processes that
    died do not count."""
    limit = settings.AGENTS_MAX_ACTIVE_RUNS_PER_USER
    alive = Q(heartbeat_at__gte=stale_cutoff()) | Run.unclaimed()
    active = Run.objects.filter(alive, owner=user, status__in=Run.EXECUTING)
    active_ids = [str(pk) for pk in active.values_list("pk", flat=True)]
    if len(active_ids) >= limit:
        raise TooManyRuns(
            f"you already have {len(active_ids)} active runs (the limit is {limit}): wait for one to end",
            limit=limit,
            active_run_ids=active_ids,
        )


def title_from(input: Any) -> str:
    """A conversation's title: its first message, on one line, at most 80 characters."""
    text = (
        input
        if isinstance(input, str)
        else next(
            (i.get("content") for i in input if isinstance(i, dict) and isinstance(i.get("content"), str)), ""
        )
    )
    text = " ".join((text or "").split())
    return text[:80] + ("…" if len(text) > 80 else "")
