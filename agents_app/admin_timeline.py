"""A run's events as the admin's timeline: thousands of deltas fold into a handful of rows."""

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .providers.responses_stream import (
    ARGUMENTS_DELTA,
    REASONING_SUMMARY_DELTA,
    REASONING_TEXT_DELTA,
    REFUSAL_DELTA,
    TEXT_DELTA,
)

# Deltas of one item fold into one row, labelled with what the assembled text is.
DELTA_KINDS = {
    TEXT_DELTA: "text",
    REFUSAL_DELTA: "refusal",
    REASONING_SUMMARY_DELTA: "reasoning",
    REASONING_TEXT_DELTA: "reasoning",
    ARGUMENTS_DELTA: "arguments",
}
CALL_KINDS = {"tool_called": "tool call", "handoff_requested": "handoff requested"}
CLIP_AT = 500  # characters of a tool output or final output shown; the raw JSON has them all
RAW_CAP = 50  # events of a folded row kept for its raw JSON


@dataclass
class Row:
    kind: str
    first_seq: int
    last_seq: int
    offset: float | None  # seconds since the run's first event
    title: str = ""
    text: str = ""
    notes: list[str] = field(default_factory=list)
    flag: str = ""  # "error" or "warning": the row is marked
    events: list[dict] = field(default_factory=list)
    count: int = 0
    folded: bool = False  # a row of deltas
    call_seq: int | None = None  # a call that took the row of its arguments' deltas, after other events
    parts: list[str] = field(default_factory=list)  # deltas, while the row is folding

    def add(self, seq: int, event: dict) -> None:
        self.last_seq = seq
        self.count += 1
        if len(self.events) < RAW_CAP:
            self.events.append(event)

    @property
    def seq_label(self) -> str:
        label = str(self.first_seq)
        if self.last_seq != self.first_seq:
            label += f"–{self.last_seq}"  # noqa: RUF001 (a range: an en dash)
        return label if self.call_seq is None else f"{label}, {self.call_seq}"

    @property
    def offset_label(self) -> str:
        return "" if self.offset is None else f"+{self.offset:.3f} s"

    @property
    def note(self) -> str:
        return " · ".join(self.notes)

    @property
    def raw(self) -> str:
        """One event pretty-printed; a folded row's events one per line."""
        if len(self.events) == 1:
            return json.dumps(self.events[0], indent=2, ensure_ascii=False)
        return "\n".join(json.dumps(event, ensure_ascii=False) for event in self.events)

    @property
    def more(self) -> int:
        return self.count - len(self.events)


def build_rows(events: Iterable[tuple[int, str, datetime | None, dict]]) -> list[Row]:
    """`(seq, type, created_at, data)` in seq order -> timeline rows in the order they started."""
    rows: list[Row] = []
    folding: dict[tuple, Row] = {}  # deltas of one item, until an event of another kind comes
    start = None
    for seq, type_, created_at, data in events:
        start = start or created_at
        offset = (created_at - start).total_seconds() if start and created_at else None
        event_type = data.get("event_type")
        if event_type in DELTA_KINDS:
            key = (event_type, data.get("item_id"), data.get("output_index"))
            row = folding.get(key)
            if row is None:
                row = Row(DELTA_KINDS[event_type], seq, seq, offset, folded=True)
                row.title = data.get("item_id") or ""
                folding[key] = row
                rows.append(row)
            row.add(seq, data)
            row.parts.append(str(data.get("delta") or ""))
            continue
        for row in folding.values():
            _close_fold(row)
        folding.clear()
        row = _describe(data.get("type") or type_, data, Row("", seq, seq, offset), rows)
        row.add(seq, data)
        if row.kind in CALL_KINDS.values() and _fold_arguments_into(rows, row, data.get("tool_arguments")):
            continue
        rows.append(row)
    for row in folding.values():
        _close_fold(row)
    return rows


def _close_fold(row: Row) -> None:
    row.text = "".join(row.parts)
    row.parts = []
    row.notes.append(f"{_deltas(row.count)}, seq {row.seq_label}")


def _deltas(count: int) -> str:
    return "1 delta" if count == 1 else f"{count} deltas"


def _fold_arguments_into(rows: list[Row], call: Row, arguments: Any) -> bool:
    """A call whose arguments were streamed takes the place of their row; False if none was."""
    for row in reversed(rows):
        if row.folded and row.kind == "arguments" and row.text == arguments:
            row.kind, row.title, row.text, row.folded = call.kind, call.title, call.text, False
            row.notes = [*call.notes, f"arguments in {_deltas(row.count)}"]
            if call.first_seq == row.last_seq + 1:
                row.last_seq = call.first_seq
            else:  # events came between them (a response.completed)
                row.call_seq = call.first_seq
            row.events.append(call.events[0])
            row.count += 1
            return True
    return False


def _tool_name(rows: list[Row], call_id: str | None) -> str:
    """The name of the tool called as `call_id` (a tool output may not say it)."""
    for row in reversed(rows):
        if row.kind == "tool call" and row.events[-1].get("call_id") == call_id:
            return row.title
    return call_id or ""


