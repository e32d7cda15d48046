"""WebSocket consumer: start runs, cancel them and resume streams over one socket.

Client -> server: {"type": "run", "input", "conversation_id"?, "session_id"?, "agent"?},
{"type": "cancel", "run_id", "mode"?}, {"type": "resume", "run_id", "last_event_id"?}.
Server -> client: the run events of docs/events.md. A bad message gets an `error` event
and the socket stays open.

`/ws/agents/<slug>/` serves any run of the caller; `/ws/conversations/<id>/` is bound to one
conversation: its runs continue that conversation, and on connect it streams the
conversation's active runs, if any, from their first events.
"""

import asyncio
import json
import math

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from rest_framework.exceptions import Throttled, ValidationError

from ..errors import NotFound, ServiceError
from ..logs import HEADER as REQUEST_ID_HEADER
from ..logs import new_request_id
from ..models import Conversation, Run
from ..runs.cancel import cancel_on_disconnect, cancel_run
from ..runs.read import Inbox, LayerChannel, RunCursor
from ..runs.start import start_run
from ..selectors import runs_for
from .auth import (
    CLOSE_FORBIDDEN_ORIGIN,
    CLOSE_NOT_FOUND,
    CLOSE_THROTTLED,
    CLOSE_UNAUTHENTICATED,
    WS_SUBPROTOCOL,
    TokenWatch,
)
from .capacity import StreamPlace
from .errors import first_message
from .parsers import refuse_unstorable
from .serializers import CancelRequestSerializer, RunRequestSerializer, run_request, spec_or_404
from .sse import NO_CHANNEL_LAYER
from .throttles import RUN_START, STREAM_OPEN, check_throttles, socket_caller

MAX_MESSAGE_BYTES = 256 * 1024
CLOSE_TRY_AGAIN_LATER = 1013  # the process has as many open streams as it takes
TICK = 1.0  # seconds between the pump's idle checks


