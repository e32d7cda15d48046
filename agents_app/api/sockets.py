"""WebSocket consumer: start runs, cancel them and resume streams over one socket.

Client -> server: {"type": "run", "input", "conversation_id"?, "session_id"?, "agent"?},
{"type": "cancel", "run_id", "mode"?}, {"type": "resume", "run_id", "last_event_id"?},
{"type": "approve" | "reject", "run_id", "approval_id", "reason"?, "always"?} (a paused run's
call: its `approval_decided` event follows in the run's stream).
Server -> client: the run events of docs/events.md. A bad message gets an `error` event
and the socket stays open.

`/ws/agents/<slug>/` serves any run of the caller; `/ws/conversations/<id>/` is bound to one
conversation: its runs continue that conversation, and on connect it streams the
conversation's active runs, if any, from their first events.
"""

import json
import math
import uuid

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from rest_framework.exceptions import ParseError, Throttled, ValidationError

from ..db import in_sync_thread
from ..errors import NotFound, ServiceError
from ..logs import HEADER as REQUEST_ID_HEADER
from ..logs import new_request_id
from ..models import Conversation, Run
from ..runs.approvals import check_decision, decide
from ..runs.cancel import cancel_on_disconnect, cancel_run
from ..runs.engine import get_engine
from ..runs.read import Batch, RunCursor, RunReader
from ..runs.retry import OUTAGE_ERRORS
from ..runs.start import start_run
from ..selectors import decidable_runs, runs_for
from .auth import (
    CLOSE_FORBIDDEN_ORIGIN,
    CLOSE_NOT_FOUND,
    CLOSE_THROTTLED,
    CLOSE_UNAUTHENTICATED,
    WS_SUBPROTOCOL,
    CredentialWatch,
)
from .capacity import StreamPlace
from .errors import cursor, first_message
from .parsers import parse_json
from .serializers import CancelRequestSerializer, RunRequestSerializer, run_request, spec_or_404
from .sse import NO_CHANNEL_LAYER
from .throttles import RUN_START, STREAM_OPEN, check_throttles, socket_caller

MAX_MESSAGE_BYTES = 256 * 1024
CLOSE_TRY_AGAIN_LATER = 4503  # the process has as many open streams as it takes (daphne refuses 1013)
CLOSE_INTERNAL_ERROR = 1011


