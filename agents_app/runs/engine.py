"""One engine per event loop (one per serving process; tests and commands run a loop each): the
local readers' hub, the journal and the executor, wired together."""

import asyncio
import weakref

from agents.tracing import flush_traces

from .executor import RunExecutor
from .journal import Journal
from .publish import Hub
from .sweep import sweep_stale


class Engine:
    def __init__(self) -> None:
        self.hub = Hub()
        self.journal = Journal(self.hub, on_lost=lambda run_id, error: self.executor.on_lost(run_id, error))
        self.executor = RunExecutor(self.hub, self.journal)
        self.stops_with_reactor = False  # daphne: its shutdown is hooked to the reactor's


_engines: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Engine]" = weakref.WeakKeyDictionary()


def get_engine() -> Engine:
    """The running loop's engine, made on first use."""
    loop = asyncio.get_running_loop()
    engine = _engines.get(loop)
    if engine is None:
        engine = _engines[loop] = Engine()
    return engine


def current_engine() -> Engine | None:
    """The running loop's engine if it has one (never makes it)."""
    return _engines.get(asyncio.get_running_loop())


async def sweep_stale_runs() -> int:
    """End every stale active run now (the executor also does it at start and periodically)."""
    return await sweep_stale(get_engine().journal)


async def close_engine() -> None:
    """Stop the running loop's engine once its runs are done (a command's or a test's loop ends)."""
    engine = _engines.pop(asyncio.get_running_loop(), None)
    if engine is not None:
        await engine.executor.aclose()


async def shutdown_engine(grace: float) -> None:
    """The serving process is stopping: its runs get `grace` seconds, then end `interrupted`."""
    engine = _engines.pop(asyncio.get_running_loop(), None)
    if engine is not None:
        await engine.executor.shutdown(grace)
        await asyncio.to_thread(flush_traces)  # the traces' last batch, before the process ends
