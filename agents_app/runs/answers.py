"""A protocol client's answers to the calls a paused run waits for, sent with its next request
(the AI SDK's tool approval responses, AG-UI's resume entries): checked together, recorded as
decisions one by one (`approvals.decide`), and the seq of the pause they answer, from which the
client's next response goes on.

Answers repeat safely: a call already decided as the client answers it is not decided again (a
client retrying a request whose response it lost), one decided otherwise is a 409.
"""

import uuid
from dataclasses import dataclass, field
from typing import Any

from django.db.models import QuerySet

from ..errors import AlreadyDecided, NotFound, ServiceError
from ..models import Approval, Run, RunEvent
from .approvals import DECISIONS, check_decision, decide
from .events import PAUSE_TYPE


@dataclass(frozen=True)
class Answer:
    approval_id: str
    decision: str  # approve | reject
    reason: str = ""


@dataclass
class Answered:
    """Answers checked against the stored calls: their run, the seq of the pause they answer and
    the decisions still to record."""

    run: Run
    pause_seq: int
    todo: list[Answer] = field(default_factory=list)


def check_answers(
    runs: QuerySet, answers: list[Answer], field_name: str, agent: str, session_key: str
) -> Answered:
    """Answers to one pause of one of `runs` (the runs the caller may decide on) in the client's
    chat (`agent`, the conversation's `session_key`): 404 for a call not among them, 400 for
    answers to more than one run, 409 for a call decided otherwise. `field_name` names the
    request's field in a 400."""
    if not answers:
        raise ServiceError("no answer to a pending approval", field=field_name)
    for answer in answers:
        check_decision(answer.decision, answer.reason, None)
        try:
            uuid.UUID(answer.approval_id)
        except (TypeError, ValueError):
            raise NotFound(f"approval {answer.approval_id} not found") from None
    runs = runs.filter(agent=agent, conversation__session_key=session_key)
    asked = Approval.objects.filter(pk__in=[a.approval_id for a in answers], run__in=runs)
    calls = {str(call.pk): call for call in asked}
    for answer in answers:
        if answer.approval_id not in calls:
            raise NotFound(f"approval {answer.approval_id} not found in this chat")
    run_ids = {call.run_id for call in calls.values()}
    if len(run_ids) > 1:
        raise ServiceError("the answers are to the calls of more than one run", field=field_name)
    todo = []
    for answer in answers:
        call = calls[answer.approval_id]
        if call.status == Approval.Status.PENDING:
            todo.append(answer)
        elif call.status != DECISIONS[answer.decision]:
            raise AlreadyDecided(
                f"approval {answer.approval_id} was already decided: {call.status}",
                approval_id=answer.approval_id,
                status=call.status,
            )
    run = Run.objects.get(pk=run_ids.pop())
    return Answered(run, _pause_seq(run, answers[0].approval_id), todo)


def _pause_seq(run: Run, approval_id: str) -> int:
    """The seq of the run's `approval_required` event that asked for this call."""
    pauses = RunEvent.objects.filter(run=run, type=PAUSE_TYPE).order_by("-seq").values_list("seq", "data")
    for seq, data in pauses:
        if any(call.get("approval_id") == approval_id for call in data.get("approvals") or ()):
            return seq
    raise NotFound(f"approval {approval_id} not found")  # its pause was never journalled


async def record_answers(executor: Any, answered: Answered, user: Any, surface: str) -> None:
    """Record the decisions still to make; the last one of the pause resumes the run here."""
    for answer in answered.todo:
        await decide(
            executor,
            answered.run.pk,
            answer.approval_id,
            answer.decision,
            user=user,
            surface=surface,
            reason=answer.reason,
        )
