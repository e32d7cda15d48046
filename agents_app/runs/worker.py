"""A worker process (RUN_EXECUTION=worker, `manage.py run_worker`): it takes runs' jobs from the
queue (runs/jobs.py) and executes each on its engine, as a web process would in-process. Its
events go to the run's channel-layer group from the first (the readers are all elsewhere), and
cancel signals come to its executor's control channel like to any process's.

Runs outlive their worker. A worker that stops (SIGTERM) takes no new job, gives its runs
RUN_SHUTDOWN_GRACE seconds, then hands the others over (`release`: unclaimed, with a new job).
A worker that dies (SIGKILL, a lost machine) stops beating in the queue: after
RUN_WORKER_DEAD_AFTER seconds any live worker retries its jobs (`recover_stalled`). Either way
the next worker takes the run over (`takeover`) from its last checkpoint, a turn boundary: it
says so (`turn_restarted`) and does that turn again. A run taken over more than
RUN_MAX_RESTARTS times ends `failed` (`interrupted`).

Workers reach the queue through a psycopg connector of their own (procrastinate's Django
connector cannot listen for new jobs)."""

import asyncio
import logging
import os
import socket

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, Max, OuterRef, Q
from django.utils import timezone
from procrastinate import JobContext
from procrastinate.contrib.django import app

from ..db import in_sync_thread
from ..models import Run, RunEvent, RunPause
from ..registry import get_spec
from .approvals import resume_from
from .cancel import end_orphan
from .context import Restart, Resume
from .engine import get_engine, shutdown_engine
from .jobs import QUEUE, TASK, defer_run
from .journal import COMMITTED
from .lifespan import start_engine, tune_process
from .store import RunEnd
from .sweep import journalled

log = logging.getLogger(__name__)

STOPPED = "the worker running it stopped"
DIED = "the worker running it stopped answering"


@app.task(name=TASK, queue=QUEUE, pass_context=True)
async def execute_run(
    job: JobContext,
    run_id: str,
    fresh_conversation: bool = False,
    resume: bool = False,
    restart: bool = False,
) -> None:
    """The job of one run: claim it (nothing to do if it was cancelled, or another worker has it),
    then execute it here until it ends, pauses, or this worker stops. A retried job (its worker
    died) or a `restart` one (its worker stopped) takes the run over."""
    executor = get_engine().executor
    channel = await executor.ensure_started()
    retried = job.job.attempts > 0
    run = await in_sync_thread(_claim)(run_id, channel, takeover=restart or retried)
    if run is None:
        return
    spec = get_spec(run.agent)
    if spec is None:  # a deploy removed its agent
        await _give_up(run, f"agent {run.agent!r} does not exist any more", "agent_not_found")
        return
    if run.cancel_requested_at is not None and run.status == Run.Status.QUEUED:
        await end_orphan(run)  # cancelled before it began: it never starts
        return
    if (restart or retried) and run.status == Run.Status.RUNNING:
        task = await takeover(run, spec, DIED if retried else STOPPED)
    elif resume:
        task = executor.resume(run, spec, await in_sync_thread(resume_from)(run_id))
    else:
        task = executor.launch(run, spec, fresh_conversation=fresh_conversation)
        executor.hub.watch(run.pk)
    if task is None:
        return
    if run.cancel_requested_at is not None:
        executor.cancel_local(run.pk, run.cancel_mode or "immediate")
    try:
        # The job lasts as long as the run's task (shielded: the worker's shutdown cancels the job).
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await release(run)
        raise


def _claim(run_id: str, channel: str, takeover: bool) -> Run | None:
    """The run, now held by this worker's executor; None if it is no longer waiting for one (a
    takeover takes an active run from whichever worker had it). A new run whose conversation has
    nothing before it also takes its turn in the same statement (it is `running` then)."""
    runs = Run.objects.filter(pk=run_id)
    runs = runs.filter(status__in=Run.EXECUTING) if takeover else runs.filter(Run.unclaimed())
    now = timezone.now()
    claimed = {"worker_channel": channel, "heartbeat_at": now}
    taken = 0
    if not takeover:
        try:
            taken = _free_turn(runs).update(**claimed, status=Run.Status.RUNNING, started_at=now)
        except IntegrityError:  # another run of its conversation started first
            pass
    if not taken and not runs.update(**claimed):
        return None
    return Run.objects.select_related("conversation").get(pk=run_id)


def _free_turn(runs):
    """`runs`, if queued with no run of their conversation running, paused or queued before them
    (`queue.Turns` would have nothing to wait for)."""
    before = Run.objects.filter(conversation_id=OuterRef("conversation_id")).filter(
        Q(status__in=Run.CURRENT)
        | Q(status=Run.Status.QUEUED, created_at__lt=OuterRef("created_at"))
        | Q(status=Run.Status.QUEUED, created_at=OuterRef("created_at"), pk__lt=OuterRef("pk"))
    )
    free = Q(conversation_id__isnull=True) | ~Exists(before)
    return runs.filter(free, status=Run.Status.QUEUED)


