"""A run as the chat page shows it: the user's message, its steps (tool calls, handoffs), the answer.

Steps come from the run's stored `run_item` events and its approvals (`approval_required`,
`approval_decided`, named by their type), so a finished turn reads the same as the live stream
showed it; the answer is the run's final output rendered as sanitized markdown. The steps of a
turn that was cut and done again (`turn_restarted`, worker mode) are left out, as the live page
drops them.
"""

import json
from typing import Any

from django.db.models import Q

from .models import Run, RunEvent
from .rendering import render_markdown

# The `run_item` events shown as steps (the answer itself is the final output).
STEP_NAMES = ("tool_called", "tool_output", "handoff_requested", "handoff_occured", "reasoning_item_created")
APPROVAL_TYPES = ("approval_required", "approval_decided")
RESTART_TYPE = "turn_restarted"
STEP_FIELDS = (
    "seq", "name", "agent_name", "tool_name", "tool_arguments", "call_id", "output", "source_agent",
    "target_agent", "content", "approvals", "approval_id", "decision", "reason", "decided_by", "pending",
)  # fmt: skip


def input_text(value: Any) -> str:
    """The user's words of a run input: the text, or the text parts of its user messages."""
    if isinstance(value, str):
        return value
    parts = []
    for item in value if isinstance(value, list) else []:
        content = item.get("content") if isinstance(item, dict) and item.get("role") == "user" else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return "\n\n".join(parts)


def answer_text(final_output: Any) -> str:
    """Markdown of a final output: text as it is, structured output as a JSON code block."""
    if final_output is None or isinstance(final_output, str):
        return final_output or ""
    return "```json\n" + json.dumps(final_output, indent=2, ensure_ascii=False) + "\n```"


def step_of(data: dict) -> dict:
    step = {k: data[k] for k in STEP_FIELDS if k in data}
    if data["type"] in APPROVAL_TYPES:
        step["name"] = data["type"]
    return step


def turn_of(run: Run, steps: list[dict]) -> dict:
    answer = answer_text(run.final_output)
    return {
        "run_id": str(run.pk),
        "agent": run.agent,
        "status": run.status,
        "input": input_text(run.input),
        "steps": steps,
        "answer": answer,
        "html": render_markdown(answer),
        "usage": run.usage,
        "model": run.model,
        "error": run.error,
        "error_code": run.error_code,
        "last_seq": run.last_seq,
        "created_at": run.created_at.isoformat(),
    }


def turns_of(runs: list[Run]) -> list[dict]:
    """The turns of `runs` in their order, with two queries whatever their number."""
    steps: dict[Any, list[dict]] = {run.pk: [] for run in runs}
    events = (
        RunEvent.objects.filter(run__in=list(steps))
        .filter(Q(type="run_item", data__name__in=STEP_NAMES) | Q(type__in=(*APPROVAL_TYPES, RESTART_TYPE)))
        .order_by("run", "seq")
        .values_list("run_id", "data")
    )
    for run_id, data in events:
        if data["type"] == RESTART_TYPE:
            steps[run_id] = [step for step in steps[run_id] if step["seq"] <= data["after_seq"]]
        else:
            steps[run_id].append(step_of(data))
    return [turn_of(run, steps[run.pk]) for run in runs]
