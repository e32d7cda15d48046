"""Persistence capacity (runs in its own process: --role sink): the run engine's journal alone. Kept
apart because it imports the engine's internals (agents_app.runs) and changes with them."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

from .common import ROOT


def sink_main(args: argparse.Namespace) -> None:
    """The run engine's journal alone (no SDK, no HTTP): how many events/s one process can persist and
    publish. `--streams` runs each get `--deltas` delta events, added round-robin as fast as the loop goes."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    from agents_app.models import Run, RunEvent
    from agents_app.runs.journal import Journal
    from agents_app.runs.publish import Hub

    async def main() -> dict:
        user = await get_user_model().objects.aget(username="bench")
        runs = [
            await Run.objects.acreate(owner=user, agent=args.agent, input="sink") for _ in range(args.streams)
        ]
        # Every batch goes to the channel-layer group too, as when another process watches each run
        # (the runs are not this hub's own).
        sink = Journal(Hub(), on_lost=lambda run_id, error: None)
        total = args.streams * args.deltas
        start = time.perf_counter()
        for seq in range(1, args.deltas + 1):
            for run in runs:
                event = {
                    "type": "raw_response",
                    "seq": seq,
                    "run_id": str(run.pk),
                    "event_type": "response.output_text.delta",
                    "delta": "word ",
                    "item_id": "__fake_id__",
                    "output_index": 0,
                }
                sink.append(str(run.pk), event)
            await asyncio.sleep(0)  # a producer yields between events; let the sink run
        await sink.flush()
        stored, deadline = 0, time.monotonic() + 60
        while time.monotonic() < deadline:
            stored = await RunEvent.objects.filter(run__in=runs).acount()
            if stored >= total:
                break
            await asyncio.sleep(0.05)
        wall = time.perf_counter() - start
        return {"events": total, "stored": stored, "wall_s": wall, "events_per_s": stored / wall}

    print(json.dumps(asyncio.run(main())), flush=True)
