"""The Redis channel layer under the conditions that broke it: idle receives, cancelled receives."""

import asyncio

import pytest
from channels.layers import get_channel_layer
from django.conf import settings

from agents_app.runs.inbox import Inbox, LayerChannel

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="needs the Redis channel layer (REDIS_URL)")


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


async def test_a_reader_s_layer_channel_stops_its_receive_without_a_cancel():
    """A reader that followed a run of another process closes its channel with a message to
    itself: on Python 3.11 a cancel landing inside redis-py's `wait_for` could be swallowed and
    leave the receive polling Redis for ever."""
    channel = LayerChannel(Inbox())
    await channel.open()
    receiver = channel._receiver
    await channel.close()
    await asyncio.wait_for(receiver, timeout=3)
    assert not receiver.cancelled()
