"""Database connections are bounded: a burst of parallel requests to one live server process holds at
most its pool's size of PostgreSQL connections and every request succeeds."""

import asyncio
import threading
import time

import httpx
import psycopg
import pytest
from django.db import connection

from .live_server import free_port, start_server

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

APP_NAME = "pool-bound-test"
POOL_SIZE = 4


COUNT = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"


class Sampler(threading.Thread):
    """Polls the server's connection count until stopped; keeps the highest seen. Its own connection
    is opened first: were the server to exhaust the database's connections, the count still works."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        db = connection.settings_dict
        self.conn = psycopg.connect(
            host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"], autocommit=True
        )
        self.highest = 0
        self.samples = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        with self.conn:
            while not self.stopping.is_set():
                (count,) = self.conn.execute(COUNT, [APP_NAME]).fetchone()
                self.highest = max(self.highest, count)
                self.samples += 1
                time.sleep(0.005)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the pool is PostgreSQL's")
async def test_parallel_requests_hold_at_most_the_pool_and_all_succeed(alice):
    port = free_port()
    # libpq names the server's connections after PGAPPNAME, so they can be counted apart.
    proc = start_server(port, PGAPPNAME=APP_NAME, DB_POOL_MAX_SIZE=str(POOL_SIZE), DB_POOL_MIN_SIZE="1")
    sampler = Sampler()
    try:
        base = f"http://127.0.0.1:{port}"
        paths = ["/api/runs/", "/api/conversations/", "/api/agents/", "/api/research/", "/api/runs/?limit=5"]
        headers = {"Authorization": f"Token {alice.token}"}
        limits = httpx.Limits(max_connections=300, max_keepalive_connections=0)
        sampler.start()
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60, limits=limits) as client:
            started = time.monotonic()
            responses = await asyncio.gather(*(client.get(paths[i % len(paths)]) for i in range(300)))
            elapsed = time.monotonic() - started
        await asyncio.sleep(0.2)  # a last sample after the burst
    finally:
        sampler.stopping.set()
        sampler.join(10)
        proc.terminate()
        proc.wait(10)
    statuses = sorted({r.status_code for r in responses})
    assert statuses == [200], [r.text for r in responses if r.status_code != 200][:3]
    assert sampler.samples >= 3, f"too few samples in {elapsed:.1f} s"
    assert 1 <= sampler.highest <= POOL_SIZE


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the pool is PostgreSQL's")
async def test_runs_started_by_requests_give_their_connections_back(alice):
    """Each REST start is a Django request with its own sync thread; a run outliving it must not
    keep a connection there. Twice the pool's size of research runs (which write their reports as
    they go), one after another, all complete, and the server still answers."""
    port = free_port()
    pool = {"DB_POOL_MAX_SIZE": str(POOL_SIZE), "DB_POOL_MIN_SIZE": "1", "DB_POOL_TIMEOUT": "3"}
    proc = start_server(port, OFFLINE_MODEL_DELAY="0", **pool)
    try:
        headers = {"Authorization": f"Token {alice.token}"}
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30
        ) as client:
            for n in range(2 * POOL_SIZE):
                started = await client.post("/api/research/", json={"query": f"How do volcanoes form? ({n})"})
                assert started.status_code == 202, started.text
                run_id = started.json()["run_id"]
                for _ in range(100):
                    status = (await client.get(f"/api/runs/{run_id}/")).json()["status"]
                    if status not in ("queued", "running"):
                        break
                    await asyncio.sleep(0.1)
                assert status == "completed", (n, status)
            assert (await client.get("/api/conversations/")).status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)
