"""The run executor: owns every run of this process as a detached asyncio task.

A run's task lives independently of the connection that started it. The executor listens on its
control channel (cancel signals and watch requests from other processes), keeps its runs'
heartbeats fresh, picks up cancel requests whose signal was lost, and now and then sweeps the
runs of dead processes.
"""

import asyncio
import contextvars
import logging
import uuid
from collections.abc import Coroutine
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone

from .. import providers
from ..db import in_sync_thread
from ..logs import REQUEST_ID
from ..models import Run
from ..registry import AgentSpec
from . import layer
from .approvals import end_cancelled, expire_pending
from .context import Restart, Resume, RunContext
from .execute import execute
from .journal import Journal
from .publish import Hub, Reader
from .queue import Turns
from .retry import FailureLog
from .sweep import sweep_stale

log = logging.getLogger(__name__)


def detached(coro: Coroutine, name: str) -> asyncio.Task:
    """A task that belongs to no request: it starts from an empty context, with only the request
    id carried over (for its logs). A task inheriting a Django request's context would send its
    database calls to that request's thread, which outlives the request holding a connection
    nothing closes (on PostgreSQL a pooled one: enough runs, and the pool is empty)."""
    context = contextvars.Context()
    context.run(REQUEST_ID.set, REQUEST_ID.get())
    return asyncio.create_task(coro, name=name, context=context)


