"""The stale sweep: a run whose process died (its heartbeat stopped) is ended `interrupted`, with
its terminal event, by whichever process notices: never left `running` for ever. What it had
written stays its output, and the tokens it had used count (`journalled`), as a run stopped on
purpose keeps and counts its own."""

import asyncio
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from ..db import in_sync_thread
from ..models import Run, RunEvent
from ..providers.responses_stream import TEXT_DELTA
from ..registry import get_spec
from ..usage import COUNTERS
from .jobs import in_workers
from .journal import COMMITTED, Journal
from .store import RunEnd

COMPLETED = "response.completed"  # a model call's end, with its usage
STALE_ERROR = "the process running this run stopped (stale heartbeat)"
STALE_MESSAGE = "the run was interrupted: the process running it stopped"


def stale_cutoff() -> datetime:
    """Runs whose last heartbeat is older than this are taken for dead."""
    return timezone.now() - timedelta(seconds=settings.RUN_STALE_AFTER)


def stale_runs(cutoff: datetime):
    """In worker mode none: a dead worker's runs are taken over by another (runs/worker.py)."""
    if in_workers():
        return Run.objects.none()
    return Run.objects.filter(Run.beat_before(cutoff), status__in=Run.EXECUTING).exclude(Run.unclaimed())


def is_stale(run: Run) -> bool:
    beat = run.heartbeat_at or run.created_at
    return not in_workers() and run.status in Run.EXECUTING and run.is_claimed and beat < stale_cutoff()


def journalled(run_id, agent: str) -> tuple[str | None, dict]:
    """What a run had done, from its journal, as its process would have kept it: the answer it had
    streamed (`RunContext.partial`: the text of the agent that was answering; None for a pipeline,
    which keeps an output of its own making, and for a run that wrote no text), and the usage of
    its finished model calls (their `response.completed` events)."""
    spec = get_spec(agent)
    answer: list[str] = []
    usage = dict.fromkeys(COUNTERS, 0)
    events = RunEvent.objects.filter(run_id=run_id, type__in=("raw_response", "agent_updated"))
    for data in events.order_by("seq").values_list("data", flat=True).iterator():
        if data["type"] == "agent_updated":
            answer = []  # a handoff: the new agent answers from here
        elif data.get("event_type") == TEXT_DELTA:
            answer.append(data.get("delta") or "")
        elif data.get("event_type") == COMPLETED:
            usage["requests"] += 1
            for name, value in (data.get("usage") or {}).items():
                usage[name] = usage.get(name, 0) + (value or 0)
    text = None if spec is None or spec.pipeline is not None else "".join(answer) or None
    return text, usage


async def end_stale(journal: Journal, runs: list[tuple]) -> int:
    """End these runs (their `(pk, agent, owner_id)`) `interrupted` if they are still active and
    stale, with what their journal says they had done; how many it ended."""
    cutoff = stale_cutoff()
    done = await in_sync_thread(lambda: [journalled(run_id, agent) for run_id, agent, _ in runs])()
    ends = []
    for (run_id, agent, owner_id), (text, usage) in zip(runs, done, strict=True):
        fields = {
            "status": Run.Status.INTERRUPTED,
            "error": STALE_ERROR,
            "error_code": "interrupted",
            "final_output": text,
            **usage,
        }
        event = {
            "type": "error",
            "seq": None,
            "run_id": str(run_id),
            "message": STALE_MESSAGE,
            "code": "interrupted",
        }
        end = RunEnd(fields, agent, owner_id=owner_id, stale_before=cutoff)
        ends.append(journal.end(str(run_id), event, end))
    outcomes = await asyncio.gather(*ends)
    return sum(outcome == COMMITTED for outcome in outcomes)


async def sweep_stale(journal: Journal) -> int:
    """End every stale active run (at process start and periodically)."""
    runs = await _stale_now()
    return await end_stale(journal, runs) if runs else 0


@in_sync_thread
def _stale_now() -> list[tuple]:
    return list(stale_runs(stale_cutoff()).values_list("pk", "agent", "owner_id"))
