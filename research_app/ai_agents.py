"""The research agents: planner, searcher and writer, and the corpus search tool the searcher may use."""

import json
from dataclasses import dataclass, field
from typing import Any

from agents import Agent, ModelSettings, RunContextWrapper, WebSearchTool, function_tool
from django.conf import settings
from pydantic import BaseModel, Field

from agents_app import providers
from agents_app.db import in_sync_thread

from .search import documents_search

PLANNER_INSTRUCTIONS = (
    "You are a helpful research assistant. Given a query, come up with a set of searches to perform "
    "to best answer the query. Output between 2 and {max_searches} searches, each with a short search "
    "query and the reason it matters."
)
SEARCH_INSTRUCTIONS_WEB = (
    "You are a research assistant. Given a search term, you search the web for that term and produce a "
    "concise summary of the results. The summary must be 2-3 paragraphs and less than 300 words. Capture "
    "the main points. Write succinctly; no need for complete sentences or good grammar. This will be "
    "consumed by someone synthesizing a report, so capture the essence and ignore fluff. Do not include "
    "any additional commentary other than the summary itself."
)
SEARCH_INSTRUCTIONS_LOCAL = (
    "You are a research assistant. Given a search term, call the search_documents tool with it (you may "
    "refine the words once if nothing matches) and summarize what the returned documents say in less "
    "than 300 words, naming each document you use by its title. Only use what the tool returned."
)
WRITER_INSTRUCTIONS = (
    "You are a senior researcher tasked with writing a cohesive report for a research query. You will be "
    "provided with the original query and the results of the searches, as JSON with each search's "
    "summary and sources. Write a markdown report of several sections that answers the query from these "
    "results only; cite the sources you use by their number in the form [n] and end with a Sources list "
    "giving each cited title and source. If no search found anything, say so plainly instead of "
    "answering from memory. Also write a 2-3 sentence short summary and 2-4 follow-up questions."
)


class ResearchSearchItem(BaseModel):
    reason: str = Field(description="Your reasoning for why this search is important to the query.")
    query: str = Field(description="The search term to use.")


class ResearchPlan(BaseModel):
    searches: list[ResearchSearchItem] = Field(
        description="A list of searches to perform to answer the query."
    )


class ResearchReportData(BaseModel):
    short_summary: str = Field(description="A short 2-3 sentence summary of the findings.")
    markdown_report: str = Field(description="The final report, in markdown.")
    follow_up_questions: list[str] = Field(description="Suggested topics to research further.")


@dataclass
class SearchContext:
    """Per-search state: the corpus hits the tool returned, which become the search's sources."""

    limit: int = 5
    hits: list[dict[str, Any]] = field(default_factory=list)
    # Whose documents it searches: the shared ones and the run owner's.
    user_id: int | None = None


# Errors propagate (no error text for the model to improvise from): the search fails, is reported and skipped.
@function_tool(failure_error_function=None)
async def search_documents(ctx: RunContextWrapper[SearchContext], query: str) -> str:
    """Search the local documents corpus and return the best matching documents with snippets.

    Args:
        query: The words to search for.
    """
    limit = ctx.context.limit if ctx.context else 5
    user_id = ctx.context.user_id if ctx.context else None
    hits = await in_sync_thread(documents_search)(query, limit, user_id)
    if ctx.context is not None:
        known = {h["document_id"] for h in ctx.context.hits}
        ctx.context.hits.extend(h.as_dict() for h in hits if h.document_id not in known)
    if not hits:
        return f"No documents matched {query!r}."
    return "\n\n".join(
        f"[{n}] {h.title} (source: {h.source or 'corpus'})\n{h.snippet}" for n, h in enumerate(hits, 1)
    )


def search_backend() -> str:
    """ "web" (the SDK's hosted web search) only with OpenAI's own Responses API; "local" otherwise."""
    configured = settings.RESEARCH_SEARCH_BACKEND
    if configured in ("local", "web"):
        return configured
    return "web" if providers.api_name() == "responses" else "local"


def build_planner_agent(model: str | None = None) -> Agent:
    max_searches = settings.RESEARCH_MAX_SEARCHES
    return Agent(
        name="Research planner",
        instructions=PLANNER_INSTRUCTIONS.format(max_searches=max_searches),
        output_type=ResearchPlan,
        **({"model": model} if model else {}),
    )


def build_search_agent(model: str | None = None) -> Agent:
    web = search_backend() == "web"
    return Agent(
        name="Research searcher",
        instructions=SEARCH_INSTRUCTIONS_WEB if web else SEARCH_INSTRUCTIONS_LOCAL,
        tools=[WebSearchTool()] if web else [search_documents],
        # The search must actually run; the SDK resets the choice after the tool call.
        model_settings=ModelSettings(tool_choice="required"),
        **({"model": model} if model else {}),
    )


def build_writer_agent(model: str | None = None) -> Agent:
    return Agent(
        name="Research writer",
        instructions=WRITER_INSTRUCTIONS,
        output_type=ResearchReportData,
        **({"model": model} if model else {}),
    )


def writer_input(query: str, results: list[dict[str, Any]]) -> str:
    """The writer's prompt: the query and every search's summary and sources as one JSON block."""
    payload = {
        "query": query,
        "searches": [
            {
                "query": r["query"],
                "reason": r["reason"],
                "status": r["status"],
                "summary": r.get("summary", ""),
                "sources": r.get("sources", []),
            }
            for r in results
        ],
    }
    return (
        f"Original query: {query}\n\nSearch results:\n```json\n{json.dumps(payload, ensure_ascii=False)}\n```"
    )
