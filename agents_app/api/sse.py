"""Server-Sent Events as Channels consumers: start a run and stream it, or join any run.

The consumer never loops inside `handle()`: that would block its dispatch loop, and a client
disconnect would only be seen when the server kills the consumer ~10 s later. Instead the
response stays open while the dispatch loop keeps receiving (`http.disconnect` arrives the
moment the client leaves), and the stream's `RunReader` (runs/read.py) writes it from its own
task: live batches as they come, gaps and idle polls filled from the database, keep-alives.
"""

import json
from urllib.parse import parse_qs

from channels.exceptions import StopConsumer
from channels.generic.http import AsyncHttpConsumer
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework.exceptions import APIException, ValidationError

from ..db import in_sync_thread
from ..errors import NotFound, ServiceError
from ..logs import HEADER as REQUEST_ID_HEADER
from ..logs import new_request_id
from ..models import Run
from ..runs.cancel import cancel_on_disconnect
from ..runs.read import Batch, RunCursor, RunReader
from ..runs.start import RunRequest, start_run
from ..selectors import runs_for
from .auth import CredentialWatch, authenticated_request
from .capacity import RETRY_AFTER, StreamPlace
from .cors import cors_answer
from .errors import cursor, error_body, exception_handler
from .serializers import EVENT_SETS, parse_run_request, run_request, spec_or_404
from .throttles import RUN_START, STREAM_OPEN

SSE_HEADERS = [
    (b"Content-Type", b"text/event-stream; charset=utf-8"),
    (b"Cache-Control", b"no-cache"),
    (b"X-Accel-Buffering", b"no"),
]
KEEP_ALIVE = b": keep-alive\n\n"
# An alias with no channel layer configured: Channels then gives the consumer no channel and no
# receive task on it. A reader needs one only to follow a run of another process, and then makes
# its own (`LayerChannel`), for as long as it follows that run.
NO_CHANNEL_LAYER = "none"


def query_params(scope: dict) -> dict[str, list[str]]:
    """A consumer's query string (bytes that are not UTF-8 too: the values then fail their checks)."""
    return parse_qs(scope["query_string"].decode("latin-1"), keep_blank_values=True)


def sse_frames(batch: Batch) -> bytes:
    return "".join(f"id: {seq}\ndata: {text}\n\n" for seq, text in batch).encode()


