"""A channel layer for tests: Channels' in-memory layer, recording what goes through it, and able to
fail as a Redis that went away does. Configured like any layer (`recording_layer` fixture)."""

from channels.layers import InMemoryChannelLayer


class RecordingLayer(InMemoryChannelLayer):
    def __init__(self, **config) -> None:
        super().__init__(**config)
        self.calls: list[tuple[str, str]] = []  # (method, channel or group)
        self.down: set[str] = set()  # methods that raise, as with Redis away

    def called(self, method: str) -> list[str]:
        return [target for name, target in self.calls if name == method]

    def _record(self, method: str, target: str) -> None:
        if method in self.down:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        self.calls.append((method, target))

    async def new_channel(self, prefix: str = "specific.") -> str:
        name = await super().new_channel(prefix)
        self._record("new_channel", name)
        return name

    async def send(self, channel: str, message: dict) -> None:
        self._record("send", channel)
        await super().send(channel, message)

    async def group_add(self, group: str, channel: str) -> None:
        self._record("group_add", group)
        await super().group_add(group, channel)

    async def group_send(self, group: str, message: dict) -> None:
        self._record("group_send", group)
        await super().group_send(group, message)
