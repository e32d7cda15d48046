"""Admin: reports rendered as sanitized HTML with plan and sources; filters and search; documents."""

import re

import pytest
from django.contrib.auth import get_user_model

from agents_app.models import Run
from agents_app.rendering import render_markdown
from research_app.models import Document, ResearchReport

pytestmark = pytest.mark.django_db

HOSTILE_MARKDOWN = """# Findings

Safe **bold** text and [a good link](https://example.com/page).

<script>alert("owned")</script>

[click me](javascript:alert('x')) <a href="javascript:steal()">raw link</a>
<img src="x" onerror="alert(1)"> <iframe src="https://evil.example"></iframe>
"""


@pytest.fixture
def staff_client(client):
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)
    return client


@pytest.fixture
def report(alice):
    run = Run.objects.create(owner=alice, agent="research", input="volcano islands", status="completed")
    return ResearchReport.objects.create(
        run=run,
        owner=alice,
        query="volcano islands",
        status="completed",
        plan=[{"query": "volcano islands", "reason": "the <b>whole</b> question"}],
        sources=[{"document_id": 1, "title": "Volcanoes <i>", "source": "corpus:volcanoes.md"}],
        search_results=[{"query": "volcano islands", "status": "completed", "sources": [], "summary": "s"}],
        short_summary="Short.",
        markdown_report=HOSTILE_MARKDOWN,
        follow_up_questions=["What next?"],
    )


def assert_sanitized(html: str) -> None:
    # The admin page has its own <script src=...> tags; the report's markup shows as text, never as tags.
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html
    assert not re.search(r"<a [^>]*javascript:", html)
    assert "<img" not in html and "<iframe" not in html and "&lt;iframe" in html


def test_render_markdown_sanitizes():
    html = render_markdown(HOSTILE_MARKDOWN)
    assert_sanitized(html)
    assert "<h1>Findings</h1>" in html and "<strong>bold</strong>" in html
    assert 'href="https://example.com/page"' in html and "click me" in html


def test_report_change_page_renders_sanitized_markdown(staff_client, report):
    response = staff_client.get(f"/admin/research_app/researchreport/{report.pk}/change/")
    assert response.status_code == 200
    html = response.content.decode()
    assert_sanitized(html)
    assert "<h1>Findings</h1>" in html and 'href="https://example.com/page"' in html
    # Plan and sources are shown, escaped.
    assert "the &lt;b&gt;whole&lt;/b&gt; question" in html
    assert "Volcanoes &lt;i&gt;" in html and "corpus:volcanoes.md" in html
    assert "What next?" in html


def test_report_changelist_filters_and_search(staff_client, report, bob):
    other_run = Run.objects.create(owner=bob, agent="research", input="coffee", status="failed")
    ResearchReport.objects.create(run=other_run, owner=bob, query="coffee roasting", status="failed")
    base = "/admin/research_app/researchreport/"
    assert "coffee roasting" in staff_client.get(base).content.decode()
    filtered = staff_client.get(base + "?status__exact=completed").content.decode()
    assert "volcano islands" in filtered and "coffee roasting" not in filtered
    by_user = staff_client.get(base + f"?owner__id__exact={report.owner_id}").content.decode()
    assert "volcano islands" in by_user and "coffee roasting" not in by_user
    searched = staff_client.get(base + "?q=coffee").content.decode()
    assert "coffee roasting" in searched and "volcano islands" not in searched
    dated = staff_client.get(base + f"?created_at__year={report.created_at.year}").content.decode()
    assert "volcano islands" in dated


def test_document_admin_search_uses_the_full_text_index(staff_client):
    Document.objects.create(title="Volcanoes", body="Lava and magma erupt.", source="corpus:volcanoes.md")
    Document.objects.create(title="Coffee", body="Roasted beans.", source="corpus:coffee.md", added_by=None)
    page = staff_client.get("/admin/research_app/document/?q=erupting").content.decode()
    assert "Volcanoes" in page and "corpus:coffee.md" not in page
    doc = Document.objects.get(title="Volcanoes")
    change = staff_client.get(f"/admin/research_app/document/{doc.pk}/change/")
    assert change.status_code == 200
    added = staff_client.post(
        "/admin/research_app/document/add/", {"title": "Tea", "source": "notes", "body": "Green tea."}
    )
    assert added.status_code == 302
    assert Document.objects.get(title="Tea").added_by.username == "root"