class AgentSocketConsumer(StreamPlace, AsyncWebsocketConsumer):
    """Live batches of every followed run reach one `Inbox`; a pump task writes them out."""

    channel_layer_alias = NO_CHANNEL_LAYER  # see sse.NO_CHANNEL_LAYER
    layer_channel: LayerChannel | None = None
    token_watch: TokenWatch | None = None

    async def dispatch(self, message):
        """A client leaving needs no stale-connection check first (a trip to the sync thread):
        runs of this process with `on_disconnect=cancel` are cancelled at once."""
        if message["type"] == "websocket.disconnect":
            await self.websocket_disconnect(message)
        else:
            await super().dispatch(message)

    async def connect(self):
        offered = dict(self.scope["headers"]).get(REQUEST_ID_HEADER.lower().encode(), b"")
        new_request_id(offered.decode("latin1"))  # the socket's: in the logs of the runs it starts
        self.cursors: dict[str, RunCursor] = {}
        self.cancel_on_disconnect: set[str] = set()
        self.inbox = Inbox()
        self.layer_channel = LayerChannel(self.inbox)
        # Held while a cursor is read and its events are sent, so replays and live batches of
        # one run never interleave.
        self.lock = asyncio.Lock()
        self.pump: asyncio.Task | None = None
        self.timer: asyncio.TimerHandle | None = None
        offered = self.scope.get("subprotocols", [])
        await self.accept(subprotocol=WS_SUBPROTOCOL if WS_SUBPROTOCOL in offered else None)
        if not self.scope.get("origin_ok"):
            await self.close(code=CLOSE_FORBIDDEN_ORIGIN)
        elif not self.scope.get("auth"):
            await self.close(code=CLOSE_UNAUTHENTICATED)
        elif settings.THROTTLE_STREAM_OPEN and not await self._within_rate(STREAM_OPEN):
            await self.close(code=CLOSE_THROTTLED)
        elif not self.take_place():
            await self.close(code=CLOSE_TRY_AGAIN_LATER)
        elif await self.bind(self.scope["user"]):
            self.user = self.scope["user"]
            self.token_watch = TokenWatch.of(self.scope)
            self.pump = asyncio.create_task(self._pump())
            self._tick()

    @database_sync_to_async
    def _within_rate(self, scope: str) -> bool:
        try:
            check_throttles(socket_caller(self.scope), scope)
        except Throttled:
            return False
        return True

    async def bind(self, user) -> bool:
        """After authentication: what this socket serves. False: it has been closed."""
        self.slug = self.scope["url_route"]["kwargs"].get("slug")
        return True

    async def disconnect(self, code):
        if self.timer is not None:
            self.timer.cancel()
        if self.pump is not None:
            self.pump.cancel()
        for run_id, cursor in list(self.cursors.items()):
            if not cursor.ended:
                await cursor.unfollow(self.layer_channel)
            if run_id in self.cancel_on_disconnect and not cursor.ended:
                await cancel_on_disconnect(run_id)
        if self.layer_channel is not None:
            await self.layer_channel.close()

    async def receive(self, text_data=None, bytes_data=None):
        if not getattr(self, "user", None):
            return
        # Every request a message makes is made with a token still usable, not just at connect.
        if not await self._token_usable(now=True):
            return
        try:
            if text_data is None or len(text_data) > MAX_MESSAGE_BYTES:
                raise ServiceError("send one JSON text message of at most 256 KiB")
            try:
                message = json.loads(text_data)
            except ValueError:
                raise ServiceError("message is not valid JSON") from None
            if not isinstance(message, dict):
                raise ServiceError("message must be a JSON object")
            refuse_unstorable(message)
            handler = {"run": self._run, "cancel": self._cancel, "resume": self._resume}.get(
                message.get("type")
            )
            if handler is None:
                raise ServiceError("type must be one of run, cancel, resume", field="type")
            await handler(message)
        except ServiceError as exc:
            await self._error(exc.code, exc.message, **exc.extra)
        except ValidationError as exc:
            await self._error("invalid", first_message(exc.detail), fields=exc.detail)
        except Throttled as exc:
            await self._error("throttled", str(exc.detail), retry_after=math.ceil(exc.wait or 1))

    async def _token_usable(self, now: bool = False) -> bool:
        """False (and the socket closed) once the API token that opened it is unusable."""
        if self.token_watch is None or await self.token_watch.still_usable(now):
            return True
        await self._error("token_revoked", "the API token of this socket was revoked or expired")
        self.user = None  # nothing more is taken from this socket
        await self.close(code=CLOSE_UNAUTHENTICATED)
        return False

    async def _run(self, message: dict) -> None:
        spec = spec_or_404(message.get("agent") or self.slug)
        serializer = RunRequestSerializer(
            data={k: v for k, v in message.items() if k not in ("type", "agent")}
        )
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        caller = socket_caller(self.scope)

        def request():  # in the start's own trip to the sync thread
            check_throttles(caller, RUN_START)
            return run_request(self.user, spec, data)

        run, _task = await start_run(request, reader=self.inbox)
        # Subscribed before its first event: nothing to replay.
        run_id = str(run.pk)
        self.cursors[run_id] = RunCursor(run_id, 0)
        self.cursors[run_id].set_local(True)
        if data["on_disconnect"] == "cancel":
            self.cancel_on_disconnect.add(run_id)

    async def _cancel(self, message: dict) -> None:
        run = await self._own_run(message.get("run_id"))
        serializer = CancelRequestSerializer(data={"mode": message.get("mode", "immediate")})
        serializer.is_valid(raise_exception=True)
        await cancel_run(run, serializer.validated_data["mode"])

    async def _resume(self, message: dict) -> None:
        run = await self._own_run(message.get("run_id"))
        last = message.get("last_event_id", 0)
        if isinstance(last, str) and last.isdigit():
            last = int(last)
        if not isinstance(last, int) or isinstance(last, bool) or last < 0:
            raise ServiceError("last_event_id must be a non-negative integer", field="last_event_id")
        await self._follow(run, last)

    async def _own_run(self, run_id) -> Run:
        if not isinstance(run_id, str) or not run_id:
            raise ServiceError("run_id is required", field="run_id")
        try:
            run = await runs_for(self.user).filter(pk=run_id).afirst()
        except Exception:
            run = None
        if run is None:
            raise NotFound(f"run {run_id} not found", run_id=run_id)
        return run

    async def _follow(self, run: Run, after: int) -> None:
        run_id = str(run.pk)
        async with self.lock:
            old = self.cursors.get(run_id)
            if old is not None and not old.ended:
                # Resuming a run we already follow: start over from the requested point.
                await old.unfollow(self.layer_channel)
            cursor = self.cursors[run_id] = RunCursor(run_id, after)
            await cursor.follow(run, self.layer_channel)
            batch, ended = await cursor.replay()
            await self._send_batch(cursor, batch, ended)

    def _tick(self) -> None:
        self.inbox.wake()
        self.timer = asyncio.get_running_loop().call_later(TICK, self._tick)

    async def _pump(self) -> None:
        """Live batches as they come; gaps filled from the DB; DB polls of idle runs; and the
        socket closed once the API token that opened it is revoked or expired."""
        while True:
            await self.inbox.wait()
            if not await self._token_usable():
                return
            async with self.lock:
                await self._catch_up(self.inbox.take(), self.inbox.take_lost())

    async def _catch_up(self, messages: list[dict], lost: bool) -> None:
        for run_id, cursor in list(self.cursors.items()):
            if not cursor.ended:
                mine = [m for m in messages if m["run_id"] == run_id]
                batch, ended = await cursor.catch_up(mine, lost)
                await self._send_batch(cursor, batch, ended)

    async def _send_batch(self, cursor: RunCursor, batch, ended: bool) -> None:
        for _seq, text in batch:
            await self.send(text_data=text)
        if ended:
            await cursor.unfollow(self.layer_channel)
            # A socket that stays open all day runs many runs: keep only the ones still going
            # (a later `resume` of an ended run makes a new cursor).
            if self.cursors.get(cursor.run_id) is cursor:
                del self.cursors[cursor.run_id]
            self.cancel_on_disconnect.discard(cursor.run_id)

    async def _error(self, code: str, message: str, **extra) -> None:
        body = {"type": "error", "code": code, "message": message}
        body.update((k, v) for k, v in extra.items() if v is not None)
        await self.send(text_data=json.dumps(body))


