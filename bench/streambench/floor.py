"""The floor (runs in its own process: --role floor): the same runs with the SDK alone, in-process,
against the same fake at the same concurrency; and its idle runs, the SDK's own RSS per waiting run."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

from .client import closed_loop, write_trace
from .common import ROOT, TEXT_DELTA, mem_probe, rss_kb
from .fake import configure_fake


def floor_main(args: argparse.Namespace) -> None:
    """The same runs in-process with `Runner.run_streamed` against the same fake, same concurrency."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["AGENTS_TRACES"] = "false"  # the SDK alone: no database to write traces to
    import django

    django.setup()
    from agents import Runner
    from agents.stream_events import RawResponsesStreamEvent

    from agents_app import providers
    from agents_app.registry import get_spec

    providers.configure_tracing()
    spec = get_spec(args.agent)

    async def one() -> tuple[int, float | None, bool, float]:
        agent = spec.build(None)
        t0 = time.perf_counter()
        result = Runner.run_streamed(agent, "Tell me something long.", run_config=providers.run_config())
        events, ttfd = 0, None
        try:
            async for event in result.stream_events():
                events += 1
                if (
                    ttfd is None
                    and isinstance(event, RawResponsesStreamEvent)
                    and event.data.type == "response.output_text.delta"
                ):
                    ttfd = time.perf_counter() - t0
        finally:
            result.cancel()
        return events, ttfd, bool(result.final_output), t0

    async def scenario() -> dict:
        for _ in range(max(0, args.warmup)):
            await one()
        start, cpu_start = time.perf_counter(), time.process_time()
        results: list[tuple[int, float | None, bool, float]] = await closed_loop(args, one, start)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        good = [r for r in results if r[2]]
        write_trace(args, "floor", delay_ms, [(r[3] - start, r[1]) for r in good])
        return {
            "streams": len(results),
            "ok": len(good),
            "wall_s": wall,
            "cpu_ms_per_stream": 1000 * cpu / max(1, len(good)),
            "streams_per_s": len(good) / wall if wall else 0.0,
            "sdk_events_per_stream": round(sum(r[0] for r in results) / max(1, len(results)), 1),
            "ttfd_s": [r[1] for r in good if r[1] is not None],
        }

    async def idle() -> dict:
        """`--streams` runs that each got their first delta and now wait on the model (the fake is
        configured to hold): RSS growth per run is the SDK's own share of an idle server stream."""

        async def held(first: asyncio.Semaphore) -> None:
            agent = spec.build(None)
            result = Runner.run_streamed(agent, "Tell me something long.", run_config=providers.run_config())
            try:
                async for event in result.stream_events():
                    if isinstance(event, RawResponsesStreamEvent) and event.data.type == TEXT_DELTA.decode():
                        first.release()
            finally:
                result.cancel()

        async def open_runs(count: int, tasks: list[asyncio.Task]) -> None:
            first = asyncio.Semaphore(0)
            tasks += [asyncio.create_task(held(first)) for _ in range(count)]
            for _ in range(count):
                await asyncio.wait_for(first.acquire(), timeout=args.timeout)

        async def close(tasks: list[asyncio.Task]) -> None:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        warm: list[asyncio.Task] = []  # the server's idle phase warms up the same way
        await open_runs(min(20, max(2, args.streams // 100)), warm)
        await close(warm)
        await asyncio.sleep(1.0)
        mem_probe(os.getpid())
        rss0 = rss_kb(os.getpid())
        tasks: list[asyncio.Task] = []
        try:
            for start in range(0, args.streams, args.concurrency):
                await open_runs(min(args.concurrency, args.streams - start), tasks)
            await asyncio.sleep(2.0)  # as in the server's measurement
            rss1 = rss_kb(os.getpid())
            mem_probe(os.getpid())
        finally:
            await close(tasks)
        return {"runs": len(tasks), "rss_per_run_kb": (rss1 - rss0) / max(1, len(tasks))}

    if args.mode == "idle":
        print(json.dumps(asyncio.run(idle())), flush=True)
        return
    out = {}
    for delay_ms in args.delays:
        configure_fake(args.fake_port, args.deltas, delay_ms / 1000)
        out[str(delay_ms)] = asyncio.run(scenario())
    print(json.dumps(out), flush=True)
