"""Build Responses API objects and the exact stream-event sequence the real API sends for them.

The one builder of Responses stream events: the offline model and the tests' fake OpenAI stream
a whole response with `stream_events`; the `/v1/responses` adapter builds a run's events one by
one with `StreamEvents` as it replays the run's journal."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseFailedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseFunctionToolCall,
    ResponseIncompleteEvent,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseQueuedEvent,
    ResponseStreamEvent,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
    ResponseUsage,
)
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

# The stream events that carry text or arguments as the model produces them.
TEXT_DELTA = "response.output_text.delta"
REFUSAL_DELTA = "response.refusal.delta"
REASONING_SUMMARY_DELTA = "response.reasoning_summary_text.delta"
REASONING_TEXT_DELTA = "response.reasoning_text.delta"
ARGUMENTS_DELTA = "response.function_call_arguments.delta"
TEXT_DELTAS = frozenset({TEXT_DELTA, REFUSAL_DELTA})  # the answer's text
REASONING_DELTAS = frozenset({REASONING_SUMMARY_DELTA, REASONING_TEXT_DELTA})
DELTAS = TEXT_DELTAS | REASONING_DELTAS | {ARGUMENTS_DELTA}

OutputItem = ResponseOutputMessage | ResponseFunctionToolCall


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def text_chunks(text: str) -> list[str]:
    """Split text into word-sized deltas whose concatenation is exactly `text`."""
    chunks = []
    for piece in re.findall(r"^\s+|\S+\s*", text):
        # Long unbroken runs (URLs, compact JSON) still stream in pieces.
        chunks.extend(piece[i : i + 24] for i in range(0, len(piece), 24))
    return chunks


def message_item(text: str, item_id: str | None = None, status: str = "completed") -> ResponseOutputMessage:
    content = [ResponseOutputText(type="output_text", text=text, annotations=[], logprobs=[])]
    return ResponseOutputMessage(
        id=item_id or new_id("msg"), type="message", role="assistant", status=status, content=content
    )


def function_call_item(name: str, arguments: dict[str, Any] | str) -> ResponseFunctionToolCall:
    return ResponseFunctionToolCall(
        id=new_id("fc"),
        call_id=new_id("call"),
        type="function_call",
        name=name,
        arguments=arguments if isinstance(arguments, str) else json.dumps(arguments),
        status="completed",
    )


def usage(input_tokens: int, output_tokens: int, total_tokens: int | None = None) -> ResponseUsage:
    return ResponseUsage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens if total_tokens is None else total_tokens,
        input_tokens_details=InputTokensDetails(cached_tokens=0, cache_write_tokens=0),
        output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
    )


def build_response(model: str, output: list[OutputItem], response_usage: ResponseUsage | None) -> Response:
    return Response(
        id=new_id("resp"),
        object="response",
        created_at=time.time(),
        model=model,
        status="completed",
        output=output,
        tool_choice="auto",
        tools=[],
        top_p=None,
        parallel_tool_calls=True,
        usage=response_usage,
    )


RESPONSE_EVENTS: dict[str, type] = {
    "response.created": ResponseCreatedEvent,
    "response.queued": ResponseQueuedEvent,
    "response.in_progress": ResponseInProgressEvent,
    "response.completed": ResponseCompletedEvent,
    "response.incomplete": ResponseIncompleteEvent,
    "response.failed": ResponseFailedEvent,
}


class StreamEvents:
    """Builds a Responses stream's events in their order, numbering them from 0 as the API does.

    Messages have one text part (content index 0), as every message built here does."""

    def __init__(self) -> None:
        self.sequence = -1  # of the last event built

    def _event(self, cls: type, kind: str, **fields: Any) -> Any:
        self.sequence += 1
        return cls(type=kind, sequence_number=self.sequence, **fields)

    def _item_added(self, item: OutputItem, index: int) -> ResponseStreamEvent:
        return self._event(
            ResponseOutputItemAddedEvent, "response.output_item.added", item=item, output_index=index
        )

    def _item_done(self, item: OutputItem, index: int) -> ResponseStreamEvent:
        return self._event(
            ResponseOutputItemDoneEvent, "response.output_item.done", item=item, output_index=index
        )

    def response_event(self, kind: str, response: Response) -> ResponseStreamEvent:
        """`response.created`, `.queued`, `.in_progress`, `.completed`, `.incomplete` or `.failed`."""
        return self._event(RESPONSE_EVENTS[kind], kind, response=response)

    def message_added(self, item_id: str, index: int) -> list[ResponseStreamEvent]:
        started = ResponseOutputMessage(
            id=item_id, type="message", role="assistant", status="in_progress", content=[]
        )
        part = ResponseOutputText(type="output_text", text="", annotations=[], logprobs=[])
        return [
            self._item_added(started, index),
            self._event(
                ResponseContentPartAddedEvent,
                "response.content_part.added",
                part=part,
                **_where(item_id, index),
            ),
        ]

    def text_delta(self, item_id: str, index: int, delta: str) -> ResponseStreamEvent:
        return self._event(
            ResponseTextDeltaEvent, TEXT_DELTA, delta=delta, logprobs=[], **_where(item_id, index)
        )

    def message_done(self, item: ResponseOutputMessage, index: int) -> list[ResponseStreamEvent]:
        part = item.content[0]
        where = _where(item.id, index)
        return [
            self._event(
                ResponseTextDoneEvent, "response.output_text.done", text=part.text, logprobs=[], **where
            ),
            self._event(ResponseContentPartDoneEvent, "response.content_part.done", part=part, **where),
            self._item_done(item, index),
        ]

    def function_call(self, item: ResponseFunctionToolCall, index: int) -> list[ResponseStreamEvent]:
        """A whole call: added, its arguments in one delta, done."""
        started = item.model_copy(update={"arguments": "", "status": "in_progress"})
        where = {"item_id": item.id or item.call_id, "output_index": index}
        return [
            self._item_added(started, index),
            self._event(
                ResponseFunctionCallArgumentsDeltaEvent, ARGUMENTS_DELTA, delta=item.arguments, **where
            ),
            # The API names the function here too, a field the `openai` type does not declare.
            self._event(
                ResponseFunctionCallArgumentsDoneEvent,
                "response.function_call_arguments.done",
                name=item.name,
                arguments=item.arguments,
                **where,
            ),
            self._item_done(item, index),
        ]


def _where(item_id: str, index: int) -> dict[str, Any]:
    return {"item_id": item_id, "output_index": index, "content_index": 0}


def stream_events(
    response: Response, chunker: Callable[[str], list[str]] = text_chunks
) -> Iterator[ResponseStreamEvent]:
    """The events the Responses API streams for `response`: text arrives as `chunker`'s deltas."""
    events = StreamEvents()
    in_progress = response.model_copy(update={"output": [], "status": "in_progress", "usage": None})
    yield events.response_event("response.created", in_progress)
    yield events.response_event("response.in_progress", in_progress)
    for index, item in enumerate(response.output):
        if isinstance(item, ResponseFunctionToolCall):
            yield from events.function_call(item, index)
            continue
        yield from events.message_added(item.id, index)
        for delta in chunker(item.content[0].text):
            yield events.text_delta(item.id, index, delta)
        yield from events.message_done(item, index)
    yield events.response_event("response.completed", response)
