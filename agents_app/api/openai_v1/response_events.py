"""A run as an OpenAI Response: its stream events (with `sequence_number`) and its state.

One run is one Response (`resp_<run id>`), whatever the agent did on the server: its tool calls
and handoffs are not output items (a client would take a `function_call` for its own tool to
run), its answer messages are. The translation is deterministic, so replaying a run's journal
from its first event gives the same events with the same sequence numbers: that is how
`starting_after` resumes a stream in any process, at any time."""

import uuid
from typing import Any

from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseError,
    ResponseFailedEvent,
    ResponseIncompleteEvent,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseQueuedEvent,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
    ResponseUsage,
)
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

from ...models import Run
from ...providers.responses_stream import TEXT_DELTA

PREFIX = "resp_"
STATUS = {
    Run.Status.QUEUED: "queued",
    Run.Status.RUNNING: "in_progress",
    Run.Status.COMPLETED: "completed",
    Run.Status.CANCELLED: "cancelled",
    Run.Status.FAILED: "failed",
    Run.Status.INTERRUPTED: "failed",
}


def response_id(run_id: Any) -> str:
    return PREFIX + uuid.UUID(str(run_id)).hex


def run_id_of(value: str) -> uuid.UUID | None:
    """The run a response id names, or None for anything that is not one of ours."""
    if not value.startswith(PREFIX) or len(value) != len(PREFIX) + 32:
        return None
    try:
        return uuid.UUID(hex=value[len(PREFIX) :])
    except ValueError:
        return None


def usage_of(usage: dict) -> ResponseUsage:
    return ResponseUsage(
        input_tokens=usage.get("input_tokens", 0),
        output_tokens=usage.get("output_tokens", 0),
        total_tokens=usage.get("total_tokens", 0),
        input_tokens_details=InputTokensDetails(cached_tokens=0, cache_write_tokens=0),
        output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
    )


class ResponseTranslator:
    """Feed it a run's events in seq order; it returns the Responses stream events they make
    and knows the Response as it stands (`response()`)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.options = run.options or {}
        self.status = STATUS[run.status]
        self.output: list[ResponseOutputMessage] = []
        self.text: list[str] = []  # of the open message (the last of `output`)
        self.open = False
        self.usage: ResponseUsage | None = None
        self.error: ResponseError | None = None
        self.sequence = -1
        self.created = False

    def response(self) -> Response:
        output = list(self.output)
        if self.open:
            output[-1] = self._message(output[-1].id, "".join(self.text), "in_progress")
        return Response(
            id=response_id(self.run.pk),
            object="response",
            created_at=self.run.created_at.timestamp(),
            model=self.run.agent,
            status=self.status,
            output=output,
            error=self.error,
            incomplete_details=None,
            instructions=self.options.get("instructions"),
            metadata=self.options.get("metadata") or {},
            previous_response_id=self.options.get("previous_response_id"),
            background=self.options.get("background", False),
            store=self.options.get("store", True),
            tool_choice="auto",
            tools=[],
            parallel_tool_calls=True,
            usage=self.usage,
        )

    def feed(self, event: dict) -> list[Any]:
        kind = event["type"]
        out: list[Any] = []
        if not self.created and kind in ("run_queued", "run_started"):
            self.created = True
            self.status = "queued" if kind == "run_queued" else "in_progress"
            out.append(self._event(ResponseCreatedEvent, "response.created", response=self.response()))
            if kind == "run_queued":
                out.append(self._event(ResponseQueuedEvent, "response.queued", response=self.response()))
                return out
        if kind == "run_started":
            self.status = "in_progress"
            out.append(self._event(ResponseInProgressEvent, "response.in_progress", response=self.response()))
        elif kind == "raw_response" and event.get("event_type") == TEXT_DELTA:
            out += self._delta(event)
        elif kind == "run_item" and event.get("name") == "message_output_created":
            if not self.open:  # a message whose text was not streamed
                out += self._open(None)
            self.text = [event.get("content") or ""]
            out += self._close()
        elif kind in ("stream_complete", "error"):
            out += self._end(event)
        return out

    def _event(self, cls: type, kind: str, **fields: Any) -> Any:
        self.sequence += 1
        return cls(type=kind, sequence_number=self.sequence, **fields)

    def _where(self) -> dict:
        return {"item_id": self.output[-1].id, "output_index": len(self.output) - 1, "content_index": 0}

    @staticmethod
    def _message(item_id: str, text: str, status: str) -> ResponseOutputMessage:
        content = [ResponseOutputText(type="output_text", text=text, annotations=[], logprobs=[])]
        return ResponseOutputMessage(
            id=item_id, type="message", role="assistant", status=status, content=content
        )

    def _open(self, item_id: str | None) -> list[Any]:
        item_id = item_id or f"msg_{self.run.pk.hex[:24]}{len(self.output):08d}"
        started = ResponseOutputMessage(
            id=item_id, type="message", role="assistant", status="in_progress", content=[]
        )
        self.output.append(started)
        self.open, self.text = True, []
        part = ResponseOutputText(type="output_text", text="", annotations=[], logprobs=[])
        return [
            self._event(
                ResponseOutputItemAddedEvent,
                "response.output_item.added",
                item=started,
                output_index=len(self.output) - 1,
            ),
            self._event(
                ResponseContentPartAddedEvent, "response.content_part.added", part=part, **self._where()
            ),
        ]

    def _delta(self, event: dict) -> list[Any]:
        out = []
        item_id = event.get("item_id")
        if self.open and item_id and item_id != self.output[-1].id:
            out += self._close()
        if not self.open:
            out += self._open(item_id)
        self.text.append(event["delta"])
        out.append(
            self._event(
                ResponseTextDeltaEvent,
                "response.output_text.delta",
                delta=event["delta"],
                logprobs=[],
                **self._where(),
            )
        )
        return out

    def _close(self) -> list[Any]:
        text = "".join(self.text)
        item = self._message(self.output[-1].id, text, "completed")
        self.output[-1], self.open = item, False
        where = self._where()
        return [
            self._event(ResponseTextDoneEvent, "response.output_text.done", text=text, logprobs=[], **where),
            self._event(
                ResponseContentPartDoneEvent, "response.content_part.done", part=item.content[0], **where
            ),
            self._event(
                ResponseOutputItemDoneEvent,
                "response.output_item.done",
                item=item,
                output_index=where["output_index"],
            ),
        ]

    def _end(self, event: dict) -> list[Any]:
        out = self._close() if self.open else []
        if event["type"] == "error":
            self.status = "failed"
            code = "rate_limit_exceeded" if event.get("code") == "model_rate_limited" else "server_error"
            self.error = ResponseError(code=code, message=f"{event.get('code')}: {event.get('message')}")
            return [*out, self._event(ResponseFailedEvent, "response.failed", response=self.response())]
        self.usage = usage_of(event.get("usage") or {})
        if event.get("status") == "cancelled":
            self.status = "cancelled"
            return [
                *out,
                self._event(ResponseIncompleteEvent, "response.incomplete", response=self.response()),
            ]
        self.status = "completed"
        return [*out, self._event(ResponseCompletedEvent, "response.completed", response=self.response())]


def sse_frame(event: Any) -> bytes:
    return (
        f"event: {event.type}\ndata: ".encode() + event.model_dump_json(exclude_unset=True).encode() + b"\n\n"
    )
