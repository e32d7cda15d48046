"""First-token priority: under load, a new run's way to its first output goes ahead of other runs.

One process serves all its runs on one core. Once that core is saturated, each turn of the
event loop runs the parsing of every stream that has data waiting, and a new run needs about a
dozen turns (request, auth and run row, the model request, its first chunk, the store, the
send) before its client sees anything: about a second at C=50, for a first token that takes
milliseconds of work. So while any run is on its way to its first output, the model streams of
runs already under way pause between events, and so does a new run's own once the model gave
it its first output (a delta, or the end of the response): its ticket lasts until that output is
stored and handed over, and meanwhile it would otherwise stream on ahead of the runs behind it.
The paused streams' data waits in the socket buffers; nothing is dropped or reordered. When
nothing is starting, each model event costs one more generator step and a bool check (about 1 %
of the CPU of a stream that is not paced).

Bounds, so streams under way are never starved:
- a run holds priority for at most `max_pause` seconds (a model that thinks for a minute
  before its first token must not stall everyone else for that minute);
- a pause lasts at most `max_pause`, and after a pause that long, streams under way get at
  least as long before the next one: under a steady flood of new runs they keep half the time.

A `Ticket` stands for one run on its way. An SSE request takes it as soon as its body is read,
before auth, and `services.run_start` (WebSocket, REST, research) before its database hop: a
burst of starts then does its database work without other runs' parsing holding the GIL. A run
started any other way gets one when the executor starts it. The executor ends it once the batch
with the run's first output has been handed to its readers, or when the run ends.
`max_pause` 0 turns the whole thing off.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import AsyncIterator
from typing import Any

from agents.models.interface import Model

from .events import RAW_EVENT_TYPES


class FirstTokenPriority:
    """One per event loop (the executor's)."""

    def __init__(self, max_pause: float) -> None:
        self.max_pause = max_pause
        self.waiting = 0  # tickets not ended
        self._open = asyncio.Event()
        self._open.set()
        self._timer: asyncio.TimerHandle | None = None
        self._reopening = False
        self._no_pause_before = 0.0  # loop time: the turn owed after a pause of max_pause

    @property
    def paused(self) -> bool:
        return not self._open.is_set()

    def ticket(self) -> Ticket:
        return Ticket(self)

    async def wait_turn(self) -> None:
        await self._open.wait()

    def _begin(self) -> None:
        self.waiting += 1
        self._maybe_pause()

    def _end(self) -> None:
        self.waiting -= 1
        if self.waiting == 0 and self.paused and not self._reopening:
            # Two turns later, not now: the first output's write, queued on the transport in
            # the coming turn, then goes out with the poll for I/O before the resumed streams
            # fill a turn of their own.
            self._reopening = True
            loop = asyncio.get_running_loop()
            loop.call_soon(loop.call_soon, self._reopen)

    def _maybe_pause(self) -> None:
        if not self.waiting or self.paused or self.max_pause <= 0:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._no_pause_before:
            return
        self._open.clear()
        self._set_timer(self.max_pause, self._pause_too_long)

    def _reopen(self) -> None:
        self._reopening = False
        if self.paused:  # (else the pause already ran out, and its owed turn's timer stays)
            self._cancel_timer()
            self._open.set()
        self._maybe_pause()  # a run arrived during the two turns

    def _pause_too_long(self) -> None:
        self._timer = None
        self._open.set()
        self._no_pause_before = asyncio.get_running_loop().time() + self.max_pause
        self._set_timer(self.max_pause, self._turn_given)

    def _turn_given(self) -> None:
        self._timer = None
        self._no_pause_before = 0.0
        self._maybe_pause()

    def _set_timer(self, delay: float, callback: Any) -> None:
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(delay, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Ticket:
    """One run on its way to its first output. `end()` may be called any number of times."""

    __slots__ = ("_expiry", "ended", "priority")

    def __init__(self, priority: FirstTokenPriority) -> None:
        self.priority = priority
        self.ended = False
        self._expiry = None
        if priority.max_pause > 0:
            self._expiry = asyncio.get_running_loop().call_later(priority.max_pause, self.end)
        priority._begin()

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            if self._expiry is not None:
                self._expiry.cancel()
            self.priority._end()


# The ticket of the run whose code is executing: set by the executor in the run's task, so the
# SDK's own tasks for the run (they copy the context when created) see it too.
current_ticket: contextvars.ContextVar[Ticket | None] = contextvars.ContextVar(
    "first_token_ticket", default=None
)


async def _taking_turns(stream: AsyncIterator[Any], ticket: Ticket) -> AsyncIterator[Any]:
    """`stream`'s events; between them, wait while other runs go first (once this one's first
    output is out of the model, or its ticket ended)."""
    priority = ticket.priority
    produced = False
    try:
        async for event in stream:
            if priority.paused and (produced or ticket.ended):
                await priority.wait_turn()
            yield event
            if not produced and getattr(event, "type", None) in RAW_EVENT_TYPES:
                produced = True
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


def yield_to_first_tokens(model: Model) -> Model:
    """Make `model`'s streams take turns with runs on their way to their first output.

    It wraps the instance's `stream_response` (an instance attribute over the method), so the
    model keeps its class: the SDK tells models apart with isinstance."""
    stream_response = model.stream_response
    if getattr(stream_response, "takes_turns", False):
        return model  # a model the provider caches: already wrapped

    @functools.wraps(stream_response)
    def taking_turns(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        stream = stream_response(*args, **kwargs)
        ticket = current_ticket.get()
        return stream if ticket is None else _taking_turns(stream, ticket)

    taking_turns.takes_turns = True  # type: ignore[attr-defined]
    model.stream_response = taking_turns  # type: ignore[method-assign]
    return model
