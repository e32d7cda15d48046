"""The agent registry: one entry per slug. REST, SSE, WebSocket, info and admin read it."""

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agents import Agent

from .ai_agents.assistant import build_assistant_agent
from .ai_agents.chat import build_chat_agent
from .ai_agents.ops import build_ops_agent


@dataclass(frozen=True)
class AgentSpec:
    slug: str
    title: str
    description: str
    # Builds the SDK agent for a model name (None = provider default).
    build: Callable[[str | None], Agent]
    # Optional custom pipeline replacing the single `Runner.run_streamed` call (the research
    # agent runs several agents): called with the run's `runs.execute.RunContext`, returns the
    # final output.
    pipeline: Callable[[Any], Awaitable[Any]] | None = None
    uses_memory: bool = True
    # What the agent needs of a run's input beyond the API's checks: a function of the input
    # that returns why it cannot be run (the run is then refused with a 400), or None.
    input_problem: Callable[[Any], str | None] | None = None


_REGISTRY: dict[str, AgentSpec] = {}


def register(spec: AgentSpec) -> AgentSpec:
    _REGISTRY[spec.slug] = spec
    return spec


def get_spec(slug: str) -> AgentSpec | None:
    return _REGISTRY.get(slug)


def all_specs() -> list[AgentSpec]:
    return list(_REGISTRY.values())


def slugs() -> list[str]:
    """The agents' slugs: what an `agent` parameter or field may name."""
    return list(_REGISTRY)


# The built-in agents are built once per model name and shared by every run: SDK agents hold
# configuration, not run state, and building one per run cost ~0.2 ms of each run's start.
register(
    AgentSpec(
        slug="chat",
        title="Chat",
        description="Conversational agent with memory and tools (calculator, clock, dice).",
        build=functools.cache(build_chat_agent),
    )
)
register(
    AgentSpec(
        slug="assistant",
        title="Assistant",
        description="General assistant that hands off to math and writing specialists.",
        build=functools.cache(build_assistant_agent),
    )
)
register(
    AgentSpec(
        slug="ops",
        title="Ops",
        description="Refunds orders; a refund over 100 waits for a person's approval.",
        build=functools.cache(build_ops_agent),
    )
)
