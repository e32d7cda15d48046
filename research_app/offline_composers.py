"""Structured outputs of the research planner and writer under the offline model.

The offline model calls these for the `ResearchPlan` and `ResearchReportData` output types: the
plan is derived from the question's keywords (checked against the corpus), and the report is
written from the searches' actual hits, quoting the sentences of the cited documents that best
match the question. Nothing is invented: with no hits the report says so.
"""

import itertools
import json
import re
from typing import Any

from django.conf import settings

from agents_app.providers import OfflineRequest

from .models import Document
from .search import documents_search, keywords

MAX_CITED = 6
SENTENCES_PER_SOURCE = 2
_JSON_BLOCK = re.compile(r"```json\s*(\{.*\})\s*```", re.DOTALL)
_SUFFIXES = ("ations", "ation", "ings", "ing", "ions", "ion", "ies", "es", "s", "ed", "er", "ly")


def compose_plan(request: OfflineRequest) -> dict[str, Any]:
    """Searches for the question as a whole, then for each adjacent pair of its keywords."""
    question = " ".join(request.user_text.split())
    words = keywords(question)
    if not words:
        return {
            "searches": [
                {
                    "query": question[:200],
                    "reason": "The question has no distinctive words; search it as written.",
                }
            ]
        }
    limit = max(1, int(settings.RESEARCH_MAX_SEARCHES))
    searches = [
        {"query": " ".join(words), "reason": "Find the documents that address the question as a whole."}
    ]
    pairs = [f"{a} {b}" for a, b in itertools.pairwise(words)]
    covered = {w for pair in pairs for w in pair.split()}
    candidates = [*pairs, *(w for w in words if w not in covered)]
    # Aspects the corpus knows something about come first; the rest still get searched if there is room.
    candidates.sort(key=lambda q: not documents_search(q, 1))
    for query in candidates:
        if len(searches) >= limit:
            break
        if query != searches[0]["query"]:
            searches.append(
                {"query": query, "reason": f"Cover the “{query}” aspect of the question on its own."}
            )
    return {"searches": searches}


def compose_report(request: OfflineRequest) -> dict[str, Any]:
    """A markdown report built from the search results in the writer's input, citing its sources."""
    query, searches = _parse_writer_input(request.user_text)
    ranked = _rank_sources(searches)
    if not ranked:
        return _no_hits_report(query, searches)
    cited = ranked[:MAX_CITED]
    terms = {_stem(w) for w in keywords(" ".join([query, *(s["query"] for s in searches)]))}
    extracts = _extracts(cited, terms)
    heading = query[:1].upper() + query[1:]
    lead = extracts[0][0] if extracts[0] else cited[0]["snippet"]
    names = " and ".join(f"“{s['title']}” [{n}]" for n, s in enumerate(cited[:2], 1))
    short_summary = (
        f"{len(cited)} document{'s' if len(cited) != 1 else ''} of the corpus address this question, "
        f"chiefly {names}. {lead}"
    )
    lines = [f"# {heading}", "", "## Summary", "", short_summary, "", "## Findings", ""]
    for n, (source, sentences) in enumerate(zip(cited, extracts, strict=True), 1):
        found_by = ", ".join(f"“{q}”" for q in source["searches"])
        body = " ".join(sentences) if sentences else source["snippet"]
        lines += [
            f"### {source['title']} [{n}]",
            "",
            f"{body} [{n}]",
            "",
            f"*Found by the searches {found_by}.*",
            "",
        ]
    lines += ["## Searches", "", *_search_lines(searches), "", "## Sources", ""]
    lines += [f"{n}. **{s['title']}** — {s['source'] or 'local corpus'}" for n, s in enumerate(cited, 1)]
    return {
        "short_summary": short_summary,
        "markdown_report": "\n".join(lines) + "\n",
        "follow_up_questions": _follow_ups(query, cited, ranked[MAX_CITED:], extracts),
    }


def _parse_writer_input(text: str) -> tuple[str, list[dict[str, Any]]]:
    match = _JSON_BLOCK.search(text)
    if match:
        try:
            payload = json.loads(match.group(1))
            return str(payload.get("query") or "").strip(), list(payload.get("searches") or [])
        except (json.JSONDecodeError, AttributeError):
            pass
    return text.removeprefix("Original query:").strip(), []


