"""A daily quota holds when starts race across processes: two servers on one database, 40 starts
at once with 50 tokens left, and the user ends at most one run past the quota (the starts
serialize on the user's row; each admitted run reserves AGENTS_RUN_TOKEN_RESERVATION tokens)."""

import asyncio
import datetime as dt

import httpx
import pytest
from django.db import connection

from agents_app.models import Run, UsageDay, UserQuota

from .live_server import free_port, start_server

pytestmark = [
    pytest.mark.live,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="two writers at once: PostgreSQL"),
]


async def test_forty_parallel_starts_on_two_processes(alice):
    await UserQuota.objects.acreate(user=alice, daily_tokens=1_000)
    today = dt.datetime.now(dt.UTC).date()
    await UsageDay.objects.acreate(user=alice, day=today, agent="chat", runs=1, total_tokens=950)
    ports = [free_port(), free_port()]
    servers = [start_server(port) for port in ports]
    try:
        headers = {"Authorization": f"Token {alice.token}"}
        async with httpx.AsyncClient(timeout=60) as client:
            answers = await asyncio.gather(
                *(
                    client.post(
                        f"http://127.0.0.1:{ports[n % 2]}/api/agents/chat/run",
                        json={"input": f"hi {n}"},
                        headers=headers,
                    )
                    for n in range(40)
                )
            )
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(10)
    codes = [answer.status_code for answer in answers]
    assert set(codes) == {200, 429} and codes.count(200) <= 2, codes
    # A run is admitted only while no other holds a reservation and the day's usage is under the
    # quota (a run that ended under the 50 tokens left leaves room for one more): past the quota
    # by at most the last admitted run, never by forty.
    runs = [run async for run in Run.objects.filter(owner=alice).order_by("created_at")]
    assert 950 + sum(run.total_tokens for run in runs[:-1]) < 1_000
    used = (await UsageDay.objects.aget(user=alice, day=today, agent="chat")).total_tokens
    assert used == 950 + sum(run.total_tokens for run in runs)
