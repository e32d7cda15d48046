"""Usage per user, day and agent, kept by the run engine as runs end; GET /api/usage/; daily
token quotas (a default, and a user's own set by staff) that refuse new runs with 429."""

import asyncio
import datetime as dt

import pytest
from django.db import connection
from django.db.models import Sum
from django.test import Client
from django.utils import timezone

from agents_app.models import Run, UsageDay, UserQuota
from agents_app.usage import QuotaExceeded, quota_reservation, usage_record

from .streams import SSEClient, stream_run, wait_finished, ws_client

pytestmark = pytest.mark.django_db(transaction=True)
COUNTERS = ("requests", "input_tokens", "output_tokens", "total_tokens")


async def sums(model, **filters) -> dict:
    fields = {name: Sum(name) for name in COUNTERS}
    return await model.objects.filter(**filters).aaggregate(**fields)


async def test_usage_totals_equal_the_runs_after_concurrent_runs_of_two_users(alice, bob):
    inputs = ["What is 6 * 7?", "Hello there", "Roll a die", "What time is it in Tokyo?"]
    starts = [stream_run(user.token, {"input": text}) for user in (alice, bob) for text in inputs]
    starts.append(stream_run(alice.token, {"input": "hi"}, path="/api/agents/assistant/stream"))
    results = await asyncio.gather(*starts)
    for _client, events in results:
        await wait_finished(events[0]["run_id"])
    for user in (alice, bob):
        from_runs = await sums(Run, owner=user)
        assert from_runs["total_tokens"] > 0
        assert await sums(UsageDay, user=user) == from_runs
        days = await UsageDay.objects.filter(user=user).acount()
        assert days == (2 if user == alice else 1)  # one row per agent (the test does not cross midnight)
        runs = await UsageDay.objects.filter(user=user).aaggregate(n=Sum("runs"))
        assert runs["n"] == await Run.objects.filter(owner=user).acount()


async def test_the_usage_endpoint_reports_the_callers_own(alice, bob, api_for):
    await stream_run(alice.token, {"input": "What is 6 * 7?"})
    _c, events = await stream_run(bob.token, {"input": "hello"})
    await wait_finished(events[0]["run_id"])
    report = (await api_for(alice).get("/api/usage/")).json()
    today = dt.datetime.now(dt.UTC).date()
    assert report["to"] == today.isoformat() and report["from"] == (today - dt.timedelta(days=29)).isoformat()
    assert [d["agent"] for d in report["days"]] == ["chat"] and report["days"][0]["runs"] == 1
    run = await Run.objects.aget(owner=alice)
    assert report["total"]["total_tokens"] == run.total_tokens > 0
    assert report["quota"] == {"daily_tokens": None, "used_today": run.total_tokens}
    assert (await api_for(alice).get("/api/usage/?agent=assistant")).json()["days"] == []
    bad = [("from=yesterday", "from"), ("to=", "to"), ("agent=x", "agent"), ("agent=", "agent")]
    for query, field in bad:
        answer = await api_for(alice).get(f"/api/usage/?{query}")
        assert answer.status_code == 400 and field in answer.json()["error"]["fields"], query
    assert (await api_for(None).get("/api/usage/")).status_code == 401
    # The first days there are: no 500 computing the default `from` (issue 30, finding 5).
    for query in ("to=0001-01-01", "from=0001-01-01&to=0001-01-01", "from=2000-02-01&to=0001-01-01"):
        answer = await api_for(alice).get(f"/api/usage/?{query}")
        assert answer.status_code in (200, 400), query
    assert (await api_for(alice).get("/api/usage/?to=0001-01-01")).json()["from"] == "0001-01-01"


async def test_a_quota_refuses_runs_until_the_day_ends_and_staff_can_lift_it(alice, settings, api_for):
    settings.AGENTS_DAILY_TOKEN_QUOTA = 1
    _c, events = await stream_run(alice.token, {"input": "hello"})  # under the quota: it runs...
    assert events[-1]["type"] == "stream_complete"  # ...and finishes, though it crosses it
    await wait_finished(events[0]["run_id"])
    refused = await api_for(alice).post("/api/agents/chat/run", {"input": "again"})
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "quota_exceeded" and error["resets_at"].endswith("T00:00:00Z")
    tomorrow = dt.datetime.combine(dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1), dt.time(), dt.UTC)
    assert dt.datetime.fromisoformat(error["resets_at"]) == tomorrow
    assert 0 < int(refused["Retry-After"]) <= 86_401
    stream = SSEClient("POST", "/api/agents/chat/stream", {"input": "again"}, alice.token)
    assert await stream.start() == 429
    await stream.read_chunk()
    assert stream.json()["error"]["code"] == "quota_exceeded"
    ws = ws_client(token=alice.token)
    await ws.connect()
    await ws.send_json_to({"type": "run", "input": "again"})
    assert (await ws.receive_json_from(5))["code"] == "quota_exceeded"
    await ws.disconnect()
    assert await Run.objects.acount() == 1
    # Staff lift it for Alice: her own quota (0: none) instead of the default.
    quota = await UserQuota.objects.acreate(user=alice, daily_tokens=0)
    assert (await api_for(alice).post("/api/agents/chat/run", {"input": "again"})).status_code == 200
    quota.daily_tokens = 10**9
    await quota.asave()
    assert (await api_for(alice).post("/api/agents/chat/run", {"input": "again"})).status_code == 200


