"""AG-UI: `POST /api/agents/<slug>/ag-ui` takes AG-UI's `RunAgentInput` and streams the run as
AG-UI events (docs/ag-ui.md), with the `ag-ui-protocol` package's own types and encoder.

The thread is the caller's conversation with that agent, named by the client's `threadId`
(`session_key`, unique per owner and agent: another user's thread id names a conversation of
the caller's own). The conversation keeps its own memory, so the run's input is the last user
message only; AG-UI clients send the whole history every time.

A run that pauses for approval ends the AG-UI run with the `interrupt` outcome; the client's next
run on the thread answers the interrupts (`resume`): they are decided, and that AG-UI run streams
the rest of ours.
"""

import orjson
from ag_ui.core import ResumeEntry, RunAgentInput, RunErrorEvent, TextPart
from ag_ui.encoder import EventEncoder
from pydantic import ValidationError as PydanticValidationError
from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from ..db import in_sync_thread
from ..runs.answers import Answer, check_answers, record_answers
from ..runs.engine import get_engine
from ..runs.read import Batch
from ..runs.start import IF_BUSY, RunRequest, start_run
from ..selectors import decidable_runs
from .ag_ui_events import ANSWER_SCHEMA, AgUiTranslator
from .auth import authenticated_request
from .serializers import spec_or_404, validate_run_input
from .sse import SSE_HEADERS, RunStreamConsumer
from .throttles import RUN_START, STREAM_OPEN

THREAD_ID_MAX = 128  # Conversation.session_key
CONTEXT_MAX_CHARS = 8_000  # as the REST API's `context`
ON_DISCONNECT = ("continue", "cancel")


class AgUiConsumer(RunStreamConsumer):
    """Start a run from a `RunAgentInput` and stream it as AG-UI events; refusals are JSON
    bodies shaped as AG-UI's RUN_ERROR event."""

    methods = ("POST",)
    until_paused = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.encoder = EventEncoder()
        self.translator: AgUiTranslator | None = None

    async def open(self, body):
        if resumes(body):
            run = await self.answer(body)
            fresh = False
        else:
            # Authentication, validation and the run's row in one trip to the database.
            run = await start_run(lambda: self.make_request(body), reader=self.reader.inbox)
            fresh = True
        self.headers = [
            (b"Content-Type", f"{self.encoder.get_content_type()}; charset=utf-8".encode()),
            *(header for header in SSE_HEADERS if header[0] != b"Content-Type"),
            (b"X-Run-Id", str(run.pk).encode()),
        ]
        return run, 0, fresh

    async def answer(self, body: bytes):
        """Decide the interrupts as the `resume` entries answer them; the AG-UI run is then the rest
        of the paused run, read from its first event and written from its pause on."""
        request, answered = await in_sync_thread(self.check_answers)(body)
        await record_answers(get_engine().executor, answered, request.user, "ag_ui")
        self.translator.after = answered.pause_seq
        return answered.run

    def check_answers(self, body: bytes):
        request = authenticated_request(self.scope, body, RUN_START, STREAM_OPEN)
        spec = spec_or_404(self.scope["url_route"]["kwargs"]["slug"])
        run_input = parse_run_agent_input(request.data, resuming=True)
        answers = [resume_answer(index, entry) for index, entry in enumerate(run_input.resume)]
        runs = decidable_runs(request.user)
        answered = check_answers(runs, answers, "resume", spec.slug, run_input.thread_id)
        self.translator = AgUiTranslator(run_input.thread_id, run_input.run_id)
        return request, answered

    def make_request(self, body: bytes) -> RunRequest:
        request = authenticated_request(self.scope, body, RUN_START, STREAM_OPEN)
        spec = spec_or_404(self.scope["url_route"]["kwargs"]["slug"])
        run_input = parse_run_agent_input(request.data)
        options = run_input.forwarded_props if isinstance(run_input.forwarded_props, dict) else {}
        self.translator = AgUiTranslator(run_input.thread_id, run_input.run_id)
        return RunRequest(
            user=request.user,
            spec=spec,
            input=last_user_text(run_input),
            context=run_context(run_input),
            session_key=run_input.thread_id,
            on_disconnect=choice(options, "on_disconnect", ON_DISCONNECT),
            if_busy=choice(options, "if_busy", IF_BUSY),
        )

    def prologue(self) -> bytes:
        return b""  # AG-UI clients do not reconnect: no `retry:` line

    def frames(self, batch: Batch) -> bytes:
        return "".join(self.encoder.encode(event) for event in self.translator.events(batch)).encode()

    def pause_frames(self) -> bytes:
        return "".join(self.encoder.encode(event) for event in self.translator.paused()).encode()

    def refusal(self, status: int, body: dict) -> tuple[int, dict, list]:
        error = dict(body["error"])
        message, code = error.pop("message"), error.pop("code")
        event = RunErrorEvent(message=message, code=code, metadata=error or None)
        return status, event.model_dump(mode="json", by_alias=True), []


