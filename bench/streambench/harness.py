"""The orchestrator's processes: the temporary directory and environment, the database, the fake and the
server, and the role subprocesses (client, floor, sink) whose JSON results it reads."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import HOST, ROOT, SCRIPT, cpu_seconds, free_port


class Harness:
    """The temporary directory, the environment every process gets, and the processes: the fake, the
    server, the role subprocesses. `Bench` (scenarios.py) adds what runs on them."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="stream-bench-"))
        self.procs: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []  # --workers: the worker tier's processes
        self.python = sys.executable
        self.pg_db: str | None = None
        self.env = dict(os.environ)
        self.env.update(
            DJANGO_SETTINGS_MODULE="config.settings",
            DEBUG="false",
            SECRET_KEY=secrets.token_urlsafe(64),
            LOG_LEVEL="WARNING",
            AGENTS_MODEL_PROVIDER="openai",
            OPENAI_API_KEY="bench",
            AGENTS_TRACE_EXPORT="false",
            AGENTS_TRACES="true" if args.traces == "on" else "false",
            ALLOWED_HOSTS="127.0.0.1,localhost",
            # One bench user starts thousands of streams a minute: no rate limits here.
            THROTTLE_RUN_START="",
            THROTTLE_STREAM_OPEN="",
            SQLITE_PATH=str(self.tmp / "bench.sqlite3"),
            DATABASE_URL="",
            REDIS_URL="",
            CHANNEL_PREFIX=f"bench{secrets.token_hex(4)}",
            PYTHONUNBUFFERED="1",
        )
        for name in (
            "RUN_EVENT_BATCH_SIZE",
            "RUN_EVENT_FLUSH_INTERVAL",
            "CHANNEL_CAPACITY",
        ):
            if getattr(args, name.lower(), None) is not None:
                self.env[name] = str(getattr(args, name.lower()))
        if args.postgres:
            self.pg_db = f"stream_bench_{secrets.token_hex(4)}"
            self._pg(f'CREATE DATABASE "{self.pg_db}"')
            self.env["DATABASE_URL"] = f"postgres://postgres@{HOST}:5432/{self.pg_db}"
        if args.redis:
            self.env["REDIS_URL"] = f"redis://{HOST}:6379/0"
        self.django_ready = False

    # processes

    def cpus(self, side: str) -> set[int] | None:
        """The cores a process of `side` ("server": the server and the floor; "load": the load
        generator, the fake upstream and the journal sink) is pinned to, or None (--no-pin, or a
        machine with one core). Pinned, the server and the floor each get one core, all their
        threads included, and never share it with the load that drives them."""
        available = sorted(os.sched_getaffinity(0))
        if not self.args.pin or len(available) < 2:
            return None
        return {available[0]} if side == "server" else set(available[1:])

    def spawn(
        self, cmd: list[str], log: str, env: dict | None = None, side: str = "load", **kw: Any
    ) -> subprocess.Popen:
        out = open(self.tmp / log, "ab")
        stdout = kw.pop("stdout", out)
        cpus = self.cpus(side)
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env or self.env,
            stdout=stdout,
            stderr=out,
            start_new_session=True,
            preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
            **kw,
        )
        proc._bench_log = out  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        proc._bench_log.close()  # type: ignore[attr-defined]
        if proc in self.procs:
            self.procs.remove(proc)

    def cleanup(self) -> None:
        for proc in list(self.procs):
            with contextlib.suppress(Exception):
                self.stop(proc)
        if self.django_ready:
            from django.db import connections

            connections.close_all()
        if self.pg_db:
            with contextlib.suppress(Exception):
                self._pg(f'DROP DATABASE IF EXISTS "{self.pg_db}" WITH (FORCE)')
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _pg(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(f"postgresql://postgres@{HOST}:5432/postgres", autocommit=True) as conn:
            conn.execute(sql)

    def wait_port(self, port: int, proc: subprocess.Popen, what: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}; see {self.tmp}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{what} did not listen on {port} within {timeout} s")

    def server_setting(self, name: str) -> Any:
        """A setting as the server sees it (the bench process has the same environment)."""
        if not self.django_ready:
            return None
        from django.conf import settings

        return getattr(settings, name)

    def setup_django(self) -> None:
        """Django in this process too (same env as the server): migrate, the bench user, the DB checks."""
        os.environ.update(self.env)
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        self.django_ready = True

    def prepare_db(self) -> str:
        from django.contrib.auth import get_user_model
        from django.core.management import call_command
        from django.db import connections

        from tokens_app.models import token_create

        call_command("migrate", verbosity=0, interactive=False)
        user = get_user_model().objects.create_user("bench", password=None)
        key = token_create(user, "bench")[1]
        connections.close_all()
        return key

    def start_fake(self) -> tuple[subprocess.Popen, int]:
        port = free_port()
        cmd = [
            self.python,
            SCRIPT,
            "--role",
            "fake",
            "--port",
            str(port),
            "--deltas",
            str(self.args.deltas),
        ]
        return self.spawn(cmd, "fake.log"), port

    def start_server(self, fake_port: int, wait: bool = True) -> tuple[subprocess.Popen, int]:
        port = free_port()
        env = dict(self.env, OPENAI_BASE_URL=f"http://{HOST}:{fake_port}/v1")
        if self.args.server == "uvicorn":
            cmd = [self.python, "-m", "uvicorn", "config.asgi:application", "--host", HOST]
            cmd += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
        else:
            daphne = str(Path(self.python).parent / "daphne")
            cmd = [daphne, "-b", HOST, "-p", str(port), "config.asgi:application"]
        if self.args.workers:
            env["RUN_EXECUTION"] = "worker"
            for n in range(self.args.workers):
                worker = [self.python, "manage.py", "run_worker"]
                self.workers.append(self.spawn(worker, f"worker{n}.log", env=env, side="server"))
        proc = self.spawn(cmd, "server.log", env=env, side="server")
        if wait:
            self.wait_port(port, proc, "daphne")
        return proc, port

    def server_cpu(self, server: subprocess.Popen) -> float:
        """CPU seconds of the server's side: the web process and, with --workers, its workers."""
        return cpu_seconds(server.pid) + sum(cpu_seconds(worker.pid) for worker in self.workers)

    def role(self, role: str, extra: list[str], env: dict | None = None, timeout: float = 900) -> dict:
        """Run the entry script as a client/floor/sink subprocess and return its JSON result."""
        cmd = [self.python, SCRIPT, "--role", role, *extra]
        side = "server" if role in ("floor", "sink") else "load"
        proc = self.spawn(cmd, f"{role}.log", env=env, side=side, stdout=subprocess.PIPE)
        try:
            out, _ = proc.communicate(timeout=timeout)
        finally:
            self.stop(proc)
        if proc.returncode != 0:
            log = self.tmp / f"{role}.log"
            raise RuntimeError(f"{role} {extra[:2]} failed ({proc.returncode}); see {log}")
        return json.loads(out.decode().strip().splitlines()[-1])

    def client_args(
        self, port: int, token: str, mode: str, streams: int, concurrency: int, delay_ms: float = 0.0
    ) -> list[str]:
        a = self.args
        return [
            "--mode", mode, "--port", str(port), "--token", token, "--agent", a.agent,
            "--streams", str(streams), "--concurrency", str(concurrency), "--timeout", str(a.timeout),
            "--stream-timeout", str(a.stream_timeout), "--warmup", str(a.warmup),
            "--load-delay-ms", str(delay_ms), *self.load_shape_args(),
        ]  # fmt: skip

    def load_shape_args(self) -> list[str]:
        """What client and floor loads share: --start-spread, --ttfd-trace."""
        a = self.args
        trace = ["--ttfd-trace", a.ttfd_trace] if a.ttfd_trace else []
        return ["--start-spread", str(a.start_spread), *trace]

    def hold_streams(self, port: int, token: str, count: int, while_open, limit: float = 120) -> dict:
        """Open `count` idle streams in a client process, call `while_open()`, then close them."""
        a = self.args
        extra = self.client_args(port, token, "idle", count, a.open_concurrency)
        extra[extra.index("--timeout") + 1] = str(limit)
        extra += ["--hold", str(a.idle_hold)]
        cmd = [self.python, SCRIPT, "--role", "client", *extra]
        proc = self.spawn(cmd, "idle.log", stdout=subprocess.PIPE, stdin=subprocess.PIPE)
        try:
            ready = self._read_line(proc, limit + 60)
            if ready is None:
                raise RuntimeError(f"idle client did not report READY; see {self.tmp / 'idle.log'}")
            opened = json.loads(ready)
            while_open()
            proc.stdin.write(b"close\n")
            proc.stdin.flush()
            self._read_line(proc, 60)
        finally:
            self.stop(proc)
        return opened

    @staticmethod
    def _read_line(proc: subprocess.Popen, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        buf = b""
        fd = proc.stdout.fileno()
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return None
                buf += chunk
                if b"\n" in buf:
                    return buf.split(b"\n", 1)[0].decode()
            elif proc.poll() is not None:
                return None
        return None
