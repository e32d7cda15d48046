"""The offline model's reading of a conversation and the plain-text answers it writes from it."""

from __future__ import annotations

import json
import re
from typing import Any

HANDOFF_PREFIX = "transfer_to_"
_TOOL_SKILLS = {
    "calculate": "do arithmetic",
    "current_time": "tell the time in any time zone",
    "roll_dice": "roll dice",
    "refund_order": "refund orders (say “refund order A17 250”; over 100 waits for approval)",
}
_GREETING = re.compile(r"^\s*(hi|hello|hey|good (?:morning|afternoon|evening)|greetings)\b", re.IGNORECASE)
_WRITING = re.compile(r"\b(poem|haiku|story|email|e-mail|letter)\b", re.IGNORECASE)
_HELP = re.compile(r"\b(what can you do|help me|who are you|what are you)\b", re.IGNORECASE)
# A stated value ends at punctuation or at " and " ("my name is Ada and I live in Paris").
_VALUE = r"([^.,!?\n]{1,60}?)(?=\s+and\s|[.,!?\n]|$)"
_FACT = re.compile(r"\bmy ([a-z][a-z ]{0,30}?) (?:is|are) " + _VALUE, re.IGNORECASE)
_CALL_ME = re.compile(r"\b(?:call me|i am called|i'm called)\s+([A-Z][\w'-]*)", re.IGNORECASE)
_LIVE = re.compile(r"\bi live in " + _VALUE, re.IGNORECASE)
_LIKE = re.compile(r"\bi (?:like|love|enjoy) " + _VALUE, re.IGNORECASE)
_ASK_FACT = re.compile(r"\bwhat(?:'s| is| are) my ([a-z][a-z ]{0,30}?)\s*(?:\?|$|\.)", re.IGNORECASE)
_ASK_NAME = re.compile(r"\b(who am i|do you (?:know|remember) my name)\b", re.IGNORECASE)
_ASK_LIVE = re.compile(r"\bwhere do i live\b", re.IGNORECASE)
_ASK_LIKE = re.compile(r"\bwhat do i (?:like|love|enjoy)\b", re.IGNORECASE)
_ASK_SAID = re.compile(r"\bwhat did i (?:say|ask|tell you|just say)\b", re.IGNORECASE)


def as_dict(item: Any) -> dict[str, Any]:
    if isinstance(item, dict):
        return item
    if hasattr(item, "model_dump"):
        return item.model_dump(exclude_unset=True)
    return {}


def content_text(content: Any) -> str:
    """Plain text of a message's content: a string or a list of text parts."""
    if isinstance(content, str):
        return content
    parts = []
    for part in content or []:
        part = as_dict(part)
        text = part.get("text") or part.get("refusal")
        if isinstance(text, str):
            parts.append(text)
    return "\n".join(parts)


def output_text(output: Any) -> str:
    return output if isinstance(output, str) else content_text(output) or json.dumps(output, default=str)


class Conversation:
    """Responses-format input items, with what happened since the user last spoke."""

    def __init__(self, input: str | list[Any]):
        if isinstance(input, str):
            input = [{"role": "user", "content": input}]
        self.items = [as_dict(item) for item in input]
        user_positions = [i for i, item in enumerate(self.items) if item.get("role") == "user"]
        self.user_texts = [content_text(self.items[i].get("content")).strip() for i in user_positions]
        start = user_positions[-1] + 1 if user_positions else 0
        self.since_user = self.items[start:]
        if not user_positions:
            # Input filters may fold history into one assistant/system message; answer what is there.
            texts = [content_text(item.get("content")) for item in self.items if "content" in item]
            self.user_texts = [texts[-1].strip()] if texts else [""]

    @property
    def user_text(self) -> str:
        return self.user_texts[-1] if self.user_texts else ""

    def calls_since_user(self) -> list[dict[str, Any]]:
        return [item for item in self.since_user if item.get("type") == "function_call"]

    def handed_off(self) -> bool:
        return any(call.get("name", "").startswith(HANDOFF_PREFIX) for call in self.calls_since_user())

    def last_is_tool_output(self) -> bool:
        """True when the newest item is a (non-handoff) tool result the model should now answer from."""
        if not self.since_user or self.since_user[-1].get("type") != "function_call_output":
            return False
        call_id = self.since_user[-1].get("call_id")
        names = {c.get("call_id"): c.get("name", "") for c in self.calls_since_user()}
        return not names.get(call_id, "").startswith(HANDOFF_PREFIX)

    def tool_results(self) -> list[tuple[str, dict[str, Any], str]]:
        """(tool name, arguments, output) for tool calls answered since the user last spoke."""
        outputs = {
            item.get("call_id"): output_text(item.get("output"))
            for item in self.since_user
            if item.get("type") == "function_call_output"
        }
        results = []
        for call in self.calls_since_user():
            name = call.get("name", "")
            if name.startswith(HANDOFF_PREFIX) or call.get("call_id") not in outputs:
                continue
            try:
                arguments = json.loads(call.get("arguments") or "{}")
            except json.JSONDecodeError:
                arguments = {}
            results.append((name, arguments, outputs[call["call_id"]]))
        return results


