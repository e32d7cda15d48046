"""The Vercel AI SDK's UI message stream (`useChat`, `DefaultChatTransport`): docs/ai-sdk.md.

`POST /api/agents/<slug>/ui` takes `useChat`'s request body and starts a run on the chat's
conversation (the chat id is the conversation's session key); `GET .../ui/<chat id>/stream`
resumes the chat's active run from its first event. Both stream the run's journalled events as
UI message chunks (`ai_sdk_chunks`); refusals are a JSON body shaped like the protocol's own
`error` chunk.

A run that pauses for approval ends its response with the calls' `tool-approval-request`s; the
client's answers (`addToolApprovalResponse`) come back as the next POST, whose last message is
the assistant's with its tool parts `approval-responded`: they are decided, and the response goes
on with the same message from the pause.
"""

import orjson
from rest_framework import serializers

from ..db import in_sync_thread
from ..models import Run
from ..runs.answers import Answer, Answered, check_answers, record_answers
from ..runs.engine import get_engine
from ..runs.start import IF_BUSY, RunRequest, start_run
from ..selectors import conversations_for, decidable_runs
from .ai_sdk_chunks import UIMessageTranslator, sse
from .auth import authenticated_request
from .serializers import spec_or_404, validate_run_input
from .sse import SSE_HEADERS, RunStreamConsumer
from .throttles import RUN_START, STREAM_OPEN

UI_HEADERS = [*SSE_HEADERS, (b"x-vercel-ai-ui-message-stream", b"v1")]
TRIGGERS = ("submit-message", "regenerate-message")
CHAT_ID_MAX = 128  # Conversation.session_key's length
LAST_MESSAGE = (
    "the last message must be the user's (role 'user'), or the assistant's with tool approval responses"
)


class ChatIdField(serializers.CharField):
    """A chat id: a string as the client sent it (no number coerced to one, no trimming)."""

    def __init__(self, **kwargs):
        super().__init__(max_length=CHAT_ID_MAX, trim_whitespace=False, **kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class ChatRequestSerializer(serializers.Serializer):
    """`useChat`'s request body, plus two optional fields of ours (set with the transport's
    `body` option)."""

    id = ChatIdField()
    messages = serializers.ListField(child=serializers.DictField(), allow_empty=False)
    trigger = serializers.ChoiceField(choices=TRIGGERS, default="submit-message")
    messageId = serializers.CharField(required=False, allow_null=True, allow_blank=True)
    on_disconnect = serializers.ChoiceField(choices=["continue", "cancel"], default="continue")
    if_busy = serializers.ChoiceField(choices=list(IF_BUSY), default="reject")

    def validate_messages(self, messages):
        """Validated, the messages are the run's input: the last user message's text."""
        return user_text(messages[-1])


class ApprovalAnswersSerializer(ChatRequestSerializer):
    """A request whose last message is the assistant's: it answers a paused run's calls."""

    def validate_messages(self, messages):
        return approval_answers(messages[-1])


def user_text(message: dict) -> str:
    """The run's input: the text parts of the last message, which must be the user's. The
    conversation keeps its own memory, so the history the client sends again is not read."""
    if message.get("role") != "user":
        raise serializers.ValidationError(LAST_MESSAGE)
    parts = message.get("parts")
    if not isinstance(parts, list) or not all(isinstance(part, dict) for part in parts):
        raise serializers.ValidationError("the user message needs a list of parts (objects)")
    texts = []
    for part in parts:
        if part.get("type") == "file":
            raise serializers.ValidationError("file parts are not supported: send text parts")
        if part.get("type") == "text":
            if not isinstance(part.get("text"), str):
                raise serializers.ValidationError("a text part needs a string 'text'")
            texts.append(part["text"])
    if not texts:
        raise serializers.ValidationError("the user message has no text part")
    return validate_run_input("\n".join(texts))


def approval_answers(message: dict) -> list[Answer]:
    """The answers in the assistant message's tool parts that are `approval-responded`
    (`approval: {id, approved, reason?}`, the id being our approval id)."""
    parts = message.get("parts")
    answers = []
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, dict) or part.get("state") != "approval-responded":
            continue
        approval = part.get("approval")
        if not (
            isinstance(approval, dict)
            and isinstance(approval.get("id"), str)
            and isinstance(approval.get("approved"), bool)
            and isinstance(approval.get("reason") or "", str)
        ):
            raise serializers.ValidationError(
                "an approval-responded part needs approval {id: string, approved: boolean, reason?: string}"
            )
        decision = "approve" if approval["approved"] else "reject"
        answers.append(Answer(approval["id"], decision, approval.get("reason") or ""))
    if not answers:
        raise serializers.ValidationError(LAST_MESSAGE)
    return answers


