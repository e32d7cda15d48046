"""Real database faults on PostgreSQL: the server's connections are killed by the database in the
middle of a run (what a restart or a failover does to them), and nothing is lost.

The other outage tests (test_run_lifecycle.py) make the ORM raise; these let psycopg meet a
connection the server closed, so Django's own error wrapping and reconnection are what is tested.
"""

import asyncio

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from agents_app.models import Run, RunEvent
from agents_app.runs.store import on_writer_thread

from .streams import SSEClient, stream_run, stream_until_first_delta, text_of, wait_finished

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="kills PostgreSQL backends"),
]


def backend_pid() -> int:
    """The PostgreSQL backend of this thread's connection (opened if need be)."""
    connection.ensure_connection()
    return connection.connection.info.backend_pid


async def kill_server_connections() -> int:
    """Terminate the server's connections, as a database restart does: the journal writer's and
    Django's sync thread's (the test's own stay: pytest-django needs them). Returns how many."""
    pids = [await sync_to_async(backend_pid)()]
    pids.append(await asyncio.to_thread(on_writer_thread, backend_pid))
    return await asyncio.to_thread(terminate, pids)


def terminate(pids: list[int]) -> int:
    settings = connection.settings_dict
    with psycopg.connect(
        dbname=settings["NAME"],
        user=settings["USER"],
        host=settings["HOST"],
        port=settings["PORT"] or 5432,
        password=settings["PASSWORD"] or None,
        autocommit=True,
    ) as killer:
        rows = killer.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [pids])
        return sum(1 for (killed,) in rows.fetchall() if killed)


async def test_connections_killed_mid_run_lose_nothing(alice, settings):
    """What a database restart does to the server's connections, in the middle of a run: the run
    ends in one terminal state with every event, and the next run on the same process succeeds:
    the engine's database trips replace a broken connection by themselves (agents_app/db.py), with
    no reconnect code of the engine's."""
    settings.OFFLINE_MODEL_DELAY = 0.02  # long enough to be killed in the middle
    settings.RUN_HEARTBEAT_INTERVAL = 0.2
    client = await stream_until_first_delta(alice)
    assert await kill_server_connections() == 2
    events = await client.read_all(timeout=30)

    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(events) + 1))
    terminal = events[-1]
    assert terminal["type"] == "stream_complete" and terminal["status"] == "completed"
    assert text_of(events) == terminal["final_output"]
    run = await wait_finished(terminal["run_id"])
    assert run.status == Run.Status.COMPLETED and run.last_seq == len(events)
    stored = [e.data async for e in RunEvent.objects.filter(run=run).order_by("seq")]
    assert stored == events

    # The server goes on serving: a new run starts (its request reconnects) and completes.
    _, again = await stream_run(alice.token, {"input": "Tell me about rivers"})
    assert again[-1]["type"] == "stream_complete" and again[-1]["status"] == "completed"


async def test_connections_killed_while_idle_next_request_reconnects(alice):
    _, first = await stream_run(alice.token, {"input": "hi"})
    assert first[-1]["status"] == "completed"
    assert await kill_server_connections() == 2
    join = SSEClient("GET", f"/api/runs/{first[0]['run_id']}/stream", token=alice.token)
    assert await join.start() == 200
    assert await join.read_all() == first
