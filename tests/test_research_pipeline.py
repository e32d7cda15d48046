"""The research pipeline end to end: offline model, fake OpenAI server, failures, no hits, commands."""

import io
import re

import pytest
from django.core.management import call_command

from agents_app.models import Run, RunEvent
from agents_app.runs.read import wait_for_end
from research_app import ai_agents
from research_app.models import Document, ResearchReport
from research_app.services import research_start
from tests.fake_openai import FakeOpenAI

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = "How do volcanoes and plate tectonics shape islands?"
SMALL_CORPUS = [
    (
        "Volcanoes",
        "Volcanoes erupt magma as lava and ash. Most volcanoes form at plate boundaries where plates "
        "pull apart or sink. Hotspot volcanoes such as Hawaii build islands far from plate edges.",
    ),
    (
        "Plate tectonics",
        "The lithosphere is broken into plates that move a few centimetres a year. Plate tectonics "
        "explains earthquakes, volcanoes and mountain ranges. Subduction builds volcanic island arcs.",
    ),
    (
        "Island formation",
        "Oceanic islands form when repeated eruptions pile lava above the sea. Coral reefs "
        "grow around volcanic islands and remain as atolls after the islands sink.",
    ),
    ("Coffee", "Coffee is brewed from roasted seeds. Espresso uses pressure."),
    ("Sourdough", "Sourdough bread rises with wild yeast and lactic acid bacteria."),
]


@pytest.fixture
def corpus(db):
    return [
        Document.objects.create(
            title=title, body=body, source=f"corpus:{title.lower().replace(' ', '-')}.md", shared=True
        )
        for title, body in SMALL_CORPUS
    ]


async def research(user, query=QUESTION):
    run, report = await research_start(user=user, query=query)
    run = await wait_for_end(run)
    await report.arefresh_from_db()
    events = [e.data async for e in RunEvent.objects.filter(run=run).order_by("seq")]
    return run, report, events


def cited_titles(markdown: str) -> set[str]:
    return set(re.findall(r"^\d+\. \*\*(.+?)\*\*", markdown, re.MULTILINE))


async def test_offline_pipeline_writes_a_cited_report(alice, corpus):
    run, report, events = await research(alice)

    assert run.status == Run.Status.COMPLETED and run.agent == "research"
    assert report.status == ResearchReport.Status.COMPLETED and report.finished_at
    # A real plan: several searches built from the question's words.
    assert len(report.plan) >= 3
    assert all(
        set(p["query"].split()) <= {"volcanoes", "plate", "tectonics", "shape", "islands"}
        for p in report.plan
    )
    assert len(report.search_results) == len(report.plan)
    assert all(r["status"] == "completed" for r in report.search_results)
    found = {s["title"] for r in report.search_results for s in r["sources"]}
    assert {"Volcanoes", "Plate tectonics", "Island formation"} <= found
    assert "Coffee" not in found and "Sourdough" not in found
    # The report cites documents the searches returned, and quotes them.
    cited = cited_titles(report.markdown_report)
    assert cited and cited <= found
    assert "[1]" in report.markdown_report and "corpus:" in report.markdown_report
    assert "Hotspot volcanoes such as Hawaii build islands" in report.markdown_report
    assert report.short_summary and len(report.follow_up_questions) >= 2
    assert {s["title"] for s in report.sources} == found
    # The run's output is the reference shape, plus the report id.
    assert run.final_output["markdown_report"] == report.markdown_report
    assert run.final_output["follow_up_questions"] == report.follow_up_questions
    assert run.final_output["report_id"] == report.pk
    # Each agent's own events are in the run's stream: the search tool was really called.
    calls = [e for e in events if e["type"] == "run_item" and e["name"] == "tool_called"]
    assert len(calls) == len(report.plan) and {c["tool_name"] for c in calls} == {"search_documents"}
    agents = {e["agent_name"] for e in events if e["type"] == "agent_updated"}
    assert agents == {"Research planner", "Research searcher", "Research writer"}
    assert run.total_tokens > 0 and run.requests >= 2 + 2 * len(report.plan)


async def test_no_hits_says_so(alice, corpus):
    _, report, _ = await research(alice, "Explain quantum chromodynamics gluons")
    assert report.status == ResearchReport.Status.COMPLETED
    assert "No documents in the local corpus matched" in report.markdown_report
    assert report.short_summary.startswith("No documents")
    assert report.sources == [] and cited_titles(report.markdown_report) == set()


async def test_failed_search_is_reported_and_skipped(alice, corpus, monkeypatch):
    real = ai_agents.documents_search

    def flaky(query, limit=5, user_id=None):
        if query.startswith("plate"):
            raise RuntimeError("search backend exploded")
        return real(query, limit, user_id)

    monkeypatch.setattr(ai_agents, "documents_search", flaky)
    run, report, events = await research(alice)
    assert run.status == Run.Status.COMPLETED and report.status == ResearchReport.Status.COMPLETED
    failed = [r for r in report.search_results if r["status"] == "failed"]
    assert failed and all("exploded" in r["error"] for r in failed)
    assert any(r["status"] == "completed" and r["sources"] for r in report.search_results)
    progress = [e for e in events if e["type"] == "research_progress" and "search" in e]
    assert any(e["search"]["status"] == "failed" and "exploded" in e["search"]["error"] for e in progress)
    assert "failed, skipped" in report.markdown_report


