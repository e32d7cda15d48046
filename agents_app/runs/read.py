"""Reading a run's event stream: replay from the database, then follow it live.

A reader in the process that runs the run gets its batches handed over by the journal (an
`Inbox`, no channel layer); a reader elsewhere joins the run's channel-layer group and asks the
owning executor to publish there (`RunCursor.follow`). Each run a reader follows has a
`RunCursor`, which de-duplicates by seq and fills any gap from the database, so a dropped message
(full inbox or channel, lost wake-up) costs latency, never data. `RunReader` is the life of every
reader (SSE responses, sockets, `RunFollower` for commands and for waiting on a run's end).

A run that pauses for approval leaves its process: its local readers then follow its group, as
readers elsewhere do, wherever it resumes (the resuming process publishes it there).
"""

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from django.conf import settings

from ..db import in_sync_thread
from ..models import Run, RunEvent
from . import layer
from .engine import current_engine, get_engine
from .events import PAUSE_TYPE, TERMINAL_TYPES, encode
from .inbox import Inbox, LayerChannel
from .inbox import layer_failures as _layer_failures
from .sweep import end_stale, is_stale

log = logging.getLogger(__name__)

Batch = list[tuple[int, str]]
DB_PAGE = 1000
# How often an idle reader checks that its run's process is still alive (seconds).
LIVENESS_EVERY = 30.0
MIN_TICK = 0.05  # seconds: the soonest a reader's idle duties come back


def runs_here(run_id: Any) -> bool:
    """True if this process executes the run (alive by definition)."""
    engine = current_engine()
    return engine is not None and engine.hub.owns(run_id)


async def refresh_liveness(run: Run) -> Run:
    """A run as it really is: an active run whose process died is ended `interrupted` first."""
    if is_stale(run) and not runs_here(run.pk):
        await end_stale(get_engine().journal, [(run.pk, run.agent, run.owner_id)])
        await in_sync_thread(run.refresh_from_db)()
    return run


@in_sync_thread
def _events_after(run_id: str, last: int, check_terminal: bool) -> tuple[list, bool]:
    """Up to DB_PAGE stored events after `last`, and (when there are none and `check_terminal`)
    whether one at or before `last` is terminal."""
    rows = RunEvent.objects.filter(run_id=run_id, seq__gt=last).order_by("seq")
    page = list(rows.values_list("seq", "type", "data")[:DB_PAGE])
    if page or not check_terminal:
        return page, False
    terminal = RunEvent.objects.filter(run_id=run_id, seq__lte=last, type__in=TERMINAL_TYPES)
    return page, terminal.exists()


