"""The journal: the one write path of every event of every run, and of every run's end.

Stream events, terminal events (success, failure, cancel, shutdown, the stale sweep) and the
final state a terminal event commits with (the run's fields, the memory it added), a run's pause
for approval with its stored state, and the changes of runs no process runs (a decision on a
paused run: `change`) are appended here. A batching task hands them in batches to one writer
thread, which commits each batch in one transaction (`store`); only what committed is then
published (`publish.Hub`), so a reader never sees an event that is not in the database.

When the database refuses a batch, each run's entries are tried alone: a run whose events cannot
be stored loses nothing already committed, its owner is told (`on_lost`) and ends it `failed`,
and the other runs keep theirs. A database that is away is waited out (RUN_DB_RETRY_SECONDS).
"""

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connections, transaction
from django.db.models import Max
from django.utils import timezone

from .. import metrics
from ..errors import ServiceError, Unavailable
from ..models import Approval, Conversation, ConversationItem, Run, RunEvent, RunPause
from ..signals import run_ended
from ..usage import usage_record
from .events import TERMINAL_TYPES, encode
from .publish import Hub, events_message
from .retry import OUTAGE_ERRORS, Patience

log = logging.getLogger(__name__)

# Event rows are written by one dedicated thread with its own connection, so bulk writes
# neither queue behind request-path queries on Django's shared sync thread nor block them.
_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")


def on_writer_thread(fn: Callable[[], Any]) -> Any:
    """Call `fn` on the writer thread and return its result (its database connection is that
    thread's: tests close it before the test database goes, or kill it to fake an outage)."""
    return _writer.submit(fn).result(timeout=30)


EVENT_COLUMNS = "(run_id, seq, type, data, created_at)"
# Rows per INSERT statement (SQLite). Every call into the database driver gives up the GIL and
# must win it back from the busy event loop: one statement for many rows was twice as fast as
# `executemany` (a call per row) with the loop busy.
INSERT_ROWS = 100

# Seconds without a batch after which the writer gives its database connection back (to the pool
# on PostgreSQL): while events come it keeps it, rather than take one from the pool per batch.
RELEASE_AFTER = 1.0

# What `Journal.end` reports.
COMMITTED, VOID, REFUSED, UNAVAILABLE = "committed", "void", "refused", "unavailable"


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


