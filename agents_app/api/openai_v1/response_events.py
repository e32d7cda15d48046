"""A run as an OpenAI Response: its stream events (with `sequence_number`) and its state.

One run is one Response (`resp_<run id>`), whatever the agent did on the server: its tool calls
and handoffs are not output items (a client would take a `function_call` for its own tool to
run), its answer messages are. The translation is deterministic, so replaying a run's journal
from its first event gives the same events with the same sequence numbers: that is how
`starting_after` resumes a stream in any process, at any time.

A run that pauses for approval is an `incomplete` response while it waits (`response.incomplete`,
the reason and the calls in its metadata: `pause_metadata`); its calls are decided over REST, and
once the last is, the same response goes on (`response.in_progress`) to its end."""

import uuid
from typing import Any

from openai.types.responses import Response, ResponseError, ResponseOutputMessage, ResponseUsage

from ...models import Run
from ...providers.responses_stream import TEXT_DELTA, StreamEvents, message_item, usage

PREFIX = "resp_"
STATUS = {
    Run.Status.QUEUED: "queued",
    Run.Status.RUNNING: "in_progress",
    Run.Status.AWAITING_APPROVAL: "incomplete",
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


def pause_metadata(event: dict) -> dict[str, str]:
    """What a response (or chat completion) paused for approval says in its metadata (strings,
    as OpenAI's metadata holds): why it is incomplete, and where to decide its calls."""
    run_id = event["run_id"]
    return {
        "incomplete_reason": "approval_required",
        "run_id": run_id,
        "approval_ids": ",".join(call["approval_id"] for call in event.get("approvals") or ()),
        "approvals_url": f"/api/runs/{run_id}/approvals/",
    }


def usage_of(run_usage: dict) -> ResponseUsage:
    return usage(
        run_usage.get("input_tokens", 0), run_usage.get("output_tokens", 0), run_usage.get("total_tokens", 0)
    )


class ResponseTranslator:
    """Feed it a run's events in seq order; it returns the Responses stream events they make
    and knows the Response as it stands (`response()`)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.options = run.options or {}
        self.status = STATUS[run.status]
        self.output: list[ResponseOutputMessage] = []  # the messages done
        self.open_id: str | None = None  # of the message being written, after those
        self.text: list[str] = []  # of the open message
        self.usage: ResponseUsage | None = None
        self.error: ResponseError | None = None
        self.events = StreamEvents()
        self.created = False
        self.pause: dict[str, str] = {}  # while the run waits for approval: `pause_metadata`

    def response(self) -> Response:
        output = list(self.output)
        if self.open_id is not None:
            output.append(message_item("".join(self.text), self.open_id, "in_progress"))
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
            metadata={**(self.options.get("metadata") or {}), **self.pause},
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
            out.append(self._response_event("response.created"))
            if kind == "run_queued":
                out.append(self._response_event("response.queued"))
                return out
        if kind == "run_started":
            self.status = "in_progress"
            out.append(self._response_event("response.in_progress"))
        elif kind == "raw_response" and event.get("event_type") == TEXT_DELTA:
            out += self._delta(event)
        elif kind == "run_item" and event.get("name") == "message_output_created":
            if self.open_id is None:  # a message whose text was not streamed
                out += self._open(None)
            self.text = [event.get("content") or ""]
            out += self._close()
        elif kind == "approval_required":
            out += self._close() if self.open_id is not None else []
            self.status, self.pause = "incomplete", pause_metadata(event)
            out.append(self._response_event("response.incomplete"))
        elif kind == "approval_decided" and event.get("pending") == 0:
            self.status, self.pause = "in_progress", {}  # the run goes on
            out.append(self._response_event("response.in_progress"))
        elif kind in ("stream_complete", "error"):
            self.pause = {}
            out += self._end(event)
        return out

    def _response_event(self, kind: str) -> Any:
        return self.events.response_event(kind, self.response())

    def _open(self, item_id: str | None) -> list[Any]:
        self.open_id = item_id or f"msg_{self.run.pk.hex[:24]}{len(self.output):08d}"
        self.text = []
        return self.events.message_added(self.open_id, len(self.output))

    def _delta(self, event: dict) -> list[Any]:
        out = []
        item_id = event.get("item_id")
        if self.open_id is not None and item_id and item_id != self.open_id:
            out += self._close()
        if self.open_id is None:
            out += self._open(item_id)
        self.text.append(event["delta"])
        out.append(self.events.text_delta(self.open_id, len(self.output), event["delta"]))
        return out

    def _close(self) -> list[Any]:
        item = message_item("".join(self.text), self.open_id)
        self.output.append(item)
        self.open_id = None
        return self.events.message_done(item, len(self.output) - 1)

    def _end(self, event: dict) -> list[Any]:
        out = self._close() if self.open_id is not None else []
        if event["type"] == "error":
            self.status = "failed"
            code = "rate_limit_exceeded" if event.get("code") == "model_rate_limited" else "server_error"
            self.error = ResponseError(code=code, message=f"{event.get('code')}: {event.get('message')}")
            return [*out, self._response_event("response.failed")]
        self.usage = usage_of(event.get("usage") or {})
        if event.get("status") == "cancelled":
            self.status = "cancelled"
            return [*out, self._response_event("response.incomplete")]
        self.status = "completed"
        return [*out, self._response_event("response.completed")]


def sse_frame(event: Any) -> bytes:
    return (
        f"event: {event.type}\ndata: ".encode() + event.model_dump_json(exclude_unset=True).encode() + b"\n\n"
    )
