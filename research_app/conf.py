"""Research settings with their defaults, read at call time so tests can override them."""

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Most searches the planner's plan may hold (extra ones are dropped).
    "RESEARCH_MAX_SEARCHES": 5,
    # Searches running at the same time.
    "RESEARCH_SEARCH_CONCURRENCY": 3,
    # Corpus hits one search returns.
    "RESEARCH_SEARCH_RESULTS": 5,
    # Seconds one search may take before it is reported as failed and skipped.
    "RESEARCH_SEARCH_TIMEOUT": 120.0,
    # "auto" (hosted web search with OpenAI's Responses API, else the corpus), "local" or "web".
    "RESEARCH_SEARCH_BACKEND": "auto",
    # Longest accepted research question, in characters.
    "RESEARCH_MAX_QUERY_CHARS": 2000,
    # Largest accepted document (UTF-8 bytes), for uploads and load_documents.
    "RESEARCH_MAX_DOCUMENT_BYTES": 512 * 1024,
}


def setting(name: str) -> Any:
    return getattr(settings, name, DEFAULTS[name])
