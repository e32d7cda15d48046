"""The journal's writer side: what one batch commits, on the one writer thread.

Each batch is one transaction: the runs' new events (as encoded, in one statement), their ends
(final fields, usage, memory, `run_ended`), pauses (the SDK state and the pending calls),
checkpoints (a run's SDK state at a turn boundary, worker mode) and changes of runs no process
runs (`Journal.change`). `journal.Journal` batches, retries and publishes around it."""

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connections, transaction
from django.db.models import Max
from django.utils import timezone

from .. import metrics
from ..errors import ServiceError
from ..models import Approval, Conversation, ConversationItem, Run, RunEvent, RunPause
from ..signals import run_ended
from ..usage import usage_record
from .events import encode
from .retry import OUTAGE_ERRORS

# Event rows are written by one dedicated thread with its own connection, so bulk writes
# neither queue behind request-path queries on Django's shared sync thread nor block them.
writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")


def on_writer_thread(fn: Callable[[], Any]) -> Any:
    """Call `fn` on the writer thread and return its result (its database connection is that
    thread's: tests close it before the test database goes, or kill it to fake an outage)."""
    return writer.submit(fn).result(timeout=30)


EVENT_COLUMNS = "(run_id, seq, type, data, created_at)"
# Rows per INSERT statement (SQLite). Every call into the database driver gives up the GIL and
# must win it back from the busy event loop: one statement for many rows was twice as fast as
# `executemany` (a call per row) with the loop busy.
INSERT_ROWS = 100


@dataclass(slots=True)
class Pause:
    """A run leaving its process to wait for decisions on its tool calls (`approval_required`):
    its SDK state and its pending calls, stored with the event."""

    state: dict
    approvals: list[Approval]


@dataclass(slots=True)
class RunEnd:
    """What a terminal event commits with it: the run's final fields and the memory it added.

    `stale_before`: the stale sweep's end, which only holds if the run's heartbeat is older.
    `ends_pause`: the end of a run that waits for approval (a cancel), which only holds while it
    does; its pending calls end rejected. `orphan_of`: the end of a run whose process (this
    control channel) did not answer (a cancel), which only holds while the run is still that
    process's. Any end only holds while the run is still active: a run that something else ended
    meanwhile keeps that end, and this one is void. These three are ends of runs no process runs
    (`unowned`): their event takes the run's next seq when stored."""

    fields: dict
    agent: str  # the run's agent (receivers of `run_ended` look at it)
    memory: list[ConversationItem] = field(default_factory=list)
    owner_id: int | None = None  # whose usage the run's tokens add to (None: the sweep's, no usage)
    stale_before: datetime | None = None
    ends_pause: bool = False
    orphan_of: str | None = None
    # Not an end but a pause: the run's task ends and the run waits, `awaiting_approval`.
    pause: Pause | None = None

    @property
    def unowned(self) -> bool:
        return self.stale_before is not None or self.ends_pause or self.orphan_of is not None


@dataclass(slots=True)
class Checkpoint:
    """Worker mode: a run's SDK state at a turn boundary, covering its events through `seq`, and
    the conversation items it added so far (stored as `RunPause` of kind `turn`; no event)."""

    state: dict
    seq: int
    turn: int
    memory: list


@dataclass(slots=True)
class Entry:
    run_id: str
    event: dict  # the sweep's end gets its `seq` when it is stored: the run's next one
    text: str | None
    end: RunEnd | None = None
    done: asyncio.Future | None = None  # an end's or a change's outcome
    # A change of a run that no process runs: called in the batch's transaction, it returns the
    # event that records it (numbered after the run's last) or refuses with a ServiceError.
    change: Callable[[datetime], dict] | None = None
    refusal: ServiceError | None = None
    checkpoint: Checkpoint | None = None  # not an event: `event` and `text` are empty


def store(batch: list[Entry]) -> tuple[list[Entry], dict[str, BaseException]]:
    """Commit a batch in one transaction; if the database refuses it, each run's entries in a
    transaction of their own. Returns the entries that committed (a void end is not among them)
    and the error of each run whose entries were refused. An outage raises (the caller retries)."""
    connection = connections["default"]
    try:
        stored = _try_commit(batch)
        if not isinstance(stored, BaseException):
            return stored, {}
        by_run: dict[str, list[Entry]] = {}
        for entry in batch:
            by_run.setdefault(entry.run_id, []).append(entry)
        stored, refused = [], {}
        for run_id, entries in by_run.items():
            outcome = _try_commit(entries)
            if not isinstance(outcome, BaseException):
                stored += outcome
                continue
            refused[run_id] = outcome
            # A refused end (its output, its memory) need not cost the events before it.
            events = [entry for entry in entries if entry.end is None]
            if events and len(events) < len(entries):
                outcome = _try_commit(events)
                stored += [] if isinstance(outcome, BaseException) else outcome
        return stored, refused
    except OUTAGE_ERRORS:
        # The next attempt reconnects if this error broke the connection.
        connection.close()
        raise


def _try_commit(entries: list[Entry]) -> list[Entry] | BaseException:
    """The entries committed, or what the database refused them with (an outage raises)."""
    try:
        return _commit(entries)
    except OUTAGE_ERRORS:
        raise
    except Exception as exc:
        return exc