def answers_body(body: bytes) -> bool:
    """The request answers a paused run's calls: its last message is the assistant's (anything
    that is not a well-formed chat request takes the other path, which says what is wrong)."""
    try:
        data = orjson.loads(body)
        return data["messages"][-1]["role"] == "assistant"
    except (orjson.JSONDecodeError, TypeError, KeyError, IndexError):
        return False


def error_chunk(body: dict) -> dict:
    """Our `{"error": {"code", "message", ...}}` as the protocol's error chunk, with the code
    and details beside `errorText`."""
    error = dict(body.get("error") or {})
    message = error.pop("message", "the request was refused")
    return {"type": "error", "errorText": message, **error}


class UIStreamConsumer(RunStreamConsumer):
    """What both endpoints write: UI message chunks, refusals as error chunks."""

    headers = UI_HEADERS
    until_paused = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.translator = UIMessageTranslator()

    def prologue(self) -> bytes:
        return b""  # the SDK reads no `retry:`: it resumes through the resume endpoint

    def frames(self, batch) -> bytes:
        return self.translator.frames(batch)

    def pause_frames(self) -> bytes:
        return self.translator.paused_end()

    def refusal(self, status: int, body: dict) -> tuple[int, dict, list]:
        return status, error_chunk(body), []


class UIChatConsumer(UIStreamConsumer):
    """POST /api/agents/<slug>/ui: start a run with the chat's last user message and stream it."""

    methods = ("POST",)
    answered: Answered | None = None

    async def open(self, body):
        if answers_body(body):
            return await self.answer(body)
        # Authentication, validation and the run's row in one trip to the database.
        run = await start_run(lambda: self.run_request(body), reader=self.reader.inbox)
        return run, 0, True

    async def answer(self, body: bytes):
        """Decide the paused run's calls as the client answered them, then write the rest of the
        run's message: from its first event, read, but written from the pause on."""
        request, self.answered = await in_sync_thread(self.check_answers)(body)
        await record_answers(get_engine().executor, self.answered, request.user, "ai_sdk")
        self.translator = UIMessageTranslator(after=self.answered.pause_seq)
        return self.answered.run, 0, False

    def check_answers(self, body: bytes):
        request = authenticated_request(self.scope, body, RUN_START, STREAM_OPEN)
        spec = spec_or_404(self.scope["url_route"]["kwargs"]["slug"])
        serializer = ApprovalAnswersSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        runs = decidable_runs(request.user)
        answered = check_answers(runs, data["messages"], "messages", spec.slug, data["id"])
        return request, answered

    def prologue(self) -> bytes:
        """The response to approval answers goes on with the run's message: it starts again."""
        if self.answered is None:
            return b""
        run = self.answered.run
        metadata = {"run_id": str(run.pk), "conversation_id": str(run.conversation_id), "status": "running"}
        return sse({"type": "start", "messageId": str(run.pk), "messageMetadata": metadata})

    def run_request(self, body: bytes) -> RunRequest:
        request = authenticated_request(self.scope, body, RUN_START, STREAM_OPEN)
        spec = spec_or_404(self.scope["url_route"]["kwargs"]["slug"])
        if not isinstance(request.data, dict):
            raise serializers.ValidationError(
                {"non_field_errors": ["the request body must be a JSON object"]}
            )
        serializer = ChatRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        return RunRequest(
            user=request.user,
            spec=spec,
            input=data["messages"],
            # An agent without memory (research) has no conversation to continue: each
            # message is a run of its own, and the chat id is not kept.
            session_key=data["id"] if spec.uses_memory else None,
            on_disconnect=data["on_disconnect"],
            if_busy=data["if_busy"],
        )


class UIResumeConsumer(UIStreamConsumer):
    """GET /api/agents/<slug>/ui/<chat id>/stream: the chat's active run, replayed from its
    first event (the SDK's resume reads the whole message again), then followed live; 204 when
    the chat has no active run (or is not the caller's, or was never used)."""

    async def open(self, body):
        run = await in_sync_thread(self.active_run)(body)
        if run is None:
            await self.send_response(204, b"")
            return None
        return run, 0, False

    def active_run(self, body: bytes) -> Run | None:
        request = authenticated_request(self.scope, body, STREAM_OPEN)
        spec = spec_or_404(self.scope["url_route"]["kwargs"]["slug"])
        try:
            chat_id = ChatIdField().run_validation(self.scope["url_route"]["kwargs"]["chat_id"])
        except serializers.ValidationError as exc:
            raise serializers.ValidationError({"chat_id": exc.detail}) from None
        if not spec.uses_memory:
            return None  # its runs belong to no chat (see UIChatConsumer)
        # A chat never used (useChat's `resume: true` asks on every mount, new chats included)
        # has nothing to resume, like another user's chat of that id: 204, which says nothing.
        mine = conversations_for(request.user).filter(agent=spec.slug, session_key=chat_id)
        return Run.objects.active().filter(conversation__in=mine).first()


