"""The per-process cap on open streams (SSE responses and sockets): past MAX_OPEN_STREAMS a new
one is refused (503 with Retry-After, or close code 4503 "try again later" on a socket) rather
than letting one process hold more connections than it can serve; a load balancer sends the
client to another process."""

from django.conf import settings

from ..metrics import OPEN_STREAMS

RETRY_AFTER = 2  # seconds: streams end all the time


class OpenStreams:
    """How many streams this process holds open (consumers run on one event loop: no lock)."""

    def __init__(self) -> None:
        self.count = 0

    def open(self) -> bool:
        """Take a place, or False when the process is full."""
        limit = settings.MAX_OPEN_STREAMS
        if limit and self.count >= limit:
            return False
        self.count += 1
        OPEN_STREAMS.inc()
        return True

    def close(self) -> None:
        self.count -= 1
        OPEN_STREAMS.dec()


open_streams = OpenStreams()


class StreamPlace:
    """For a consumer: `take_place()` before serving a stream; the place is given back however
    the consumer ends (a disconnect, an error, a cancel)."""

    holds_place = False

    def take_place(self) -> bool:
        self.holds_place = open_streams.open()
        return self.holds_place

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.holds_place:
                self.holds_place = False
                open_streams.close()