class RunStreamConsumer(StreamPlace, AsyncHttpConsumer):
    """Shared SSE machinery; subclasses decide which run to stream (`open`) and, for the other
    wire formats (the protocol adapters), how its events are written (`frames`, `prologue`,
    `refusal`), or answer with one JSON body once the run has ended (`streaming` False)."""

    channel_layer_alias = NO_CHANNEL_LAYER
    methods = ("GET",)
    headers = SSE_HEADERS
    # False: no stream; the answer is `result()`'s JSON, sent once the run has ended.
    streaming = True
    # True: the answer also ends at the run's pause for approval (with `pause_frames`), for the
    # protocols that answer a pause in a response of its own and go on in a new request.
    until_paused = False

    # Set once the request is complete; until then `_cleanup` has nothing to stop.
    reader: RunReader | None = None
    # This request started the run and asked that its client leaving cancels it.
    cancel_on_disconnect = False
    ended = False
    cors_headers: list = []
    request_id = ""
    body_size = 0

    async def dispatch(self, message):
        """The request and the disconnect are handled without Channels' stale-connection trip to
        the sync thread before each: the request's database work closes connections around its
        own one trip, and a client leaving needs none (a run of this process with
        `on_disconnect=cancel` is cancelled at once, even when many streams drop together)."""
        if message["type"] == "http.request":
            await self.http_request(message)
        elif message["type"] == "http.disconnect":
            await self.http_disconnect(message)
        else:
            await super().dispatch(message)

    async def send_headers(self, *, status=200, headers=None):
        """Every answer, stream or refusal, carries its request id and the CORS headers its
        origin is allowed."""
        own = [(REQUEST_ID_HEADER.encode(), self.request_id.encode()), *self.cors_headers]
        await super().send_headers(status=status, headers=[*(headers or []), *own])

    async def http_request(self, message):
        if not self.body:
            offered = dict(self.scope["headers"]).get(REQUEST_ID_HEADER.lower().encode(), b"")
            self.request_id = new_request_id(offered.decode("latin1"))
            if not self.scope["query_string"].isascii():  # raw bytes a URL may not carry
                why = "the query string has bytes a URL may not carry: percent-encode them"
                await self._refuse(400, error_body("invalid", why, fields={"query": [why]}))
                await self._close()
            preflight, self.cors_headers = cors_answer(self.scope)
            if preflight:
                await self.send_response(200, b"", headers=[(b"Content-Length", b"0")])
                await self._close()
        if "body" in message:
            self.body.append(message["body"])
            self.body_size += len(message["body"])
        if self._too_large():
            # Refused as soon as it is known: an oversized body is never held in memory whole.
            await self._refuse(413, error_body("too_large", "request body is larger than the server accepts"))
            await self._close()
        if message.get("more_body"):
            return
        self.reader = RunReader(self._write, until_ended=True, on_fault=self._fault)
        if not await self._start(b"".join(self.body)):
            await self._close()

    def _too_large(self) -> bool:
        """The body so far, or the length the client announced, is over Django's upload limit."""
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is None:
            return False
        announced = dict(self.scope["headers"]).get(b"content-length")
        # A length too long to read is over any limit.
        size = cursor(announced) if announced else 0
        return self.body_size > limit or size is None or size > limit

    async def _start(self, body: bytes) -> bool:
        """Send headers and the replay; False when the response is already complete."""
        if not self.take_place():
            error = error_body("unavailable", "this server process has as many open streams as it takes")
            await self._refuse(503, error, [(b"Retry-After", str(RETRY_AFTER).encode())])
            return False
        if self.scope["method"] not in self.methods:
            allow = [(b"Allow", ", ".join(self.methods).encode())]
            await self._refuse(
                405, error_body("method_not_allowed", f"use {' or '.join(self.methods)}"), allow
            )
            return False
        try:
            opened = await self.open(body)
        except (APIException, ServiceError, RequestDataTooBig) as exc:
            await self._api_error(exc)
            return False
        if opened is None:  # `open` answered the request itself
            return False
        self.run, after, fresh = opened
        # Only the request that started a run may have its client's leaving cancel it.
        self.cancel_on_disconnect = fresh and self.run.on_disconnect == "cancel"
        reader = self.reader
        reader.credential_watch = CredentialWatch.of(self.scope)
        reader.on_credentials_lost = self._end_for_credentials
        if self.streaming:
            reader.keepalive, reader.idle = settings.SSE_KEEPALIVE_INTERVAL, self._keep_alive
        if fresh:  # subscribed before the run's first event: nothing to replay
            reader.started(self.run.pk)
            batch, ended = [], False
        else:
            batch, ended = await reader.follow(self.run, after, write=False)
            if ended and not batch:
                # Reconnect after the terminal event: nothing more will ever come.
                await self.send_response(204, b"", headers=self.headers)
                return False
        paused = self.until_paused and not ended and reader.paused(self.run.pk)
        data = self.frames(batch) + (self.pause_frames() if paused else b"")
        if self.streaming:
            await self.send_headers(status=200, headers=self.headers)
            data = self.prologue() + data
        await self._send(data, ended or paused)
        if ended or paused:
            return False
        reader.start()
        return True

    async def open(self, body: bytes) -> tuple[Run, int, bool] | None:
        """The run to stream, the seq to resume after, and whether this request started it (its
        stream is then subscribed from its first event; authentication is one trip to the
        database with what the subclass does there: `authenticated_request`); None when it has
        answered the request itself (`_json`)."""
        raise NotImplementedError

    def prologue(self) -> bytes:
        """What the stream starts with, before its first event."""
        return f"retry: {settings.SSE_RETRY_MS}\n\n".encode()

    def frames(self, batch: Batch) -> bytes:
        """A batch of the run's events (seq, stored JSON text) as this stream writes them."""
        return sse_frames(batch)

    def pause_frames(self) -> bytes:
        """What ends the answer at the run's pause for approval (`until_paused`), after the frames
        of its `approval_required` event."""
        return b""

    def result(self) -> tuple[int, dict, list]:
        """A non-streaming answer (`streaming` False), once the run ended: status, JSON body and
        extra headers."""
        raise NotImplementedError

    def refusal(self, status: int, body: dict) -> tuple[int, dict, list]:
        """A refused request (`body` in the API's error shape) as this protocol says it:
        status, JSON body and extra headers."""
        return status, body, []

    def last_event_id(self) -> int:
        raw = (
            dict(self.scope["headers"]).get(b"last-event-id")
            or query_params(self.scope).get("last_event_id", [""])[0]
        )
        if not raw:
            return 0
        after = cursor(raw)
        if after is None:
            raise ValidationError({"last_event_id": ["must be a non-negative integer"]})
        return after

    async def _write(self, cursor: RunCursor, batch: Batch, ended: bool) -> None:
        """The reader's writes: the run's new events. After the last, the response is complete:
        the server then delivers `http.disconnect` (ASGI: to a receive pending once the response is
        sent; daphne and uvicorn both do), and the consumer leaves through its dispatch loop. An
        answer that ends at the run's pause (`until_paused`) takes nothing after it."""
        if self.ended:
            return
        paused = self.until_paused and cursor.paused and not ended
        data = self.frames(batch) + (self.pause_frames() if paused else b"")
        await self._send(data, ended or paused)

    async def _keep_alive(self) -> None:
        await self._send(KEEP_ALIVE, False)

    async def _fault(self) -> None:
        """The reader failed (a bug): a cut stream, which the client can resume, or a 500 for an
        answer not yet started, rather than a client left waiting."""
        if self.streaming:
            await self.send_body(b"", more_body=False)
        else:
            await self._refuse(500, error_body("server_error", "internal server error"))

    async def _end_for_credentials(self) -> None:
        """What opened this stream (an API token, a session) no longer authenticates: the stream
        ends as if its client had left (a run started with `on_disconnect=cancel` is cancelled); a
        client that reconnects gets the 401 that says why."""
        if self.cancel_on_disconnect:
            await cancel_on_disconnect(self.run.pk)
        if self.streaming:
            await self.send_body(b"", more_body=False)
        else:
            watch = self.reader.credential_watch
            await self._refuse(401, error_body(watch.code, watch.message))

    async def _send(self, data: bytes, ended: bool) -> None:
        self.ended = self.ended or ended
        if not self.streaming:
            if ended:
                await self._json(*self.result())
            return
        if data or ended:
            await self.send_body(data, more_body=not ended)

    async def _close(self) -> None:
        await self._cleanup()
        raise StopConsumer()

    async def _cleanup(self) -> None:
        if self.reader is not None:
            await self.reader.close()

    async def http_disconnect(self, message):
        if self.cancel_on_disconnect and not self.ended:
            await cancel_on_disconnect(self.run.pk)
        await self._cleanup()
        raise StopConsumer()

    async def _api_error(self, exc) -> None:
        response = exception_handler(exc, {})
        headers = [(b"WWW-Authenticate", b"Token")] if response.status_code == 401 else []
        if "Retry-After" in response:
            headers.append((b"Retry-After", response["Retry-After"].encode()))
        await self._refuse(response.status_code, response.data, headers)

    async def _refuse(self, status: int, body: dict, headers=()) -> None:
        status, body, extra = self.refusal(status, body)
        await self._json(status, body, [*headers, *extra])

    async def _json(self, status: int, body: dict, headers=()) -> None:
        await self.send_response(
            status, json.dumps(body).encode(), headers=[(b"Content-Type", b"application/json"), *headers]
        )


