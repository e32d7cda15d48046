"""The load generator (runs in its own process: --role client): SSE streams read over raw sockets, the
closed loop (the floor's too), and the load, idle and disconnect clients."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .common import HOST, TEXT_DELTA, pct, raise_nofile

TERMINAL_PREFIXES = (b'{"type":"stream_complete"', b'{"type":"error"')


class ChunkedDecoder:
    """Incremental HTTP/1.1 chunked transfer decoding."""

    def __init__(self) -> None:
        self.buf = b""
        self.size: int | None = None
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self.buf += data
        out = []
        while not self.done:
            if self.size is None:
                end = self.buf.find(b"\r\n")
                if end < 0:
                    break
                self.size = int(self.buf[:end].split(b";", 1)[0], 16)
                self.buf = self.buf[end + 2 :]
                if self.size == 0:
                    self.done = True
                    break
            if len(self.buf) < self.size + 2:
                break
            out.append(self.buf[: self.size])
            self.buf = self.buf[self.size + 2 :]
            self.size = None
        return b"".join(out)


class Stream:
    """One SSE stream over a raw socket: the client must not be the bottleneck, so no HTTP library."""

    def __init__(self, port: int, token: str, path: str, body: bytes | None) -> None:
        self.port, self.token, self.path, self.body = port, token, path, body
        self.status = 0
        self.events = 0
        self.seq_ok = True
        self.last_seq = 0
        self.run_id: str | None = None
        self.ttfd: float | None = None
        self.t0 = 0.0
        self.terminal: dict | None = None
        self.arrivals: list[float] = []
        self.error: str | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> asyncio.StreamReader:
        reader, self.writer = await asyncio.open_connection(HOST, self.port)
        method = "POST" if self.body is not None else "GET"
        head = [
            f"{method} {self.path} HTTP/1.1",
            f"Host: {HOST}:{self.port}",
            f"Authorization: Token {self.token}",
            "Accept: text/event-stream",
            "Connection: close",
        ]
        if self.body is not None:
            head += ["Content-Type: application/json", f"Content-Length: {len(self.body)}"]
        self.t0 = time.perf_counter()
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + (self.body or b""))
        return reader

    async def run(
        self, *, stop_after_first: bool = False, stop_on_delta: bool = False, keep_arrivals: bool = True
    ) -> Stream:
        """Read the stream to its terminal event (or only to the first event when stop_after_first)."""
        reader = await self.open()
        raw = b""
        while b"\r\n\r\n" not in raw:
            chunk = await reader.read(65536)
            if not chunk:
                self.error = "connection closed before headers"
                return self
            raw += chunk
        head, rest = raw.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        self.status = int(lines[0].split()[1])
        if self.status != 200:
            self.error = f"HTTP {self.status}: {rest[:300]!r}"
            return self
        chunked = any(h.lower().startswith(b"transfer-encoding:") and b"chunked" in h.lower() for h in lines)
        decoder = ChunkedDecoder() if chunked else None
        text = b""
        data = rest
        while True:
            now = time.perf_counter()
            text += decoder.feed(data) if decoder else data
            while True:
                end = text.find(b"\n\n")
                if end < 0:
                    break
                frame, text = text[:end], text[end + 2 :]
                if self._frame(frame, now, keep_arrivals) or (stop_after_first and self.events):
                    return self
                if stop_on_delta and self.ttfd is not None:
                    return self
            if decoder is not None and decoder.done:
                self.error = "stream ended without a terminal event"
                return self
            data = await reader.read(65536)
            if not data:
                self.error = "connection closed without a terminal event"
                return self

    def _frame(self, frame: bytes, now: float, keep_arrivals: bool) -> bool:
        """Account for one SSE frame; True on the terminal event."""
        if not frame.startswith(b"id: "):
            return False  # retry: line, keep-alive comment
        newline = frame.find(b"\n")
        seq = int(frame[4:newline])
        payload = frame[newline + 7 :]  # after "\ndata: "
        self.events += 1
        if seq != self.last_seq + 1:
            self.seq_ok = False
        self.last_seq = seq
        if keep_arrivals:
            self.arrivals.append(now)
        if self.run_id is None:
            self.run_id = json.loads(payload)["run_id"]
        if self.ttfd is None and TEXT_DELTA in payload:
            self.ttfd = now - self.t0
        if payload.startswith(TERMINAL_PREFIXES):
            self.terminal = json.loads(payload)
            return True
        return False

    def close(self, abort: bool = False) -> None:
        if self.writer is not None:
            if abort:
                self.writer.transport.abort()
            else:
                self.writer.close()
            self.writer = None

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and self.seq_ok
            and self.terminal is not None
            and self.terminal.get("type") == "stream_complete"
            and self.terminal.get("status") == "completed"
        )


async def closed_loop(args: argparse.Namespace, one: Callable[[], Awaitable[Any]], start: float) -> list:
    """`--streams` calls of `one`, `--concurrency` at a time: each worker starts its next call as
    soon as its last one returned, until the streams are done or `--timeout` after `start` passed.
    With --start-spread worker i of C makes its first call i/C of the spread late, so the load
    does not begin with C simultaneous starts. The server's load and the floor's alike."""
    results: list = []
    remaining = args.streams
    workers = min(args.concurrency, args.streams)
    deadline = start + args.timeout

    async def worker(index: int) -> None:
        nonlocal remaining
        await asyncio.sleep(args.start_spread * index / max(1, workers))
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            results.append(await one())

    await asyncio.gather(*(worker(i) for i in range(workers)))
    return results


def write_trace(args: argparse.Namespace, who: str, delay_ms: float, points: list[tuple]) -> None:
    """--ttfd-trace DIR: each stream's start (s after the load began) and its time to first delta,
    in start order, one file per load (`<who>-<delay>ms-<time>.json`); streams without one left out."""
    if args.ttfd_trace:
        path = Path(args.ttfd_trace) / f"{who}-{delay_ms:g}ms-{time.time_ns()}.json"
        path.write_text(json.dumps(sorted(p for p in points if p[1] is not None)))


async def client_load(args: argparse.Namespace) -> dict:
    """`--streams` streams, `--concurrency` at a time; closed loop, each stream on a new connection."""
    body = json.dumps({"input": "Tell me something long."}).encode()
    path = f"/api/agents/{args.agent}/stream"

    async def one() -> Stream:
        stream = Stream(args.port, args.token, path, body)
        try:
            await asyncio.wait_for(stream.run(), timeout=args.stream_timeout)
        except (TimeoutError, OSError, ValueError) as exc:
            stream.error = stream.error or f"{type(exc).__name__}: {exc}"
        finally:
            stream.close()
        return stream

    # Warm-up (imports, connection pools, JIT-free but cache-warm): not counted.
    for _ in range(max(0, args.warmup)):
        await one()

    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    results: list[Stream] = await closed_loop(args, one, start)
    wall = time.perf_counter() - start
    usage1 = resource.getrusage(resource.RUSAGE_SELF)

    good = [s for s in results if s.ok]
    gaps: list[float] = []
    for s in good:
        gaps.extend(b - a for a, b in zip(s.arrivals, s.arrivals[1:], strict=False))
    ttfds = [s.ttfd for s in good if s.ttfd is not None]
    write_trace(args, "server", args.load_delay_ms, [(s.t0 - start, s.ttfd) for s in good])
    events = sum(s.events for s in results)
    errors = [s.error or f"bad terminal {s.terminal}" for s in results if not s.ok]
    return {
        "streams": len(results),
        "warmup": max(0, args.warmup),
        "ok": len(good),
        "errors": len(errors),
        "error_samples": errors[:3],
        "wall_s": wall,
        "streams_per_s": len(good) / wall if wall else 0.0,
        "events": events,
        "events_per_s": events / wall if wall else 0.0,
        "events_per_stream": round(events / len(results), 1) if results else 0,
        "ttfd_s": ttfds,
        "gap_p50_s": pct(gaps, 50),
        "gap_p99_s": pct(gaps, 99),
        "gap_max_s": max(gaps) if gaps else None,
        "client_cpu_pct": 100
        * ((usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime))
        / max(wall, 1e-9),
        "run_events": {s.run_id: s.events for s in results if s.run_id},
    }


async def client_idle(args: argparse.Namespace) -> dict:
    """Open `--streams` streams, wait for each one's first event, report READY, hold until told to close."""
    if args.join:
        path, body = f"/api/runs/{args.join}/stream", None
    else:
        path = f"/api/agents/{args.agent}/stream?on_disconnect=cancel"
        body = json.dumps({"input": "Wait for me."}).encode()
    streams = [Stream(args.port, args.token, path, body) for _ in range(args.streams)]
    gate = asyncio.Semaphore(args.concurrency)
    progress: list[tuple[int, float]] = []  # (streams open, seconds since start) every 10 %
    step = max(1, args.streams // 10)
    opened = 0

    async def open_one(stream: Stream) -> None:
        nonlocal opened
        async with gate:
            try:
                await asyncio.wait_for(
                    stream.run(stop_after_first=True, keep_arrivals=False), args.stream_timeout
                )
            except (TimeoutError, OSError, ValueError) as exc:
                stream.error = f"{type(exc).__name__}: {exc}"
            if stream.events and stream.error is None:
                opened += 1
                if opened % step == 0:
                    progress.append((opened, round(time.perf_counter() - start, 2)))

    start = time.perf_counter()
    tasks = [asyncio.create_task(open_one(s)) for s in streams]
    # Bounded: whatever is open when the time is up counts; the rest are abandoned.
    _done, pending = await asyncio.wait(tasks, timeout=args.timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    ready = sum(1 for s in streams if s.events and s.error is None and s.writer is not None)
    errors = [s.error for s in streams if s.error]
    report = {
        "ready": ready,
        "asked": len(streams),
        "open_s": round(time.perf_counter() - start, 2),
        "timed_out": len(pending),
        "progress": progress,
        "errors": errors[:3],
    }
    print(json.dumps(report), flush=True)
    # Hold until the orchestrator writes a line (or the hold limit passes).
    loop = asyncio.get_running_loop()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), timeout=args.hold)
    for s in streams:
        s.close()
    return {"closed": len(streams)}


