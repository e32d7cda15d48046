"""Data that does not grow without bound (`manage.py prune`, docs/retention.md): the stream
events of runs finished longer ago than RETAIN_RUN_EVENTS_DAYS (each run keeps its summary and
its terminal event, so its result, usage and end stay, and a join of it still ends), traces older
than RETAIN_TRACES_DAYS and those of deleted runs, and, when RETAIN_IDLE_CONVERSATIONS_DAYS is
set, conversations idle that long (with their runs). Everything is deleted in batches of its own
short transaction, so no table stays locked for long; active runs are never touched."""

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from traces_app.models import Span, Trace

from .models import Conversation, Run, RunEvent
from .runs.events import TERMINAL_TYPES


@dataclass
class Pruned:
    events: int = 0
    traces: int = 0
    conversations: int = 0


def _cutoff(days: int) -> dt.datetime | None:
    return timezone.now() - dt.timedelta(days=days) if days > 0 else None


def _in_batches(ids: QuerySet, delete: Callable[[list], int], batch: int) -> int:
    """Delete what `ids` selects, `batch` at a time (each its own statement, in autocommit)."""
    total = 0
    while chunk := list(ids[:batch]):
        total += delete(chunk)
    return total


def prune(batch: int = 5_000, log: Callable[[str], None] = lambda _: None) -> Pruned:
    pruned = Pruned()
    events_before = _cutoff(settings.RETAIN_RUN_EVENTS_DAYS)
    if events_before is not None:
        old = RunEvent.objects.filter(run__finished_at__lt=events_before).exclude(type__in=TERMINAL_TYPES)
        pruned.events = _in_batches(old.values_list("pk", flat=True), _delete_events, batch)
        log(f"{pruned.events} events of runs finished before {events_before:%Y-%m-%d}")
    traces_before = _cutoff(settings.RETAIN_TRACES_DAYS)
    stale = Trace.objects.filter(run__isnull=False).exclude(run__in=Run.objects.all())
    if traces_before is not None:
        stale = stale | Trace.objects.filter(created_at__lt=traces_before)
    pruned.traces = _in_batches(stale.values_list("pk", flat=True), _delete_traces, batch)
    log(f"{pruned.traces} traces (older than the retention, or of deleted runs)")
    idle_before = _cutoff(settings.RETAIN_IDLE_CONVERSATIONS_DAYS)
    if idle_before is not None:
        idle = Conversation.objects.filter(updated_at__lt=idle_before).exclude(runs__status__in=Run.ACTIVE)
        pruned.conversations = _in_batches(
            idle.values_list("pk", flat=True).distinct(),
            lambda pks: _delete_conversations(pks, batch),
            max(1, batch // 100),
        )
        log(f"{pruned.conversations} conversations idle since before {idle_before:%Y-%m-%d}")
    return pruned


def _delete_events(pks: list) -> int:
    return RunEvent.objects.filter(pk__in=pks).delete()[0]


def _delete_traces(pks: list) -> int:
    Span.objects.filter(trace_id__in=pks).delete()
    return Trace.objects.filter(pk__in=pks).delete()[1].get(Trace._meta.label, 0)


def _delete_conversations(pks: list, batch: int) -> int:
    """Conversations with their runs: the runs' events first, in batches, then the rest."""
    events = RunEvent.objects.filter(run__conversation_id__in=pks).values_list("pk", flat=True)
    _in_batches(events, _delete_events, batch)
    return Conversation.objects.filter(pk__in=pks).delete()[1].get(Conversation._meta.label, 0)
