"""The `assistant` agent: a general assistant that hands off to specialists."""

from agents import Agent

from .tools import calculate, current_time


def build_assistant_agent(model: str | None = None) -> Agent:
    math = Agent(
        name="Math Specialist",
        handoff_description="Specialist for math, arithmetic, calculations, equations and numbers.",
        instructions="You are a math specialist. Use the calculate tool and explain the result briefly.",
        tools=[calculate],
        model=model,
    )
    writing = Agent(
        name="Writing Specialist",
        handoff_description="Specialist for writing, editing, poems, stories, emails and wording.",
        instructions="You are a writing specialist. Write clear, well-structured prose.",
        model=model,
    )
    return Agent(
        name="Assistant",
        instructions=(
            "You are a general assistant. Hand off math questions to the Math Specialist and "
            "writing tasks to the Writing Specialist; answer everything else yourself. "
            "Use current_time for questions about the date or time."
        ),
        tools=[current_time],
        handoffs=[math, writing],
        model=model,
    )
