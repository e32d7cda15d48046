"""Research REST API: start research, read reports, add documents, the reference `/research`, bad input."""

import pytest
from django.test import AsyncClient

from agents_app.models import Run
from research_app.models import Document, ResearchReport

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def corpus(db):
    Document.objects.create(
        title="Volcanoes",
        source="corpus:volcanoes.md",
        body="Volcanoes erupt lava. Hotspots build islands.",
        shared=True,
    )


async def wait_for_report(report_id: int) -> ResearchReport:
    report = await ResearchReport.objects.select_related("run").aget(pk=report_id)
    from agents_app.runs.engine import get_engine

    task = get_engine().executor.tasks.get(str(report.run_id))
    if task is not None:
        await task
    return await ResearchReport.objects.aget(pk=report_id)


async def test_start_research_returns_ids_and_stream_urls(alice, bob, api_for, corpus):
    response = await api_for(alice).post("/api/research/", {"query": "How do volcanoes build islands?"})
    assert response.status_code == 202
    body = response.json()
    run_id, report_id = body["run_id"], body["report_id"]
    assert body["stream_url"] == f"/api/runs/{run_id}/stream"
    assert body["websocket_url"] == "/ws/agents/research/"
    assert body["report_url"] == f"/api/research/{report_id}/"
    report = await wait_for_report(report_id)
    assert report.status == "completed" and str(report.run_id) == run_id

    detail = (await api_for(alice).get(f"/api/research/{report_id}/")).json()
    assert detail["status"] == "completed" and detail["markdown_report"] == report.markdown_report
    assert detail["plan"] and detail["search_results"] and detail["sources"][0]["title"] == "Volcanoes"
    listing = (await api_for(alice).get("/api/research/")).json()
    assert [r["id"] for r in listing["results"]] == [report_id]
    assert (await api_for(alice).get("/api/research/?status=completed")).json()["count"] == 1
    assert (await api_for(alice).get("/api/research/?status=done")).status_code == 400
    # Reports are private to their owner.
    assert (await api_for(bob).get(f"/api/research/{report_id}/")).status_code == 404
    assert (await api_for(bob).get("/api/research/")).json()["results"] == []
    assert (await api_for(None).get("/api/research/")).status_code == 401


async def test_reference_research_endpoint(alice, api_for, corpus):
    response = await api_for(alice).post("/research?query=How do volcanoes build islands?")
    assert response.status_code == 200
    body = response.json()
    assert {"short_summary", "markdown_report", "follow_up_questions"} <= set(body)
    assert "Volcanoes" in body["markdown_report"] and body["follow_up_questions"]
    assert (await ResearchReport.objects.aget(pk=body["report_id"])).status == "completed"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/research/", {"query": ""}),
        ("/api/research/", {"query": "   "}),
        ("/api/research/", {}),
        ("/api/research/", {"query": 42}),
        ("/api/research/", {"query": "x" * 2001}),
        ("/research", None),
        ("/research?query=" + "y" * 2001, None),
    ],
)
async def test_bad_queries_are_rejected_and_start_nothing(alice, api_for, path, body):
    response = await api_for(alice).post(path, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and "query" in error["message"]
    assert await Run.objects.acount() == 0 and await ResearchReport.objects.acount() == 0


async def test_add_document_as_json(alice, api_for):
    response = await api_for(alice).post(
        "/api/research/documents/",
        {"title": "Tides", "body": "The Moon pulls the oceans.", "source": "notes"},
    )
    assert response.status_code == 201, response.json()
    assert response.json()["title"] == "Tides" and response.json()["size"] == 26
    document = await Document.objects.aget()
    assert document.added_by_id == alice.pk and document.source == "notes"
    search = (await api_for(alice).get("/api/research/documents/?q=moon+oceans")).json()
    assert [r["title"] for r in search["results"]] == ["Tides"]
    assert "**Moon**" in search["results"][0]["snippet"]


async def test_upload_markdown_file(alice):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client = AsyncClient()
    upload = SimpleUploadedFile("reefs.md", b"# Coral reefs\n\nReefs grow in warm, shallow seas.\n")
    response = await client.post(
        "/api/research/documents/", {"file": upload}, headers={"Authorization": f"Token {alice.token}"}
    )
    assert response.status_code == 201, response.json()
    document = await Document.objects.aget()
    assert document.title == "Coral reefs" and document.source == "reefs.md"


@pytest.mark.parametrize(
    ("name", "content", "status", "code"),
    [
        ("photo.png", b"\x89PNG\r\n", 415, "unsupported_file_type"),
        ("script.py", b"print(1)", 415, "unsupported_file_type"),
        ("big.md", b"a" * 2001, 413, "too_large"),
        ("latin1.txt", "café".encode("latin-1"), 400, "invalid"),
        ("empty.md", b"   \n", 400, "invalid"),
    ],
)
async def test_bad_uploads_are_rejected(alice, settings, name, content, status, code):
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.RESEARCH_MAX_DOCUMENT_BYTES = 2000
    client = AsyncClient()
    response = await client.post(
        "/api/research/documents/",
        {"file": SimpleUploadedFile(name, content)},
        headers={"Authorization": f"Token {alice.token}"},
    )
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert await Document.objects.acount() == 0


async def test_bad_json_documents_are_rejected(alice, api_for, settings):
    settings.RESEARCH_MAX_DOCUMENT_BYTES = 2000
    api = api_for(alice)
    cases = [
        ({"title": "Big", "body": "é" * 1001}, 413, "too_large"),  # 2002 bytes in UTF-8
        ({"title": "Huge", "body": "x" * 200_000}, 413, "too_large"),  # refused from Content-Length alone
        ({"title": "Empty", "body": ""}, 400, "invalid"),
        ({"title": "", "body": " \u3000\ufeff\x1e "}, 400, "invalid"),  # white space only
        ({"title": "", "body": "x", "shared": 0}, 400, "invalid"),  # a boolean is true or false
        ({"title": 7, "body": "x"}, 400, "invalid"),  # text is a string
        ({"title": "No body"}, 400, "invalid"),
        ({}, 400, "invalid"),
    ]
    for body, status, code in cases:
        response = await api.post("/api/research/documents/", body)
        assert response.status_code == status, (body.keys(), response.json())
        assert response.json()["error"]["code"] == code
    response = await api.post("/api/research/documents/", raw="[1, 2")
    assert response.status_code == 400 and "error" in response.json()
    assert (
        await api_for(None).post("/api/research/documents/", {"title": "t", "body": "b"})
    ).status_code == 401
    assert await Document.objects.acount() == 0
    # No title and no heading: the body's first words name it.
    untitled = await api.post("/api/research/documents/", {"body": "no heading   here"})
    assert untitled.status_code == 201 and untitled.json()["title"] == "no heading here"


async def test_reference_research_says_502_when_the_model_provider_fails(
    alice, api_for, start_fake, use_fake, settings
):
    use_fake(start_fake(fail=(429, "rate_limit_exceeded")))
    settings.OPENAI_MAX_RETRIES = 0
    response = await api_for(alice).post("/research?query=volcanoes")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "model_rate_limited"