def describe_result(name: str, arguments: dict[str, Any], output: str) -> str:
    if output.startswith("error"):
        return f"The {name} tool could not help: {output.removeprefix('error: ')}."
    if name == "calculate":
        return f"{arguments.get('expression', 'The result')} = {output}."
    if name == "current_time":
        return f"The current time in {arguments.get('timezone', 'UTC')} is {output}."
    if name == "refund_order":
        what = f"the refund of {arguments.get('amount')} on order {arguments.get('order_id')}"
        if output.startswith("refunded"):
            return f"Done: {output}."
        return f"I did not make {what}: {output}"
    if name == "roll_dice":
        if m := re.match(r"rolls=\[(.*)\] total=(-?\d+)", output):
            return f"You rolled {m.group(1)}, for a total of {m.group(2)}."
    return f"The {name} tool returned: {output}"


def remembered_facts(user_texts: list[str]) -> dict[str, str]:
    """What the user said about themselves, later statements winning."""
    facts: dict[str, str] = {}
    for text in user_texts:
        if text.rstrip().endswith("?"):
            continue
        for key, value in _FACT.findall(text):
            facts[key.lower().strip()] = value.strip()
        for name in _CALL_ME.findall(text):
            facts["name"] = name
        for place in _LIVE.findall(text):
            facts["home"] = place.strip()
        for thing in _LIKE.findall(text):
            facts["likes"] = thing.strip()
    return facts


def _recall(text: str, facts: dict[str, str]) -> str | None:
    if m := _ASK_FACT.search(text):
        key = m.group(1).lower().strip()
        if key in facts:
            return f"Your {key} is {facts[key]}."
        return f"You haven't told me your {key} yet. Tell me and I'll remember it for this conversation."
    if _ASK_NAME.search(text):
        return f"You're {facts['name']}." if "name" in facts else "You haven't told me your name yet."
    if _ASK_LIVE.search(text):
        return f"You live in {facts['home']}." if "home" in facts else "You haven't told me where you live."
    if _ASK_LIKE.search(text):
        return f"You like {facts['likes']}." if "likes" in facts else "You haven't told me what you like."
    return None


def _acknowledge(text: str) -> str | None:
    facts = remembered_facts([text])
    if not facts:
        return None
    if "name" in facts:
        return (
            f"Nice to meet you, {facts['name']}! I'll remember your name for the rest of this conversation."
        )
    key, value = next(iter(facts.items()))
    subject = {"home": "you live in", "likes": "you like"}.get(key, f"your {key} is")
    return f"Got it: {subject} {value}. I'll remember that."


def _topic(text: str) -> str:
    m = re.search(r"\b(?:about|on|regarding|for)\s+([^.!?\n]{2,80})", text, re.IGNORECASE)
    return (m.group(1) if m else text).strip().rstrip(".!?") or "this"


def _write(text: str) -> str:
    kind = _WRITING.search(text).group(1).lower()  # type: ignore[union-attr]
    topic = _topic(text)
    if kind in ("poem", "haiku"):
        return (
            f"Here is a short poem about {topic}:\n\n"
            f"Quiet thoughts of {topic} arrive,\n"
            f"like morning light that wakes the hive;\n"
            f"a word, a pause, a turning page,\n"
            f"and {topic} walks across the stage."
        )
    if kind in ("email", "e-mail", "letter"):
        return (
            f"Subject: {topic[:1].upper()}{topic[1:]}\n\nHello,\n\n"
            f"I'm writing about {topic}. I'd appreciate a moment of your time to discuss it "
            f"and agree on next steps.\n\nBest regards"
        )
    return (
        f"Once upon a time there was a story about {topic}. It began quietly, grew into an adventure, "
        f"and ended with everyone understanding {topic} a little better."
    )


def compose_text(conversation: Conversation, tool_names: list[str], handoff_names: list[str]) -> str:
    """A deterministic answer to the newest user message, using tool results and earlier turns."""
    results = conversation.tool_results()
    if results:
        return " ".join(describe_result(*result) for result in results)
    text = conversation.user_text
    if not text:
        return "I didn't receive a message. What would you like to talk about?"
    if answer := _recall(text, remembered_facts(conversation.user_texts)):
        return answer
    if answer := _acknowledge(text):
        return answer
    skills = [_TOOL_SKILLS[name] for name in tool_names if name in _TOOL_SKILLS]
    if handoff_names:
        skills.append(f"hand you over to the {' or the '.join(handoff_names)}")
    skills.append("remember what you tell me in this conversation")
    can_do = ", ".join(skills[:-1]) + (" and " if len(skills) > 1 else "") + skills[-1]
    if _GREETING.search(text):
        return f"Hello! I'm the offline demo model. I can {can_do}. What would you like to do?"
    if _WRITING.search(text):
        return _write(text)
    if _HELP.search(text):
        return f"I'm the offline demo model: deterministic and without network access. I can {can_do}."
    earlier = [t for t in conversation.user_texts[:-1] if t]
    context = f" Earlier you said: “{earlier[-1][:120]}”." if earlier else ""
    return (
        f"You said: “{text[:200]}”.{context} I'm the offline demo model, so I answer from simple rules "
        f"rather than a language model. I can {can_do}."
    )
