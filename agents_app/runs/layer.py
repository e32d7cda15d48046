"""The channel layer, used from this module only: the engine's control messages (cancel, watch,
stop, the readiness ping), the run groups that wake readers in other processes, and the channels
those readers receive on.

The layer only wakes readers up and carries signals: every event and every cancel request is in
the database, so a message the layer loses (channels_redis drops at capacity, Redis restarts)
costs latency, never data. Channel names use the layer's default prefix only: channels_redis
reads all of a process's channels through one receive loop, which pops that prefix's list alone.
"""

from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

# Control messages of an executor (its channel is `Run.worker_channel`) and of a reader's channel.
CANCEL = "run.cancel"  # {"run_id", "mode"}
WATCH = "run.watch"  # {"run_id"}: a reader in another process follows this run
PING = "executor.ping"  # {"token"}: the readiness check's round trip through the layer
STOP = "executor.stop"  # ends the control loop (a cancel could be swallowed by redis-py)
EVENTS = "run.events"  # a committed batch of a run's events (`events_message`)
READER_STOP = "reader.stop"  # ends a reader channel's receiving task


def run_group(run_id: Any) -> str:
    return f"run.{run_id}"


def capacity() -> int:
    """Messages a channel holds before the layer drops new ones (readers' inboxes use the same)."""
    return getattr(get_channel_layer(), "capacity", 100)


async def new_channel() -> str:
    return await get_channel_layer().new_channel()


async def receive(channel: str) -> dict:
    return await get_channel_layer().receive(channel)


async def send(channel: str, message: dict) -> None:
    await get_channel_layer().send(channel, message)


def send_from_sync(channel: str, message: dict) -> None:
    """`send` for sync code (an admin action): Channels' own way, on the server's event loop."""
    async_to_sync(send)(channel, message)


async def group_add(group: str, channel: str) -> None:
    await get_channel_layer().group_add(group, channel)


async def group_discard(group: str, channel: str) -> None:
    await get_channel_layer().group_discard(group, channel)


async def group_send(group: str, message: dict) -> None:
    await get_channel_layer().group_send(group, message)
