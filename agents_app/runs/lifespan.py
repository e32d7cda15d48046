"""The engine's start and stop with the serving process: ASGI lifespan (uvicorn and other servers
that speak it), and daphne's reactor, which has no lifespan."""

import asyncio
import gc
import sys
from collections.abc import Callable

from django.conf import settings

from .engine import Engine, current_engine, get_engine, shutdown_engine


async def lifespan(scope: dict, receive: Callable, send: Callable) -> None:
    """At start-up, start the engine (its first sweep ends the runs a previous process left
    running); at shutdown, end this process's runs (see RunExecutor.shutdown)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await start_engine()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await shutdown_engine(settings.RUN_SHUTDOWN_GRACE)
            await send({"type": "lifespan.shutdown.complete"})
            return


async def start_engine() -> Engine:
    """The running loop's engine, started (its control and heartbeat loops): at process start
    where the server speaks lifespan, else with the first run."""
    engine = get_engine()
    await engine.executor.ensure_started()
    if not engine.stops_with_reactor:
        _shut_down_with_the_reactor(engine)
    return engine


def start_with_the_reactor() -> None:
    """Under daphne (Twisted's reactor installed, not yet running: the application is imported
    before it runs), start the engine as soon as it runs, as ASGI lifespan does elsewhere: its
    first sweep ends the runs a previous process left running, and later ones follow every
    RUN_SWEEP_INTERVAL, without waiting for a request to start a run."""
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None or getattr(reactor, "running", False) or not hasattr(reactor, "callLater"):
        return
    # A delayed call fires inside the running loop (startup triggers fire before it runs).
    reactor.callLater(0, lambda: asyncio.ensure_future(start_engine()))


def _shut_down_with_the_reactor(engine: Engine) -> None:
    """Under daphne (Twisted, no ASGI lifespan), run the shutdown before the reactor stops: a
    'before shutdown' trigger may return a Deferred, and the reactor waits for it."""
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None or not getattr(reactor, "running", False):
        return
    from twisted.internet import defer

    engine.stops_with_reactor = True

    def before_shutdown():
        if current_engine() is not engine:
            return None
        return defer.Deferred.fromFuture(asyncio.ensure_future(shutdown_engine(settings.RUN_SHUTDOWN_GRACE)))

    reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)


def tune_process() -> None:
    """A serving process's Python settings (a web process's, a worker's), once everything it
    needs is imported: `GIL_SWITCH_INTERVAL` (Python's 5 ms made every database round trip of
    the sync and journal threads wait for the busy loop); what was imported moved out of the
    collector's way (`gc.freeze`: full collections scan only the objects of runs and requests,
    each was ~160 ms otherwise); `GC_GEN0_THRESHOLD` (at Python's 700 the young generation was
    collected ~35 times a second at 50 runs, promoting them before they died)."""
    if settings.GIL_SWITCH_INTERVAL > 0:
        sys.setswitchinterval(settings.GIL_SWITCH_INTERVAL)
    gc.freeze()
    if settings.GC_GEN0_THRESHOLD > 0:
        gc.set_threshold(settings.GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