class RunCursor:
    """Where one reader is in one run's stream; each method returns (new events, ended).

    Idle readers poll the database with a back-off (1 s doubling up to
    SSE_KEEPALIVE_INTERVAL), so thousands of idle streams cost a trickle of queries.
    """

    def __init__(self, run_id: Any, after: int = 0) -> None:
        self.run_id = str(run_id)
        self.last = after
        self.ended = False
        self.local = False
        # The last event read is the run's pause (`approval_required`); `regroup`: this reader
        # followed the run locally and must follow its group now.
        self.paused = False
        self.regroup = False
        self._first_poll = 1.0
        self._backoff = 1.0
        self._next_poll = time.monotonic() + self._backoff
        self._next_liveness = time.monotonic() + LIVENESS_EVERY

    async def replay(self, check_terminal: bool = True) -> tuple[Batch, bool]:
        """Everything stored after `last` (call after `follow`)."""
        batch: Batch = []
        while True:
            page, ended_before = await _events_after(self.run_id, self.last, check_terminal and not batch)
            for seq, type_, data in page:
                batch.append((seq, encode(data)))
                self.last = seq
                self.ended = self.ended or type_ in TERMINAL_TYPES
                self.paused = type_ == PAUSE_TYPE
            # Nothing new: maybe the reader already has the terminal event (a reconnect after the end).
            self.ended = self.ended or ended_before
            if len(page) < DB_PAGE or self.ended:
                return batch, self.ended

    async def on_message(self, message: dict) -> tuple[Batch, bool]:
        """A `run.events` message: new events in order, gaps filled from the DB."""
        self._active()
        seqs = message["seqs"]
        if seqs and seqs[0] > self.last + 1:
            return await self.replay(check_terminal=False)
        batch = [(seq, text) for seq, text in zip(seqs, message["events"], strict=True) if seq > self.last]
        if batch:
            self.last = batch[-1][0]
            self.paused = bool(message.get("paused"))
            self.regroup = self.paused and self.local
        if message["terminal"] and seqs and seqs[-1] <= self.last:
            self.ended = True
        return batch, self.ended

    @property
    def next_poll_at(self) -> float:
        """When the next poll falls due (time.monotonic() clock)."""
        return math.inf if self.ended else self._next_poll

    async def poll(self) -> tuple[Batch, bool]:
        """When idle: pick up anything whose wake-up was lost; end if the run died silently."""
        if self.local and runs_here(self.run_id):
            # Our executor hands over every batch of the runs it still owns (and flags dropped
            # ones): nothing to read. Once the run has left it, the next poll reads the DB.
            self._next_poll = time.monotonic() + self._backoff
            return [], False
        batch, ended = await self.replay(check_terminal=False)
        if batch or ended:
            self._active()
            return batch, ended
        self._backoff = min(self._backoff * 2, settings.SSE_KEEPALIVE_INTERVAL)
        self._next_poll = time.monotonic() + self._backoff
        if time.monotonic() < self._next_liveness or runs_here(self.run_id):
            return [], False
        self._next_liveness = time.monotonic() + LIVENESS_EVERY
        run = await in_sync_thread(Run.objects.filter(pk=self.run_id).first)()
        if run is None:
            self.ended = True
            return [], True
        if run.is_active:
            await refresh_liveness(run)
            if run.is_active:
                return [], False
        # Not active: its terminal event is stored (possibly just now, by the stale sweep).
        return await self.replay()

    async def follow(self, run: Run, channel: LayerChannel) -> None:
        """Start receiving the run's live batches into the reader's inbox (`channel.inbox`; call
        before replaying from the database): straight from this process's executor if it runs
        the run (`local`), else through the run's group on the reader's `channel`."""
        engine = current_engine()
        if engine is not None and engine.hub.subscribe(run.pk, channel.inbox):
            self.set_local(True)
            return
        owner = run.worker_channel if run.is_active and run.is_claimed else ""
        await self._join_group(channel, owner)

    async def follow_group(self, channel: LayerChannel) -> Batch:
        """The run paused and left this process: follow its group from now on (whichever process
        resumes it publishes there); returns what was stored meanwhile."""
        self.regroup = False
        await self._join_group(channel)
        batch, _ended = await self.replay(check_terminal=False)
        return batch

    async def _join_group(self, channel: LayerChannel, owner: str = "") -> None:
        """Receive the run's batches through its group on `channel`, and ask the executor that
        runs it (`owner`, its control channel) to publish there."""
        self.set_local(False)
        try:
            await layer.group_add(layer.run_group(self.run_id), await channel.open())
            if owner:
                await layer.send(owner, {"type": layer.WATCH, "run_id": self.run_id})
        except Exception:
            # The channel layer is away (Redis down): the reader polls the database instead.
            _layer_failures.failed("could not follow run %s through the channel layer", self.run_id)
        else:
            _layer_failures.ok("following runs through the channel layer")

    async def unfollow(self, channel: LayerChannel) -> None:
        if self.local:
            engine = current_engine()
            if engine is not None:
                engine.hub.unsubscribe(self.run_id, channel.inbox)
        elif channel.name:
            try:
                await layer.group_discard(layer.run_group(self.run_id), channel.name)
            except Exception:
                # Redis is away; the membership expires with the group (channels_redis).
                _layer_failures.failed("could not leave the group of run %s", self.run_id)

    async def catch_up(self, messages: list[dict], lost: bool) -> tuple[Batch, bool]:
        """Everything new since the last call: the inbox's messages of this run, the database
        when some were dropped (`lost`), and an idle poll when one is due."""
        batch: Batch = []
        for message in messages:
            more, _ended = await self.on_message(message)
            batch += more
            if self.ended:
                return batch, True
        if lost:
            more, _ended = await self.replay(check_terminal=False)
            batch += more
        if not self.ended and time.monotonic() >= self._next_poll:
            more, _ended = await self.poll()
            batch += more
        return batch, self.ended

    def set_local(self, local: bool) -> None:
        """A reader of a local run gets every batch handed over (and hears of lost ones), so its
        polls are only a safety net: the first comes after SSE_KEEPALIVE_INTERVAL of silence, and
        it reads the DB only once the run has left this process's executor."""
        self.local = local
        self._first_poll = settings.SSE_KEEPALIVE_INTERVAL if local else 1.0
        self._active()

    def _active(self) -> None:
        self._backoff = self._first_poll
        self._next_poll = time.monotonic() + self._backoff


