"""The run executor: owns every run started in this process as a detached asyncio task.

Only the executor iterates `Runner.run_streamed(...).stream_events()`. Each SDK event is
translated, numbered, buffered, written to the database in batches, and only then published
to the run's channel-layer group (persist, then publish: the DB is the source of truth).
"""

import asyncio
import json
import logging
import sys
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import httpx2
import openai
import orjson
from agents import Runner
from agents.exceptions import (
    InputGuardrailTripwireTriggered,
    MaxTurnsExceeded,
    ModelBehaviorError,
    OutputGuardrailTripwireTriggered,
)
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connections,
    transaction,
)
from django.utils import timezone

from . import prepared, providers
from .events import TERMINAL_TYPES, TEXT_DELTA, final_output_json, translate
from .models import Conversation, ConversationItem, Run, RunEvent
from .priority import FirstTokenPriority, Ticket, current_ticket
from .registry import AgentSpec
from .session import DjangoSession

log = logging.getLogger(__name__)

# What counts as a run's first output for first-token priority: the first delta or item.
FIRST_OUTPUT_TYPES = frozenset({"raw_response", "run_item"})
INTERRUPTED_BY_SHUTDOWN = "the run was interrupted: the server stopped before it finished"


def run_group(run_id: Any) -> str:
    return f"run.{run_id}"


# The fallback encoder, built once: json.dumps with options builds a new encoder per call.
_encode_std = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def encode(event: dict) -> str:
    """Compact JSON text of one event, as stored and as sent.

    orjson does it ten times faster than the standard encoder (every event of every run passes
    here) and writes strict JSON (NaN and infinities become null, which browsers can parse).
    What orjson refuses (keys that are not strings, integers beyond 64 bits, lone surrogates)
    goes to the standard encoder."""
    try:
        return orjson.dumps(event).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return _encode_std(event)


# A reader in this process: called with each `run.events` message of its run, must not block.
Reader = Callable[[dict], None]


def events_message(events: list[dict], texts: list[str]) -> dict:
    """The group message that wakes readers: encoded events plus their seqs, so nobody re-parses."""
    return {
        "type": "run.events",
        "run_id": events[0]["run_id"],
        "events": texts,
        "seqs": [e["seq"] for e in events],
        "terminal": events[-1]["type"] in TERMINAL_TYPES,
    }


# What a database that is away for a while raises (a restart, a failover, a lost connection,
# SQLite's "database is locked"): worth waiting out, unlike errors in the data itself.
OUTAGE_ERRORS = (OperationalError, InterfaceError)


class Patience:
    """Back-off for retrying a write through a database outage: 50 ms doubling up to 2 s,
    for at most RUN_DB_RETRY_SECONDS from the first failure."""

    def __init__(self) -> None:
        self.first_failure: float | None = None
        self.delay = 0.05

    def next_delay(self) -> float | None:
        """Seconds to wait before the next attempt, or None: give up."""
        now = time.monotonic()
        if self.first_failure is None:
            self.first_failure = now
        if now - self.first_failure >= settings.RUN_DB_RETRY_SECONDS:
            return None
        delay, self.delay = self.delay, min(self.delay * 2, 2.0)
        return delay


