"""The Agents SDK's traces into this database: an SDK `TracingExporter` behind the SDK's own
`BatchTraceProcessor`, which queues traces and spans and writes them from its thread in batches,
off the event loop. Installed with `set_trace_processors` (`install`): export to OpenAI stays off
unless AGENTS_TRACE_EXPORT adds the SDK's default processor."""

import json
import uuid
from datetime import datetime
from typing import Any

from agents import set_trace_processors, set_tracing_disabled, set_tracing_export_api_key
from agents.tracing import Span as SdkSpan
from agents.tracing import Trace as SdkTrace
from agents.tracing.processor_interface import TracingExporter
from agents.tracing.processors import BatchTraceProcessor, default_processor
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max, Min, OuterRef, Subquery
from django.db.models.functions import Coalesce

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
        """One transaction per batch, three statements whatever its size: the new traces, the
        spans, and the sums of every trace the batch touched, computed by the database from its
        stored spans (a trace's spans often come in several batches: the SDK queues a trace when
        it starts and each span when it ends)."""
        exported = [(item, item.export()) for item in items]  # each builds its dict anew: once
        traces = [_trace_row(e) for i, e in exported if isinstance(i, SdkTrace) and e]
        spans = [_span_row(e) for i, e in exported if isinstance(i, SdkSpan) and e]
        touched = {trace.id for trace in traces} | {span.trace_id for span in spans}
        try:
            with transaction.atomic():
                Trace.objects.bulk_create(traces, ignore_conflicts=True)
                Span.objects.bulk_create(spans, ignore_conflicts=True)
                if touched:
                    Trace.objects.filter(pk__in=touched).update(**SUMS)
        finally:
            connection.close()  # this is the processor's thread: give the connection back


def _of_spans(aggregate: Any, **condition: Any) -> Subquery:
    spans = Span.objects.filter(trace_id=OuterRef("pk"), **condition).order_by()
    return Subquery(spans.values("trace_id").annotate(value=aggregate).values("value"))


# A trace's times and counts over all its stored spans.
SUMS = {
    "started_at": _of_spans(Min("started_at")),
    "ended_at": _of_spans(Max("ended_at")),
    "span_count": Coalesce(_of_spans(Count("id")), 0),
    "error_count": Coalesce(_of_spans(Count("id"), error__isnull=False), 0),
}


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