class RunExecutor:
    """One per event loop (one per process when served)."""

    def __init__(self, hub: Hub, journal: Journal) -> None:
        self.hub = hub
        self.journal = journal
        self.turns = Turns()
        self.channel_name = ""
        self.contexts: dict[str, RunContext] = {}
        self.tasks: dict[str, asyncio.Task] = {}
        self._starting: asyncio.Future | None = None
        self._background: list[asyncio.Task] = []
        self._pings: dict[str, asyncio.Future] = {}

    async def ensure_started(self) -> str:
        """Start the control and heartbeat loops once; returns the control channel's name."""
        if not self.channel_name:
            if self._starting is None:
                self._starting = detached(self._start_up(), "executor-start")
            # Callers arriving meanwhile wait for the same start-up: none sees an empty name.
            await asyncio.shield(self._starting)
        return self.channel_name

    async def _start_up(self) -> None:
        providers.configure_tracing()
        # Default prefix on purpose: channels_redis has one receive loop per process for all
        # process-local channels, and it only reads the list of the prefix its holder uses.
        self.channel_name = await layer.new_channel()
        self._background = [
            asyncio.create_task(self._control_loop(), name="executor-control"),
            asyncio.create_task(self._heartbeat_loop(), name="executor-heartbeat"),
        ]

    def launch(
        self, run: Run, spec: AgentSpec, reader: Reader | None = None, fresh_conversation: bool = False
    ) -> asyncio.Task:
        """Run a run made by `start.create_run` (after `ensure_started`: the run names our channel).
        `reader` is subscribed before the run's first event, so it needs no replay."""
        ctx = RunContext(run, spec, self.journal, fresh_conversation)
        self.hub.own(ctx.run_key)
        if reader is not None:
            self.hub.subscribe(ctx.run_key, reader)
        return self._start(ctx)

    def resume(
        self, run: Run, spec: AgentSpec, resume: Resume | None, restart: Restart | None = None
    ) -> asyncio.Task:
        """Go on with a run whose pause was decided, or (`restart`) that another worker stopped
        executing (its row says `running` on our channel now): from `resume`'s state (none: from
        its start), its events following the last stored one, and going to its group too, where
        its readers are."""
        ctx = RunContext(run, spec, self.journal)
        ctx.resume, ctx.restart = resume, restart
        if restart is not None:
            ctx.usage.update(restart.usage)
        self.hub.own(ctx.run_key)
        self.hub.watch(ctx.run_key)
        return self._start(ctx)

    def _start(self, ctx: RunContext) -> asyncio.Task:
        """The run's task, held by this executor until the run ends (or pauses)."""
        key = ctx.run_key
        self.contexts[key] = ctx
        task = detached(self._run(ctx), f"run-{key}")
        self.tasks[key] = task
        return task

    async def _run(self, ctx: RunContext) -> None:
        try:
            await execute(ctx, self.turns.wait_for_turn)
        finally:
            self.contexts.pop(ctx.run_key, None)
            self.tasks.pop(ctx.run_key, None)
            self.hub.disown(ctx.run_key)
            if ctx.run.conversation_id:
                self.turns.ended(ctx.run.conversation_id)

    async def release(self, run_id: Any) -> None:
        """Stop executing a run without ending it (this worker stops; another takes it over from
        its checkpoint): its task ends once what it emitted is stored."""
        ctx, task = self.contexts.get(str(run_id)), self.tasks.get(str(run_id))
        if ctx is None or task is None or task.done():
            return
        ctx.released = True
        task.cancel()
        await asyncio.wait([task], timeout=10)

    def on_lost(self, run_id: str, error: BaseException) -> None:
        """The journal could not store this run's events: end it, `failed`."""
        ctx, task = self.contexts.get(run_id), self.tasks.get(run_id)
        if ctx is not None and task is not None and not task.done():
            ctx.lost = error
            task.cancel()

    def cancel_local(self, run_id: Any, mode: str, unrecorded_at: datetime | None = None) -> bool:
        """Cancel a run owned by this executor; False when it is not ours (or already over).

        `unrecorded_at`: the time of a request the caller did not write to the database; the
        run's end records it, in the same update as its status (one round trip fewer)."""
        key = str(run_id)
        ctx, task = self.contexts.get(key), self.tasks.get(key)
        if ctx is None or task is None or task.done():
            return False
        if ctx.cancelled and mode != "immediate":
            return True
        if unrecorded_at is not None and not ctx.cancelled:
            ctx.unrecorded_cancel_at = unrecorded_at
        if mode == "immediate":
            ctx.cancel_mode = "immediate"
            task.cancel()
        else:
            ctx.request_cancel(mode)
        return True

    async def _control_loop(self) -> None:
        failures = FailureLog()
        while True:
            try:
                message = await layer.receive(self.channel_name)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Cancel signals are also picked up from the database by the heartbeat loop.
                failures.failed("executor control channel failed")
                await asyncio.sleep(1)
                continue
            failures.ok("the executor control channel")
            kind = message.get("type")
            if kind == layer.CANCEL:
                self.cancel_local(message.get("run_id"), message.get("mode") or "immediate")
            elif kind == layer.WATCH:
                self.hub.watch(message.get("run_id"))
            elif kind == layer.PING and message.get("reply_to"):
                await self._answer_ping(message)
            elif kind == layer.PING:
                answered = self._pings.get(message.get("token"))
                if answered is not None and not answered.done():
                    answered.set_result(None)
            elif kind == layer.STOP:
                return

    async def _answer_ping(self, message: dict) -> None:
        """Another process asks whether we are here (`owner_answers`): we are."""
        try:
            await layer.send(message["reply_to"], {"type": layer.PING, "token": message.get("token")})
        except Exception:
            log.warning("could not answer a ping from %s", message["reply_to"])

    async def owner_answers(self, channel: str) -> bool:
        """Whether the process whose executor listens on `channel` answers within
        RUN_OWNER_TIMEOUT; True when the channel layer cannot tell (it is away)."""
        token = uuid.uuid4().hex
        answered = self._pings[token] = asyncio.get_running_loop().create_future()
        try:
            reply_to = await self.ensure_started()
            await layer.send(channel, {"type": layer.PING, "token": token, "reply_to": reply_to})
            async with asyncio.timeout(settings.RUN_OWNER_TIMEOUT):
                await answered
            return True
        except TimeoutError:
            return False
        except Exception:
            log.warning("could not ask %s whether it is there", channel, exc_info=True)
            return True
        finally:
            self._pings.pop(token, None)

    async def check_layer(self) -> None:
        """The channel layer carries a message to this executor's control channel and back into
        its control loop (the readiness check): a round trip through the layer that takes no
        receive of its own (channels_redis lets one receive of a process wait at a time, and the
        control loop holds it). Raises if the layer refuses it; the caller bounds the wait."""
        token = uuid.uuid4().hex
        answered = self._pings[token] = asyncio.get_running_loop().create_future()
        try:
            await layer.send(self.channel_name, {"type": layer.PING, "token": token})
            await answered
        finally:
            self._pings.pop(token, None)

    async def _heartbeat_loop(self) -> None:
        """Keep our runs' heartbeats fresh, pick up cancel requests whose signal was lost, and
        now and then end runs of dead processes (the first time at once: at process start). A
        database that is away fails a beat or a sweep, which is tried again at the next one."""
        last_sweep = None
        loop = asyncio.get_running_loop()
        while True:
            if last_sweep is None or loop.time() - last_sweep >= settings.RUN_SWEEP_INTERVAL:
                last_sweep = loop.time()
                try:
                    swept = await sweep_stale(self.journal)
                    if swept:
                        log.warning("%d runs of stopped processes ended as interrupted", swept)
                    expired = await expire_pending(self)
                    if expired:
                        log.warning("%d tool calls waited too long for approval: rejected", expired)
                    await end_cancelled(self)
                except Exception:
                    log.warning("stale-run sweep failed", exc_info=True)
            await asyncio.sleep(settings.RUN_HEARTBEAT_INTERVAL)
            ids = list(self.contexts)
            if not ids:
                continue
            try:
                requested = await beat(ids)
            except Exception:
                log.warning("heartbeat failed", exc_info=True)
                continue
            for run_id, mode in requested:
                self.cancel_local(run_id, mode or "immediate")

    async def shutdown(self, grace: float) -> None:
        """The serving process is stopping. Runs get `grace` seconds to finish on their own;
        the others end `interrupted` now, each with its terminal event, its partial output and
        usage, instead of staying `running` (their conversations busy) until another process's
        sweep finds them stale. Then the background tasks stop."""
        running = [task for task in self.tasks.values() if not task.done()]
        if running and grace > 0:
            await asyncio.wait(running, timeout=grace)
        ending = []
        for key, task in list(self.tasks.items()):
            ctx = self.contexts.get(key)
            if ctx is not None and not task.done():
                ctx.interrupted = True
                task.cancel()
                ending.append(task)
        if ending:
            log.warning("server stopping: %d runs interrupted", len(ending))
            await asyncio.wait(ending, timeout=10)
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the background tasks once runs are done (a CLI command's or a test's loop ends).

        The control loop is stopped by a message rather than cancelled: on Python 3.11 a cancel
        that lands inside redis-py's `wait_for` can be swallowed, and the receive would go on."""
        await self.journal.flush()
        self.journal.close()
        if not self._background:
            return
        control, *others = self._background
        for task in others:
            task.cancel()
        try:
            await layer.send(self.channel_name, {"type": layer.STOP})
        except Exception:
            # The layer is away (Redis down): the loop waits in a receive that cannot return.
            control.cancel()
        stopped, _ = await asyncio.wait([control], timeout=10)
        if not stopped:
            log.warning("executor control loop did not stop")


@in_sync_thread
def beat(run_ids: list[str]) -> list[tuple[Any, str]]:
    """The runs' heartbeats set to now; returns the cancel requests recorded for them."""
    Run.objects.filter(pk__in=run_ids, status__in=Run.EXECUTING).update(heartbeat_at=timezone.now())
    requested = Run.objects.filter(pk__in=run_ids, cancel_requested_at__isnull=False)
    return list(requested.values_list("pk", "cancel_mode"))
