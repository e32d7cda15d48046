"""Research over SSE and WebSocket: progress events in order with correct counts; cancel during searches."""

import pytest

from agents_app.models import Run
from research_app.models import Document, ResearchReport

from .streams import SSEClient, lifespan_shutdown, text_of, ws_client, ws_events_until_terminal

TEXT_DELTA = "response.output_text.delta"
pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = "How do volcanoes and plate tectonics build islands?"


@pytest.fixture
def corpus(db):
    for title, body in [
        ("Volcanoes", "Volcanoes erupt lava. Hotspot volcanoes build islands far from plate edges."),
        ("Plate tectonics", "Plates move and collide. Subduction builds volcanic island arcs."),
        ("Islands", "Oceanic islands form from lava piled above the sea; reefs grow around them."),
        ("Coffee", "Coffee is brewed from roasted seeds."),
    ]:
        Document.objects.create(title=title, body=body, source=f"corpus:{title.lower()}.md", shared=True)


def check_progress(events: list[dict]) -> list[dict]:
    """The research_progress events follow planning -> searching 0..N -> writing, with consistent counts."""
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    progress = [e for e in events if e["type"] == "research_progress"]
    assert progress[0]["stage"] == "planning" and progress[0]["plan"] == []
    total = progress[1]["total"]
    assert total >= 3 and progress[1]["stage"] == "searching" and progress[1]["completed"] == 0
    assert len(progress[1]["plan"]) == total
    searches = progress[2 : 2 + total]
    assert [e["stage"] for e in searches] == ["searching"] * total
    assert [e["completed"] for e in searches] == list(range(1, total + 1))
    assert all(e["total"] == total and e["search"]["status"] == "completed" for e in searches)
    assert sorted(e["search"]["index"] for e in searches) == list(range(total))
    assert any(e["sources"] for e in searches)
    writing = progress[2 + total]
    assert writing["stage"] == "writing" and writing["completed"] == writing["total"] == total
    assert {s["title"] for s in writing["sources"]} == {s["title"] for e in searches for s in e["sources"]}
    assert len(progress) == total + 3
    assert len({e["report_id"] for e in progress}) == 1
    # The underlying agents' events are interleaved: the planner runs before the first search starts...
    first_tool = next(e for e in events if e["type"] == "run_item" and e["name"] == "tool_called")
    assert progress[1]["seq"] < first_tool["seq"] < writing["seq"]
    final = events[-1]
    assert final["type"] == "stream_complete" and final["status"] == "completed"
    assert final["final_output"]["report_id"] == progress[0]["report_id"]
    assert "## Sources" in final["final_output"]["markdown_report"]
    return progress


async def test_progress_over_sse(alice, corpus):
    client = SSEClient("POST", "/api/agents/research/stream", {"input": QUESTION}, alice.token)
    assert await client.start() == 200
    events = await client.read_all()
    assert events[0]["type"] == "run_started" and events[0]["agent"] == "research"
    progress = check_progress(events)
    report = await ResearchReport.objects.aget(pk=progress[0]["report_id"])
    assert report.status == "completed" and str(report.run_id) == events[0]["run_id"]
    # Joining the finished run replays the same stream.
    join = SSEClient("GET", f"/api/runs/{events[0]['run_id']}/stream", token=alice.token)
    assert await join.start() == 200
    assert await join.read_all() == events


async def test_progress_over_websocket(alice, corpus):
    ws = ws_client("research", alice.token)
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "run", "input": QUESTION})
    events = await ws_events_until_terminal(ws)
    check_progress(events)
    assert await ws.receive_nothing(0.2)
    await ws.disconnect()


def slow_searches(settings):
    # Paced deltas make each search take a while; one at a time so cancel lands between them.
    settings.OFFLINE_MODEL_DELAY = 0.01
    settings.RESEARCH_SEARCH_CONCURRENCY = 1


async def test_cancel_during_searches_over_websocket(alice, corpus, settings):
    slow_searches(settings)
    ws = ws_client("research", alice.token)
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "run", "input": QUESTION})
    events = []
    while not any(e["type"] == "research_progress" and e["completed"] == 1 for e in events):
        events.append(await ws.receive_json_from(10))
    run_id = events[0]["run_id"]
    await ws.send_json_to({"type": "cancel", "run_id": run_id})
    events += await ws_events_until_terminal(ws, run_id)
    await ws.disconnect()

    assert events[-1]["type"] == "stream_complete" and events[-1]["status"] == "cancelled"
    stages = [e["stage"] for e in events if e["type"] == "research_progress"]
    assert "writing" not in stages
    run = await Run.objects.aget(pk=run_id)
    report = await ResearchReport.objects.aget(run=run)
    assert run.status == "cancelled" and report.status == "cancelled" and report.finished_at
    assert 1 <= len(report.search_results) < len(report.plan)
    assert report.markdown_report == ""