class ConversationSocketConsumer(AgentSocketConsumer):
    """`/ws/conversations/<id>/`: a socket bound to one of the caller's conversations.

    `run` messages continue this conversation with its agent (`conversation_id` and `agent` may
    be left out; if given they must match); `cancel` and `resume` take runs of this conversation
    only. On connect the conversation's active runs (the running one, then any queued behind it)
    are streamed from their first events, so a client that comes back mid-answer sees the whole
    answer so far and then the rest live."""

    async def bind(self, user) -> bool:
        conversation_id = self.scope["url_route"]["kwargs"]["conversation_id"]
        self.conversation = await Conversation.objects.filter(owner=user, pk=conversation_id).afirst()
        if self.conversation is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return False
        self.slug = self.conversation.agent
        # The running run first, then those queued behind it, in their order.
        active = Run.objects.filter(conversation=self.conversation, status__in=Run.ACTIVE)
        async for run in active.order_by("-status", "created_at"):
            await self._follow(run, 0)
        return True

    async def _run(self, message: dict) -> None:
        bound = {"conversation_id": str(self.conversation.pk), "agent": self.slug}
        for field, value in bound.items():
            if message.get(field) not in (None, value):
                raise ServiceError(
                    f"this socket is bound to conversation {bound['conversation_id']} "
                    f"(agent {self.slug!r}): leave {field} out or send {value!r}",
                    field=field,
                )
        if message.get("session_id") is not None:
            raise ServiceError(
                "session_id names a conversation: not accepted on a conversation socket", field="session_id"
            )
        await super()._run({**message, **bound})

    async def _own_run(self, run_id) -> Run:
        run = await super()._own_run(run_id)
        if run.conversation_id != self.conversation.pk:
            raise NotFound(f"run {run_id} is not a run of this conversation", run_id=run_id)
        return run
