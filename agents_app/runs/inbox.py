"""Where a reader's live batches come in: its `Inbox` (handed over by this process's executor,
or by its `LayerChannel` from the channel layer for runs of other processes)."""

import asyncio

from . import layer
from .retry import FailureLog

# Channel-layer failures of all readers of this process, logged without flooding the log.
layer_failures = FailureLog()


class Inbox:
    """`run.events` messages for one reader, handed over by the executor or its `LayerChannel`.

    Bounded like a channel (the layer's capacity): when the reader falls behind, further
    messages are dropped and `lost` is set; the reader then fills the gap from the database.
    """

    def __init__(self) -> None:
        self.capacity = layer.capacity()
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
            self.name = await layer.new_channel()
            self._receiver = asyncio.create_task(self._receive())
        return self.name

    async def close(self) -> None:
        receiver, self._receiver = self._receiver, None
        if receiver is None or receiver.done():
            return
        try:
            await layer.send(self.name, {"type": layer.READER_STOP})
        except Exception:
            receiver.cancel()  # the layer is away: its receive is not waiting on Redis either

    async def _receive(self) -> None:
        while True:
            try:
                message = await layer.receive(self.name)
            except Exception:
                # The Redis layer retries an outage itself; anything else: the reader polls
                # the database meanwhile.
                layer_failures.failed("could not receive on channel %s", self.name)
                await asyncio.sleep(1.0)
                continue
            layer_failures.ok("receiving on the channel layer")
            if message.get("type") == layer.EVENTS:
                self.inbox(message)
            elif message.get("type") == layer.READER_STOP:
                return
