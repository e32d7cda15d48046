"""Full-text search over the documents corpus: SQLite FTS5 or PostgreSQL text search, ranked, with snippets.

The indexes live outside the ORM so the database keeps them in sync on every write path
(save, bulk_create, update, delete, admin, raw SQL): on SQLite an FTS5 table fed by
triggers, on PostgreSQL a stored generated tsvector column with a GIN index.
Queries are OR-ed terms ranked by relevance (bm25 / ts_rank_cd), because questions
written by people and models rarely contain every word of the passage that answers them.
"""

import re
from dataclasses import asdict, dataclass

from django.db import connection as default_connection

FTS_TABLE = "research_document_fts"
DOC_TABLE = "research_app_document"
MAX_TERMS = 16
SNIPPET_MARK = "**"

STOP_WORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had has
    have having he her here hers him his how i if in into is it its itself just me more most my no nor not
    now of off on once only or other our ours out over own same she should so some such than that the their
    theirs them then there these they this those through to too under until up very was we were what when
    where which while who whom why will with would you your yours tell explain describe give show know
    please find want need much many way ways work works use used using""".split()
)

_SQLITE_INSTALL = [
    f"""CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5(
        title, body, content='{DOC_TABLE}', content_rowid='id',
        tokenize='porter unicode61 remove_diacritics 2')""",
    f"""CREATE TRIGGER IF NOT EXISTS research_document_fts_ai AFTER INSERT ON {DOC_TABLE} BEGIN
        INSERT INTO {FTS_TABLE}(rowid, title, body) VALUES (new.id, new.title, new.body); END""",
    f"""CREATE TRIGGER IF NOT EXISTS research_document_fts_ad AFTER DELETE ON {DOC_TABLE} BEGIN
        INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, title, body)
        VALUES ('delete', old.id, old.title, old.body);
        END""",
    f"""CREATE TRIGGER IF NOT EXISTS research_document_fts_au AFTER UPDATE ON {DOC_TABLE} BEGIN
        INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, title, body)
        VALUES ('delete', old.id, old.title, old.body);
        INSERT INTO {FTS_TABLE}(rowid, title, body) VALUES (new.id, new.title, new.body); END""",
]
_SQLITE_TRIGGERS = ("research_document_fts_ai", "research_document_fts_ad", "research_document_fts_au")
_SQLITE_UNINSTALL = [f"DROP TRIGGER IF EXISTS {name}" for name in _SQLITE_TRIGGERS] + [
    f"DROP TABLE IF EXISTS {FTS_TABLE}"
]
_PG_INSTALL = [
    f"""ALTER TABLE {DOC_TABLE} ADD COLUMN IF NOT EXISTS search_vector tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', coalesce(title, '')), 'A')
        || setweight(to_tsvector('english', coalesce(body, '')), 'B')) STORED""",
    f"CREATE INDEX IF NOT EXISTS research_document_search_idx ON {DOC_TABLE} USING GIN (search_vector)",
]
_PG_UNINSTALL = [
    "DROP INDEX IF EXISTS research_document_search_idx",
    f"ALTER TABLE {DOC_TABLE} DROP COLUMN IF EXISTS search_vector",
]


@dataclass(frozen=True)
class Hit:
    document_id: int
    title: str
    source: str
    snippet: str
    score: float

    def as_dict(self) -> dict:
        return asdict(self)


def keywords(text: str) -> list[str]:
    """The content words of `text`, lower-cased, in order, without duplicates or stop words."""
    seen: dict[str, None] = {}
    for word in re.findall(r"[^\W_]+", text.lower()):
        if len(word) > 1 and word not in STOP_WORDS and not word.isdigit():
            seen.setdefault(word, None)
    return list(seen)[:MAX_TERMS]


def fulltext_install(connection=default_connection, rebuild: bool = False) -> None:
    """Create the vendor's full-text index if missing (idempotent); rebuild it when asked or repaired."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name IN (%s, %s, %s)",
                _SQLITE_TRIGGERS,
            )
            # Django rebuilds SQLite tables on some ALTERs, dropping their triggers; re-index then.
            rebuild = rebuild or cursor.fetchone()[0] < len(_SQLITE_TRIGGERS)
            for statement in _SQLITE_INSTALL:
                cursor.execute(statement)
            if rebuild:
                cursor.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')")
        elif connection.vendor == "postgresql":
            for statement in _PG_INSTALL:
                cursor.execute(statement)


def fulltext_uninstall(connection=default_connection) -> None:
    statements = {"sqlite": _SQLITE_UNINSTALL, "postgresql": _PG_UNINSTALL}.get(connection.vendor, [])
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


