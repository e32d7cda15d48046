"""The Redis channel layer under the conditions that broke it: idle receives, cancelled receives."""

import asyncio

import pytest
from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer
from django.conf import settings

from agents_app.layers import CancelSafeRedisChannelLayer

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="needs the Redis channel layer (REDIS_URL)")


def fresh_layer() -> CancelSafeRedisChannelLayer:
    """A layer of its own (own connection pool), configured as the project's."""
    return CancelSafeRedisChannelLayer(**settings.CHANNEL_LAYERS["default"]["CONFIG"])


async def test_redis_channel_outlives_an_idle_blocking_receive():
    """channels_redis blocks 5 s per receive; with redis-py's default 5 s read timeout the read
    raced that and an idle channel failed after 5 s ("Timeout reading from ..."), killing the
    consumer mid-stream. The layer's read timeout is now above the blocking receive."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    with pytest.raises(asyncio.TimeoutError):  # ours: nothing was sent, and nothing failed
        await asyncio.wait_for(layer.receive(channel), timeout=layer.brpop_timeout + 1.5)
    await layer.send(channel, {"type": "still.there"})
    assert (await asyncio.wait_for(layer.receive(channel), timeout=2))["type"] == "still.there"


async def test_a_cancelled_receive_ends_wherever_the_cancel_lands():
    """A consumer's receive is cancelled when the consumer ends. On Python 3.11 a cancel that
    lands while redis-py opens a connection or writes a command was swallowed, and the receive
    polled Redis for ever: a leaked task per consumer, and a loop that never shut down.

    Each receive here gets a new layer (so it opens its connection) and is cancelled after a
    different number of loop turns, which walks the cancel across every await on its way."""
    receives = []
    for turns in range(60):
        layer = fresh_layer()
        task = asyncio.create_task(layer.receive(await layer.new_channel()))
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()
        receives.append(task)
    # A swallowed cancel is caught after the blocking pop it was in (brpop_timeout, 5 s).
    _, pending = await asyncio.wait(receives, timeout=8)
    stuck = sorted(receives.index(task) for task in pending)
    for task in pending:
        task.cancel()
    await asyncio.wait(pending, timeout=8) if pending else None
    assert stuck == [], f"receives cancelled after these loop turns kept running: {stuck}"
    assert all(task.cancelled() for task in receives)


class SwallowsACancelAfterThePop(RedisChannelLayer):
    """Plays the Python 3.11 race deterministically: the task is cancelled while its blocking
    pop returns a message, and the cancel is swallowed on the way out."""

    async def _brpop_with_clean(self, index, channel, timeout):
        member = await super()._brpop_with_clean(index, channel, timeout)
        if member is not None:
            asyncio.current_task().cancel()
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                pass  # swallowed, as asyncio.wait_for did: Task.cancelling() stays 1
        return member


class RacedLayer(CancelSafeRedisChannelLayer, SwallowsACancelAfterThePop):
    pass


async def test_a_message_popped_by_a_cancelled_receive_is_not_lost():
    """The layer raises CancelledError after a pop that took a message; channels_redis's backup
    queue puts the message back, so the next receive gets it."""
    layer = RacedLayer(**settings.CHANNEL_LAYERS["default"]["CONFIG"])
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "kept"})
    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(layer.receive(channel))
    plain = RedisChannelLayer(**settings.CHANNEL_LAYERS["default"]["CONFIG"])
    plain.client_prefix = layer.client_prefix  # the same process-local channel
    assert (await asyncio.wait_for(plain.receive(channel), timeout=2))["type"] == "kept"