class FailureLog:
    """Logs a dependency that keeps failing (Redis down: every batch of every run fails to
    publish) without flooding the log: the first failure with its traceback, then one line
    per `every` seconds with the count, and one line when it works again."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.failures = 0
        self.unlogged = 0
        self.logged_at = 0.0

    def failed(self, message: str, *args: Any) -> None:
        self.failures += 1
        now = time.monotonic()
        if self.failures == 1:
            log.warning(message, *args, exc_info=True)
            self.logged_at = now
        elif now - self.logged_at >= self.every:
            log.warning(message + " (and %d more failures since the last report)", *args, self.unlogged)
            self.logged_at, self.unlogged = now, 0
        else:
            self.unlogged += 1

    def ok(self, what: str) -> None:
        if self.failures:
            log.warning("%s works again after %d failures", what, self.failures)
            self.failures = self.unlogged = 0


# Event rows are written by one dedicated thread with its own connection, so bulk writes
# neither queue behind request-path queries on Django's shared sync thread nor block them.
_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="event-writer")


# Rows per INSERT statement: 5 parameters each stays well under every backend's limit (SQLite: 32,766).
INSERT_ROWS = 500


EVENT_COLUMNS = "(run_id, seq, type, data, created_at)"


def _insert_events(rows: list[tuple[Any, int, str, str]]) -> None:
    """Already-encoded events (the JSON text is stored as is) in one transaction: one COPY on
    PostgreSQL, multi-row INSERTs elsewhere."""
    connection = connections["default"]
    write = _copy_rows if connection.vendor == "postgresql" else _insert_rows
    try:
        with transaction.atomic(using="default"), connection.cursor() as cursor:
            write(connection, cursor, rows)
    except DatabaseError:
        # The next batch reconnects if this error broke the connection.
        connection.close()
        raise


def _insert_rows(connection: Any, cursor: Any, rows: list[tuple[Any, int, str, str]]) -> None:
    """Multi-row INSERTs: one statement carries up to INSERT_ROWS rows, far fewer round trips
    into the driver than `executemany`, so this thread takes the GIL back far less often."""
    run_field = RunEvent._meta.get_field("run")
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    prepared: dict[Any, Any] = {}
    params: list[Any] = []
    for run_id, seq, type_, text in rows:
        db_run_id = prepared.get(run_id)
        if db_run_id is None:
            db_run_id = prepared[run_id] = run_field.get_db_prep_value(run_id, connection)
        params += (db_run_id, seq, type_, text, now)
    head = f"INSERT INTO {RunEvent._meta.db_table} {EVENT_COLUMNS} VALUES "
    for start in range(0, len(rows), INSERT_ROWS):
        count = min(INSERT_ROWS, len(rows) - start)
        sql = head + ", ".join(["(%s, %s, %s, %s, %s)"] * count)
        cursor.execute(sql, params[start * 5 : (start + count) * 5])


def _copy_rows(connection: Any, cursor: Any, rows: list[tuple[Any, int, str, str]]) -> None:
    """PostgreSQL: one COPY. It costs this thread (and the GIL) less than multi-row INSERTs
    with five bound parameters per row, and the server parses no statement."""
    now = timezone.now()
    # The driver's own cursor, so its errors are wrapped here as Django's would be.
    with connection.wrap_database_errors:
        with cursor.cursor.copy(f"COPY {RunEvent._meta.db_table} {EVENT_COLUMNS} FROM STDIN") as copy:
            for run_id, seq, type_, text in rows:
                copy.write_row((run_id, seq, type_, text, now))


def _insert_events_per_run(rows: list[tuple[Any, int, str, str]]) -> None:
    by_run: dict[Any, list] = {}
    for row in rows:
        by_run.setdefault(row[0], []).append(row)
    for run_id, run_rows in by_run.items():
        try:
            _insert_events(run_rows)
        except (IntegrityError, DataError) as exc:
            log.error("dropped %d events of run %s: %s", len(run_rows), run_id, exc)


class EventSink:
    """Collects the events of all runs of this process and writes them in one bulk insert per flush."""

    def __init__(self, deliver: Callable[[dict], bool]) -> None:
        # deliver(message) hands a batch to this process's readers and says whether other
        # processes' readers want it too (then it also goes to the channel-layer group).
        self.deliver = deliver
        self._pending: list[tuple[Any, dict, str]] = []
        self._wake = asyncio.Event()
        self._done: asyncio.Future = asyncio.get_running_loop().create_future()
        self._in_flight: asyncio.Future | None = None
        # The wait between flushes, while it lasts; an urgent event ends it or skips it.
        self._nap: asyncio.Future | None = None
        self._urgent = False
        self._task = asyncio.create_task(self._loop(), name="event-sink")
        self.layer = get_channel_layer()
        self._publish_failures = FailureLog()

    def add(self, run_id: Any, event: dict, urgent: bool = False) -> None:
        """Queue an event; `urgent` (a run's first output) cuts short the wait for the next flush."""
        self._pending.append((run_id, event, encode(event)))
        self._wake.set()
        if urgent:
            self._urgent = True
            if self._nap is not None and not self._nap.done():
                self._nap.set_result(None)

    def close(self) -> None:
        self._task.cancel()

    async def flush(self) -> None:
        """Wait until everything added so far is written and published."""
        if not self._pending:
            # Nothing queued, but a batch taken a moment ago may still be on its way to the DB.
            if self._in_flight is not None:
                await asyncio.shield(self._in_flight)
            return
        if self._task.done():
            # Closed (shutdown): write what is left ourselves.
            batch, self._pending = self._pending, []
            await self._write(batch)
            await self._publish(batch)
            return
        done = self._done
        self._wake.set()
        await asyncio.shield(done)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_flush = 0.0
        while True:
            await self._wake.wait()
            if len(self._pending) < settings.RUN_EVENT_BATCH_SIZE and not self._urgent:
                # At most one flush per interval, so one insert carries many events under load;
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
            batch, self._pending = self._pending, []
            done, self._done = self._done, asyncio.get_running_loop().create_future()
            self._in_flight = done
            try:
                await self._write(batch)
                await self._publish(batch)
            except Exception:
                log.exception("event sink failed to write %d events", len(batch))
            finally:
                self._in_flight = None
                done.set_result(None)

    async def _write(self, batch: list[tuple[Any, dict, str]]) -> None:
        rows = [(run_id, ev["seq"], ev["type"], text) for run_id, ev, text in batch]
        loop = asyncio.get_running_loop()
        patience = Patience()
        while True:
            try:
                await loop.run_in_executor(_writer, _insert_events, rows)
                return
            except (IntegrityError, DataError):
                # One run's rows are bad (its run was deleted meanwhile): keep everyone else's.
                await loop.run_in_executor(_writer, _insert_events_per_run, rows)
                return
            except OUTAGE_ERRORS as exc:
                # The batch is kept (and nothing is published) until the database is back:
                # events published but never stored could not be replayed.
                delay = patience.next_delay()
                if delay is None:
                    raise
                log.warning("database unavailable (%s): retrying %d events in %.2f s", exc, len(rows), delay)
                await asyncio.sleep(delay)

    async def publish_one(self, run_id: Any, event: dict) -> None:
        await self._publish([(run_id, event, encode(event))])

    async def _publish(self, batch: list[tuple[Any, dict, str]]) -> None:
        by_run: dict[Any, list[tuple[dict, str]]] = {}
        for run_id, event, text in batch:
            by_run.setdefault(run_id, []).append((event, text))
        for run_id, pairs in by_run.items():
            message = events_message([e for e, _ in pairs], [t for _, t in pairs])
            if not self.deliver(message):
                continue
            try:
                await self.layer.group_send(run_group(run_id), message)
            except Exception:
                # Readers fall back to the database; a lost wake-up costs latency, not data.
                self._publish_failures.failed("could not publish events of run %s", run_id)
            else:
                self._publish_failures.ok("publishing to the channel layer")


def _wake_up(nap: asyncio.Future) -> None:
    if not nap.done():
        nap.set_result(None)


# The end of one run: the run, its final fields, its terminal event, the memory it added.
RunEnd = tuple[Run, dict, dict, list[ConversationItem]]
# Ends committed by one statement at most: a mass disconnect's thousands would pass the
# databases' limits on parameters per statement (PostgreSQL's 65,535, SQLite's 32,766).
ENDS_PER_COMMIT = 100


def _commit_ends(ends: list[RunEnd]) -> list[Exception | None]:
    """Each run's end, terminal event and added memory are committed together: the
    conversation's next run (possible once this one is no longer active) sees all of it.

    Ends that arrived together share one transaction (one commit instead of one per run when
    many runs stop at once); if it fails, each end is retried in its own, so one bad end
    costs no other its record. Returns each end's error, or None."""
    if len(ends) > ENDS_PER_COMMIT:
        chunks = [ends[i : i + ENDS_PER_COMMIT] for i in range(0, len(ends), ENDS_PER_COMMIT)]
        return [error for chunk in chunks for error in _commit_ends(chunk)]
    try:
        # Statements built once (prepared.py): on PostgreSQL the whole commit is one statement,
        # one round trip instead of six, on the thread every start's hop needs too.
        now = timezone.now()
        conversations = {run.conversation_id for run, *_ in ends if run.conversation_id}
        prepared.update_and_add(
            [(Run, run.pk, fields) for run, fields, _event, _items in ends]
            # In a fixed order, so two processes ending runs of the same conversations lock
            # their rows in the same order.
            + [(Conversation, pk, {"updated_at": now}) for pk in sorted(conversations, key=str)],
            [
                RunEvent(run_id=run.pk, seq=event["seq"], type=event["type"], data=event)
                for run, _fields, event, _items in ends
            ]
            + [item for *_, end_items in ends for item in end_items],
        )
        return [None] * len(ends)
    except Exception:
        if len(ends) == 1:
            raise
    return [_commit_alone(end) for end in ends]


def _drop_broken_connection() -> None:
    """On Django's sync thread, after an outage: a connection the failure broke is closed, so
    the next query opens a new one (the request path does this before each request)."""
    connection = connections["default"]
    if not connection.in_atomic_block:
        connection.close_if_unusable_or_obsolete()


def _commit_alone(end: RunEnd) -> Exception | None:
    try:
        _commit_ends([end])
    except Exception as exc:
        return exc
    return None


class EndWriter:
    """Commits the ends of runs on Django's sync thread. Ends that arrive while a commit is on
    its way go together in the next one: at one end at a time nothing changes, and when
    thousands of runs stop at once (a mass disconnect) they do not queue one trip each."""

    def __init__(self) -> None:
        self._pending: list[tuple[RunEnd, asyncio.Future]] = []
        self._drain: asyncio.Task | None = None

    async def commit(self, end: RunEnd) -> None:
        """Until this end is committed; raises its error if it could not be."""
        done = asyncio.get_running_loop().create_future()
        self._pending.append((end, done))
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._commit_pending(), name="run-ends")
        await done

    async def _commit_pending(self) -> None:
        patience = Patience()
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                errors = await sync_to_async(_commit_ends)([end for end, _ in batch])
            except asyncio.CancelledError:
                # The loop is shutting down: nobody may wait for ever.
                for _end, done in batch + self._pending:
                    done.cancel()
                raise
            except Exception as exc:
                errors = [exc] * len(batch)
            again = []
            for (end, done), error in zip(batch, errors, strict=True):
                if done.done():
                    continue
                if error is None:
                    done.set_result(None)
                elif isinstance(error, OUTAGE_ERRORS):
                    again.append((end, done, error))
                else:
                    done.set_exception(error)
            if not again:
                patience = Patience()
                continue
            # The database is away: the ends wait for it (a run's final output, usage and
            # terminal event exist nowhere else) until RUN_DB_RETRY_SECONDS have passed.
            delay = patience.next_delay()
            if delay is None:
                for _end, done, error in again:
                    done.set_exception(error)
                continue
            log.warning("database unavailable: retrying the ends of %d runs in %.2f s", len(again), delay)
            await asyncio.sleep(delay)
            await sync_to_async(_drop_broken_connection)()
            self._pending = [(end, done) for end, done, _error in again] + self._pending