def _commit(entries: list[Entry]) -> list[Entry]:
    now = timezone.now()
    with transaction.atomic(using="default"):
        void = {id(entry) for entry in entries if entry.end is not None and not _end_run(entry, now)}
        void |= {id(entry) for entry in entries if entry.change is not None and not _apply(entry, now)}
        stored = [entry for entry in entries if id(entry) not in void]
        events = [entry for entry in stored if entry.checkpoint is None]
        _insert_events(events, now)
        metrics.EVENTS_JOURNALLED.inc(len(events))
        for entry in stored:
            if entry.checkpoint is not None:
                _checkpoint(entry.run_id, entry.checkpoint, now)
        ends = [entry for entry in stored if entry.end is not None]
        ConversationItem.objects.bulk_create([item for entry in ends for item in entry.end.memory])
        conversations = {item.conversation_id for entry in ends for item in entry.end.memory}
        if conversations:
            # In a fixed order, so two processes ending runs of the same conversations lock
            # their rows in the same order.
            for pk in sorted(conversations, key=str):
                Conversation.objects.filter(pk=pk).update(updated_at=now)
    return stored


def _checkpoint(run_id: str, checkpoint: Checkpoint, now: datetime) -> None:
    fields = {"kind": RunPause.Kind.TURN, "paused_at": now, "state": checkpoint.state}
    fields.update(seq=checkpoint.seq, turn=checkpoint.turn, memory=checkpoint.memory)
    RunPause.objects.update_or_create(run_id=run_id, defaults=fields)


def _apply(entry: Entry, now: datetime) -> bool:
    """A change (`Journal.change`) in a savepoint of its own; False if it refused."""
    entry.refusal = None
    try:
        with transaction.atomic(using="default"):
            entry.event = entry.change(now)
    except ServiceError as refusal:
        entry.refusal = refusal
        return False
    entry.text = encode(entry.event)
    return True


def _pause_run(entry: Entry, now: datetime) -> bool:
    """A run that runs here waits for approvals now: its fields, its state and its pending calls."""
    end = entry.end
    runs = Run.objects.filter(pk=entry.run_id, status__in=Run.EXECUTING)
    if not runs.update(last_seq=entry.event["seq"], **end.fields):
        return False
    fields = {"kind": RunPause.Kind.PAUSE, "state": end.pause.state, "paused_at": now}
    fields.update(seq=entry.event["seq"], turn=0, memory=[])
    RunPause.objects.update_or_create(run_id=entry.run_id, defaults=fields)
    for approval in end.pause.approvals:
        approval.created_at = now
    Approval.objects.bulk_create(end.pause.approvals)
    return True


def _end_run(entry: Entry, now: datetime) -> bool:
    """Set a run's final fields if it is still active (and stale, for the sweep); False if not."""
    end = entry.end
    if end.pause is not None:
        return _pause_run(entry, now)
    runs = Run.objects.filter(pk=entry.run_id, status__in=Run.ACTIVE)
    if end.stale_before is not None:  # the sweep's: only if stale
        runs = runs.filter(Run.beat_before(end.stale_before), status__in=Run.EXECUTING)
    elif end.ends_pause:
        runs = runs.filter(status=Run.Status.AWAITING_APPROVAL)
    elif end.orphan_of is not None:
        runs = runs.filter(worker_channel=end.orphan_of, status__in=Run.EXECUTING)
    if end.unowned:  # it takes the run's next seq
        last = RunEvent.objects.filter(run_id=entry.run_id).aggregate(last=Max("seq"))["last"] or 0
        entry.event["seq"] = last + 1
        entry.text = encode(entry.event)
    fields = {"finished_at": now, "last_seq": entry.event["seq"], **end.fields}
    if not runs.update(**fields):
        return False
    if end.ends_pause:
        Approval.objects.filter(run_id=entry.run_id, status=Approval.Status.PENDING).update(
            status=Approval.Status.REJECTED, reason=f"the run was {fields['status']}", decided_at=now
        )
    if end.owner_id is not None:
        usage_record(end.owner_id, end.agent, fields, now)
    run_ended.send(
        sender=Run,
        run_id=entry.run_id,
        agent=end.agent,
        status=fields["status"],
        error=fields.get("error", ""),
    )
    return True


def _insert_events(entries: list[Entry], now: datetime) -> None:
    """Already-encoded events, their JSON text stored as is (`bulk_create` would encode each event
    again).

    On PostgreSQL the batch goes as one parameter, a JSON array of `[run_id, seq, type, event]`
    rows that the server takes apart (`jsonb_array_elements`): psycopg merges parameters into the
    statement in Python, ~20 µs a row for a statement of many rows, and a statement per row would
    cost a call into the driver each. Elsewhere (SQLite binds parameters natively) INSERT_ROWS
    rows to a statement."""
    if not entries:
        return
    connection = connections["default"]
    table = connection.ops.quote_name(RunEvent._meta.db_table)
    created = connection.ops.adapt_datetimefield_value(now)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            rows = ",".join(f'["{e.run_id}",{e.event["seq"]},"{e.event["type"]}",{e.text}]' for e in entries)
            cursor.execute(
                f"INSERT INTO {table} {EVENT_COLUMNS} SELECT (row->>0)::uuid, (row->>1)::integer, row->>2, "
                "row->3, %s FROM jsonb_array_elements(%s::jsonb) AS row",
                [created, f"[{rows}]"],
            )
            return
        run_field = RunEvent._meta.get_field("run")
        prepared: dict[str, Any] = {}
        params: list[Any] = []
        for entry in entries:
            db_run_id = prepared.get(entry.run_id)
            if db_run_id is None:
                db_run_id = prepared[entry.run_id] = run_field.get_db_prep_value(entry.run_id, connection)
            params += (db_run_id, entry.event["seq"], entry.event["type"], entry.text, created)
        head = f"INSERT INTO {table} {EVENT_COLUMNS} VALUES "
        for start in range(0, len(entries), INSERT_ROWS):
            count = min(INSERT_ROWS, len(entries) - start)
            sql = head + ", ".join(["(%s, %s, %s, %s, %s)"] * count)
            cursor.execute(sql, params[start * 5 : (start + count) * 5])
