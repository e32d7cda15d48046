"""Admin for usage and quotas: each user's usage by day and agent, with a chart of the tokens
per day of what the list shows (its filters apply), and users' own daily token quotas."""

from django.contrib import admin
from django.db.models import Sum

from .models import UsageDay, UserQuota

CHART_DAYS = 60  # the chart's bars: the latest days of the filtered list
CHART_HEIGHT = 120  # pixels


def token_chart(queryset) -> dict:
    """Bars of total tokens per day (latest CHART_DAYS), as sizes for the SVG template."""
    per_day = list(
        queryset.order_by().values("day").annotate(tokens=Sum("total_tokens")).order_by("-day")[:CHART_DAYS]
    )[::-1]
    peak = max((row["tokens"] for row in per_day), default=0) or 1
    bars = []
    for index, row in enumerate(per_day):
        height = max(1, round(row["tokens"] / peak * CHART_HEIGHT)) if row["tokens"] else 0
        bars.append({"x": index * 12, "y": CHART_HEIGHT - height, "height": height, **row})
    return {"bars": bars, "width": max(12, len(bars) * 12), "height": CHART_HEIGHT, "peak": peak}


@admin.register(UsageDay)
class UsageDayAdmin(admin.ModelAdmin):
    list_display = ["day", "user", "agent", "runs", "requests", "input_tokens", "output_tokens"]
    list_display += ["total_tokens"]
    list_filter = ["agent", ("user", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["user"]
    search_fields = ["user__username", "agent"]
    date_hierarchy = "day"
    change_list_template = "admin/agents_app/usageday/change_list.html"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # kept by the run engine

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is not None:
            response.context_data["chart"] = token_chart(changelist.queryset)
        return response


@admin.register(UserQuota)
class UserQuotaAdmin(admin.ModelAdmin):
    list_display = ["user", "daily_tokens"]
    list_select_related = ["user"]
    search_fields = ["user__username"]
    raw_id_fields = ["user"]
