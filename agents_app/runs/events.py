"""The wire events of the protocol (docs/events.md): translated from Agents SDK stream events,
and encoded once, as stored and as sent."""

import json
from typing import Any

import orjson
from agents import ItemHelpers
from agents.stream_events import AgentUpdatedStreamEvent, RawResponsesStreamEvent, RunItemStreamEvent

from ..providers.responses_stream import DELTAS

# Raw model events worth sending: the ones that carry text or arguments as they are produced.
# The rest (created, in_progress, part added...) only restate what run_item events say.
RAW_EVENT_TYPES = DELTAS | {"response.completed"}
TERMINAL_TYPES = frozenset({"stream_complete", "error"})
# A run pausing for approval of its tool calls (not an end: it resumes once they are decided).
PAUSE_TYPE = "approval_required"
# A run's first output, which its client waits for: the journal writes it without delay.
FIRST_OUTPUT_TYPES = frozenset({"raw_response", "run_item"})

# The fallback encoder, built once: json.dumps with options builds a new encoder per call.
_encode_std = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def encode(event: dict) -> str:
    """Compact JSON text of one event, as stored and as sent.

    orjson does it ten times faster than the standard encoder (every event of every run passes
    here) and writes strict JSON (NaN and infinities become null, which browsers can parse).
    What orjson refuses (keys that are not strings, integers beyond 64 bits, lone surrogates)
    goes to the standard encoder."""
    try:
        return orjson.dumps(event).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return _encode_std(event)


def translate(event: Any, full: bool = False) -> dict | None:
    """One SDK stream event -> one wire event body (without seq/run_id), or None to skip it.

    `full`: every raw model event, as the reference server forwards them (a run started with
    `events: "full"`), not only those that carry text or arguments."""
    if isinstance(event, RawResponsesStreamEvent):
        return _raw_full(event.data) if full else _raw(event.data)
    if isinstance(event, RunItemStreamEvent):
        return _run_item(event)
    if isinstance(event, AgentUpdatedStreamEvent):
        return {"type": "agent_updated", "agent_name": event.new_agent.name}
    return None


def _raw(data: Any) -> dict | None:
    event_type = getattr(data, "type", None)
    if event_type not in RAW_EVENT_TYPES:
        return None
    if event_type == "response.completed":
        response = data.response
        body = {"type": "raw_response", "event_type": event_type, "response_id": response.id}
        return _with_usage(body, response)
    return {
        "type": "raw_response",
        "event_type": event_type,
        "delta": data.delta,
        "item_id": getattr(data, "item_id", None),
        "output_index": getattr(data, "output_index", None),
    }


def _with_usage(body: dict, response: Any) -> dict:
    """A model call's usage on its `response.completed` event: what a run had used is known from
    its journal, even if its process dies before it ends (the stale sweep counts it)."""
    usage = getattr(response, "usage", None)
    if usage is not None:
        body["usage"] = {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens,
        }
    return body


# Fields of raw events that say where they belong or what they carry (never whole objects).
RAW_FIELDS = (
    "delta",
    "item_id",
    "output_index",
    "content_index",
    "summary_index",
    "text",
    "arguments",
    "name",
)


def _raw_full(data: Any) -> dict | None:
    event_type = getattr(data, "type", None)
    if not isinstance(event_type, str):
        return None
    body: dict[str, Any] = {"type": "raw_response", "event_type": event_type}
    for name in RAW_FIELDS:
        value = getattr(data, name, None)
        if isinstance(value, str | int):
            body[name] = value
    response = getattr(data, "response", None)
    if response is not None:  # response.created / in_progress / completed...
        body["response_id"] = getattr(response, "id", None)
        body["status"] = getattr(response, "status", None)
        if event_type == "response.completed":
            _with_usage(body, response)
    item = getattr(data, "item", None)
    if item is not None:  # response.output_item.added / done
        body["item"] = _jsonable(item)
    return body


def _raw_field(raw: Any, name: str) -> Any:
    if isinstance(raw, dict):
        return raw.get(name)
    return getattr(raw, name, None)


def _run_item(event: RunItemStreamEvent) -> dict:
    item = event.item
    body: dict[str, Any] = {
        "type": "run_item",
        "name": event.name,
        "item_type": item.type,
        "agent_name": item.agent.name if getattr(item, "agent", None) else None,
    }
    raw = item.raw_item
    if item.type == "tool_call_item":
        body["tool_name"] = _raw_field(raw, "name") or _raw_field(raw, "type")
        body["tool_arguments"] = _raw_field(raw, "arguments")
        body["call_id"] = _raw_field(raw, "call_id")
    elif item.type == "tool_call_output_item":
        body["output"] = _jsonable(item.output)
        body["call_id"] = _raw_field(raw, "call_id")
    elif item.type == "handoff_call_item":
        body["tool_name"] = _raw_field(raw, "name")
        body["tool_arguments"] = _raw_field(raw, "arguments")
        body["call_id"] = _raw_field(raw, "call_id")
    elif item.type == "handoff_output_item":
        body["source_agent"] = item.source_agent.name
        body["target_agent"] = item.target_agent.name
    elif item.type == "message_output_item":
        body["content"] = ItemHelpers.text_message_output(item)
    elif item.type == "reasoning_item":
        summary = _raw_field(raw, "summary") or []
        body["content"] = "\n".join(_raw_field(s, "text") or "" for s in summary)
    return body


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


def final_output_json(value: Any) -> Any:
    """Structured outputs (pydantic models) become plain JSON for storage and the wire."""
    return _jsonable(value)
