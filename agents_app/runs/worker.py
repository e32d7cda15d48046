"""A worker process (RUN_EXECUTION=worker, `manage.py run_worker`): it takes runs' jobs from the
queue (runs/jobs.py) and executes each on its engine, as a web process would in-process. Its
events go to the run's channel-layer group from the first (the readers are all elsewhere), and
cancel signals come to its executor's control channel like to any process's.

Workers reach the queue through a psycopg connector of their own (procrastinate's Django connector
cannot listen for new jobs). A worker that is asked to stop takes no new job, gives its runs
RUN_SHUTDOWN_GRACE seconds, then ends the rest `interrupted`, as a web process does."""

import asyncio
import logging
import os
import socket

from django.conf import settings
from django.utils import timezone
from procrastinate.contrib.django import app

from ..db import in_sync_thread
from ..models import Run
from ..registry import get_spec
from .approvals import resume_from
from .cancel import end_orphan
from .engine import get_engine, shutdown_engine
from .jobs import QUEUE, TASK
from .lifespan import start_engine

log = logging.getLogger(__name__)


@app.task(name=TASK, queue=QUEUE)
async def execute_run(run_id: str, fresh_conversation: bool = False, resume: bool = False) -> None:
    """The job of one run: claim it (nothing to do if it was cancelled, or another worker has it),
    then execute it here until it ends or pauses."""
    executor = get_engine().executor
    channel = await executor.ensure_started()
    run = await in_sync_thread(_claim)(run_id, channel)
    if run is None:
        return
    spec = get_spec(run.agent)
    if run.cancel_requested_at is not None and (run.status == Run.Status.QUEUED or spec is None):
        await end_orphan(run)  # cancelled before it began: it never starts
        return
    if resume:
        task = executor.resume(run, spec, await in_sync_thread(resume_from)(run_id))
    else:
        task = executor.launch(run, spec, fresh_conversation=fresh_conversation)
        executor.hub.watch(run.pk)
    if run.cancel_requested_at is not None:
        executor.cancel_local(run.pk, run.cancel_mode or "immediate")
    # The job lasts as long as the run's task: a worker that stops waits for it (shield: a job
    # cancelled by the worker's shutdown leaves the run to the engine's shutdown).
    await asyncio.shield(task)


def _claim(run_id: str, channel: str) -> Run | None:
    """The run, now held by this worker's executor; None if it is no longer waiting for one."""
    unclaimed = Run.objects.filter(Run.unclaimed(), pk=run_id)
    if not unclaimed.update(worker_channel=channel, heartbeat_at=timezone.now()):
        return None
    return Run.objects.select_related("conversation").get(pk=run_id)


async def work(concurrency: int) -> None:
    """Execute runs until asked to stop (SIGINT, SIGTERM)."""
    await start_engine()
    name = f"{socket.gethostname()}:{os.getpid()}"
    with app.replace_connector(app.connector.get_worker_connector()):
        async with app.open_async():
            log.info("worker %s takes runs, %d at a time", name, concurrency)
            await app.run_worker_async(
                queues=[QUEUE],
                name=name,
                concurrency=concurrency,
                fetch_job_polling_interval=settings.WORKER_POLL_INTERVAL,
                shutdown_graceful_timeout=settings.RUN_SHUTDOWN_GRACE,
                delete_jobs="successful",
                install_signal_handlers=True,
            )
    await shutdown_engine(0)