def _rank_sources(searches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Distinct sources, those found by the most searches and with the best scores first."""
    by_key: dict[Any, dict[str, Any]] = {}
    for search in searches:
        for src in search.get("sources") or []:
            key = src.get("document_id") or src.get("source") or src.get("title")
            entry = by_key.setdefault(
                key,
                {
                    "document_id": src.get("document_id"),
                    "title": src.get("title") or src.get("source") or "untitled",
                    "source": src.get("source") or "",
                    "snippet": src.get("snippet") or "",
                    "searches": [],
                    "score": 0.0,
                },
            )
            if search["query"] not in entry["searches"]:
                entry["searches"].append(search["query"])
            entry["score"] += float(src.get("score") or 0)
    return sorted(by_key.values(), key=lambda e: (-len(e["searches"]), -e["score"]))


def _stem(word: str) -> str:
    word = word.lower()
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _sentences(body: str) -> list[str]:
    body = re.sub(r"```.*?```", " ", body, flags=re.DOTALL)
    prose = [line.strip().lstrip("-*> ").strip() for line in body.splitlines()]
    text = " ".join(line for line in prose if line and not line.startswith("#"))
    parts = re.split(r"(?<=[.!?])\s+(?=[A-Z0-9“\"(])", text)
    return [p.strip() for p in parts if 30 <= len(p.strip()) <= 400]


def _extracts(cited: list[dict[str, Any]], terms: set[str]) -> list[list[str]]:
    """For each cited document, its sentences that share the most words with the question."""
    ids = [s["document_id"] for s in cited if s["document_id"]]
    bodies = dict(Document.objects.filter(pk__in=ids).values_list("id", "body"))
    used: set[str] = set()
    result = []
    for source in cited:
        scored = []
        for index, sentence in enumerate(_sentences(bodies.get(source["document_id"], ""))):
            stems = {_stem(w) for w in re.findall(r"[^\W_]+", sentence)}
            score = len(stems & terms)
            if score and sentence not in used:
                scored.append((score, index, sentence))
        best = sorted(sorted(scored, key=lambda t: (-t[0], t[1]))[:SENTENCES_PER_SOURCE], key=lambda t: t[1])
        used.update(s for _, _, s in best)
        result.append([s for _, _, s in best])
    return result


def _search_lines(searches: list[dict[str, Any]]) -> list[str]:
    lines = []
    for search in searches:
        titles = [s.get("title") or s.get("source") for s in search.get("sources") or []]
        if search.get("status") == "failed":
            outcome = "failed, skipped"
        elif titles:
            outcome = "found " + ", ".join(f"“{t}”" for t in titles)
        else:
            outcome = "no matching documents"
        lines.append(f"- “{search['query']}” ({search.get('reason', '').rstrip('.')}): {outcome}.")
    return lines


def _follow_ups(
    query: str, cited: list[dict[str, Any]], uncited: list[dict[str, Any]], extracts: list[list[str]]
) -> list[str]:
    questions = [f"What would “{s['title']}”, found but not cited, add to this report?" for s in uncited[:1]]
    text = " ".join(" ".join(e) for e in extracts).lower()
    missing = [w for w in keywords(query) if _stem(w) not in text]
    questions += [f"What does {w} mean here? The cited documents barely mention it." for w in missing[:1]]
    questions.append(f"What limits or trade-offs does “{cited[0]['title']}” point out?")
    if len(cited) > 1:
        questions.append(f"How do “{cited[0]['title']}” and “{cited[1]['title']}” differ in their approach?")
    return questions[:4]


def _no_hits_report(query: str, searches: list[dict[str, Any]]) -> dict[str, Any]:
    short_summary = (
        f"No documents in the local corpus matched “{query}”, so there is nothing to report from it. "
        "Add documents on the subject or rephrase the question."
    )
    lines = [
        f"# {query[:1].upper() + query[1:]}",
        "",
        "No documents in the local corpus matched this question, so this report has no findings. "
        "Nothing here is made up from general knowledge.",
        "",
        "## Searches",
        "",
        *_search_lines(searches),
        "",
        "Add relevant documents (in the admin, with `POST /api/research/documents/` or "
        "`manage.py load_documents PATH`) and run the research again.",
    ]
    words = keywords(query)
    follow_ups = [f"What documents about {w} could be added to the corpus?" for w in words[:2]]
    follow_ups.append("Can the question be rephrased with the terms the documents use?")
    return {
        "short_summary": short_summary,
        "markdown_report": "\n".join(lines) + "\n",
        "follow_up_questions": follow_ups,
    }