CHAT_REQUEST_SCHEMA = {
    "type": "object",
    "required": ["id", "messages"],
    "properties": {
        "id": {"type": "string", "minLength": 1, "maxLength": CHAT_ID_MAX, "description": "The chat id."},
        "messages": {
            "type": "array",
            "minItems": 1,
            "description": "UI messages; only the last one is read: the user's, whose text parts are "
            "the run's input (file parts are refused), or the assistant's, whose `approval-responded` "
            "tool parts answer a paused run's approvals.",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "role": {"type": "string", "enum": ["system", "user", "assistant"]},
                    "parts": {"type": "array", "items": {"type": "object"}},
                },
            },
        },
        "trigger": {"type": "string", "enum": list(TRIGGERS)},
        "messageId": {"type": "string", "nullable": True, "description": "Not read."},
        "on_disconnect": {"type": "string", "enum": ["continue", "cancel"], "default": "continue"},
        "if_busy": {"type": "string", "enum": list(IF_BUSY), "default": "reject"},
    },
}
ERROR_SCHEMA = {
    "type": "object",
    "description": "The protocol's error chunk, with our error code and details beside errorText.",
    "required": ["type", "errorText", "code"],
    "properties": {
        "type": {"type": "string", "enum": ["error"]},
        "errorText": {"type": "string"},
        "code": {"type": "string"},
        "fields": {"type": "object", "description": "Which fields are wrong (code `invalid`)."},
    },
    "additionalProperties": True,
}
STREAM_DESCRIPTION = (
    "UI message stream protocol v1 (header `x-vercel-ai-ui-message-stream: v1`): one `data: <json>` "
    "line per chunk, then `data: [DONE]`. Chunks: `start` (messageId = run id, messageMetadata "
    "{run_id, conversation_id, status, agent, model}), `start-step`/`finish-step` (one model call "
    "and its tools), `text-start`/`text-delta`/`text-end` and `reasoning-start`/`-delta`/`-end` "
    "(id = the model's item id), `tool-input-available` {toolCallId, toolName, input} and "
    "`tool-output-available` {toolCallId, output} (tools and handoffs), `message-metadata` "
    "(agent_name after a handoff), `data-research-progress` (research runs), "
    "`tool-approval-request` {approvalId, toolCallId} and `tool-output-denied` {toolCallId} "
    "(tools that need approval), and one ending: "
    "`finish` {finishReason: stop, messageMetadata: {run_id, conversation_id, status, usage, "
    "response_id}}, or for a cancelled run `message-metadata` then `abort`, or for a failed run "
    "`message-metadata` (with error_code) then `error` {errorText}, or for a run that pauses for "
    "approval `finish` {finishReason: tool-calls}. A request whose last message is the assistant's "
    "with `approval-responded` tool parts answers those approvals and streams the run on from its "
    "pause. See docs/ai-sdk.md."
)


def _refused(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": ERROR_SCHEMA}}}


def openapi_paths() -> dict:
    """OpenAPI 3.0 path items of the two endpoints."""
    slug = {"name": "slug", "in": "path", "required": True, "schema": {"type": "string"}}
    chat_id = {
        "name": "chat_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "maxLength": 128},
    }
    stream = {
        "description": STREAM_DESCRIPTION,
        "content": {"text/event-stream": {"schema": {"type": "object", "description": "One event."}}},
    }
    return {
        "/api/agents/{slug}/ui": {
            "post": {
                "summary": "Start a run from a useChat request and stream it as UI message chunks",
                "tags": ["ai-sdk"],
                "parameters": [slug],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": CHAT_REQUEST_SCHEMA}},
                },
                "responses": {
                    "200": stream,
                    "400": _refused("Malformed JSON, a bad chat id, or no usable last user message."),
                    "401": _refused("No or bad credentials."),
                    "404": _refused("Unknown agent, or an answered approval not of this chat."),
                    "409": _refused(
                        "The chat has an active run (and `if_busy` is `reject`), or an answered "
                        "approval was decided otherwise."
                    ),
                    "413": _refused("The body is larger than DATA_UPLOAD_MAX_MEMORY_SIZE."),
                    "429": _refused("You have too many active runs."),
                },
            }
        },
        "/api/agents/{slug}/ui/{chat_id}/stream": {
            "get": {
                "summary": "Resume the chat's active run, from its first chunk",
                "tags": ["ai-sdk"],
                "parameters": [slug, chat_id],
                "responses": {
                    "200": stream,
                    "204": {"description": "The chat has no active run (or the agent keeps no chats)."},
                    "400": _refused("A bad chat id."),
                    "401": _refused("No or bad credentials."),
                    "404": _refused("Unknown agent."),
                },
            }
        },
    }
