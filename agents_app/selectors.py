"""Read paths: what a user may see, and descriptions of agents."""

from typing import Any

from django.urls import reverse

from . import providers
from .models import Approval, Conversation, Run, RunEvent
from .registry import AgentSpec


def conversations_for(user):
    return Conversation.objects.filter(owner=user)


def runs_for(user):
    return Run.objects.filter(owner=user)


def decidable_runs(user):
    """The runs whose tool calls `user` may decide on: their own, and every run for staff."""
    return Run.objects.all() if user.is_staff else runs_for(user)


def approvals_for(user):
    """The tool calls of the user's own runs (staff decide on others' in the admin)."""
    return Approval.objects.filter(run__owner=user)


def run_events_after(run: Run, after: int = 0):
    return RunEvent.objects.filter(run=run, seq__gt=after).order_by("seq")


def agent_describe(spec: AgentSpec) -> dict[str, Any]:
    agent = spec.build(None)
    info = providers.provider_info()
    instructions = agent.instructions if isinstance(agent.instructions, str) else "dynamic"
    if spec.pipeline is not None and not isinstance(agent.instructions, str):
        instructions = "dynamic"
    return {
        "slug": spec.slug,
        "name": spec.title,
        "agent_name": agent.name,
        "description": spec.description,
        "instructions": instructions,
        "model": info["model"],
        "provider": info["provider"],
        "tools": [{"name": t.name, "description": getattr(t, "description", "")} for t in agent.tools],
        "handoffs": [getattr(h, "name", None) or getattr(h, "agent_name", str(h)) for h in agent.handoffs],
        "endpoints": {
            "run": reverse("agent-run", args=[spec.slug]),
            "stream": f"/api/agents/{spec.slug}/stream",
            "info": reverse("agent-info", args=[spec.slug]),
            "websocket": f"/ws/agents/{spec.slug}/",
        },
    }
