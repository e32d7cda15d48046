"""Reading a run's event stream: replay from the database, then follow the live group.

Every reader (SSE, WebSocket, `run_agent`) keeps a `RunCursor`, which de-duplicates by
seq and fills any gap from the database, so a dropped channel-layer message (full
channel, lost wake-up) costs latency, never data.
"""

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from .events import TERMINAL_TYPES
from .executor import encode, run_group, runs_here
from .models import Run, RunEvent
from .services import run_refresh_liveness

Batch = list[tuple[int, str]]
DB_PAGE = 1000
# How often an idle reader checks that its run's process is still alive (seconds).
LIVENESS_EVERY = 30.0


class RunCursor:
    """Where one reader is in one run's stream; each method returns (new events, ended).

    Idle readers poll the database with a back-off (1 s doubling up to
    SSE_KEEPALIVE_INTERVAL), so thousands of idle streams cost a trickle of queries.
    """

    def __init__(self, run_id: Any, after: int = 0) -> None:
        self.run_id = str(run_id)
        self.last = after
        self.ended = False
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

    async def poll(self) -> tuple[Batch, bool]:
        """When idle: pick up anything whose wake-up was lost; end if the run died silently."""
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
            await sync_to_async(run_refresh_liveness)(run)
            if run.is_active:
                return [], False
        # Not active: its terminal event is stored (possibly just now, by the stale sweep).
        return await self.replay()

    def _active(self) -> None:
        self._backoff = 1.0
        self._next_poll = time.monotonic() + self._backoff


class RunFollower:
    """An async iterator over a run's events on a private channel (for in-process readers)."""

    def __init__(self, run_id: Any, after: int = 0, idle_poll: float = 1.0) -> None:
        self.cursor = RunCursor(run_id, after)
        self.idle_poll = idle_poll
        self.layer = get_channel_layer()
        self.channel = ""

    async def __aenter__(self) -> "RunFollower":
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(run_group(self.cursor.run_id), self.channel)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.layer.group_discard(run_group(self.cursor.run_id), self.channel)

    async def events(self) -> AsyncIterator[tuple[int, str]]:
        """(seq, json text) in seq order, each once, ending after the terminal event."""
        batch, ended = await self.cursor.replay()
        while True:
            for item in batch:
                yield item
            if ended:
                return
            try:
                message = await asyncio.wait_for(self.layer.receive(self.channel), timeout=self.idle_poll)
            except TimeoutError:
                batch, ended = await self.cursor.poll()
                continue
            batch, ended = await self.cursor.on_message(message)
