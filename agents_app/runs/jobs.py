"""The worker tier's job queue (RUN_EXECUTION=worker), as the web side sees it: a run accepted by a
web process becomes a job in PostgreSQL (procrastinate's), deferred in the transaction that
inserts the run's row, so one never exists without the other. A worker process takes the job and
executes the run (runs/worker.py).

Until a worker claims it the run is unclaimed (`Run.unclaimed`, its `worker_channel` says so): no
heartbeat is due for it, the stale sweep leaves it alone, and a cancel ends it at once (the job
then finds nothing to run)."""

from django.conf import settings
from procrastinate.contrib.django import app

TASK = "agents.execute_run"
QUEUE = "runs"
# A run whose last tool call was decided, or whose worker stopped, goes on before new runs.
RESUME_PRIORITY = 10


def in_workers() -> bool:
    """Whether runs execute in worker processes rather than in the process that accepts them."""
    return settings.RUN_EXECUTION == "worker"


def defer_run(
    run_id: object, fresh_conversation: bool = False, resume: bool = False, restart: bool = False
) -> None:
    """The run's job, through Django's connection: in the caller's transaction (sync code).
    `resume`: its last tool call was decided; `restart`: its worker stopped before it ended."""
    priority = RESUME_PRIORITY if resume or restart else 0
    app.configure_task(TASK, queue=QUEUE, priority=priority).defer(
        run_id=str(run_id), fresh_conversation=fresh_conversation, resume=resume, restart=restart
    )
