"""Admin for staff: research reports rendered as sanitized HTML, and the documents corpus."""

from django.contrib import admin
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from agents_app.rendering import render_markdown

from .models import Document, ResearchReport
from .search import EVERY_DOCUMENT, documents_search

# Styles live in a stylesheet: the site's Content-Security-Policy blocks inline `style=`.
ADMIN_CSS = {"all": ["admin/research_app/research.css"]}


@admin.register(ResearchReport)
class ResearchReportAdmin(admin.ModelAdmin):
    class Media:
        css = ADMIN_CSS

    list_display = ["__str__", "owner", "status", "searches", "source_count", "created_at"]
    list_filter = ["status", ("owner", admin.RelatedOnlyFieldListFilter), "created_at"]
    list_select_related = ["owner", "run"]
    search_fields = ["query"]
    raw_id_fields = ["run", "owner"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "run",
        "owner",
        "query",
        "status",
        "short_summary",
        "rendered_report",
        "plan_table",
        "sources_list",
        "search_results_table",
        "follow_ups",
        "error",
        "trace_id",
        "created_at",
        "finished_at",
    ]
    fields = readonly_fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        # Reports are history; staff read and delete them.
        return False

    @admin.display(description="searches")
    def searches(self, obj):
        return len(obj.plan or [])

    @admin.display(description="sources")
    def source_count(self, obj):
        return len(obj.sources or [])

    @admin.display(description="report")
    def rendered_report(self, obj):
        # render_markdown sanitizes with an allow-list, so the result is safe to mark as such.
        return format_html(
            "<div class='research-rendered'>{}</div>", mark_safe(render_markdown(obj.markdown_report))
        )

    @admin.display(description="plan")
    def plan_table(self, obj):
        rows = format_html_join(
            "",
            "<li><strong>{}</strong> — {}</li>",
            ((p.get("query"), p.get("reason")) for p in obj.plan or []),
        )
        return format_html("<ol class='research-list'>{}</ol>", rows) if obj.plan else "—"

    @admin.display(description="sources")
    def sources_list(self, obj):
        rows = format_html_join(
            "", "<li>{} <code>{}</code></li>", ((s.get("title"), s.get("source")) for s in obj.sources or [])
        )
        return format_html("<ol class='research-list'>{}</ol>", rows) if obj.sources else "—"

    @admin.display(description="search results")
    def search_results_table(self, obj):
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    r.get("query"),
                    r.get("status"),
                    ", ".join(s.get("title") or "" for s in r.get("sources") or []) or r.get("error") or "—",
                    (r.get("summary") or "")[:300],
                )
                for r in obj.search_results or []
            ),
        )
        head = "<tr><th>query</th><th>status</th><th>sources</th><th>summary</th></tr>"
        return format_html("<table>{}{}</table>", mark_safe(head), rows) if obj.search_results else "—"

    @admin.display(description="follow-up questions")
    def follow_ups(self, obj):
        rows = format_html_join("", "<li>{}</li>", ((q,) for q in obj.follow_up_questions or []))
        return format_html("<ul class='research-list'>{}</ul>", rows) if obj.follow_up_questions else "—"


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    class Media:
        css = ADMIN_CSS

    list_display = ["title", "source", "size", "added_by", "shared", "updated_at"]
    list_editable = ["shared"]
    list_filter = ["shared"]
    list_select_related = ["added_by"]
    search_fields = ["title", "source"]
    raw_id_fields = ["added_by"]
    date_hierarchy = "created_at"
    readonly_fields = ["rendered_body", "created_at", "updated_at"]
    fields = ["title", "source", "body", "added_by", "shared", "rendered_body", "created_at", "updated_at"]

    @admin.display(description="size (bytes)")
    def size(self, obj):
        return len(obj.body.encode("utf-8"))

    @admin.display(description="preview")
    def rendered_body(self, obj):
        return format_html("<div class='research-rendered'>{}</div>", mark_safe(render_markdown(obj.body)))

    def get_search_results(self, request, queryset, search_term):
        """Title/source substring matches plus the full-text index's hits for the body."""
        queryset, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        if search_term.strip():
            ids = [hit.document_id for hit in documents_search(search_term, 200, EVERY_DOCUMENT)]
            queryset |= self.model.objects.filter(pk__in=ids)
        return queryset, may_have_duplicates

    def save_model(self, request, obj, form, change):
        if not change and obj.added_by_id is None:
            obj.added_by = request.user
        super().save_model(request, obj, form, change)
