"""Corpus full-text search (SQLite and PostgreSQL): ranking, snippets, no hits, the index following writes."""

import functools

import pytest
from django.db import connection

from research_app.models import Document
from research_app.search import documents_search, keywords

pytestmark = pytest.mark.django_db


@pytest.fixture
def docs():
    make = functools.partial(Document.objects.create, shared=True)  # the shared corpus
    return {
        "volcano": make(
            title="Volcanoes",
            source="corpus:volcanoes.md",
            body="A volcano erupts lava and ash. Volcanic eruptions depend on magma viscosity. "
            "Volcanoes form at plate boundaries.",
        ),
        "passing": make(
            title="Islands",
            source="corpus:islands.md",
            body="Some islands are built by an old volcano, but most of this text is about beaches, "
            "coral reefs, lagoons and the fishing villages along the coast.",
        ),
        "coffee": make(
            title="Coffee", source="corpus:coffee.md", body="Coffee is brewed from roasted beans."
        ),
    }


def test_index_is_the_vendors(docs):
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT count(*) FROM research_document_fts")
            assert cursor.fetchone()[0] == 3
        else:
            cursor.execute("SELECT count(*) FROM research_app_document WHERE search_vector IS NOT NULL")
            assert cursor.fetchone()[0] == 3


def test_ranking_prefers_the_document_about_the_subject(docs):
    hits = documents_search("volcano eruptions")
    assert [h.title for h in hits] == ["Volcanoes", "Islands"]
    assert hits[0].score > hits[1].score > 0
    assert hits[0].document_id == docs["volcano"].pk and hits[0].source == "corpus:volcanoes.md"


def test_stemming_and_or_semantics(docs):
    # "erupting" matches "erupts"/"eruptions"; a word no document has does not hide the others.
    hits = documents_search("erupting zeppelin")
    assert [h.title for h in hits] == ["Volcanoes"]


def test_snippets_mark_the_matches(docs):
    hit = documents_search("coral lagoons")[0]
    assert hit.title == "Islands"
    assert "**coral**" in hit.snippet and "**lagoons**" in hit.snippet
    assert "\n" not in hit.snippet


def test_no_hits(docs):
    assert documents_search("quantum chromodynamics") == []
    # Only stop words or punctuation: nothing to search for, and no syntax error either.
    assert documents_search("what is the") == []
    assert documents_search('"AND OR NOT*( :') == []
    assert documents_search("") == []


def test_query_syntax_is_not_interpreted(docs):
    assert {h.title for h in documents_search('coffee" OR "lava')} == {"Volcanoes", "Coffee"}
    assert documents_search("title:coffee")[0].title == "Coffee"


def test_index_follows_updates_and_deletes(docs):
    coffee = docs["coffee"]
    coffee.body = "Espresso forces hot water through finely ground beans."
    coffee.save()
    assert [h.title for h in documents_search("espresso")] == ["Coffee"]
    assert documents_search("roasted") == []
    Document.objects.filter(pk=docs["volcano"].pk).update(title="Mountains of fire")
    assert documents_search("volcanoes")[0].title == "Mountains of fire"
    Document.objects.filter(pk=docs["volcano"].pk).delete()
    assert [h.title for h in documents_search("volcano")] == ["Islands"]
    Document.objects.bulk_create(
        [Document(title="Tea", body="Green tea is steamed or pan-fired.", shared=True)]
    )
    assert [h.title for h in documents_search("steamed tea")] == ["Tea"]


def test_limit(docs):
    assert len(documents_search("volcano", limit=1)) == 1


def test_keywords():
    assert keywords("How does the Event-Loop schedule 2 tasks, and the tasks?") == [
        "event",
        "loop",
        "schedule",
        "tasks",
    ]