class RunContext:
    """What one run's code sees: emit events, stream SDK agents, check for cancellation."""

    def __init__(self, executor: "RunExecutor", run: Run, spec: AgentSpec, ticket: Ticket) -> None:
        self.executor = executor
        self.run = run
        self.run_pk = run.pk
        self.run_key = str(run.pk)
        self.spec = spec
        self.seq = 0
        self.cancel_mode: str | None = None
        # Set when the serving process stops before the run ends (RunExecutor.shutdown).
        self.interrupted = False
        # A cancel request the database does not hold yet: the run's end records it.
        self.unrecorded_cancel_at: datetime | None = None
        self.text: list[str] = []
        self.response_id = ""
        self.current_turn = 0
        self.session: DjangoSession | None = None  # its deferred items are written at the end
        self.usage = {"requests": 0, "input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
        self._results: list = []
        self._tool_names: dict[str, str] = {}
        # First-token priority (priority.py): ended once the batch with the run's first output
        # (at `first_output_seq`) has reached its readers.
        self.ticket = ticket
        self.first_output_seq = 0

    def next_event(self, body: dict) -> dict:
        """`body` as this run's next event: numbered, with the run's id."""
        self.seq += 1
        # `type` first, as on the wire; `**body` sets it again to the same value, in place.
        return {"type": body["type"], "seq": self.seq, "run_id": self.run_key, **body}

    def emit(self, body: dict) -> dict:
        event = self.next_event(body)
        urgent = False
        if not self.first_output_seq and body["type"] in FIRST_OUTPUT_TYPES:
            self.first_output_seq = self.seq
            urgent = True  # the client waits for it: no flush interval
        self.executor.sink.add(self.run_pk, event, urgent)
        return event

    async def stream_agent(self, agent: Any, input: Any, **kwargs: Any) -> Any:
        """Run one SDK agent streamed, translating its events into this run's stream."""
        kwargs.setdefault("run_config", providers.run_config())
        result = Runner.run_streamed(agent, input, **kwargs)
        self._results.append(result)
        if self.cancel_mode == "after_turn":
            result.cancel(mode="after_turn")
        self.text = []
        try:
            async for sdk_event in result.stream_events():
                body = translate(sdk_event)
                if body is None:
                    continue
                if body["type"] == "run_item" and body.get("call_id"):
                    # Tool outputs only carry the call id; name the tool like the call did.
                    if body["name"] == "tool_called":
                        self._tool_names[body["call_id"]] = body["tool_name"]
                    elif body["name"] == "tool_output":
                        body["tool_name"] = self._tool_names.get(body["call_id"])
                elif body["type"] == "raw_response":
                    if body["event_type"] == TEXT_DELTA:
                        self.text.append(body["delta"])
                    elif body.get("response_id"):
                        self.response_id = body["response_id"]
                self.emit(body)
        finally:
            # Stops the SDK's background run task if we leave early (cancel or error).
            result.cancel()
            self._results.remove(result)
            self._add_usage(result)
        return result

    def request_cancel(self, mode: str) -> None:
        self.cancel_mode = mode
        for result in list(self._results):
            result.cancel(mode="after_turn")

    @property
    def cancelled(self) -> bool:
        return self.cancel_mode is not None

    def _add_usage(self, result: Any) -> None:
        usage = result.context_wrapper.usage
        self.usage["requests"] += usage.requests
        self.usage["input_tokens"] += usage.input_tokens
        self.usage["output_tokens"] += usage.output_tokens
        self.usage["total_tokens"] += usage.total_tokens
        self.current_turn += getattr(result, "current_turn", 0) or 0


class RunExecutor:
    """One per event loop (one per process when served)."""

    def __init__(self) -> None:
        self.sink = EventSink(self.deliver)
        self.ends = EndWriter()
        self.layer = self.sink.layer
        self.channel_name = ""
        self.contexts: dict[str, RunContext] = {}
        self.tasks: dict[str, asyncio.Task] = {}
        # Readers of our runs in this process get batches handed over directly; the channel
        # layer only carries a run's events once a reader in another process asked for them.
        self.readers: dict[str, list[Reader]] = {}
        self.watched: set[str] = set()
        self._starting: asyncio.Future | None = None
        self._background: list[asyncio.Task] = []
        self.priority = FirstTokenPriority(settings.RUN_FIRST_TOKEN_MAX_PAUSE)

    async def ensure_started(self) -> str:
        """Start the control and heartbeat loops once; returns the control channel's name."""
        if not self.channel_name:
            if self._starting is None:
                self._starting = asyncio.ensure_future(self._start_up())
            # Callers arriving meanwhile wait for the same start-up: none sees an empty name.
            await asyncio.shield(self._starting)
        return self.channel_name

    async def _start_up(self) -> None:
        providers.configure_tracing()
        # Default prefix on purpose: channels_redis has one receive loop per process for all
        # process-local channels, and it only reads the list of the prefix its holder uses.
        self.channel_name = await self.layer.new_channel()
        self._background = [
            asyncio.create_task(self._control_loop(), name="executor-control"),
            asyncio.create_task(self._heartbeat_loop(), name="executor-heartbeat"),
        ]
        _shut_down_with_the_reactor(self)

    async def start(
        self, run: Run, spec: AgentSpec, reader: Reader | None = None, ticket: Ticket | None = None
    ) -> asyncio.Task:
        """Start a run; `reader` is subscribed before its first event, so it needs no replay.
        `ticket`: the run's first-token priority, if its request took one on arrival (the
        caller ends it if this fails)."""
        await self.ensure_started()
        ctx = RunContext(self, run, spec, ticket or self.priority.ticket())
        key = str(run.pk)
        self.contexts[key] = ctx
        if reader is not None:
            self.subscribe(key, reader)
        task = asyncio.create_task(self._execute(ctx), name=f"run-{key}")
        self.tasks[key] = task
        task.add_done_callback(lambda _t: self._forget(key))
        return task

    def _forget(self, key: str) -> None:
        ctx = self.contexts.pop(key, None)
        if ctx is not None:
            ctx.ticket.end()
        self.tasks.pop(key, None)
        self.readers.pop(key, None)
        self.watched.discard(key)

    def subscribe(self, run_id: Any, reader: Reader) -> bool:
        """Hand this run's future batches to `reader`; False if this executor does not run it."""
        key = str(run_id)
        if key not in self.contexts:
            return False
        self.readers.setdefault(key, []).append(reader)
        return True

    def unsubscribe(self, run_id: Any, reader: Reader) -> None:
        readers = self.readers.get(str(run_id))
        if readers and reader in readers:
            readers.remove(reader)

    def deliver(self, message: dict) -> bool:
        """Give a batch to the local readers of its run; True if it must go to the group as well."""
        key = message["run_id"]
        for reader in tuple(self.readers.get(key, ())):
            try:
                reader(message)
            except Exception:
                log.exception("a reader of run %s failed", key)
        ctx = self.contexts.get(key)
        if ctx is not None and ctx.first_output_seq and not ctx.ticket.ended:
            if message["seqs"][-1] >= ctx.first_output_seq:
                ctx.ticket.end()  # its first output is on its way to the client
        return key in self.watched or key not in self.contexts

    def cancel_local(self, run_id: Any, mode: str, unrecorded_at: datetime | None = None) -> bool:
        """Cancel a run owned by this executor; False when it is not ours (or already over).

        `unrecorded_at`: the time of a request the caller did not write to the database; the
        run's end records it, in the same update as its status (one round trip fewer)."""
        key = str(run_id)
        ctx, task = self.contexts.get(key), self.tasks.get(key)
        if ctx is None or task is None or task.done():
            return False
        if ctx.cancelled and mode != "immediate":
            return True
        if unrecorded_at is not None and not ctx.cancelled:
            ctx.unrecorded_cancel_at = unrecorded_at
        if mode == "immediate":
            ctx.cancel_mode = "immediate"
            task.cancel()
        else:
            ctx.request_cancel(mode)
        return True

    async def _execute(self, ctx: RunContext) -> None:
        current_ticket.set(ctx.ticket)  # the SDK's tasks for this run inherit it
        run = ctx.run
        status, final, error, code = Run.Status.COMPLETED, None, "", ""
        try:
            ctx.emit(
                {
                    "type": "run_started",
                    "conversation_id": str(run.conversation_id) if run.conversation_id else None,
                    "agent": run.agent,
                    "provider": run.provider,
                    "model": run.model,
                }
            )
            final = await self._run_body(ctx)
            if ctx.cancelled:
                status = Run.Status.CANCELLED
        except asyncio.CancelledError:
            status = Run.Status.CANCELLED
        except Exception as exc:
            status, error, code = Run.Status.FAILED, str(exc) or type(exc).__name__, _error_code(exc)
            # A traceback only for faults of this server: upstream failures and limits say it all.
            log.warning("run %s failed (%s): %s", run.pk, code, error, exc_info=code == "internal_error")
        if ctx.interrupted and status == Run.Status.CANCELLED:
            status, error, code = Run.Status.INTERRUPTED, INTERRUPTED_BY_SHUTDOWN, "interrupted"
        if status in (Run.Status.CANCELLED, Run.Status.INTERRUPTED) and final is None:
            final = "".join(ctx.text)
        await self._finish(ctx, status, final_output_json(final), error, code)

    async def _run_body(self, ctx: RunContext) -> Any:
        if ctx.spec.pipeline is not None:
            return await ctx.spec.pipeline(ctx)
        run = ctx.run
        session = None
        if ctx.spec.uses_memory and run.conversation_id:
            cached = Run.conversation.is_cached(run)
            conversation = (
                run.conversation if cached else await Conversation.objects.aget(pk=run.conversation_id)
            )
            # A conversation created for this run has no items yet: no need to read them.
            created_now = getattr(conversation, "created_now", False)
            session = ctx.session = DjangoSession(conversation, empty=created_now, deferred=True)
        agent = ctx.spec.build(None)
        result = await ctx.stream_agent(agent, run.input, session=session, context=run.context or None)
        return result.final_output

    async def _finish(self, ctx: RunContext, status: str, final: Any, error: str, code: str) -> None:
        run = ctx.run
        fields = dict(
            status=status,
            final_output=final,
            error=error,
            error_code=code,
            response_id=ctx.response_id,
            current_turn=ctx.current_turn,
            finished_at=timezone.now(),
            last_seq=ctx.seq + 1,  # the terminal event's seq
            **ctx.usage,
        )
        if ctx.unrecorded_cancel_at is not None:
            fields.update(cancel_requested_at=ctx.unrecorded_cancel_at, cancel_mode=ctx.cancel_mode)
        if status in (Run.Status.COMPLETED, Run.Status.CANCELLED):
            terminal = {
                "type": "stream_complete",
                "final_output": final,
                "usage": ctx.usage,
                "current_turn": ctx.current_turn,
                "conversation_id": str(run.conversation_id) if run.conversation_id else None,
                "status": status,
                "response_id": ctx.response_id or None,
            }
        else:
            terminal = {"type": "error", "message": error, "code": code}
        # A cancel arriving now (a second request, the heartbeat finding the first one in the
        # database, shutdown) must neither interrupt the bookkeeping nor end this task before
        # it: the task's end drops the run's local readers, which must get the terminal event.
        writing = asyncio.ensure_future(self._write_final(run, fields, ctx, terminal))
        while True:
            try:
                await asyncio.shield(writing)
                return
            except asyncio.CancelledError:
                if writing.cancelled():
                    raise
                asyncio.current_task().uncancel()  # this task is ending anyway, once it is written

    async def _write_final(self, run: Run, fields: dict, ctx: RunContext, terminal: dict) -> None:
        """Everything before the terminal event is stored first; then the run's final state and its
        terminal event are committed together, so no reader ever sees one without the other."""
        await self.sink.flush()
        event = ctx.next_event(terminal)
        # A failed or interrupted run leaves the conversation's memory as it was: its input
        # (which may be what made it fail) would otherwise be replayed to every later run of
        # the conversation, and a retry would repeat it. The run keeps its input and events.
        keeps_memory = fields["status"] not in (Run.Status.FAILED, Run.Status.INTERRUPTED)
        items = ctx.session.take_rows() if ctx.session is not None and keeps_memory else []
        try:
            await self.ends.commit((run, fields, event, items))
        except Exception:
            log.exception("could not record the end of run %s", run.pk)
        await self.sink.publish_one(run.pk, event)

    async def _control_loop(self) -> None:
        failures = FailureLog()
        while True:
            try:
                message = await self.layer.receive(self.channel_name)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Cancel signals are also picked up from the database by the heartbeat loop.
                failures.failed("executor control channel failed")
                await asyncio.sleep(1)
                continue
            failures.ok("the executor control channel")
            if message.get("type") == "run.cancel":
                self.cancel_local(message.get("run_id"), message.get("mode") or "immediate")
            elif message.get("type") == "run.watch":
                # A reader in another process follows one of our runs: publish it to the group.
                if message.get("run_id") in self.contexts:
                    self.watched.add(message["run_id"])
            elif message.get("type") == "executor.stop":
                return

    async def shutdown(self, grace: float) -> None:
        """The serving process is stopping. Runs get `grace` seconds to finish on their own;
        the others end `interrupted` now, each with its terminal event, its partial output and
        usage, instead of staying `running` (their conversations busy) until another process's
        sweep finds them stale. Then the background tasks stop."""
        running = [task for task in self.tasks.values() if not task.done()]
        if running and grace > 0:
            await asyncio.wait(running, timeout=grace)
        ending = []
        for key, task in list(self.tasks.items()):
            ctx = self.contexts.get(key)
            if ctx is not None and not task.done():
                ctx.interrupted = True
                task.cancel()
                ending.append(task)
        if ending:
            log.warning("server stopping: %d runs interrupted", len(ending))
            await asyncio.wait(ending, timeout=10)
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the background tasks once runs are done (a CLI command's or a test's loop ends).

        The control loop is stopped by a message, not cancelled: a cancel that lands inside
        redis-py can be noticed only after the blocking pop it was in (up to 5 s, see layers.py).
        """
        await self.sink.flush()
        self.sink.close()
        if not self._background:
            return
        control, *others = self._background
        for task in others:
            task.cancel()
        try:
            await self.layer.send(self.channel_name, {"type": "executor.stop"})
        except Exception:
            # The layer is away (Redis down): the loop waits in a receive that cannot return.
            control.cancel()
        stopped, _ = await asyncio.wait([control], timeout=10)
        if not stopped:
            log.warning("executor control loop did not stop")

    async def _heartbeat_loop(self) -> None:
        """Keep our runs' heartbeats fresh, pick up cancel requests whose signal was lost, and
        now and then mark runs of dead processes interrupted."""
        from .services import runs_sweep_stale

        last_sweep = 0.0
        while True:
            loop_time = asyncio.get_running_loop().time()
            if loop_time - last_sweep >= settings.RUN_STALE_AFTER:
                last_sweep = loop_time
                try:
                    await sync_to_async(runs_sweep_stale)()
                except Exception:
                    log.warning("stale-run sweep failed", exc_info=True)
                    await sync_to_async(_drop_broken_connection)()
            await asyncio.sleep(settings.RUN_HEARTBEAT_INTERVAL)
            ids = list(self.contexts)
            if not ids:
                continue
            try:
                await Run.objects.filter(pk__in=ids, status=Run.Status.RUNNING).aupdate(
                    heartbeat_at=timezone.now()
                )
                requested = Run.objects.filter(pk__in=ids, cancel_requested_at__isnull=False)
                async for run_id, mode in requested.values_list("pk", "cancel_mode"):
                    self.cancel_local(run_id, mode or "immediate")
            except Exception:
                log.warning("heartbeat failed", exc_info=True)
                # After a database restart the sync thread's connection stays broken until
                # something closes it; without this the heartbeats would fail until the next
                # request, and other processes' sweeps would take our live runs for dead.
                await sync_to_async(_drop_broken_connection)()


# Codes of failures upstream (the model's API), not in this server: REST answers them with 502.
UPSTREAM_ERROR_CODES = frozenset(
    {"model_rate_limited", "model_auth_failed", "model_request_rejected", "model_unavailable"}
)


def _error_code(exc: Exception) -> str:
    """What support staff and clients need to tell apart: a limit or outage at the model's
    provider (retry later), a credentials problem (fix the configuration), a request the
    provider refused, and a fault in this server."""
    if isinstance(exc, MaxTurnsExceeded):
        return "max_turns_exceeded"
    if isinstance(exc, InputGuardrailTripwireTriggered | OutputGuardrailTripwireTriggered):
        return "guardrail_triggered"
    if isinstance(exc, ModelBehaviorError):
        return "model_error"
    if isinstance(exc, openai.RateLimitError):
        return "model_rate_limited"
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return "model_auth_failed"
    if isinstance(exc, openai.APIStatusError):
        return "model_unavailable" if exc.status_code >= 500 else "model_request_rejected"
    # A connection refused, timed out or dropped mid-answer: openai wraps the first two, but
    # a stream cut while it is read surfaces as the HTTP client's own error.
    if isinstance(exc, openai.APIConnectionError | httpx2.TransportError):
        return "model_unavailable"
    return "internal_error"


_executors: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RunExecutor]" = weakref.WeakKeyDictionary()


async def close_executor() -> None:
    """Close the running loop's executor, if it has one."""
    executor = _executors.pop(asyncio.get_running_loop(), None)
    if executor is not None:
        await executor.aclose()


async def shutdown_executor() -> None:
    """The serving process is stopping: end the running loop's runs (see RunExecutor.shutdown)."""
    executor = _executors.pop(asyncio.get_running_loop(), None)
    if executor is not None:
        await executor.shutdown(settings.RUN_SHUTDOWN_GRACE)


async def lifespan(scope: dict, receive: Callable, send: Callable) -> None:
    """ASGI lifespan (uvicorn and other servers that speak it): at shutdown, end this
    process's runs (see RunExecutor.shutdown)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await shutdown_executor()
            await send({"type": "lifespan.shutdown.complete"})
            return


def _shut_down_with_the_reactor(executor: "RunExecutor") -> None:
    """Under daphne (Twisted, no ASGI lifespan), run the shutdown before the reactor stops: a
    'before shutdown' trigger may return a Deferred, and the reactor waits for it."""
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None or not getattr(reactor, "running", False):
        return
    from twisted.internet import defer

    def before_shutdown():
        if _executors.get(asyncio.get_running_loop()) is not executor:
            return None
        return defer.Deferred.fromFuture(asyncio.ensure_future(shutdown_executor()))

    reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)


def runs_here(run_id: Any) -> bool:
    """True if the running loop's executor owns this run (without creating an executor)."""
    executor = current_executor()
    return executor is not None and str(run_id) in executor.contexts


def current_executor() -> RunExecutor | None:
    """The running loop's executor if it has one (never creates it)."""
    return _executors.get(asyncio.get_running_loop())


def get_executor() -> RunExecutor:
    """The executor of the running event loop (tests run one loop per test)."""
    loop = asyncio.get_running_loop()
    executor = _executors.get(loop)
    if executor is None:
        executor = _executors[loop] = RunExecutor()
    return executor
