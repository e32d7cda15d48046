"""The Agents SDK's traces into this database: an SDK `TracingExporter` behind the SDK's own
`BatchTraceProcessor`, which queues traces and spans and writes them from its thread in batches,
off the event loop. Installed with `set_trace_processors` (`install`): export to OpenAI stays off
unless AGENTS_TRACE_EXPORT adds the SDK's default processor."""

import json
import uuid
from collections import defaultdict
from datetime import datetime
from typing import Any

from agents import set_trace_processors, set_tracing_disabled, set_tracing_export_api_key
from agents.tracing import Span as SdkSpan
from agents.tracing import Trace as SdkTrace
from agents.tracing.processor_interface import TracingExporter
from agents.tracing.processors import BatchTraceProcessor, default_processor
from django.conf import settings
from django.db import connection, transaction

from agents_app.text import storable

from .models import Span, Trace

MAX_LIST_ITEMS = 50
MAX_DATA_CHARS = 64_000  # a span's whole data, as JSON


def _cut(value: Any, limit: int) -> Any:
    """`value` with strings past `limit` characters and lists past MAX_LIST_ITEMS items cut, and
    text no database stores replaced (one odd span would fail its batch and lose every other
    run's spans with it)."""
    if isinstance(value, str):
        value = storable(value)
        return value if len(value) <= limit else value[:limit] + f"… ({len(value) - limit} more characters)"
    if isinstance(value, dict):
        return {storable(str(k)): _cut(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [_cut(v, limit) for v in value[:MAX_LIST_ITEMS]]
        return items + (
            [f"… ({len(value) - MAX_LIST_ITEMS} more items)"] if len(value) > MAX_LIST_ITEMS else []
        )
    if value is None or isinstance(value, bool | int | float):
        return value
    return _cut(str(value), limit)


def _data(span_data: dict) -> dict:
    data = _cut(span_data, settings.AGENTS_TRACE_MAX_FIELD_CHARS)
    text = json.dumps(data, ensure_ascii=False, default=str)
    if len(text) > MAX_DATA_CHARS:
        return {"type": span_data.get("type"), "truncated": text[:MAX_DATA_CHARS]}
    return data


def _name(data: dict) -> str:
    kind = data.get("type", "")
    if kind == "handoff":
        return f"{data.get('from_agent')} → {data.get('to_agent')}"
    if kind == "generation":
        return str(data.get("model") or "model")
    if kind == "response":
        return str(data.get("response_id") or "response")
    return str(data.get("name") or kind)


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _ms(start: datetime | None, end: datetime | None) -> int | None:
    return round((end - start).total_seconds() * 1000) if start and end else None


def _span_row(exported: dict) -> Span:
    data = exported.get("span_data") or {}
    started, ended = _time(exported.get("started_at")), _time(exported.get("ended_at"))
    usage = data.get("usage") or {}
    return Span(
        id=exported["id"],
        trace_id=exported["trace_id"],
        parent_id=exported.get("parent_id") or "",
        span_type=str(data.get("type", ""))[:32],
        name=storable(_name(data))[:200],
        started_at=started,
        ended_at=ended,
        duration_ms=_ms(started, ended),
        error=_cut(exported.get("error"), settings.AGENTS_TRACE_MAX_FIELD_CHARS),
        data=_data(data),
        input_tokens=usage.get("input_tokens"),
        output_tokens=usage.get("output_tokens"),
    )


def _trace_row(exported: dict) -> Trace:
    metadata = exported.get("metadata") or {}
    return Trace(
        id=exported["id"],
        workflow_name=storable(str(exported.get("workflow_name") or ""))[:200],
        group_id=storable(str(exported.get("group_id") or ""))[:200],
        metadata=_cut(metadata, settings.AGENTS_TRACE_MAX_FIELD_CHARS),
        run_id=_uuid(metadata.get("run_id")),
    )


def _uuid(value: Any) -> uuid.UUID | None:
    """A run's id; None for anything else (a trace opened by other code may say what it likes)."""
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


class DatabaseExporter(TracingExporter):
    def export(self, items: list[SdkTrace | SdkSpan[Any]]) -> None:
        """One transaction per batch, three or four statements whatever its size: the new traces
        (summed over their spans in the batch), the spans, and for traces stored by an earlier
        batch, their sums read and written back (this thread is their only writer)."""
        exported = [(item, item.export()) for item in items]  # each builds its dict anew: once
        new = {row.id: row for row in (_trace_row(e) for i, e in exported if isinstance(i, SdkTrace) and e)}
        spans = [_span_row(e) for i, e in exported if isinstance(i, SdkSpan) and e]
        by_trace: dict[str, list[Span]] = defaultdict(list)
        for span in spans:
            by_trace[span.trace_id].append(span)
        try:
            with transaction.atomic():
                earlier = [trace_id for trace_id in by_trace if trace_id not in new]
                stored = Trace.objects.only("id", *SUMS).in_bulk(earlier) if earlier else {}
                for trace in [*new.values(), *stored.values()]:
                    _add(trace, by_trace.get(trace.id, []))
                Trace.objects.bulk_create(new.values(), ignore_conflicts=True)
                Span.objects.bulk_create(spans, ignore_conflicts=True)
                if stored:
                    Trace.objects.bulk_update(stored.values(), SUMS)
        finally:
            connection.close()  # this is the processor's thread: give the connection back


SUMS = ["started_at", "ended_at", "duration_ms", "span_count", "error_count"]


def _add(trace: Trace, spans: list[Span]) -> None:
    """`spans` added to the trace's sums: its span and error counts, its start and end."""
    starts = [span.started_at for span in spans if span.started_at] + [trace.started_at]
    ends = [span.ended_at for span in spans if span.ended_at] + [trace.ended_at]
    trace.started_at = min((t for t in starts if t), default=None)
    trace.ended_at = max((t for t in ends if t), default=None)
    trace.duration_ms = _ms(trace.started_at, trace.ended_at)
    trace.span_count += len(spans)
    trace.error_count += sum(1 for span in spans if span.error is not None)


# The processors installed, by the configuration they were made for: each engine start (one per
# event loop: a serving process has one, tests many) installs them, but only a new configuration
# replaces them (and the replaced batch processor's thread is shut down).
_installed: dict = {}


def install() -> None:
    """The SDK's trace processors: this database's (AGENTS_TRACES), OpenAI's (AGENTS_TRACE_EXPORT)."""
    wanted = (settings.AGENTS_TRACES, settings.AGENTS_TRACE_FLUSH_INTERVAL, settings.AGENTS_TRACE_EXPORT)
    if _installed.get("config") == wanted:
        return
    processors = []
    if settings.AGENTS_TRACES:
        processors.append(
            BatchTraceProcessor(DatabaseExporter(), schedule_delay=settings.AGENTS_TRACE_FLUSH_INTERVAL)
        )
    if settings.AGENTS_TRACE_EXPORT:
        if settings.OPENAI_API_KEY:
            set_tracing_export_api_key(settings.OPENAI_API_KEY)
        processors.append(default_processor())
    set_trace_processors(processors)
    set_tracing_disabled(not processors)
    for replaced in _installed.get("processors", []):
        if replaced not in processors:
            replaced.shutdown()  # its last batch written
    _installed.update(config=wanted, processors=processors)