def _show_text(row: Row, rows: list[Row], kind: str, text: Any) -> None:
    """Show `text`, or point to the row of `kind` deltas above that shows it already."""
    for streamed in reversed(rows):
        if streamed.folded and streamed.kind == kind and streamed.text == text:
            row.notes.append(f"the text of seq {streamed.seq_label}")
            return
    _clip(row, text)


def _clip(row: Row, value: Any) -> None:
    if value is None:
        return
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if len(text) > CLIP_AT:
        row.notes.append(f"{len(text):,} chars, the rest under raw")
        text = text[:CLIP_AT] + "…"
    row.text = text


def _describe(type_: str, data: dict, row: Row, rows: list[Row]) -> Row:
    """Fill in one event's row (kind label, title, text, notes); `rows` are the rows before it."""
    row.kind = type_
    if type_ == "run_item":
        return _describe_item(data, row, rows)
    if type_ == "raw_response":
        row.kind = "response" if data.get("event_type") == "response.completed" else "raw"
        row.title = data.get("response_id") or data.get("event_type") or ""
    elif type_ == "run_queued":
        row.kind, row.title = "queued", f"position {data.get('position')}"
        row.notes.append(f"waiting for {data.get('waiting_for')}")
    elif type_ == "run_started":
        row.kind = "started"
        row.title = " · ".join(str(data[k]) for k in ("agent", "provider", "model") if data.get(k))
        if data.get("conversation_id"):
            row.notes.append(f"conversation {data['conversation_id']}")
    elif type_ == "agent_updated":
        row.kind, row.title = "agent", data.get("agent_name") or ""
    elif type_ == "research_progress":
        _describe_progress(data, row)
    elif type_ == "approval_required":
        calls = data.get("approvals") or []
        row.kind, row.flag = "awaits approval", "warning"
        row.title = ", ".join(str(call.get("tool_name")) for call in calls)
        _clip(row, [{k: call.get(k) for k in ("tool_name", "arguments", "approval_id")} for call in calls])
    elif type_ == "approval_decided":
        row.kind, row.title = "decision", f"{data.get('decision')} {data.get('tool_name') or ''}".strip()
        row.flag = "" if data.get("decision") == "approved" else "warning"
        row.notes.append(f"by {data.get('decided_by') or 'no one'} via {data.get('surface')}")
        if data.get("reason"):
            row.text = str(data["reason"])
    elif type_ == "stream_complete":
        row.kind, row.title = "end", data.get("status") or ""
        row.flag = "" if data.get("status") == "completed" else "warning"
        _show_text(row, rows, "text", data.get("final_output"))
        if usage := data.get("usage"):
            row.notes.append(_usage(usage))
    elif type_ == "error":
        row.title, row.text, row.flag = data.get("code") or "", data.get("message") or "", "error"
    return row


def _describe_item(data: dict, row: Row, rows: list[Row]) -> Row:
    name = data.get("name") or ""
    row.kind = name or "item"
    if data.get("agent_name"):
        row.notes.append(data["agent_name"])
    if name in CALL_KINDS:
        row.kind, row.title = CALL_KINDS[name], data.get("tool_name") or ""
        _clip(row, data.get("tool_arguments") or "")
    elif name == "tool_output":
        row.kind, row.title = "tool output", data.get("tool_name") or _tool_name(rows, data.get("call_id"))
        _clip(row, data.get("output"))
    elif name in ("handoff_occured", "handoff_occurred"):
        row.kind, row.title = "handoff", f"{data.get('source_agent')} -> {data.get('target_agent')}"
    elif name in ("message_output_created", "reasoning_item_created"):
        row.kind = "message" if name == "message_output_created" else "reasoning"
        _show_text(row, rows, "text" if row.kind == "message" else "reasoning", data.get("content"))
    else:
        row.title = data.get("item_type") or ""
    return row


def _describe_progress(data: dict, row: Row) -> None:
    stage, done, total = data.get("stage") or "", data.get("completed"), data.get("total")
    row.kind, row.title = "research", f"{stage} {done} of {total}" if total else stage
    if search := data.get("search"):
        index = search.get("index")
        number = f" {index + 1}" if isinstance(index, int) else ""
        row.text = f"search{number}: {search.get('query')} ({search.get('status')})"
        if search.get("status") == "failed":
            row.flag = "error"
            row.notes.append("search failed")
            row.text += f"\n{search.get('error') or ''}".rstrip()
    elif data.get("plan") and not done:
        plan = [step.get("query") if isinstance(step, dict) else step for step in data["plan"]]
        row.text = "\n".join(f"{number}. {query}" for number, query in enumerate(plan, 1))
    if stage == "writing" and data.get("sources"):
        row.notes.append(f"{len(data['sources'])} sources")


def _usage(usage: dict) -> str:
    tokens = [usage.get(k, 0) for k in ("input_tokens", "output_tokens", "total_tokens")]
    return f"{usage.get('requests', 0)} requests, tokens {tokens[0]} in + {tokens[1]} out = {tokens[2]}"
