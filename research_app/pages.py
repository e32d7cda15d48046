"""The research page: ask, watch the stages live, read the report; the list of past reports."""

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render

from agents_app.rendering import render_markdown

from .models import ResearchReport
from .selectors import reports_for

ACTIVE = (ResearchReport.Status.QUEUED, ResearchReport.Status.RUNNING)


def _link(source: dict) -> str | None:
    url = source.get("source") or ""
    return url if url.startswith(("https://", "http://")) else None


@login_required
def research(request, pk=None):
    reports = reports_for(request.user)
    report = None
    if pk is not None:
        report = reports.filter(pk=pk).first()
        if report is None:
            raise Http404("no such report")
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
                "active": report.status in ACTIVE,
            }
        },
    }
    return render(request, "web/research.html", context)