def resumes(body: bytes) -> bool:
    """The request answers interrupts (a non-empty `resume`); anything that is not a well-formed
    body takes the other path, which says what is wrong."""
    try:
        data = orjson.loads(body)
        return isinstance(data, dict) and bool(data.get("resume"))
    except orjson.JSONDecodeError:
        return False


def resume_answer(index: int, entry: ResumeEntry) -> Answer:
    """A resume entry as a decision: `resolved` with the payload `{approved, reason?}`, or
    `cancelled` (the client abandoned the interrupt: the call is rejected)."""
    payload = entry.payload if isinstance(entry.payload, dict) else {}
    reason = payload.get("reason") or ""
    if not isinstance(reason, str):
        raise ValidationError({f"resume.{index}.payload.reason": ["must be a string"]})
    if entry.status == "cancelled":
        return Answer(entry.interrupt_id, "reject", reason or "cancelled")
    approved = payload.get("approved")
    if not isinstance(approved, bool):
        raise ValidationError({f"resume.{index}.payload": ["must be {approved: boolean, reason?: string}"]})
    return Answer(entry.interrupt_id, "approve" if approved else "reject", reason)


def parse_run_agent_input(data, resuming: bool = False) -> RunAgentInput:
    """The body as AG-UI's RunAgentInput, or a 400 naming the first wrong field. `resuming`: the
    body answers interrupts (its messages are not read)."""
    if not isinstance(data, dict):
        raise ValidationError({"non_field_errors": ["the request body must be a RunAgentInput JSON object"]})
    try:
        run_input = RunAgentInput.model_validate(data)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "non_field_errors"
        raise ValidationError({field: [first["msg"]]}) from None
    if not run_input.thread_id or len(run_input.thread_id) > THREAD_ID_MAX:
        raise ValidationError({"threadId": [f"must be 1 to {THREAD_ID_MAX} characters"]})
    if run_input.tools:
        raise ValidationError(
            {"tools": ["client-side tools are not supported: this server's agents run their own tools"]}
        )
    if bool(run_input.resume) != resuming:
        raise ValidationError({"resume": ["must answer the interrupts of a paused run"]})
    return run_input


def last_user_text(run_input: RunAgentInput) -> str:
    """The text of the last user message: the run's input (the conversation remembers the rest)."""
    message = next((m for m in reversed(run_input.messages) if m.role == "user"), None)
    if message is None:
        raise ValidationError({"messages": ["there is no user message to answer"]})
    content = message.content
    if not isinstance(content, str):
        if not all(isinstance(part, TextPart) for part in content):
            raise ValidationError({"messages": ["only text content is supported"]})
        content = "\n".join(part.text for part in content)
    try:
        return validate_run_input(content)
    except serializers.ValidationError as exc:
        raise ValidationError({"messages": exc.detail}) from None


def run_context(run_input: RunAgentInput) -> dict:
    """The client's context entries, kept with the run (`Run.context`, the SDK's run context);
    the agents here do not show them to the model (docs/ag-ui.md)."""
    if not run_input.context:
        return {}
    entries = [entry.model_dump(by_alias=True) for entry in run_input.context]
    if len(str(entries)) > CONTEXT_MAX_CHARS:
        raise ValidationError({"context": [f"context is larger than {CONTEXT_MAX_CHARS} characters"]})
    return {"ag_ui_context": entries}


def choice(options: dict, key: str, choices: tuple[str, ...]) -> str:
    """A run option from `forwardedProps`: its value, the first choice (the default) when
    absent, else a 400 naming it."""
    value = options.get(key, choices[0])
    if value not in choices:
        raise ValidationError({f"forwardedProps.{key}": [f"must be one of {', '.join(choices)}"]})
    return value