Write = Callable[[RunCursor, Batch, bool], Awaitable[None]]


class RunReader:
    """The life of a reader that writes runs' events to a client (an SSE response follows one
    run, a socket any number): live batches of every run it follows come into one `Inbox`, and
    one pump task writes them out in order, each run's gaps filled from the database. The pump
    wakes when a batch comes and when an idle duty falls due: polling runs of other processes,
    a keep-alive, re-checking the API token the client came with.

    `write(cursor, batch, ended)` sends a run's new events; after a run's last, its cursor is
    dropped. With `until_ended` the pump stops once every run it follows has ended (a reader of
    one run). `keepalive`: `idle()` is awaited when nothing was written for that many seconds.
    `credential_watch`: once what authenticated the client (an API token, a session) no longer
    does, `on_credentials_lost()` and the pump stops.
    A fault in the pump (a bug: reads retry, translations are pure) is logged and `on_fault()`
    ends the client's stream rather than leaving it waiting."""

    def __init__(
        self,
        write: Write,
        *,
        until_ended: bool = False,
        on_fault: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.write = write
        self.until_ended = until_ended
        self.on_fault = on_fault
        self.keepalive: float | None = None
        self.idle: Callable[[], Awaitable[None]] | None = None
        self.credential_watch: Any = None
        self.on_credentials_lost: Callable[[], Awaitable[None]] | None = None
        self.inbox = Inbox()
        self.channel = LayerChannel(self.inbox)
        self.cursors: dict[str, RunCursor] = {}
        self.last_write = time.monotonic()
        # Held while a cursor is read and its events written: a replay and live batches of one
        # run never interleave.
        self.lock = asyncio.Lock()
        self.pump: asyncio.Task | None = None
        self.timer: asyncio.TimerHandle | None = None

    def started(self, run_id: Any) -> RunCursor:
        """A run started with this reader's inbox as its `reader` (subscribed before its first
        event): followed from the start, nothing to replay. A run that no executor here runs (in
        worker mode a worker takes it) is followed through its group, which the pump joins at
        its first step, then reads what was stored before."""
        cursor = self.cursors[str(run_id)] = RunCursor(run_id, 0)
        cursor.set_local(runs_here(run_id))
        cursor.regroup = not cursor.local
        if cursor.regroup:
            self.inbox.wake()  # a pump already running (a socket's) joins the group now
        return cursor

    async def follow(self, run: Run, after: int = 0, write: bool = True) -> tuple[Batch, bool]:
        """Follow a run from after `after`: its stored events (written unless `write` is False: the
        caller writes them itself), then live. Following a run again starts over."""
        key = str(run.pk)
        async with self.lock:
            old = self.cursors.pop(key, None)
            if old is not None:
                await old.unfollow(self.channel)
            cursor = self.cursors[key] = RunCursor(key, after)
            await cursor.follow(run, self.channel)
            batch, ended = await cursor.replay()
            if write:
                await self._write(cursor, batch, ended)
            elif ended:
                await self._drop(cursor)
        self._reschedule()
        return batch, ended

    def paused(self, run_id: Any) -> bool:
        """The last event read of a run this reader follows is its pause for approval."""
        cursor = self.cursors.get(str(run_id))
        return cursor is not None and cursor.paused

    def start(self) -> None:
        """Start the pump (once the caller has written what it writes first)."""
        self.last_write = time.monotonic()
        self.pump = asyncio.create_task(self._pump())
        self._reschedule()

    async def close(self) -> None:
        """Stop reading: the pump, its timer, every run's subscription and the channel."""
        if self.timer is not None:
            self.timer.cancel()
        if self.pump is not None and self.pump is not asyncio.current_task():
            self.pump.cancel()
        for cursor in list(self.cursors.values()):
            await cursor.unfollow(self.channel)
        self.cursors.clear()
        await self.channel.close()

    async def _write(self, cursor: RunCursor, batch: Batch, ended: bool) -> None:
        if batch or ended:
            self.last_write = time.monotonic()
            await self.write(cursor, batch, ended)
        if ended:
            await self._drop(cursor)

    async def _drop(self, cursor: RunCursor) -> None:
        """A run that ended: its cursor goes (a socket open all day keeps only its live runs)."""
        await cursor.unfollow(self.channel)
        if self.cursors.get(cursor.run_id) is cursor:
            del self.cursors[cursor.run_id]

    def _reschedule(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.pump is not None:
            self._tick(wake=False)

    def _tick(self, wake: bool = True) -> None:
        """Wake the pump for its idle duties, then again when the next one falls due: an idle
        reader of a local run wakes every SSE_KEEPALIVE_INTERVAL only."""
        if wake:
            self.inbox.wake()
        due = min((cursor.next_poll_at for cursor in self.cursors.values()), default=math.inf)
        if self.keepalive is not None:
            due = min(due, self.last_write + self.keepalive)
        if self.credential_watch is not None:
            due = min(due, self.credential_watch.next_check_at)
        delay = min(max(MIN_TICK, due - time.monotonic()), settings.SSE_KEEPALIVE_INTERVAL)
        self.timer = asyncio.get_running_loop().call_later(delay, self._tick)

    async def _pump(self) -> None:
        try:
            while await self._step():
                pass
        except Exception:
            log.exception("a reader of runs %s failed", ", ".join(self.cursors) or "(none)")
            if self.timer is not None:
                self.timer.cancel()
            if self.on_fault is not None:
                await self.on_fault()
        else:
            if self.timer is not None:
                self.timer.cancel()

    async def _step(self) -> bool:
        """One wake-up's work; False when the reading is over."""
        if not any(cursor.regroup for cursor in self.cursors.values()):
            await self.inbox.wait()
        if self.credential_watch is not None and not await self.credential_watch.still_usable():
            if self.on_credentials_lost is not None:
                await self.on_credentials_lost()
            return False
        messages, lost = self.inbox.take(), self.inbox.take_lost()
        async with self.lock:
            for key, cursor in list(self.cursors.items()):
                mine = messages if len(self.cursors) == 1 else [m for m in messages if m["run_id"] == key]
                batch, ended = await cursor.catch_up(mine, lost)
                if cursor.regroup and not ended:
                    await self._write(cursor, batch, ended)
                    batch, ended = await cursor.follow_group(self.channel), cursor.ended
                await self._write(cursor, batch, ended)
        if self.until_ended and not self.cursors:
            return False
        if self.idle is not None and time.monotonic() - self.last_write >= self.keepalive:
            self.last_write = time.monotonic()
            await self.idle()
        return True


class RunFollower:
    """A run's events as an async iterator, for in-process readers (commands, and whoever waits
    for a run's end): pass `inbox` as `start_run`'s reader to follow a run from its start.
    `until_paused`: the events end at the run's pause for approval too."""

    def __init__(self, until_paused: bool = False) -> None:
        self._queue: asyncio.Queue = asyncio.Queue()
        self.until_paused = until_paused
        self.reader = RunReader(self._put, until_ended=True)

    @property
    def inbox(self) -> Inbox:
        return self.reader.inbox

    async def _put(self, cursor: RunCursor, batch: Batch, ended: bool) -> None:
        for item in batch:
            self._queue.put_nowait(item)
        if ended or (self.until_paused and cursor.paused):
            self._queue.put_nowait(None)

    async def events(self, run: Run, after: int = 0, started: bool = False) -> AsyncIterator[tuple[int, str]]:
        """(seq, json text) in seq order, each once, ending after the terminal event; `started`:
        the run was started with this follower's inbox."""
        try:
            if started:
                self.reader.started(run.pk)
            else:
                await self.reader.follow(run, after)
            self.reader.start()
            while (item := await self._queue.get()) is not None:
                yield item
        finally:
            await self.reader.close()

    async def wait(self, run: Run, started: bool = False) -> Run:
        """The run, as stored once it has ended (its terminal event is read), or paused when
        `until_paused`."""
        async for _item in self.events(run, started=started):
            pass
        return await in_sync_thread(Run.objects.get)(pk=run.pk)


async def wait_for_end(run: Run) -> Run:
    """Wait until a run (of any process) has ended; the run as stored then."""
    return await RunFollower().wait(run)
