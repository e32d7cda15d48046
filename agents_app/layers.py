"""The Redis channel layer, made to honour cancellation and to wait out a Redis outage.

On Python 3.11, `asyncio.wait_for` swallows a cancellation that arrives just as the awaited
operation finishes (fixed in 3.12). redis-py calls `wait_for` while it opens a connection and
while it writes a command, so a consumer's channel-layer receive that is cancelled at that
moment carries on: channels_redis then waits for messages in a loop that never ends. Each such
receive outlives its consumer (a task and a Redis connection leaked per occurrence), and an
event loop that waits for its tasks at shutdown (a test's, a CLI command's) hangs for good.

The receive loop of channels_redis polls Redis with a blocking pop of a few seconds. After
every pop this layer checks whether its task was asked to cancel (`Task.cancelling()`), and if
so raises `CancelledError` itself. A message popped at that moment is not lost: channels_redis
keeps it in its backup queue and puts it back on the channel at the next receive.

A receive that meets no Redis (a restart, a failover) retries until Redis is back instead of
raising (see `receive`), and a command sent on a connection Redis dropped is sent once more on
a new one.
"""

import asyncio

from channels_redis.core import RedisChannelLayer
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .executor import FailureLog

# Back-off between attempts of a receive while Redis is away (seconds).
RECEIVE_RETRY_FIRST = 0.1
RECEIVE_RETRY_MAX = 2.0


def raise_if_cancel_was_swallowed() -> None:
    """Raise CancelledError if this task was cancelled and something swallowed it.

    Code that legitimately survives a cancellation calls `Task.uncancel()`; a count still
    above zero here means the request was lost on its way, not handled."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class CancelSafeRedisChannelLayer(RedisChannelLayer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # A command on a pooled connection that Redis dropped (it restarted meanwhile) is sent
        # again once on a new connection; redis-py's default is not to retry at all, and the
        # first group_add or send after a restart failed.
        self.hosts = [{"retry": Retry(NoBackoff(), 1), **host} for host in self.hosts]
        self._receive_failures = FailureLog()

    async def receive(self, channel):
        """The next message on `channel`, waiting through a Redis outage instead of raising.

        Every consumer has a receive pending on its channel, and Channels ends a consumer whose
        receive raises: a Redis restart would cut every stream and socket of the process, those
        of its own runs too, which need no Redis. Messages that were in the Redis that went
        away are lost with it; readers fill such gaps from the database (streaming.py)."""
        delay = RECEIVE_RETRY_FIRST
        while True:
            try:
                message = await super().receive(channel)
            except (RedisError, OSError):
                self._receive_failures.failed("channel layer receive failed; retrying")
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECEIVE_RETRY_MAX)
                continue
            self._receive_failures.ok("the channel layer's receive")
            return message

    async def _brpop_with_clean(self, index, channel, timeout):
        raise_if_cancel_was_swallowed()
        member = await super()._brpop_with_clean(index, channel, timeout)
        raise_if_cancel_was_swallowed()
        return member
