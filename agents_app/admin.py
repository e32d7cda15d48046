"""Admin for support staff: every conversation, run and stream event, read-only where it is history."""

import json

from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.core.paginator import Paginator
from django.forms.models import BaseInlineFormSet
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import format_html

from traces_app.models import Trace

from .admin_approvals import ApprovalAdmin  # noqa: F401  (registered there)
from .admin_timeline import build_rows
from .admin_usage import UsageDayAdmin, UserQuotaAdmin  # noqa: F401  (registered there)
from .errors import RunNotActive
from .models import Conversation, ConversationItem, Run, RunEvent
from .runs.cancel import cancel_run_from_sync

# The styles of pretty_json and the run timeline: a file, as the CSP allows no inline styles.
ADMIN_CSS = {"all": ["admin/agents_app/timeline.css"]}


def pretty_json(value) -> str:
    return format_html("<pre class='pretty-json'>{}</pre>", json.dumps(value, indent=2, ensure_ascii=False))


class PaginatedInlineFormSet(BaseInlineFormSet):
    """Shows one page of a large child table; the page comes from `?<prefix>_page=N`."""

    per_page = 50
    request = None

    def get_queryset(self):
        if not hasattr(self, "_page_queryset"):
            page_param = f"{self.prefix}_page"
            number = self.request.GET.get(page_param, 1) if self.request else 1
            self.paginator = Paginator(super().get_queryset(), self.per_page)
            self.page = self.paginator.get_page(number)
            self.page_param = page_param
            self._page_queryset = self.page.object_list
        return self._page_queryset


class ReadOnlyInline(admin.TabularInline):
    formset = PaginatedInlineFormSet
    extra = 0
    can_delete = False
    template = "admin/agents_app/paginated_tabular.html"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_formset(self, request, obj=None, **kwargs):
        formset = super().get_formset(request, obj, **kwargs)
        formset.request = request
        return formset


class ConversationItemInline(ReadOnlyInline):
    model = ConversationItem
    fields = ["id", "kind", "content", "created_at"]
    readonly_fields = fields

    @admin.display(description="type")
    def kind(self, obj):
        return obj.data.get("type") or obj.data.get("role") or "item"

    @admin.display(description="data")
    def content(self, obj):
        return pretty_json(obj.data)


class RunInlineForConversation(ReadOnlyInline):
    model = Run
    fields = ["id", "status", "created_at", "total_tokens"]
    readonly_fields = fields
    show_change_link = True


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["__str__", "agent", "owner", "session_key", "created_at", "updated_at"]
    list_filter = ["agent", "created_at"]
    list_select_related = ["owner"]
    search_fields = ["id", "title", "session_key", "owner__username"]
    raw_id_fields = ["owner"]
    readonly_fields = ["id", "created_at", "updated_at"]
    date_hierarchy = "created_at"
    inlines = [RunInlineForConversation, ConversationItemInline]

    class Media:
        css = ADMIN_CSS


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = [
        "short_id",
        "agent",
        "owner",
        "status",
        "error_code",
        "created_at",
        "duration_display",
        "total_tokens",
        "input_preview",
    ]
    # error_code tells an upstream limit or outage (model_*) from a fault of this server.
    list_filter = [
        "status",
        "error_code",
        "agent",
        "provider",
        ("owner", admin.RelatedOnlyFieldListFilter),
        "created_at",
    ]
    list_select_related = ["owner", "conversation"]
    search_fields = ["id", "input", "final_output", "error", "owner__username"]
    raw_id_fields = ["owner", "conversation"]
    date_hierarchy = "created_at"
    actions = ["cancel_runs"]
    readonly_fields = [
        "id",
        "owner",
        "agent",
        "conversation",
        "status",
        "input_pretty",
        "final_output_pretty",
        "error",
        "error_code",
        "provider",
        "model",
        "response_id",
        "requests",
        "input_tokens",
        "output_tokens",
        "total_tokens",
        "current_turn",
        "on_disconnect",
        "created_at",
        "started_at",
        "finished_at",
        "heartbeat_at",
        "duration_display",
        "cancel_requested_at",
        "cancel_mode",
        "worker_channel",
        "trace_link",
        "timeline",
    ]
    # The event timeline (last) has a fieldset of its own and the page's full width.
    fieldsets = [(None, {"fields": readonly_fields[:-1]}), ("Events", {"fields": ["timeline"]})]

    class Media:
        css = ADMIN_CSS

    def has_add_permission(self, request):
        return False

    @admin.display(description="id", ordering="id")
    def short_id(self, obj):
        return str(obj.pk)[:8]

    @admin.display(description="duration (s)")
    def duration_display(self, obj):
        return None if obj.duration is None else round(obj.duration, 2)

    @admin.display(description="input")
    def input_preview(self, obj):
        text = obj.input if isinstance(obj.input, str) else json.dumps(obj.input, ensure_ascii=False)
        return text[:80]

    @admin.display(description="input")
    def input_pretty(self, obj):
        return pretty_json(obj.input)

    @admin.display(description="final output")
    def final_output_pretty(self, obj):
        return pretty_json(obj.final_output)

    @admin.display(description="trace")
    def trace_link(self, obj):
        if not Trace.objects.filter(pk=obj.trace_id).exists():
            return "not stored (tracing off, or still being written)"
        url = reverse("admin:traces_app_trace_change", args=[quote(obj.trace_id)])
        return format_html('<a href="{}">the trace: every agent, model call and tool, timed</a>', url)

    @admin.display(description="timeline")
    def timeline(self, obj):
        events = list(obj.events.order_by("seq").values_list("seq", "type", "created_at", "data"))
        context = {
            "rows": build_rows(events),
            "event_count": len(events),
            "events_url": reverse("admin:agents_app_runevent_changelist") + f"?run={obj.pk}",
            "replay_url": reverse("run-replay", args=[obj.pk]),
        }
        return render_to_string("admin/agents_app/run_timeline.html", context)

    @admin.action(description="Cancel selected active runs")
    def cancel_runs(self, request, queryset):
        cancelled = 0
        for run in queryset.filter(status__in=Run.ACTIVE):
            try:
                cancel_run_from_sync(run)
            except RunNotActive:
                continue  # it ended meanwhile
            cancelled += 1
        self.message_user(request, f"Cancel requested for {cancelled} run(s).", messages.SUCCESS)


@admin.register(RunEvent)
class RunEventAdmin(admin.ModelAdmin):
    list_display = ["run", "seq", "type", "created_at"]
    list_filter = ["type"]
    list_select_related = ["run"]
    raw_id_fields = ["run"]
    search_fields = ["run__id"]
    readonly_fields = ["run", "seq", "type", "data", "created_at"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