# Whose documents a search sees: the shared ones, a user's own as well (`user_id`), or all.
SHARED_ONLY = None
EVERY_DOCUMENT = "all"


def _visible(user_id: int | str | None) -> tuple[str, list]:
    """The SQL condition on `d` (the documents table) for what a search sees, and its params."""
    if user_id == EVERY_DOCUMENT:
        return "TRUE", []
    if user_id is None:
        return "d.shared", []
    return "(d.shared OR d.added_by_id = %s)", [user_id]


def documents_search(query: str, limit: int = 5, user_id: int | str | None = SHARED_ONLY) -> list[Hit]:
    """The documents best matching `query`, best first, each with a snippet around the matches.
    It sees the shared documents and those of `user_id` (EVERY_DOCUMENT: all, for staff)."""
    terms = keywords(query)
    if not terms or limit <= 0:
        return []
    vendor = default_connection.vendor
    if vendor == "sqlite":
        rows = _sqlite_search(terms, limit, *_visible(user_id))
    elif vendor == "postgresql":
        rows = _postgres_search(terms, limit, *_visible(user_id))
    else:
        rows = _fallback_search(terms, limit, user_id)
    return [
        Hit(document_id=pk, title=title, source=source, snippet=clean_snippet(snippet), score=round(score, 6))
        for pk, title, source, snippet, score in rows
    ]


def _sqlite_search(terms: list[str], limit: int, visible: str, params: list) -> list[tuple]:
    # Quoted terms cannot be read as FTS5 operators; the porter tokenizer still stems them.
    match = " OR ".join(f'"{term}"' for term in terms)
    sql = f"""
        SELECT d.id, d.title, d.source,
               snippet({FTS_TABLE}, 1, '{SNIPPET_MARK}', '{SNIPPET_MARK}', '…', 28),
               -bm25({FTS_TABLE}, 5.0, 1.0) AS score
        FROM {FTS_TABLE} JOIN {DOC_TABLE} d ON d.id = {FTS_TABLE}.rowid
        WHERE {FTS_TABLE} MATCH %s AND {visible}
        ORDER BY score DESC, d.id LIMIT %s"""
    with default_connection.cursor() as cursor:
        cursor.execute(sql, [match, *params, limit])
        return cursor.fetchall()


def _postgres_search(terms: list[str], limit: int, visible: str, params: list) -> list[tuple]:
    query = " || ".join(["plainto_tsquery('english', %s)"] * len(terms))
    headline = (
        f"StartSel={SNIPPET_MARK}, StopSel={SNIPPET_MARK}, MaxWords=40, MinWords=18, "
        "MaxFragments=2, FragmentDelimiter=' … '"
    )
    # Headlines are expensive: compute them only for the rows that survive the LIMIT.
    sql = f"""
        WITH q AS (SELECT ({query}) AS query),
        best AS (
            SELECT d.id, d.title, d.source, d.body, ts_rank_cd(d.search_vector, q.query, 32) AS score
            FROM {DOC_TABLE} d, q WHERE d.search_vector @@ q.query AND {visible}
            ORDER BY score DESC, d.id LIMIT %s)
        SELECT best.id, best.title, best.source, ts_headline('english', best.body, q.query, %s), best.score
        FROM best, q ORDER BY best.score DESC, best.id"""
    with default_connection.cursor() as cursor:
        cursor.execute(sql, [*terms, *params, limit, headline])
        return cursor.fetchall()


def _fallback_search(terms: list[str], limit: int, user_id: int | str | None) -> list[tuple]:
    """Other databases: substring matching scored by term counts (slow, but correct on small corpora)."""
    from django.db.models import Q

    from .models import Document

    condition = Q()
    for term in terms:
        condition |= Q(title__icontains=term) | Q(body__icontains=term)
    documents = Document.objects.all()
    if user_id != EVERY_DOCUMENT:
        documents = documents.filter(Q(shared=True) | Q(added_by_id=user_id))
    scored = []
    for doc in documents.filter(condition).only("id", "title", "source", "body")[:500]:
        title, body = doc.title.lower(), doc.body.lower()
        score = sum(5 * title.count(t) + body.count(t) for t in terms)
        first = min((body.find(t) for t in terms if t in body), default=0)
        snippet = doc.body[max(0, first - 80) : first + 160]
        scored.append((doc.id, doc.title, doc.source, snippet, float(score)))
    scored.sort(key=lambda row: (-row[4], row[0]))
    return scored[:limit]


def clean_snippet(text: str) -> str:
    """One line of prose: markdown heading marks and runs of whitespace removed."""
    text = re.sub(r"(^|\s)#{1,6}\s+", r"\1", text or "")
    return " ".join(text.split())