async def test_an_input_with_no_question_is_refused_before_any_run(alice, corpus, settings):
    """The research agent's `input_problem`: every surface refuses it (400), no run or report
    is made (it was a failed run, and a 500 on /run)."""
    from agents_app.errors import ServiceError
    from agents_app.registry import get_spec
    from agents_app.runs.start import RunRequest, start_run

    request = RunRequest(user=alice, spec=get_spec("research"), input=[{"role": "assistant", "content": "x"}])
    with pytest.raises(ServiceError, match="question is empty"):
        await start_run(request)
    settings.RESEARCH_MAX_QUERY_CHARS = 10
    with pytest.raises(ServiceError, match="longer than 10 characters"):
        await start_run(RunRequest(user=alice, spec=get_spec("research"), input="x" * 11))
    assert await Run.objects.acount() == 0 and await ResearchReport.objects.acount() == 0


@pytest.mark.parametrize("api", ["chat_completions", "responses"])
async def test_pipeline_through_the_fake_openai_server(alice, corpus, settings, api):
    """The structured-output path: plans and reports parsed from real JSON-schema responses."""
    with FakeOpenAI(tool_calls={"search_documents": {"query": "volcanic islands"}}) as fake:
        settings.AGENTS_MODEL_PROVIDER = "openai"
        settings.OPENAI_API_KEY = "test-key"
        settings.OPENAI_BASE_URL = fake.base_url
        settings.OPENAI_USE_RESPONSES = api == "responses"
        settings.RESEARCH_SEARCH_BACKEND = "local"
        run, report, _ = await research(alice)
        bodies = [r.body for r in fake.requests]

    assert run.status == Run.Status.COMPLETED, run.error
    assert run.provider == "openai" and report.status == ResearchReport.Status.COMPLETED
    assert 1 <= len(report.plan) <= 5 and all(p["query"] and p["reason"] for p in report.plan)
    assert all(r["status"] == "completed" for r in report.search_results)
    assert {"Volcanoes", "Island formation"} <= {
        s["title"] for r in report.search_results for s in r["sources"]
    }
    assert report.markdown_report and report.short_summary and report.follow_up_questions
    schemas = [
        (b.get("text") or {}).get("format") if api == "responses" else b.get("response_format")
        for b in bodies
    ]
    structured = [s for s in schemas if s and s.get("type") == "json_schema"]
    assert len(structured) == 2  # planner and writer
    # The writer was given the searches' sources.
    assert "Island formation" in str(bodies[-1])


async def test_hosted_web_search_with_openai_responses(alice, settings):
    with FakeOpenAI() as fake:
        settings.AGENTS_MODEL_PROVIDER = "openai"
        settings.OPENAI_API_KEY = "test-key"
        settings.OPENAI_BASE_URL = fake.base_url
        settings.OPENAI_USE_RESPONSES = True
        assert ai_agents.search_backend() == "web"
        run, report, _ = await research(alice, "latest news on volcanoes")
        bodies = [r.body for r in fake.requests]
    assert run.status == Run.Status.COMPLETED, run.error
    search_requests = [b for b in bodies if any(t.get("type") == "web_search" for t in b.get("tools") or [])]
    assert len(search_requests) == len(report.plan)
    assert all(b["tool_choice"] == "required" for b in search_requests)


def test_load_documents_and_research_command(tmp_path, corpus):
    (tmp_path / "reefs.md").write_text("# Coral reefs\n\nCoral reefs fringe volcanic islands in warm seas.\n")
    (tmp_path / "notes.txt").write_text("Atolls are rings of coral around a sunken volcanic island.\n")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    out = io.StringIO()
    call_command("load_documents", str(tmp_path), stdout=out)
    assert "2 documents created" in out.getvalue()
    assert Document.objects.filter(title__in=["Coral reefs", "notes"]).count() == 2
    call_command("load_documents", str(tmp_path), stdout=out)
    assert Document.objects.count() == len(SMALL_CORPUS) + 2

    out, err = io.StringIO(), io.StringIO()
    call_command("research", QUESTION, stdout=out, stderr=err)
    assert "planning searches" in err.getvalue() and "writing the report" in err.getvalue()
    assert re.search(r"\[\d/\d\] .+: found ", err.getvalue())
    assert "## Sources" in out.getvalue() and "Follow-up questions:" in out.getvalue()
    assert ResearchReport.objects.get().status == "completed"


def test_demo_corpus_loads(db):
    out = io.StringIO()
    call_command("load_demo_corpus", stdout=out)
    assert Document.objects.count() >= 30
    assert not Document.objects.filter(source__icontains="readme").exists()
    call_command("load_demo_corpus", stdout=out)
    assert Document.objects.filter(source__startswith="corpus:").count() == Document.objects.count()
