#!/usr/bin/env python
"""SSE streaming benchmark: one daphne process, a local fake OpenAI server, a separate load generator.

Run from the project root with the project's virtualenv:

    .venv/bin/python bench/stream_bench.py                 # full run (C=50, 200 deltas, 200 streams, ...)
    .venv/bin/python bench/stream_bench.py --smoke         # tiny numbers for CI (< 60 s)
    .venv/bin/python bench/stream_bench.py --postgres --redis

Prints ONE JSON line with the figures (see docs/performance.md for what each one means). Everything
talks to 127.0.0.1 only; every subprocess is stopped on exit; every loop is bounded in count and time.

One fake OpenAI process (tests/fake_openai.FakeOpenAI plus a `/bench/config` route, so its deltas and
pace can change between phases) serves every phase; the DB (a fresh SQLite file, or a temporary
PostgreSQL database with --postgres) is migrated in this process, which also does the DB checks.
  1. floor: the same runs in-process with `Runner.run_streamed` (no server), same fake, same concurrency,
     at --delay-ms and at --ttfd-delay-ms (a separate process, the server idle meanwhile). It uses the
     server's model provider, so it builds streamed events the way the server does
     (OPENAI_FAST_EVENTS); when that is on, a "plain floor" at --delay-ms builds them with openai's own
     `construct`, as a plain SDK application does (`ratio_to_plain_floor`).
  2. server: `--streams` SSE streams at `--concurrency` against one daphne process, at --delay-ms (streams/s,
     events/s, gaps) and at --ttfd-delay-ms (server-added time to first delta = client TTFD - floor TTFD,
     percentile by percentile); afterwards every streamed event is checked against the RunEvent table.
  3. idle: the fake sends one delta and then waits `--idle-hold` s. First the floor: `--idle-streams`
     in-process runs wait on the model, RSS per run (the SDK's own share). Then a fresh daphne:
     `--idle-streams` SSE streams are opened (bounded by --idle-timeout) and held; server RSS from /proc
     before/after (RSS added by the server = per stream - the floor's per run). Then
     client disconnects are timed, with the idle streams open and on a quiet server: a stream started with
     `?on_disconnect=cancel` is closed after its first delta; notice = Run.cancel_requested_at - close time.

Internal roles (`--role client|floor|fake`) are this same file run as a subprocess.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from streambench.client import client_main
from streambench.common import raise_nofile
from streambench.fake import fake_main
from streambench.floor import floor_main
from streambench.report import print_line
from streambench.scenarios import Bench
from streambench.sink import sink_main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="SSE streaming benchmark (prints one JSON line).")
    p.add_argument("--concurrency", type=int, default=50, help="concurrent SSE streams (default 50)")
    p.add_argument("--deltas", type=int, default=200, help="text deltas per answer (default 200)")
    p.add_argument("--streams", type=int, default=300, help="total streams per scenario (default 300)")
    p.add_argument("--delay-ms", type=float, default=0.0, help="upstream delay per delta, main scenario")
    p.add_argument("--ttfd-delay-ms", type=float, default=5.0, help="upstream delay for the TTFD scenario")
    p.add_argument("--no-ttfd", dest="ttfd_delay_ms", action="store_const", const=None, help="skip it")
    p.add_argument(
        "--ttfd-low-concurrency",
        type=int,
        default=2,
        help="also measure TTFD at this concurrency, below saturation (0: skip; default 2)",
    )
    p.add_argument(
        "--ttfd-rounds",
        type=int,
        default=1,
        help="measure the C=--concurrency TTFD this many times, floor and server alternating "
        "(the JSON line adds each round's server-added p99, their median, and the p99 of all "
        "rounds' streams together; default 1)",
    )
    p.add_argument(
        "--ratio-rounds",
        type=int,
        default=1,
        help="measure the ratio to the plain floor this many times, the floor right before each "
        "server run (the machine's speed drifts between minutes; the JSON line adds each round's "
        "ratio and CPU figures and their medians, and the targets use the medians; default 1)",
    )
    p.add_argument(
        "--ttfd-sweep",
        type=int,
        nargs="*",
        default=[],
        help="also measure the server-added TTFD at each of these concurrencies (e.g. 5 10 20)",
    )
    p.add_argument("--idle-streams", type=int, default=2000, help="idle open streams for RSS (0: skip)")
    p.add_argument("--idle-hold", type=float, default=600.0, help="upper bound (s) idle streams stay open")
    p.add_argument(
        "--idle-timeout", type=float, default=300.0, help="upper bound (s) to open the idle streams"
    )
    p.add_argument("--idle-cpu-window", type=float, default=10.0, help="seconds of server CPU sampled idle")
    p.add_argument("--open-concurrency", type=int, default=50, help="idle streams being opened at once")
    p.add_argument("--disconnect-reps", type=int, default=5, help="client-disconnect probes")
    p.add_argument("--agent", default="chat", help="agent slug (default chat)")
    p.add_argument("--warmup", type=int, default=5, help="untimed streams before each timed load")
    p.add_argument(
        "--start-spread",
        type=float,
        default=0.0,
        help="seconds over which each load's C workers start their first streams, evenly (server and "
        "floor alike); 0: all at once, so equal-length streams then restart in waves of C (default 0)",
    )
    p.add_argument(
        "--ttfd-trace",
        metavar="DIR",
        help="write each load's (start, time to first delta) per stream to DIR, server and floor",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="upper bound (s) for each timed phase")
    p.add_argument("--stream-timeout", type=float, default=120.0, help="upper bound (s) for one stream")
    p.add_argument("--server", choices=["daphne", "uvicorn"], default="daphne", help="ASGI server")
    p.add_argument("--postgres", action="store_true", help="PostgreSQL on 127.0.0.1:5432 (temp database)")
    p.add_argument("--redis", action="store_true", help="Redis channel layer on 127.0.0.1:6379/0")
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="worker mode (needs --postgres --redis): this many run_worker processes beside the web "
        "process, all on the server's core; server CPU counts them all",
    )
    p.add_argument("--run-event-batch-size", type=int, help="server RUN_EVENT_BATCH_SIZE override")
    p.add_argument("--run-event-flush-interval", type=float, help="server RUN_EVENT_FLUSH_INTERVAL override")
    p.add_argument("--channel-capacity", type=int, help="server CHANNEL_CAPACITY override")
    p.add_argument(
        "--traces", choices=["on", "off"], default="on", help="server AGENTS_TRACES: traces in the database"
    )
    p.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin processes to cores (by default the server and the floor run on the first "
        "core, the load generator and the fake upstream on the others)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir (DB, logs)")
    p.add_argument("--detail", action="store_true", help="include per-scenario detail in the JSON line")
    p.add_argument("--smoke", action="store_true", help="tiny numbers for CI (< 60 s)")
    # Internal roles.
    p.add_argument(
        "--role", choices=["main", "client", "floor", "fake", "sink"], default="main", help=argparse.SUPPRESS
    )
    p.add_argument("--mode", choices=["load", "idle", "disconnect"], default="load", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--token", help=argparse.SUPPRESS)
    p.add_argument("--join", help=argparse.SUPPRESS)
    p.add_argument("--hold", type=float, default=60.0, help=argparse.SUPPRESS)
    p.add_argument("--fake-port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--delays", type=float, nargs="+", default=[0.0], help=argparse.SUPPRESS)
    p.add_argument("--delay", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--load-delay-ms", type=float, default=0.0, help=argparse.SUPPRESS)  # trace names
    args = p.parse_args(argv)
    if args.workers and not (args.postgres and args.redis):
        p.error("--workers needs --postgres and --redis (worker mode's queue and channel layer)")
    if args.smoke and args.role == "main":
        args.concurrency, args.deltas, args.streams = 4, 20, 8
        args.idle_streams, args.disconnect_reps, args.warmup = 20, 2, 1
        args.idle_cpu_window, args.timeout, args.stream_timeout = 0.5, 30.0, 20.0
        args.idle_hold, args.idle_timeout, args.ttfd_low_concurrency = 40.0, 20.0, 2
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Helper roles run in their own processes: (entry point, needs the raised file limit).
    roles = {
        "client": (client_main, False),
        "floor": (floor_main, True),
        "sink": (sink_main, False),
        "fake": (fake_main, True),
    }
    if args.ttfd_trace:
        args.ttfd_trace = str(Path(args.ttfd_trace).resolve())
        Path(args.ttfd_trace).mkdir(parents=True, exist_ok=True)
    if args.role in roles:
        entry, many_files = roles[args.role]
        if many_files:
            raise_nofile()
        entry(args)
        return 0
    raise_nofile()
    bench = Bench(args)

    def on_signal(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        result = bench.run()
    except Exception as exc:
        print(f"stream_bench failed: {exc} (logs: {bench.tmp})", file=sys.stderr)
        bench.args.keep = True
        return 1
    finally:
        bench.cleanup()
    print_line(result, args.detail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