class Journal:
    """Batches of every run's entries, committed by the writer thread (one journal per event loop).

    `on_lost(run_id, error)` is called when a run's events could not be stored; the run's later
    events are then dropped (its end is still written, numbered after its last stored event)."""

    def __init__(self, hub: Hub, on_lost: Callable[[str, BaseException], None]) -> None:
        self.hub = hub
        self.on_lost = on_lost
        self.stored_seq: dict[str, int] = {}  # the last stored seq of each run with a live stream
        self.lost: dict[str, BaseException] = {}
        self._pending: list[Entry] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.get_running_loop().create_future()
        self._idle.set_result(None)
        # The wait between flushes, while it lasts; an urgent event ends it or skips it.
        self._nap: asyncio.Future | None = None
        self._urgent = False
        self._task = asyncio.create_task(self._loop(), name="journal")

    def append(self, run_id: str, event: dict, urgent: bool = False) -> None:
        """Queue a stream event; `urgent` (a run's first output) cuts short the wait for the next batch."""
        if run_id in self.lost:
            return
        self._add(Entry(run_id, event, encode(event)))
        if urgent:
            self._hurry()

    async def end(self, run_id: str, event: dict, end: RunEnd) -> str:
        """Commit a run's terminal event with its end; COMMITTED, VOID (the run had already ended),
        REFUSED (the database refused the values) or UNAVAILABLE (it stayed away)."""
        text = None if end.unowned else encode(event)
        return await self._outcome(Entry(run_id, event, text, end))

    async def change(self, run_id: str, change: Callable[[datetime], dict]) -> dict:
        """Apply `change(now)` in the writer's transaction and store the event it returns with it,
        published once committed; returns that event. A refusal of the change (a ServiceError it
        raises, a 404 or 409) is raised here and changes nothing."""
        entry = Entry(run_id, {}, None, change=change)
        outcome = await self._outcome(entry)
        if entry.refusal is not None:
            raise entry.refusal
        if outcome != COMMITTED:
            raise Unavailable(f"the change could not be stored ({outcome}): try again shortly")
        return entry.event

    async def _outcome(self, entry: Entry) -> str:
        """Queue an end or a change with no batching delay; its outcome once written."""
        entry.done = asyncio.get_running_loop().create_future()
        self._add(entry)
        self._hurry()
        if self._task.done():  # closed (shutdown): write it ourselves
            await self._write(self._take())
        return await asyncio.shield(entry.done)

    def _hurry(self) -> None:
        """The next batch goes out now: the wait between flushes, if any, ends."""
        self._urgent = True
        if self._nap is not None and not self._nap.done():
            self._nap.set_result(None)

    def next_seq(self, run_id: str) -> int:
        """The seq after a run's last stored event (for the end of a run whose events were lost)."""
        return self.stored_seq.get(run_id, 0) + 1

    async def flush(self) -> None:
        """Wait until everything appended so far is committed and published."""
        if self._task.done():  # closed (shutdown): write what is left ourselves
            await self._write(self._take())
            return
        while self._pending or not self._idle.done():
            self._wake.set()
            await asyncio.shield(self._idle)

    def close(self) -> None:
        self._task.cancel()
        if not self._idle.done():
            self._idle.set_result(None)

    def _add(self, entry: Entry) -> None:
        self._pending.append(entry)
        if self._idle.done():
            self._idle = asyncio.get_running_loop().create_future()
        self._wake.set()

    def _take(self) -> list[Entry]:
        batch, self._pending = self._pending, []
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_flush = 0.0
        while True:
            if not self._pending:
                try:
                    async with asyncio.timeout(RELEASE_AFTER):
                        await self._wake.wait()
                except TimeoutError:
                    # Quiet for a while: the writer gives its connection back (to the pool).
                    await loop.run_in_executor(_writer, close_old_connections)
                    await self._wake.wait()
            if len(self._pending) < settings.RUN_EVENT_BATCH_SIZE and not self._urgent:
                # At most one batch per interval, so one insert carries many events under load;
                # after a quiet spell the first event goes out at once.
                wait = last_flush + settings.RUN_EVENT_FLUSH_INTERVAL - loop.time()
                if wait > 0:
                    self._nap = loop.create_future()
                    timer = loop.call_later(wait, _wake_up, self._nap)
                    try:
                        await self._nap
                    finally:
                        timer.cancel()
                        self._nap = None
            last_flush = loop.time()
            self._wake.clear()
            self._urgent = False
            batch = self._take()
            try:
                await self._write(batch)
            except Exception:
                log.exception("the journal failed to write a batch")
                for entry in batch:  # nobody waits for ever on an end
                    if entry.done is not None and not entry.done.done():
                        entry.done.set_result(REFUSED)
            if not self._pending and not self._idle.done():
                self._idle.set_result(None)

    async def _write(self, batch: list[Entry]) -> None:
        """Store a batch, then publish what committed and settle the ends' outcomes."""
        if not batch:
            return
        loop = asyncio.get_running_loop()
        patience = Patience()
        while True:
            try:
                stored, refused = await loop.run_in_executor(_writer, store, batch)
                break
            except OUTAGE_ERRORS as exc:
                # Nothing is published until the database is back: events published but never
                # stored could not be replayed.
                delay = patience.next_delay()
                if delay is None:
                    log.error("database unavailable too long: %d entries not stored", len(batch))
                    stored, refused = [], {entry.run_id: exc for entry in batch}
                    break
                log.warning(
                    "database unavailable (%s): retrying %d entries in %.2f s", exc, len(batch), delay
                )
                await asyncio.sleep(delay)
        await self._publish(stored)
        self._settle(batch, stored, refused)

    async def _publish(self, stored: list[Entry]) -> None:
        by_run: dict[str, list[Entry]] = {}
        for entry in stored:
            by_run.setdefault(entry.run_id, []).append(entry)
        for run_id, entries in by_run.items():
            seqs = [e.event["seq"] for e in entries]
            if self.hub.owns(run_id):
                self.stored_seq[run_id] = seqs[-1]
            last = entries[-1]
            terminal = last.event["type"] in TERMINAL_TYPES
            paused = last.end is not None and last.end.pause is not None
            await self.hub.publish(events_message(run_id, seqs, [e.text for e in entries], terminal, paused))

    def _settle(self, batch: list[Entry], stored: list[Entry], refused: dict[str, BaseException]) -> None:
        """Tell each end its outcome; a run whose stream events were refused is lost to its owner
        (a run whose end was refused learns it from that outcome)."""
        committed = {id(entry) for entry in stored}
        ended = set()
        for entry in batch:
            if entry.change is not None:  # not a run of ours: never `lost` here
                ended.add(entry.run_id)
                outcome = COMMITTED if id(entry) in committed else REFUSED
                if entry.refusal is None and entry.run_id in refused:
                    error = refused[entry.run_id]
                    outcome = UNAVAILABLE if isinstance(error, OUTAGE_ERRORS) else REFUSED
                if not entry.done.done():
                    entry.done.set_result(outcome)
                continue
            if entry.end is None:
                continue
            ended.add(entry.run_id)
            error = refused.get(entry.run_id)
            outcome = COMMITTED if id(entry) in committed else VOID
            if error is not None:
                outcome = UNAVAILABLE if isinstance(error, OUTAGE_ERRORS) else REFUSED
            else:  # the run is over: nothing more to keep of it
                self.stored_seq.pop(entry.run_id, None)
                self.lost.pop(entry.run_id, None)
            if entry.done is not None and not entry.done.done():
                entry.done.set_result(outcome)
        for run_id, error in refused.items():
            if run_id in ended or run_id in self.lost:
                continue
            self.lost[run_id] = error
            self._pending = [e for e in self._pending if e.run_id != run_id or e.end is not None]
            log.error("events of run %s could not be stored: %s", run_id, error)
            self.on_lost(run_id, error)


def _wake_up(nap: asyncio.Future) -> None:
    if not nap.done():
        nap.set_result(None)


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
        _insert_events(stored, now)
        metrics.EVENTS_JOURNALLED.inc(len(stored))
        ends = [entry for entry in stored if entry.end is not None]
        ConversationItem.objects.bulk_create([item for entry in ends for item in entry.end.memory])
        conversations = {item.conversation_id for entry in ends for item in entry.end.memory}
        if conversations:
            # In a fixed order, so two processes ending runs of the same conversations lock
            # their rows in the same order.
            for pk in sorted(conversations, key=str):
                Conversation.objects.filter(pk=pk).update(updated_at=now)
    return stored


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
    RunPause.objects.update_or_create(
        run_id=entry.run_id, defaults={"state": end.pause.state, "paused_at": now}
    )
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
