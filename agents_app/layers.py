"""The Redis channel layer, made to honour cancellation.

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
"""

import asyncio

from channels_redis.core import RedisChannelLayer


def raise_if_cancel_was_swallowed() -> None:
    """Raise CancelledError if this task was cancelled and something swallowed it.

    Code that legitimately survives a cancellation calls `Task.uncancel()`; a count still
    above zero here means the request was lost on its way, not handled."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class CancelSafeRedisChannelLayer(RedisChannelLayer):
    async def _brpop_with_clean(self, index, channel, timeout):
        raise_if_cancel_was_swallowed()
        member = await super()._brpop_with_clean(index, channel, timeout)
        raise_if_cancel_was_swallowed()
        return member
