"""Build Responses API objects and the exact stream-event sequence the real API sends for them."""

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
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseFunctionToolCall,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
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


def message_item(text: str) -> ResponseOutputMessage:
    return ResponseOutputMessage(
        id=new_id("msg"),
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[], logprobs=[])],
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


def usage(input_tokens: int, output_tokens: int) -> ResponseUsage:
    return ResponseUsage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
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


def stream_events(
    response: Response, chunker: Callable[[str], list[str]] = text_chunks
) -> Iterator[ResponseStreamEvent]:
    """The events the Responses API streams for `response`: text arrives as `chunker`'s deltas."""
    seq = iter(range(1_000_000))
    in_progress = response.model_copy(update={"output": [], "status": "in_progress", "usage": None})
    yield ResponseCreatedEvent(type="response.created", response=in_progress, sequence_number=next(seq))
    yield ResponseInProgressEvent(
        type="response.in_progress", response=in_progress, sequence_number=next(seq)
    )
    for index, item in enumerate(response.output):
        if isinstance(item, ResponseFunctionToolCall):
            started = item.model_copy(update={"arguments": "", "status": "in_progress"})
            yield ResponseOutputItemAddedEvent(
                type="response.output_item.added", item=started, output_index=index, sequence_number=next(seq)
            )
            yield ResponseFunctionCallArgumentsDeltaEvent(
                type="response.function_call_arguments.delta",
                item_id=item.id or item.call_id,
                output_index=index,
                delta=item.arguments,
                sequence_number=next(seq),
            )
            yield ResponseFunctionCallArgumentsDoneEvent.model_validate(
                {
                    "type": "response.function_call_arguments.done",
                    "item_id": item.id or item.call_id,
                    "output_index": index,
                    "name": item.name,
                    "arguments": item.arguments,
                    "sequence_number": next(seq),
                }
            )
        elif isinstance(item, ResponseOutputMessage):
            started = item.model_copy(update={"content": [], "status": "in_progress"})
            yield ResponseOutputItemAddedEvent(
                type="response.output_item.added", item=started, output_index=index, sequence_number=next(seq)
            )
            for content_index, part in enumerate(item.content):
                if not isinstance(part, ResponseOutputText):
                    continue
                where = {"item_id": item.id, "output_index": index, "content_index": content_index}
                yield ResponseContentPartAddedEvent(
                    type="response.content_part.added",
                    part=part.model_copy(update={"text": "", "annotations": [], "logprobs": []}),
                    sequence_number=next(seq),
                    **where,
                )
                for delta in chunker(part.text):
                    yield ResponseTextDeltaEvent(
                        type="response.output_text.delta",
                        delta=delta,
                        logprobs=[],
                        sequence_number=next(seq),
                        **where,
                    )
                yield ResponseTextDoneEvent(
                    type="response.output_text.done",
                    text=part.text,
                    logprobs=[],
                    sequence_number=next(seq),
                    **where,
                )
                yield ResponseContentPartDoneEvent(
                    type="response.content_part.done", part=part, sequence_number=next(seq), **where
                )
        yield ResponseOutputItemDoneEvent(
            type="response.output_item.done", item=item, output_index=index, sequence_number=next(seq)
        )
    yield ResponseCompletedEvent(type="response.completed", response=response, sequence_number=next(seq))
