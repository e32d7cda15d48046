"""The stale sweep: a run whose process died (its heartbeat stopped) is ended `interrupted`, with
its terminal event, by whichever process notices: never left `running` for ever. What it had
written stays its output (`partial_text`), as a run stopped on purpose keeps its own."""

import asyncio
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from ..db import in_sync_thread
from ..models import Run, RunEvent
from ..providers.responses_stream import TEXT_DELTA
from ..registry import get_spec
from .journal import COMMITTED, Journal, RunEnd

STALE_ERROR = "the process running this run stopped (stale heartbeat)"
STALE_MESSAGE = "the run was interrupted: the process running it stopped"


def stale_cutoff() -> datetime:
    """Runs whose last heartbeat is older than this are taken for dead."""
    return timezone.now() - timedelta(seconds=settings.RUN_STALE_AFTER)


def stale_runs(cutoff: datetime):
    return Run.objects.filter(Run.beat_before(cutoff), status__in=Run.EXECUTING)


def is_stale(run: Run) -> bool:
    beat = run.heartbeat_at or run.created_at
    return run.status in Run.EXECUTING and beat < stale_cutoff()


def partial_text(run_id, agent: str) -> str | None:
    """The answer a run had streamed, from its journalled events, as its process would have kept
    it (`RunContext.partial`): the text of the agent that was answering. None for a pipeline (it
    keeps an output of its own making) and for a run that wrote no text."""
    spec = get_spec(agent)
    if spec is None or spec.pipeline is not None:
        return None
    answer: list[str] = []
    events = RunEvent.objects.filter(run_id=run_id, type__in=("raw_response", "agent_updated"))
    for data in events.order_by("seq").values_list("data", flat=True).iterator():
        if data["type"] == "agent_updated":
            answer = []  # a handoff: the new agent answers from here
        elif data.get("event_type") == TEXT_DELTA:
            answer.append(data.get("delta") or "")
    return "".join(answer) or None


async def end_stale(journal: Journal, runs: list[tuple]) -> int:
    """End these runs (their `(pk, agent)`) `interrupted` if they are still active and stale; how
    many it ended."""
    cutoff = stale_cutoff()
    texts = await in_sync_thread(lambda: [partial_text(run_id, agent) for run_id, agent in runs])()
    ends = []
    for (run_id, agent), text in zip(runs, texts, strict=True):
        fields = {
            "status": Run.Status.INTERRUPTED,
            "error": STALE_ERROR,
            "error_code": "interrupted",
            "final_output": text,
        }
        event = {
            "type": "error",
            "seq": None,
            "run_id": str(run_id),
            "message": STALE_MESSAGE,
            "code": "interrupted",
        }
        ends.append(journal.end(str(run_id), event, RunEnd(fields, agent, stale_before=cutoff)))
    outcomes = await asyncio.gather(*ends)
    return sum(outcome == COMMITTED for outcome in outcomes)


async def sweep_stale(journal: Journal) -> int:
    """End every stale active run (at process start and periodically)."""
    runs = await _stale_now()
    return await end_stale(journal, runs) if runs else 0


@in_sync_thread
def _stale_now() -> list[tuple]:
    return list(stale_runs(stale_cutoff()).values_list("pk", "agent"))