def test_staff_see_usage_with_its_chart_and_set_quotas(alice, make_user):
    UsageDay.objects.create(user=alice, day=dt.date(2026, 11, 30), agent="chat", runs=2, total_tokens=300)
    UsageDay.objects.create(user=alice, day=dt.date(2026, 12, 1), agent="chat", runs=1, total_tokens=100)
    staff = Client()
    staff.force_login(make_user("sam", is_staff=True, is_superuser=True))
    page = staff.get("/admin/agents_app/usageday/").content.decode()
    assert "<svg" in page and "2026-11-30: 300 tokens" in page and "2026-12-01: 100 tokens" in page
    assert 'height="120"' in page and 'height="40"' in page  # bars to scale: 300 is the peak
    added = staff.post("/admin/agents_app/userquota/add/", {"user": alice.pk, "daily_tokens": 5000})
    assert added.status_code == 302 and UserQuota.objects.get(user=alice).daily_tokens == 5000
    plain = Client()
    plain.force_login(alice)
    assert plain.get("/admin/agents_app/usageday/").status_code == 302  # to the admin's login


async def test_parallel_starts_cannot_slip_under_the_quota(alice, settings, api_for):
    """50 tokens left and 40 starts at once: one is admitted (its reservation takes the rest), the
    others are refused while it runs; once it ends, its real usage counts instead."""
    settings.AGENTS_DAILY_TOKEN_QUOTA = 1_000
    settings.AGENTS_RUN_TOKEN_RESERVATION = 4_000
    today = dt.datetime.now(dt.UTC).date()
    await UsageDay.objects.acreate(user=alice, day=today, agent="chat", runs=1, total_tokens=950)
    api = api_for(alice)
    answers = await asyncio.gather(
        *(api.post("/api/agents/chat/run", {"input": f"hi {n}"}) for n in range(40))
    )
    codes = [a.status_code for a in answers]
    assert set(codes) == {200, 429} and codes.count(200) <= 2, codes
    refused = next(a for a in answers if a.status_code == 429).json()["error"]
    assert refused["code"] == "quota_exceeded"
    # A run is admitted only while no other holds a reservation and the day's usage is under the
    # quota (a run that ended under 50 tokens leaves room for one more): past the quota by at
    # most the last admitted run, never by forty.
    runs = [run async for run in Run.objects.filter(owner=alice).order_by("created_at")]
    assert all(run.reserved_tokens == 4_000 and not run.is_active for run in runs)
    assert 950 + sum(run.total_tokens for run in runs[:-1]) < 1_000
    used = (await UsageDay.objects.aget(user=alice, day=today, agent="chat")).total_tokens
    assert used == 950 + sum(run.total_tokens for run in runs)
    assert (await api.post("/api/agents/chat/run", {"input": "more"})).status_code == 429


def test_a_run_ending_during_the_quota_check_is_counted(alice, settings):
    """The quota check reads the active runs' reservations and the day's usage in two statements;
    a run that ends between them (its usage recorded as it ends) must be seen in one of them."""
    settings.AGENTS_RUN_TOKEN_RESERVATION = 4_000
    now = timezone.now()
    UsageDay.objects.create(user=alice, day=now.date(), agent="chat", runs=1, total_tokens=950)
    run = Run.objects.create(owner=alice, agent="chat", input="hi", status="running", reserved_tokens=4_000)
    ended = []

    def end_the_run_after_the_first_read(execute, sql, params, many, context):
        answer = execute(sql, params, many, context)
        if "SUM" in sql and not ended:
            ended.append(sql)
            Run.objects.filter(pk=run.pk).update(status="completed", total_tokens=113)
            usage_record(alice.pk, "chat", {"total_tokens": 113}, now)
        return answer

    with connection.execute_wrapper(end_the_run_after_the_first_read):
        with pytest.raises(QuotaExceeded):
            quota_reservation(alice.pk, 1_000, now)
    assert ended
