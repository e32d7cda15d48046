"""The research page: ask, watch the stages live, read the report; the list of past reports."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, render

from agents_app.rendering import render_markdown

from .selectors import reports_for


def _link(source: dict) -> str | None:
    url = source.get("source") or ""
    return url if url.startswith(("https://", "http://")) else None


@login_required
def research(request, pk=None):
    reports = reports_for(request.user)
    report = None if pk is None else get_object_or_404(reports, pk=pk)
    context = {
        "nav": "research",
        "reports": reports.select_related(None).only("id", "query", "status", "created_at")[:50],
        "report": report,
        "report_html": render_markdown(report.markdown_report) if report else "",
        "sources": [{**s, "link": _link(s)} for s in report.sources] if report else [],
        "config": {
            "report": report
            and {
                "id": report.pk,
                "run_id": str(report.run_id),
                "status": report.status,
                "active": report.run.is_active,
            }
        },
    }
    return render(request, "web/research.html", context)
