"""/metrics: Prometheus counters that move when runs happen, for staff or the metrics token
only; several processes sharing PROMETHEUS_MULTIPROC_DIR report their sum."""

import json
import urllib.request

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient
from prometheus_client.parser import text_string_to_metric_families

from .live_server import serving
from .streams import SSEClient, stream_run, wait_finished

pytestmark = pytest.mark.django_db(transaction=True)
TOKEN = "scrape-me"
SCRAPER = {"Authorization": f"Bearer {TOKEN}"}


def samples(text: str) -> dict:
    """{(sample name, sorted labels): value}."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: dict, name: str, **labels) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: dict, after: dict, name: str, **labels) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def scrape() -> dict:
    response = await AsyncClient().get("/metrics", headers=SCRAPER)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    return samples(response.content.decode())


async def test_metrics_move_with_runs(alice, settings, start_fake, use_fake):
    settings.METRICS_TOKEN = TOKEN
    before = await scrape()
    _client, events = await stream_run(alice.token, {"input": "What is 6 * 7?"})
    await wait_finished(events[0]["run_id"])
    after = await scrape()
    chat, completed = {"agent": "chat"}, {"agent": "chat", "status": "completed"}
    assert moved(before, after, "agents_runs_started_total", **chat) == 1
    assert moved(before, after, "agents_runs_finished_total", **completed) == 1
    assert moved(before, after, "agents_events_journalled_total") >= len(events)
    assert moved(before, after, "agents_time_to_first_token_seconds_count", **chat) == 1
    assert moved(before, after, "agents_run_duration_seconds_count", **completed) == 1
    assert moved(before, after, "agents_active_runs") == 0
    # A failing provider counts as an upstream error, by code.
    use_fake(start_fake(fail=(503, "server_error")))
    settings.OPENAI_MAX_RETRIES = 0
    _client, events = await stream_run(alice.token, {"input": "hello"})
    assert events[-1]["code"] == "model_unavailable"
    await wait_finished(events[0]["run_id"])
    failed = await scrape()
    assert moved(after, failed, "agents_upstream_errors_total", code="model_unavailable") == 1
    assert moved(after, failed, "agents_runs_finished_total", agent="chat", status="failed") == 1


async def test_open_streams_and_active_runs_are_counted_while_open(alice, settings, slow_model):
    settings.METRICS_TOKEN = TOKEN
    slow_model["seconds"] = 5
    before = await scrape()
    stream = SSEClient("POST", "/api/agents/chat/stream?on_disconnect=cancel", {"input": "hi"}, alice.token)
    assert await stream.start() == 200
    events = await stream.read_until(lambda e: e["type"] == "run_started")
    during = await scrape()
    assert moved(before, during, "agents_open_streams") == 1
    assert moved(before, during, "agents_active_runs") == 1
    await stream.disconnect()
    await stream.comm.wait(5)
    await wait_finished(events[0]["run_id"])
    after = await scrape()
    assert (
        moved(before, after, "agents_open_streams") == 0 and moved(before, after, "agents_active_runs") == 0
    )


async def test_metrics_are_for_staff_and_the_token_only(alice, make_user, settings, api_for):
    settings.METRICS_TOKEN = TOKEN
    assert (await AsyncClient().get("/metrics")).status_code == 403
    assert (await AsyncClient().get("/metrics", headers={"Authorization": "Bearer nope"})).status_code == 403
    assert (await api_for(alice).get("/metrics")).status_code == 403  # an API token is not enough
    user = AsyncClient()
    await user.aforce_login(alice)
    assert (await user.get("/metrics")).status_code == 403
    staff = AsyncClient()
    await staff.aforce_login(await sync_to_async(make_user)("sam", is_staff=True))
    assert (await staff.get("/metrics")).status_code == 200
    settings.METRICS_TOKEN = ""  # none configured: no bearer value opens it
    assert (await AsyncClient().get("/metrics", headers={"Authorization": "Bearer "})).status_code == 403


def test_processes_sharing_a_directory_report_their_sum(alice, tmp_path):
    """Two servers, one run on each: either one's /metrics counts both."""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "METRICS_TOKEN": TOKEN, "OFFLINE_MODEL_DELAY": "0"}
    auth = {"Authorization": f"Token {alice.token}", "Content-Type": "application/json"}
    with serving(**env) as first, serving(**env) as second:
        for url in (first, second):
            run = urllib.request.Request(
                f"{url}/api/agents/chat/run", json.dumps({"input": "hi"}).encode(), auth
            )
            assert json.load(urllib.request.urlopen(run, timeout=30))["status"] == "completed"
        page = urllib.request.urlopen(
            urllib.request.Request(f"{second}/metrics", headers=SCRAPER), timeout=10
        )
        metrics = samples(page.read().decode())
    assert value(metrics, "agents_runs_started_total", agent="chat") == 2
    assert value(metrics, "agents_runs_finished_total", agent="chat", status="completed") == 2


async def test_the_queue_depth_counts_runs_waiting_their_turn(alice, settings):
    """agents_runs_queued: the runs queued behind a conversation's running one, from the database."""
    settings.METRICS_TOKEN, settings.OFFLINE_MODEL_DELAY = TOKEN, 0.05
    assert value(await scrape(), "agents_runs_queued") == 0
    body = {"input": "Tell me a story about owls", "session_id": "q", "if_busy": "enqueue"}
    clients = [SSEClient("POST", "/api/agents/chat/stream", body, alice.token) for _ in range(3)]
    for client in clients:  # the first runs, the other two wait behind it
        assert await client.start() == 200
        await client.read_chunk()
    assert value(await scrape(), "agents_runs_queued") == 2
    for client in clients:
        assert (await client.read_all())[-1]["status"] == "completed"
    assert value(await scrape(), "agents_runs_queued") == 0