class AgentSocketConsumer(StreamPlace, AsyncWebsocketConsumer):
    """The socket's `RunReader` follows every run it started or resumed and writes their events."""

    channel_layer_alias = NO_CHANNEL_LAYER  # see sse.NO_CHANNEL_LAYER
    reader: RunReader | None = None
    user = None

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
        # The runs started here with `on_disconnect=cancel`.
        self.cancel_on_disconnect: set[str] = set()
        self.reader = RunReader(self._write, on_fault=self._fault)
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
            self.reader.credential_watch = CredentialWatch.of(self.scope)
            self.reader.on_credentials_lost = self._credentials_lost
            self.reader.start()

    @in_sync_thread
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
        if self.reader is None:
            return
        for run_id in self.cancel_on_disconnect & set(self.reader.cursors):
            await cancel_on_disconnect(run_id)
        await self.reader.close()

    async def receive(self, text_data=None, bytes_data=None):
        if self.user is None:
            return
        # Every request a message makes is made with a token still usable, not just at connect.
        watch = self.reader.credential_watch
        if watch is not None and not await watch.still_usable(now=True):
            await self._credentials_lost()
            return
        try:
            if text_data is None or len(text_data) > MAX_MESSAGE_BYTES:
                raise ServiceError("send one JSON text message of at most 256 KiB")
            message = parse_json(text_data)
            if not isinstance(message, dict):
                raise ServiceError("message must be a JSON object")
            handler = {
                "run": self._run,
                "cancel": self._cancel,
                "resume": self._resume,
                "approve": self._decide,
                "reject": self._decide,
            }.get(message.get("type"))
            if handler is None:
                raise ServiceError("type must be one of run, cancel, resume, approve, reject", field="type")
            await handler(message)
        except ServiceError as exc:
            await self._error(exc.code, exc.message, **exc.extra)
        except ValidationError as exc:
            await self._error("invalid", first_message(exc.detail), fields=exc.detail)
        except ParseError as exc:
            await self._error("invalid", f"message is not valid JSON: {exc.detail}")
        except Throttled as exc:
            await self._error("throttled", str(exc.detail), retry_after=math.ceil(exc.wait or 1))
        except OUTAGE_ERRORS:
            # Not the client's fault, and nothing was done: it may send the message again.
            await self._error("unavailable", "the database is not available: try again shortly")

    async def _credentials_lost(self) -> None:
        """What opened the socket (an API token, a session) no longer authenticates: nothing more
        is taken."""
        watch = self.reader.credential_watch
        await self._error(watch.code, watch.message)
        self.user = None
        await self.close(code=CLOSE_UNAUTHENTICATED)

    async def _fault(self) -> None:
        await self.close(code=CLOSE_INTERNAL_ERROR)

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

        run = await start_run(request, reader=self.reader.inbox)
        self.reader.started(run.pk)
        if data["on_disconnect"] == "cancel":
            self.cancel_on_disconnect.add(str(run.pk))

    async def _cancel(self, message: dict) -> None:
        run = await self._own_run(message.get("run_id"))
        serializer = CancelRequestSerializer(data={"mode": message.get("mode", "immediate")})
        serializer.is_valid(raise_exception=True)
        await cancel_run(run, serializer.validated_data["mode"])

    async def _decide(self, message: dict) -> None:
        decision, reason, always = check_decision(
            message["type"], message.get("reason"), message.get("always")
        )
        run = await self._own_run(message.get("run_id"), decidable_runs)
        approval_id = message.get("approval_id")
        try:
            approval_id = uuid.UUID(approval_id if isinstance(approval_id, str) else "")
        except ValueError:
            raise ServiceError("approval_id must be an approval's id", field="approval_id") from None
        await decide(
            get_engine().executor,
            run.pk,
            approval_id,
            decision,
            user=self.user,
            surface="websocket",
            reason=reason,
            always=always,
        )

    async def _resume(self, message: dict) -> None:
        run = await self._own_run(message.get("run_id"))
        last = cursor(message.get("last_event_id", 0))
        if last is None:
            raise ServiceError("last_event_id must be a non-negative integer", field="last_event_id")
        await self.reader.follow(run, last)

    async def _own_run(self, run_id, visible=None) -> Run:
        """A run of the caller's (`visible(user)`, default `runs_for`: the runs they may act on),
        or a 404."""
        if not isinstance(run_id, str) or not run_id:
            raise ServiceError("run_id is required", field="run_id")
        try:
            uuid.UUID(run_id)
        except ValueError:
            raise NotFound(f"run {run_id} not found", run_id=run_id) from None
        run = await in_sync_thread((visible or runs_for)(self.user).filter(pk=run_id).first)()
        if run is None:
            raise NotFound(f"run {run_id} not found", run_id=run_id)
        return run

    async def _write(self, cursor: RunCursor, batch: Batch, ended: bool) -> None:
        for _seq, text in batch:
            await self.send(text_data=text)
        if ended:
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
        self.conversation, active = await in_sync_thread(_conversation_and_runs)(user, conversation_id)
        if self.conversation is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return False
        self.slug = self.conversation.agent
        for run in active:
            await self.reader.follow(run, 0)
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

    async def _own_run(self, run_id, visible=None) -> Run:
        run = await super()._own_run(run_id, visible)
        if run.conversation_id != self.conversation.pk:
            raise NotFound(f"run {run_id} is not a run of this conversation", run_id=run_id)
        return run


def _conversation_and_runs(user, conversation_id) -> tuple[Conversation | None, list[Run]]:
    """The caller's conversation and its active runs in their order, or (None, [])."""
    conversation = Conversation.objects.filter(owner=user, pk=conversation_id).first()
    if conversation is None:
        return None, []
    return conversation, list(Run.objects.active().filter(conversation=conversation))
