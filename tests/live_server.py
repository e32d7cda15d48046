"""A real server for tests that need sockets: daphne in a subprocess on a free port, on the test database."""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env() -> dict:
    db = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SQLITE_PATH")}
    if db["ENGINE"].endswith("sqlite3"):
        env["SQLITE_PATH"] = str(db["NAME"])
    else:
        env["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env.update(
        AGENTS_MODEL_PROVIDER="offline",
        OFFLINE_MODEL_DELAY="0.05",
        LOG_LEVEL="WARNING",
        RUN_HEARTBEAT_INTERVAL="0.5",
        THROTTLE_RUN_START="",
        THROTTLE_STREAM_OPEN="",
    )
    return env


def listening(proc: subprocess.Popen, port: int, what: str) -> subprocess.Popen:
    """`proc` once it accepts connections on `port`."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{what} did not start")


def start_server(port: int, **env) -> subprocess.Popen:
    # A listen backlog of 1024, not daphne's 50: a burst of connects (tests/test_load.py opens 200
    # at once) beyond the backlog of a busy server had a connection reset.
    endpoint = f"tcp:port={port}:interface=127.0.0.1:backlog=1024"
    proc = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-e", endpoint, "config.asgi:application"],
        cwd=ROOT,
        env={**server_env(), **env},
    )
    return listening(proc, port, "daphne")


def needs_worker_tier():
    """The mark of tests of worker mode: its queue is PostgreSQL's, its processes meet through Redis."""
    reason = "the worker tier: its queue is PostgreSQL's, its processes meet through Redis"
    return pytest.mark.skipif(connection.vendor != "postgresql" or not settings.REDIS_URL, reason=reason)


def start_worker(**env) -> subprocess.Popen:
    """A worker process of the worker tier (`manage.py run_worker`) on the test database; the
    web processes that hand it runs need RUN_EXECUTION=worker too."""
    command = [sys.executable, "manage.py", "run_worker"]
    return subprocess.Popen(command, cwd=ROOT, env={**server_env(), "RUN_EXECUTION": "worker", **env})


@contextlib.contextmanager
def serving(**env) -> Iterator[str]:
    """A server on a free port while the block runs: its base URL."""
    port = free_port()
    proc = start_server(port, **env)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


class PrivateRedis:
    """A redis-server of the test's own on a free port, to stop and start at will (the shared
    one serves the other tests)."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no"]
        self.proc = listening(subprocess.Popen(args, stdout=subprocess.DEVNULL), self.port, "redis-server")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None
