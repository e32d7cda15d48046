"""Documents belong to their uploader: another user neither lists, searches nor researches them,
unless staff share them (as the demo corpus is)."""

import pytest
from asgiref.sync import sync_to_async

from research_app.models import Document, ResearchReport
from research_app.search import EVERY_DOCUMENT, documents_search
from research_app.services import documents_load

from .test_research_api import wait_for_report

pytestmark = pytest.mark.django_db(transaction=True)
SECRET = {"title": "Bob's volcano notes", "body": "Volcanoes near Bobsville erupt basalt every spring."}


async def upload(api, **extra):
    return await api.post("/api/research/documents/", {**SECRET, **extra})


async def test_another_users_document_is_invisible(api_for, alice, bob):
    assert (await upload(api_for(bob))).status_code == 201
    alice_api, bob_api = api_for(alice), api_for(bob)
    titles = lambda page: [d["title"] for d in page.json()["results"]]  # noqa: E731
    assert titles(await bob_api.get("/api/research/documents/")) == [SECRET["title"]]
    assert titles(await alice_api.get("/api/research/documents/")) == []
    assert titles(await bob_api.get("/api/research/documents/?q=bobsville")) == [SECRET["title"]]
    assert titles(await alice_api.get("/api/research/documents/?q=bobsville")) == []

    started = await alice_api.post("/api/research/", {"query": "Bobsville volcanoes basalt"})
    report = await wait_for_report(started.json()["report_id"])
    assert report.status == ResearchReport.Status.COMPLETED
    assert "every spring" not in report.markdown_report and not report.sources
    started = await bob_api.post("/api/research/", {"query": "Bobsville volcanoes basalt"})
    report = await wait_for_report(started.json()["report_id"])
    assert [s["title"] for s in report.sources] == [SECRET["title"]]


async def test_only_staff_share_and_shared_documents_are_everyones(api_for, alice, bob, make_user):
    refused = await upload(api_for(bob), shared=True)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
    staff = await sync_to_async(make_user)("carol", is_staff=True)
    assert (await upload(api_for(staff), shared=True)).json()["shared"] is True
    found = await api_for(alice).get("/api/research/documents/?q=bobsville")
    assert [d["title"] for d in found.json()["results"]] == [SECRET["title"]]
    assert await Document.objects.acount() == 1


def test_operator_loaded_documents_are_shared(tmp_path, alice, bob):
    (tmp_path / "lava.md").write_text("# Lava\n\nLava flows from volcanoes.")
    documents_load([tmp_path])
    Document.objects.create(title="Mine", body="Lava notes of Alice.", added_by=alice)
    assert [h.title for h in documents_search("lava", 5, bob.pk)] == ["Lava"]
    assert {h.title for h in documents_search("lava", 5, alice.pk)} == {"Lava", "Mine"}
    assert {h.title for h in documents_search("lava", 5, EVERY_DOCUMENT)} == {"Lava", "Mine"}