class AgentStreamConsumer(RunStreamConsumer):
    """POST /api/agents/<slug>/stream (and the reference /chat/stream): start a run and stream it."""

    methods = ("POST",)

    def __init__(self, slug: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.slug = slug

    async def open(self, body):
        # Authentication, validation and the run's row in one trip to the database.
        run = await start_run(lambda: self.run_request(body), reader=self.reader.inbox)
        return run, 0, True

    def run_request(self, body: bytes) -> RunRequest:
        request = authenticated_request(self.scope, body, RUN_START, STREAM_OPEN)
        spec = spec_or_404(self.slug or self.scope["url_route"]["kwargs"]["slug"])
        data = parse_run_request(request)
        query = query_params(self.scope)
        on_disconnect = query.get("on_disconnect", [None])[0]
        if on_disconnect not in (None, "continue", "cancel"):
            raise ValidationError({"on_disconnect": ["must be 'continue' or 'cancel'"]})
        events = query.get("events", [None])[0]
        if events not in (None, *EVENT_SETS):
            raise ValidationError({"events": [f"must be one of {', '.join(EVENT_SETS)}"]})
        # The reference paths stream every raw model event, as the reference server does.
        events = events or ("full" if self.slug else "standard")
        return run_request(
            request.user, spec, data, on_disconnect=on_disconnect or data["on_disconnect"], events=events
        )


class RunJoinConsumer(RunStreamConsumer):
    """GET /api/runs/<id>/stream: replay and follow any run of the caller's, live or finished."""

    async def open(self, body):
        run, after = await in_sync_thread(self.join)(body)
        return run, after, False

    def join(self, body: bytes) -> tuple[Run, int]:
        request = authenticated_request(self.scope, body, STREAM_OPEN)
        after = self.last_event_id()
        run_id = self.scope["url_route"]["kwargs"]["run_id"]
        run = runs_for(request.user).filter(pk=run_id).first()
        if run is None:
            raise NotFound(f"run {run_id} not found")
        return run, after