ERROR_SCHEMA = {
    "type": "object",
    "description": "A refusal, shaped as AG-UI's RUN_ERROR event; `metadata` holds the details "
    "(`fields` for a wrong field, `active_run_id` for a busy thread, ...).",
    "properties": {
        "type": {"type": "string", "enum": ["RUN_ERROR"]},
        "message": {"type": "string"},
        "code": {"type": "string"},
        "metadata": {"type": "object"},
    },
    "required": ["type", "message"],
}
MESSAGE_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "role": {"type": "string", "enum": ["user", "assistant", "system", "developer", "tool"]},
        "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
    },
    "required": ["id", "role"],
}
RESUME_SCHEMA = {
    "type": "object",
    "properties": {
        "interruptId": {"type": "string", "description": "The approval id (the interrupt's id)."},
        "status": {"type": "string", "enum": ["resolved", "cancelled"]},
        "payload": {**ANSWER_SCHEMA, "description": "For `resolved`: the decision."},
    },
    "required": ["interruptId", "status"],
}
EVENTS_DESCRIPTION = """AG-UI events, one `data: <json>` frame each, in this order:
RUN_STARTED (the client's threadId and runId; `metadata.runId` is this server's run id, also in
the `X-Run-Id` header); then STEP_STARTED/STEP_FINISHED (stepName: the agent answering, or a
research stage), TEXT_MESSAGE_START/CONTENT/END (role assistant), REASONING_START/
REASONING_MESSAGE_START/CONTENT/END/REASONING_END, TOOL_CALL_START/ARGS/END then
TOOL_CALL_RESULT, CUSTOM (`run_queued`, `research_progress`, `approval_required`,
`approval_decided`, `turn_restarted`); last RUN_FINISHED (`result`: the final output, `usage`; `outcome.type`
`cancelled` for a cancelled run, `interrupt` with one interrupt per call for a run paused for
approval: answer them in the next request's `resume`) or RUN_ERROR (`message`, `code`)."""


def openapi_paths() -> dict:
    """The AG-UI endpoint as an OpenAPI 3.0 path item."""
    refusal = {"content": {"application/json": {"schema": ERROR_SCHEMA}}}
    return {
        "/api/agents/{slug}/ag-ui": {
            "post": {
                "operationId": "agents_ag_ui",
                "summary": "Run an agent for an AG-UI client (RunAgentInput in, AG-UI events out)",
                "tags": ["AG-UI"],
                "parameters": [
                    {"name": "slug", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "description": "AG-UI's RunAgentInput. Only the last user message "
                                "is the run's input; `tools` must be empty; `resume` answers the "
                                "interrupts of a run paused for approval (its messages are not read).",
                                "properties": {
                                    "threadId": {
                                        "type": "string",
                                        "minLength": 1,
                                        "maxLength": THREAD_ID_MAX,
                                    },
                                    "runId": {"type": "string"},
                                    "messages": {"type": "array", "items": MESSAGE_SCHEMA},
                                    "resume": {"type": "array", "items": RESUME_SCHEMA},
                                    "state": {},
                                    "context": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "properties": {
                                                "description": {"type": "string"},
                                                "value": {"type": "string"},
                                            },
                                        },
                                    },
                                    "tools": {"type": "array", "maxItems": 0, "items": {"type": "object"}},
                                    "forwardedProps": {
                                        "type": "object",
                                        "properties": {
                                            "on_disconnect": {"type": "string", "enum": list(ON_DISCONNECT)},
                                            "if_busy": {"type": "string", "enum": list(IF_BUSY)},
                                        },
                                    },
                                },
                                "required": ["threadId", "runId", "messages"],
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": EVENTS_DESCRIPTION,
                        "headers": {"X-Run-Id": {"schema": {"type": "string", "format": "uuid"}}},
                        "content": {
                            "text/event-stream": {"schema": {"type": "object", "description": "One event."}}
                        },
                    },
                    "400": {
                        "description": "Invalid RunAgentInput (metadata.fields names the field)",
                        **refusal,
                    },
                    "401": {"description": "No or bad credentials", **refusal},
                    "404": {"description": "Unknown agent", **refusal},
                    "409": {"description": "The thread has an active run (if_busy reject)", **refusal},
                    "429": {"description": "Too many active runs", **refusal},
                },
            }
        }
    }