async def test_cancel_during_searches_over_rest_while_streaming_sse(alice, corpus, settings, api_for):
    slow_searches(settings)
    client = SSEClient("POST", "/api/agents/research/stream", {"input": QUESTION}, alice.token)
    assert await client.start() == 200
    events = await client.read_until(lambda e: e["type"] == "research_progress" and e["stage"] == "searching")
    run_id = events[0]["run_id"]
    response = await api_for(alice).post(f"/api/runs/{run_id}/cancel", {})
    assert response.status_code == 202
    events = await client.read_all()
    assert events[-1]["type"] == "stream_complete" and events[-1]["status"] == "cancelled"
    report = await ResearchReport.objects.aget(run_id=run_id)
    assert report.status == "cancelled" and len(report.search_results) < len(report.plan)


async def test_a_cancelled_research_keeps_where_its_report_is_not_its_searchers_text(
    alice, corpus, settings, api_for
):
    """Searches run in parallel, each streaming its own text: cut short, a research run keeps as its
    output where its report is and the plan, never the interleaved text of the searchers."""
    settings.OFFLINE_MODEL_DELAY = 0.01
    settings.RESEARCH_SEARCH_CONCURRENCY = 3
    client = SSEClient("POST", "/api/agents/research/stream", {"input": QUESTION}, alice.token)
    assert await client.start() == 200
    searching = await client.read_until(
        lambda e: e["type"] == "research_progress" and e["stage"] == "searching"
    )
    await client.read_until(lambda e: e["seq"] > searching[-1]["seq"] and e.get("event_type") == TEXT_DELTA)
    run_id = searching[0]["run_id"]
    assert (await api_for(alice).post(f"/api/runs/{run_id}/cancel")).status_code == 202
    events = await client.read_all()
    assert events[-1]["status"] == "cancelled"
    searching_from = next(i for i, e in enumerate(events) if e.get("stage") == "searching")
    assert text_of(events[searching_from:])  # the searchers had streamed text when the cancel came
    run = await Run.objects.aget(pk=run_id)
    report = await ResearchReport.objects.aget(run=run)
    assert (
        run.final_output
        == events[-1]["final_output"]
        == {
            "report_id": report.pk,
            "status": "cancelled",
            "plan": report.plan,
        }
    )
    assert report.status == "cancelled"


async def test_a_stopping_server_leaves_the_report_interrupted_like_its_run(alice, corpus, settings):
    slow_searches(settings)
    settings.RUN_SHUTDOWN_GRACE = 0
    client = SSEClient("POST", "/api/agents/research/stream", {"input": QUESTION}, alice.token)
    assert await client.start() == 200
    events = await client.read_until(lambda e: e["type"] == "research_progress" and e["stage"] == "searching")
    await lifespan_shutdown()
    assert (await client.read_all())[-1]["code"] == "interrupted"
    report = await ResearchReport.objects.select_related("run").aget(run_id=events[0]["run_id"])
    assert (report.run.status, report.status) == ("interrupted", "interrupted")
    assert report.plan and report.finished_at is not None


async def test_the_report_of_a_run_whose_process_died_is_interrupted_too(alice, settings):
    from datetime import timedelta

    from django.utils import timezone

    from agents_app.runs.engine import sweep_stale_runs

    old = timezone.now() - timedelta(seconds=settings.RUN_STALE_AFTER + 5)
    run = await Run.objects.acreate(owner=alice, agent="research", input=QUESTION, status="running")
    await Run.objects.filter(pk=run.pk).aupdate(heartbeat_at=old, created_at=old)
    report = await ResearchReport.objects.acreate(run=run, owner=alice, query=QUESTION, status="running")
    done = await ResearchReport.objects.acreate(
        run=await Run.objects.acreate(owner=alice, agent="research", input="x", status="completed"),
        owner=alice,
        query="x",
        status="completed",
    )
    assert await sweep_stale_runs() == 1
    report = await ResearchReport.objects.aget(pk=report.pk)
    assert report.status == "interrupted" and "stale heartbeat" in report.error and report.finished_at
    assert (await ResearchReport.objects.aget(pk=done.pk)).status == "completed"