async def client_disconnect(args: argparse.Namespace) -> dict:
    """Open streams with ?on_disconnect=cancel and close each socket after its first text delta. The
    orchestrator then reads when the server recorded the cancel (Run.cancel_requested_at: the moment it
    noticed) and when the run ended (finished_at), both against `closed_at`."""
    path = f"/api/agents/{args.agent}/stream?on_disconnect=cancel"
    body = json.dumps({"input": "Stream until I leave."}).encode()
    probes, errors = [], []
    for _ in range(args.streams):
        stream = Stream(args.port, args.token, path, body)
        try:
            await asyncio.wait_for(stream.run(stop_on_delta=True, keep_arrivals=False), args.stream_timeout)
        except (TimeoutError, OSError, ValueError) as exc:
            stream.error = stream.error or repr(exc)
        if stream.ttfd is None or stream.run_id is None:
            errors.append(stream.error or "no first delta")
            stream.close()
            continue
        closed_at = time.time()
        stream.close()
        probes.append({"run_id": stream.run_id, "closed_at": closed_at})
        await asyncio.sleep(0.5)
    return {"probes": probes, "errors": errors[:3]}


def client_main(args: argparse.Namespace) -> None:
    raise_nofile()
    mode = {"load": client_load, "idle": client_idle, "disconnect": client_disconnect}[args.mode]
    print(json.dumps(asyncio.run(mode(args))), flush=True)
