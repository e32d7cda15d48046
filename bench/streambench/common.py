"""Helpers every part of the benchmark shares: the paths and host, percentiles, progress on stderr,
free ports, and per-process CPU and RSS read from /proc."""

from __future__ import annotations

import os
import resource
import signal
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Every role runs as this entry script in a subprocess (`--role client|floor|fake|sink`).
SCRIPT = str(ROOT / "bench" / "stream_bench.py")
HOST = "127.0.0.1"
TEXT_DELTA = b"response.output_text.delta"


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for an empty list."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


_T0 = time.monotonic()


def say(message: str) -> None:
    """Progress on stderr (stdout carries only the JSON line)."""
    print(f"[stream_bench {time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_quiet(pid: int, limit: float, below_pct: float = 15.0) -> float:
    """Wait (bounded) until a process uses less than `below_pct` % CPU over 0.5 s; returns seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        c0 = cpu_seconds(pid)
        time.sleep(0.5)
        if 100 * (cpu_seconds(pid) - c0) / 0.5 < below_pct:
            break
    return round(time.monotonic() - start, 1)


def mem_probe(pid: int) -> None:
    """With MEM_PROBE set (bench/probes/sitecustomize.py): ask a process for a memory dump and give
    it time to write it (this process's own handler runs before os.kill returns). The census's
    temporary memory moves the RSS figures a little: with MEM_PROBE, read the dumps."""
    if os.environ.get("MEM_PROBE"):
        os.kill(pid, signal.SIGUSR2)
        if pid != os.getpid():
            time.sleep(5.0)


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")
