"""Reading a run's event stream: replay from the database, then follow it live.

A reader in the process that runs the run gets its batches handed over by the journal (an
`Inbox`, no channel layer); a reader elsewhere joins the run's channel-layer group and asks the
owning executor to publish there (`follow`). Every reader (SSE, WebSocket, `run_agent`) keeps a
`RunCursor`, which de-duplicates by seq and fills any gap from the database, so a dropped message
(full inbox or channel, lost wake-up) costs latency, never data.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from ..models import Run, RunEvent
from .engine import current_engine, get_engine
from .events import TERMINAL_TYPES, encode
from .publish import run_group
from .retry import FailureLog
from .sweep import end_stale, is_stale

log = logging.getLogger(__name__)
# Channel-layer failures of all readers of this process, logged without flooding the log.
_layer_failures = FailureLog()

Batch = list[tuple[int, str]]
STOP = "reader.stop"  # the message that ends a `LayerChannel`'s receiving task
DB_PAGE = 1000
# How often an idle reader checks that its run's process is still alive (seconds).
LIVENESS_EVERY = 30.0


def runs_here(run_id: Any) -> bool:
    """True if this process executes the run (alive by definition)."""
    engine = current_engine()
    return engine is not None and engine.hub.owns(run_id)


async def refresh_liveness(run: Run) -> Run:
    """A run as it really is: an active run whose process died is ended `interrupted` first."""
    if is_stale(run) and not runs_here(run.pk):
        await end_stale(get_engine().journal, [(run.pk, run.agent)])
        await run.arefresh_from_db()
    return run


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
        self._first_poll = 1.0
        self._backoff = 1.0
        self._next_poll = time.monotonic() + self._backoff
        self._next_liveness = time.monotonic() + LIVENESS_EVERY

    async def replay(self, check_terminal: bool = True) -> tuple[Batch, bool]:
        """Everything stored after `last` (call after subscribing to the group)."""
        batch: Batch = []
        while True:
            rows = RunEvent.objects.filter(run_id=self.run_id, seq__gt=self.last).order_by("seq")
            page = [
                (seq, type_, data)
                async for seq, type_, data in rows.values_list("seq", "type", "data")[:DB_PAGE]
            ]
            for seq, type_, data in page:
                batch.append((seq, encode(data)))
                self.last = seq
                self.ended = self.ended or type_ in TERMINAL_TYPES
            if len(page) < DB_PAGE or self.ended:
                break
        if check_terminal and not batch and not self.ended:
            # Nothing new: maybe the reader already has the terminal event (a reconnect after the end).
            terminal = RunEvent.objects.filter(
                run_id=self.run_id, seq__lte=self.last, type__in=TERMINAL_TYPES
            )
            self.ended = await terminal.aexists()
        return batch, self.ended

    async def on_message(self, message: dict) -> tuple[Batch, bool]:
        """A `run.events` group message: new events in order, gaps filled from the DB."""
        self._active()
        seqs = message["seqs"]
        if seqs and seqs[0] > self.last + 1:
            return await self.replay(check_terminal=False)
        batch = [(seq, text) for seq, text in zip(seqs, message["events"], strict=True) if seq > self.last]
        if batch:
            self.last = batch[-1][0]
        if message["terminal"] and seqs and seqs[-1] <= self.last:
            self.ended = True
        return batch, self.ended

    def poll_due(self) -> bool:
        return not self.ended and time.monotonic() >= self._next_poll

    @property
    def next_poll_at(self) -> float:
        """When the next poll falls due (time.monotonic() clock)."""
        return self._next_poll

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
        if time.monotonic() < self._next_liveness:
            return [], False
        self._next_liveness = time.monotonic() + LIVENESS_EVERY
        if runs_here(self.run_id):
            return [], False  # this process runs it: alive by definition
        run = await Run.objects.filter(pk=self.run_id).afirst()
        if run is None:
            self.ended = True
            return [], True
        if run.is_active:
            await refresh_liveness(run)
            if run.is_active:
                return [], False
        # Not active: its terminal event is stored (possibly just now, by the stale sweep).
        return await self.replay()

    async def follow(self, run: Run, channel: "LayerChannel") -> None:
        """Start receiving the run's live batches into the reader's inbox (`channel.inbox`; call
        before replaying from the database): straight from this process's executor if it runs
        the run (`local`), else through the run's group on the reader's `channel`."""
        engine = current_engine()
        if engine is not None and engine.hub.subscribe(run.pk, channel.inbox):
            self.set_local(True)
            return
        self.set_local(False)
        layer = get_channel_layer()
        try:
            await layer.group_add(run_group(run.pk), await channel.open())
            if run.is_active and run.worker_channel:
                await layer.send(run.worker_channel, {"type": "run.watch", "run_id": str(run.pk)})
        except Exception:
            # The channel layer is away (Redis down): the reader polls the database instead.
            _layer_failures.failed("could not follow run %s through the channel layer", run.pk)
        else:
            _layer_failures.ok("following runs through the channel layer")

    async def unfollow(self, channel: "LayerChannel") -> None:
        if self.local:
            engine = current_engine()
            if engine is not None:
                engine.hub.unsubscribe(self.run_id, channel.inbox)
        elif channel.name:
            try:
                await get_channel_layer().group_discard(run_group(self.run_id), channel.name)
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
        if self.poll_due():
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


class Inbox:
    """`run.events` messages for one reader, handed over by the executor or its consumer.

    Bounded like a channel (the layer's capacity): when the reader falls behind, further
    messages are dropped and `lost` is set; the reader then fills the gap from the database.
    """

    def __init__(self) -> None:
        self.capacity = getattr(get_channel_layer(), "capacity", 100)
        self.lost = False
        self._messages: list[dict] = []
        self._waiter: asyncio.Future | None = None

    def __call__(self, message: dict) -> None:
        if len(self._messages) < self.capacity:
            self._messages.append(message)
        else:
            self.lost = True
        self.wake()

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Until a message arrives or someone calls `wake()`."""
        if self._messages:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def take(self) -> list[dict]:
        messages, self._messages = self._messages, []
        return messages

    def take_lost(self) -> bool:
        """True (once) if messages were dropped since the last call."""
        lost, self.lost = self.lost, False
        return lost


class LayerChannel:
    """Where a reader's live batches come in: its `inbox`, and the channel-layer channel made the
    first time it follows a run of another process (a reader of this process's runs never needs
    one); a task passes that channel's `run.events` messages to the inbox until `close()`.

    `close()` stops that task with a message on its own channel rather than a cancel: on Python
    3.11 a cancel that lands inside redis-py's `wait_for` can be swallowed, and the receive
    would go on waiting for ever."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self.name = ""
        self._receiver: asyncio.Task | None = None

    async def open(self) -> str:
        if not self.name:
            layer = get_channel_layer()
            self.name = await layer.new_channel()
            self._receiver = asyncio.create_task(self._receive(layer))
        return self.name

    async def close(self) -> None:
        receiver, self._receiver = self._receiver, None
        if receiver is None or receiver.done():
            return
        try:
            await get_channel_layer().send(self.name, {"type": STOP})
        except Exception:
            receiver.cancel()  # the layer is away: its receive is not waiting on Redis either

    async def _receive(self, layer: Any) -> None:
        while True:
            try:
                message = await layer.receive(self.name)
            except Exception:
                # The Redis layer retries an outage itself; anything else: the reader polls
                # the database meanwhile.
                _layer_failures.failed("could not receive on channel %s", self.name)
                await asyncio.sleep(1.0)
                continue
            _layer_failures.ok("receiving on the channel layer")
            if message.get("type") == "run.events":
                self.inbox(message)
            elif message.get("type") == STOP:
                return


class RunFollower:
    """An async iterator over a run's events (for in-process readers such as commands)."""

    def __init__(self, run: Run, after: int = 0, idle_poll: float = 1.0) -> None:
        self.run = run
        self.cursor = RunCursor(run.pk, after)
        self.idle_poll = idle_poll
        self.inbox = Inbox()
        self.channel = LayerChannel(self.inbox)

    async def __aenter__(self) -> "RunFollower":
        await self.cursor.follow(self.run, self.channel)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cursor.unfollow(self.channel)
        await self.channel.close()

    async def events(self) -> AsyncIterator[tuple[int, str]]:
        """(seq, json text) in seq order, each once, ending after the terminal event."""
        batch, ended = await self.cursor.replay()
        while True:
            for item in batch:
                yield item
            if ended:
                return
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that
            # lands as the wait ends, and a reader whose client left would go on reading.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.idle_poll):
                    await self.inbox.wait()
            batch, ended = await self.cursor.catch_up(self.inbox.take(), self.inbox.take_lost())
