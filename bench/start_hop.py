"""The cost of one run start's database hop, measured in-process (figures, not a timed test).

Every SSE start does its database work in one hop to Django's sync thread (`RunStreamConsumer._open`):
the stale-connection check, token auth, the request's validation and the conversation and run
inserts. In a burst of fifty starts those hops queue on the one thread, so the last stream's first
delta waits for all of them. This script does exactly that hop N times in one process, against a
fresh SQLite file or a temporary PostgreSQL database, and prints one JSON line: wall and CPU time
per hop (best and median of several blocks) and the SQL statements per hop.

With `--end` it times the other trip every run makes to that thread instead: the commit of its
end (`executor._commit_ends` for one run: its final fields, its terminal event, the two memory
items a chat turn adds), which in a closed-loop burst queues among the starts.

    .venv/bin/python bench/start_hop.py [--postgres] [--end] [--hops 500] [--blocks 5]
"""

import argparse
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--postgres", action="store_true", help="a temporary database on 127.0.0.1:5432")
    p.add_argument("--hops", type=int, default=500, help="hops per block")
    p.add_argument("--blocks", type=int, default=5)
    p.add_argument("--end", action="store_true", help="time the commit of a run's end instead")
    args = p.parse_args()

    tmp = tempfile.mkdtemp(prefix="start-hop-")
    pg_db = f"start_hop_{uuid.uuid4().hex[:8]}" if args.postgres else None
    os.environ.update(DJANGO_SETTINGS_MODULE="config.settings", DEBUG="false")
    os.environ["SECRET_KEY"] = secrets.token_urlsafe(64)
    if pg_db:
        _pg(f'CREATE DATABASE "{pg_db}"')
        os.environ["DATABASE_URL"] = f"postgres://postgres@{HOST}:5432/{pg_db}"
    else:
        os.environ.pop("DATABASE_URL", None)
        os.environ["SQLITE_PATH"] = str(Path(tmp) / "db.sqlite3")
    sys.path.insert(0, str(ROOT))
    try:
        print(json.dumps(measure(args, "postgresql" if pg_db else "sqlite")), flush=True)
    finally:
        from django.db import connections

        connections.close_all()
        if pg_db:
            _pg(f'DROP DATABASE IF EXISTS "{pg_db}" WITH (FORCE)')
        shutil.rmtree(tmp, ignore_errors=True)


def _pg(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"postgresql://postgres@{HOST}:5432/postgres", autocommit=True) as conn:
        conn.execute(sql)


def measure(args: argparse.Namespace, db: str) -> dict:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import close_old_connections, connection
    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    from agents_app.executor import _commit_ends
    from agents_app.models import ConversationItem, Run
    from agents_app.sse import AgentStreamConsumer

    call_command("migrate", verbosity=0, interactive=False)
    user = get_user_model().objects.create_user("hop", password=None)
    key = Token.objects.create(user=user).key
    body = json.dumps({"input": "Tell me something long."}).encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/agents/chat/stream",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"authorization", f"Token {key}".encode())],
        "client": (HOST, 5555),
        "server": (HOST, 8000),
        "url_route": {"kwargs": {"slug": "chat"}},
    }
    consumer = AgentStreamConsumer()
    consumer.scope, consumer.worker = scope, "bench.worker"

    statements: list[str] = []

    def count(execute, sql, params, many, context):
        statements.append(sql.split()[0].upper())
        return execute(sql, params, many, context)

    def start_block(n: int) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            consumer._open(body)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        Run.objects.filter(status__in=Run.ACTIVE).update(status=Run.Status.COMPLETED)
        close_old_connections()
        return wall / n, cpu / n

    def ends(n: int) -> list:
        """n started runs, each with the end a completed chat turn commits."""
        answer = "word " * 200
        out = []
        for _ in range(n):
            run, _seq = consumer._open(body)
            fields = {
                "status": Run.Status.COMPLETED,
                "final_output": answer,
                "error": "",
                "error_code": "",
                "response_id": "",
                "current_turn": 1,
                "finished_at": timezone.now(),
                "last_seq": 206,
                "requests": 1,
                "input_tokens": 12,
                "output_tokens": 200,
                "total_tokens": 212,
            }
            event = {"type": "stream_complete", "seq": 206, "run_id": str(run.pk), "final_output": answer}
            turn = (
                {"role": "user", "content": "Tell me something long."},
                {"role": "assistant", "content": answer},
            )
            items = [ConversationItem(conversation_id=run.conversation_id, data=data) for data in turn]
            out.append((run, fields, event, items))
        return out

    def end_block(n: int) -> tuple[float, float]:
        batch = ends(n)
        wall, cpu = time.perf_counter(), time.process_time()
        for end in batch:
            _commit_ends([end])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        close_old_connections()
        return wall / n, cpu / n

    block = end_block if args.end else start_block
    block(50)  # warm-up: imports, first-use caches, the connection
    walls, cpus = [], []
    for _ in range(args.blocks):
        wall, cpu = block(args.hops)
        walls.append(wall)
        cpus.append(cpu)
    end = ends(1)[0] if args.end else None  # made before the count starts
    with connection.execute_wrapper(count):
        if args.end:
            _commit_ends([end])
        else:
            consumer._open(body)
    return {
        "bench": "end_commit" if args.end else "start_hop",
        "db": db,
        "hops": args.hops * args.blocks,
        "wall_ms_best": round(min(walls) * 1000, 3),
        "wall_ms_median": round(statistics.median(walls) * 1000, 3),
        "cpu_ms_best": round(min(cpus) * 1000, 3),
        "cpu_ms_median": round(statistics.median(cpus) * 1000, 3),
        "statements_per_hop": statements,  # per end, with --end
        "health_check": bool(connection.settings_dict.get("CONN_HEALTH_CHECKS")),
    }


if __name__ == "__main__":
    main()