async def takeover(run: Run, spec, reason: str) -> asyncio.Task | None:
    """Go on with a run another worker was executing: from its checkpoint, after a
    `turn_restarted`; or end it `failed` if it was taken over too often."""
    executor = get_engine().executor
    point = await in_sync_thread(_restart_point)(run, reason)
    if run.restarts > settings.RUN_MAX_RESTARTS:
        await _give_up(run, f"the run was interrupted {run.restarts} times: {reason}", "interrupted")
        return None
    if point is None:  # it had not begun: it starts again
        return executor.resume(run, spec, None)
    resume, restart = point
    log.warning("run %s taken over (%s), turn %d again", run.pk, reason, restart.turn)
    return executor.resume(run, spec, resume, restart)


def _restart_point(run: Run, reason: str) -> tuple[Resume | None, Restart] | None:
    """Count this takeover (`run.restarts`; `run.last_seq`: its last stored event), then where the
    run goes on from: its checkpoint's state, or its pause's with the decisions on it, or (none)
    its start; and the `turn_restarted` that says so. None: it had not begun, or it was taken
    over too often (`run.restarts`)."""
    Run.objects.filter(pk=run.pk).update(restarts=F("restarts") + 1)
    run.restarts = Run.objects.values_list("restarts", flat=True).get(pk=run.pk)
    if run.restarts > settings.RUN_MAX_RESTARTS:
        return None
    events = RunEvent.objects.filter(run_id=run.pk)
    run.last_seq = events.aggregate(last=Max("seq"))["last"] or 0
    pause = RunPause.objects.filter(run_id=run.pk).first()
    if pause is None:
        after_seq = events.filter(type="run_started").values_list("seq", flat=True).first()
        if after_seq is None:
            return None
        resume, turn, memory = None, 1, []
    elif pause.kind == RunPause.Kind.TURN:
        resume, turn, after_seq, memory = Resume(pause.state, {}), pause.turn, pause.seq, pause.memory
    else:  # resumed after its decisions: they stay
        resume, turn, memory = resume_from(run.pk), pause.state.get("current_turn") or 1, []
        decided = events.filter(type="approval_decided").aggregate(last=Max("seq"))["last"]
        after_seq = decided or pause.seq
    _text, usage = journalled(run.pk, run.agent)
    return resume, Restart(turn, reason, after_seq, memory, usage)


async def _give_up(run: Run, error: str, code: str) -> None:
    """End, `failed`, a run this worker claimed but will not execute."""
    text, usage = await in_sync_thread(journalled)(run.pk, run.agent)
    fields = {"status": Run.Status.FAILED, "error": error, "error_code": code, "final_output": text}
    event = {"type": "error", "seq": None, "run_id": str(run.pk), "message": error, "code": code}
    end = RunEnd({**fields, **usage}, run.agent, owner_id=run.owner_id, orphan_of=run.worker_channel)
    if await get_engine().journal.end(str(run.pk), event, end) == COMMITTED:
        log.warning("run %s failed: %s", run.pk, error)


async def release(run: Run) -> None:
    """This worker stops before the run ended: its task stops (what it emitted is stored), and
    the run waits, unclaimed, for the worker that takes its new job."""
    executor = get_engine().executor
    await executor.release(run.pk)
    if await in_sync_thread(_unclaim)(run.pk, executor.channel_name):
        log.warning("run %s handed over: this worker stops", run.pk)


def _unclaim(run_id, channel: str) -> bool:
    with transaction.atomic():
        mine = Run.objects.filter(pk=run_id, worker_channel=channel, status__in=Run.EXECUTING)
        if not mine.update(worker_channel=Run.UNCLAIMED):
            return False
        defer_run(run_id, restart=True)
    return True


async def recover_stalled() -> None:
    """Retry the jobs of workers that stopped beating in the queue (every worker looks; a job
    retried once is not `doing` any more for the others)."""
    every = min(5.0, settings.RUN_WORKER_DEAD_AFTER / 3)
    while True:
        await asyncio.sleep(every)
        try:
            stalled = await app.job_manager.get_stalled_jobs(
                queue=QUEUE, seconds_since_heartbeat=settings.RUN_WORKER_DEAD_AFTER
            )
        except Exception:
            log.warning("could not look for the jobs of dead workers", exc_info=True)
            continue
        for job in stalled:
            try:
                await app.job_manager.retry_job(job)
            except Exception:  # another worker retried it first (it is not `doing` any more)
                continue
            log.warning("job %s of a dead worker retried (run %s)", job.id, job.task_kwargs.get("run_id"))


async def work(concurrency: int) -> None:
    """Execute runs until asked to stop (SIGINT, SIGTERM)."""
    tune_process()
    await start_engine()
    name = f"{socket.gethostname()}:{os.getpid()}"
    with app.replace_connector(app.connector.get_worker_connector()):
        async with app.open_async():
            log.info("worker %s takes runs, %d at a time", name, concurrency)
            recovering = asyncio.create_task(recover_stalled())
            try:
                await app.run_worker_async(
                    queues=[QUEUE],
                    name=name,
                    concurrency=concurrency,
                    fetch_job_polling_interval=settings.WORKER_POLL_INTERVAL,
                    update_heartbeat_interval=settings.RUN_WORKER_DEAD_AFTER / 3,
                    stalled_worker_timeout=settings.RUN_WORKER_DEAD_AFTER,
                    shutdown_graceful_timeout=settings.RUN_SHUTDOWN_GRACE,
                    delete_jobs="successful",
                    install_signal_handlers=True,
                )
            finally:
                recovering.cancel()
    await shutdown_engine(0)
