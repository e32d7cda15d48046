"""Helpers for reading SSE responses and WebSocket events through Channels communicators."""

import asyncio
import json
import time

from channels.testing import ApplicationCommunicator, WebsocketCommunicator

from agents_app.db import in_sync_thread
from agents_app.models import Run
from config.asgi import application


def parse_sse(raw: bytes) -> list[dict]:
    """SSE frames -> list of {"id", "data", "comment", "retry"} dicts."""
    frames = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        frame: dict = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                frame["comment"] = line[1:].strip()
            elif line.startswith("id: "):
                frame["id"] = int(line[4:])
            elif line.startswith("data: "):
                frame["data"] = json.loads(line[6:])
            elif line.startswith("retry: "):
                frame["retry"] = int(line[7:])
        frames.append(frame)
    return frames


class SSEClient:
    """Drives one HTTP request against the real ASGI app and reads the stream chunk by chunk."""

    def __init__(self, method: str, path: str, body=None, token: str | None = None, headers=()):
        path_only, _, query = path.partition("?")
        hdrs = [(b"content-type", b"application/json"), *headers]
        if token:
            hdrs.append((b"authorization", f"Token {token}".encode()))
        self.scope = {
            "type": "http",
            "http_version": "1.1",
            "method": method,
            "path": path_only,
            "query_string": query.encode(),
            "headers": hdrs,
            "client": ("127.0.0.1", 5555),
            "server": ("testserver", 80),
        }
        self.body = (
            body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else b""
        )
        self.comm = ApplicationCommunicator(application, self.scope)
        self.status = None
        self.headers: dict = {}
        self.raw = b""
        self.done = False

    async def start(self, timeout: float = 5) -> int:
        await self.comm.send_input({"type": "http.request", "body": self.body, "more_body": False})
        start = await self.comm.receive_output(timeout)
        assert start["type"] == "http.response.start", start
        self.status = start["status"]
        self.headers = {k.decode().lower(): v.decode() for k, v in start.get("headers", [])}
        return self.status

    async def read_chunk(self, timeout: float = 5) -> bytes:
        message = await self.comm.receive_output(timeout)
        assert message["type"] == "http.response.body", message
        self.raw += message.get("body", b"")
        if not message.get("more_body"):
            self.done = True
            # As ASGI servers do once the response is complete (daphne, uvicorn): the consumer
            # then leaves its dispatch loop.
            await self.comm.send_input({"type": "http.disconnect"})
        return message.get("body", b"")

    async def read_all(self, timeout: float = 10) -> list[dict]:
        while not self.done:
            await self.read_chunk(timeout)
        return self.events()

    async def read_until(self, predicate, timeout: float = 10) -> list[dict]:
        while not self.done and not any(predicate(e) for e in self.events()):
            await self.read_chunk(timeout)
        return self.events()

    def events(self) -> list[dict]:
        return [f["data"] for f in parse_sse(self.raw) if "data" in f]

    def json(self) -> dict:
        return json.loads(self.raw)

    async def disconnect(self) -> None:
        await self.comm.send_input({"type": "http.disconnect"})


async def stream_until_first_delta(user, text: str = "Tell me about forests") -> SSEClient:
    """Start a chat run over SSE and read it up to its first text delta: the run is live."""
    client = SSEClient("POST", "/api/agents/chat/stream", {"input": text}, user.token)
    assert await client.start() == 200
    await client.read_until(lambda e: e.get("event_type") == "response.output_text.delta")
    return client


async def lifespan_shutdown() -> None:
    """What uvicorn does when it stops: the ASGI lifespan protocol, through the real app."""
    server = ApplicationCommunicator(application, {"type": "lifespan", "asgi": {"version": "3.0"}})
    await server.send_input({"type": "lifespan.startup"})
    assert (await server.receive_output(5))["type"] == "lifespan.startup.complete"
    await server.send_input({"type": "lifespan.shutdown"})
    assert (await server.receive_output(15))["type"] == "lifespan.shutdown.complete"


async def stream_run(token, body, path="/api/agents/chat/stream"):
    """Start a run over SSE and read it to its end: (client, events)."""
    client = SSEClient("POST", path, body, token)
    assert await client.start() == 200
    return client, await client.read_all()


def ws_client(
    slug: str = "chat", token: str | None = None, headers=(), subprotocols=None
) -> WebsocketCommunicator:
    hdrs = list(headers)
    if token:
        hdrs.append((b"authorization", f"Token {token}".encode()))
    return WebsocketCommunicator(application, f"/ws/agents/{slug}/", headers=hdrs, subprotocols=subprotocols)


def conversation_ws(conversation_id, token: str | None = None) -> WebsocketCommunicator:
    """A client of a conversation's socket, with a token when one is given."""
    headers = [(b"authorization", f"Token {token}".encode())] if token else []
    return WebsocketCommunicator(application, f"/ws/conversations/{conversation_id}/", headers=headers)


async def ws_events_until_terminal(ws, run_id: str | None = None, timeout: float = 10) -> list[dict]:
    events = []
    while True:
        event = await ws.receive_json_from(timeout)
        events.append(event)
        if event["type"] in ("stream_complete", "error") and (
            run_id is None or event.get("run_id") == run_id
        ):
            return events


def text_of(events: list[dict]) -> str:
    return "".join(
        e["delta"]
        for e in events
        if e["type"] == "raw_response" and e.get("event_type") == "response.output_text.delta"
    )


async def wait_finished(run_id, timeout: float = 20) -> Run:
    """The run once it is no longer active; fails if it still is after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # As the server reads (a connection a database restart broke is replaced), not the async ORM.
        run = await in_sync_thread(Run.objects.get)(pk=run_id)
        if not run.is_active:
            return run
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish within {timeout} s")
