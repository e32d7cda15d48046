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
from datetime import datetime

from django.conf import settings
from django.db import close_old_connections

from ..errors import Unavailable
from .events import TERMINAL_TYPES, encode
from .publish import Hub, events_message
from .retry import OUTAGE_ERRORS, Patience
from .store import Checkpoint, Entry, RunEnd, store, writer

log = logging.getLogger(__name__)

# Seconds without a batch after which the writer gives its database connection back (to the pool
# on PostgreSQL): while events come it keeps it, rather than take one from the pool per batch.
RELEASE_AFTER = 1.0

# What `Journal.end` reports.
COMMITTED, VOID, REFUSED, UNAVAILABLE = "committed", "void", "refused", "unavailable"


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

    def checkpoint(self, run_id: str, checkpoint: Checkpoint) -> None:
        """Queue a run's checkpoint: committed with (or after) the events it covers."""
        if run_id not in self.lost:
            self._add(Entry(run_id, {}, None, checkpoint=checkpoint))

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
                    await loop.run_in_executor(writer, close_old_connections)
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
                stored, refused = await loop.run_in_executor(writer, store, batch)
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
            if entry.checkpoint is None:  # a checkpoint is no event
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
