"""The `chat` agent: conversational, with session memory and a few real tools."""

from agents import Agent

from .tools import calculate, current_time, roll_dice

INSTRUCTIONS = (
    "You are a friendly, concise assistant in a chat application. "
    "Use the calculate tool for arithmetic, current_time for the date or time, "
    "and roll_dice when asked to roll dice. Remember what the user told you earlier in the conversation."
)


def build_chat_agent(model: str | None = None) -> Agent:
    return Agent(
        name="Chat",
        instructions=INSTRUCTIONS,
        tools=[calculate, current_time, roll_dice],
        model=model,
    )
