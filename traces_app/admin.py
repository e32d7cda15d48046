"""Traces for staff: a list (filter by agent, user, errors, duration) and a trace's page, whose
span tree is drawn as a timeline (bars by start and duration, errors marked)."""

from datetime import timedelta

from django.contrib import admin
from django.db.models import DurationField, ExpressionWrapper, F
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import format_html

from .models import Span, Trace

TIMELINE_WIDTH = 600  # pixels of the bars' area


class DurationFilter(admin.SimpleListFilter):
    title = "duration"
    parameter_name = "duration"
    BOUNDS = {
        "lt1": (None, 1000),
        "1to10": (1000, 10_000),
        "10to60": (10_000, 60_000),
        "gt60": (60_000, None),
    }

    def lookups(self, request, model_admin):
        return [
            ("lt1", "under 1 s"),
            ("1to10", "1 to 10 s"),
            ("10to60", "10 s to 1 min"),
            ("gt60", "over 1 min"),
        ]

    def queryset(self, request, queryset):
        if self.value() not in self.BOUNDS:
            return queryset
        low, high = self.BOUNDS[self.value()]
        if low is not None:
            queryset = queryset.filter(duration__gte=timedelta(milliseconds=low))
        return queryset if high is None else queryset.filter(duration__lt=timedelta(milliseconds=high))


class ErrorFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("ok", "no errors"), ("error", "with errors")]

    def queryset(self, request, queryset):
        if self.value() == "error":
            return queryset.filter(error_count__gt=0)
        if self.value() == "ok":
            return queryset.filter(error_count=0)
        return queryset


def timeline_rows(trace: Trace) -> list[dict]:
    """The spans in tree order (each after its parent, siblings by start), with their name's
    indent and their bar's offset and width."""
    spans = list(trace.spans.order_by("started_at", "id"))
    children: dict[str, list[Span]] = {}
    ids = {span.id for span in spans}
    for span in spans:
        children.setdefault(span.parent_id if span.parent_id in ids else "", []).append(span)
    start = trace.started_at
    total = max(trace.duration_ms or 0, 1)
    rows: list[dict] = []

    def visit(parent: str, depth: int) -> None:
        for span in children.get(parent, []):
            offset = (span.started_at - start).total_seconds() * 1000 if span.started_at and start else 0
            rows.append(
                {
                    "span": span,
                    "indent": depth * 12,
                    "offset_ms": round(offset),
                    "x": round(offset / total * TIMELINE_WIDTH),
                    "width": max(2, round((span.duration_ms or 0) / total * TIMELINE_WIDTH)),
                }
            )
            visit(span.id, depth + 1)

    visit("", 0)
    return rows


@admin.register(Trace)
class TraceAdmin(admin.ModelAdmin):
    list_display = [
        "workflow_name",
        "agent",
        "user",
        "started_at",
        "duration_text",
        "span_count",
        "error_count",
    ]
    list_filter = [
        "run__agent",
        ErrorFilter,
        DurationFilter,
        ("run__owner", admin.RelatedOnlyFieldListFilter),
    ]
    list_select_related = ["run", "run__owner"]
    search_fields = ["id", "workflow_name", "group_id", "run__owner__username"]
    date_hierarchy = "started_at"
    fields = [
        "id",
        "workflow_name",
        "run_link",
        "group_id",
        "started_at",
        "duration_text",
        "metadata",
        "timeline",
    ]
    readonly_fields = fields

    class Media:
        css = {"all": ["admin/agents_app/timeline.css", "admin/traces_app/trace.css"]}

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        duration = ExpressionWrapper(F("ended_at") - F("started_at"), output_field=DurationField())
        return super().get_queryset(request).annotate(duration=duration)

    @admin.display(description="agent", ordering="run__agent")
    def agent(self, trace: Trace) -> str | None:
        return trace.run.agent if trace.run else None

    @admin.display(description="user", ordering="run__owner__username")
    def user(self, trace: Trace) -> str | None:
        return str(trace.run.owner) if trace.run else None

    @admin.display(description="duration", ordering="duration")
    def duration_text(self, trace: Trace) -> str | None:
        return None if trace.duration_ms is None else f"{trace.duration_ms / 1000:.2f} s"

    @admin.display(description="run")
    def run_link(self, trace: Trace) -> str | None:
        if trace.run_id is None:
            return None
        url = reverse("admin:agents_app_run_change", args=[trace.run_id])
        return format_html('<a href="{}">{}</a>', url, trace.run_id)

    @admin.display(description="spans")
    def timeline(self, trace: Trace) -> str:
        rows = timeline_rows(trace)
        context = {"rows": rows, "width": TIMELINE_WIDTH, "trace": trace}
        return render_to_string("admin/traces_app/timeline.html", context)
