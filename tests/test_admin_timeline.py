"""The admin's run page: the event stream as a compact, escaped timeline under a strict CSP."""

import re
from datetime import timedelta

import pytest
from django.contrib.staticfiles import finders
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from agents_app.admin_timeline import CLIP_AT, build_rows
from agents_app.models import Run, RunEvent
from agents_app.providers.responses_stream import TEXT_DELTA

pytestmark = pytest.mark.django_db

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(1)>"


@pytest.fixture
def staff_client(client, make_user):
    admin = make_user("root", is_staff=True, is_superuser=True)
    client.force_login(admin)
    return client


def deltas(item_id: str, text: str, size: int = 3, event_type: str = TEXT_DELTA) -> list[dict]:
    raw = {"type": "raw_response", "event_type": event_type, "item_id": item_id, "output_index": 0}
    return [{**raw, "delta": text[i : i + size]} for i in range(0, len(text), size)]


def item(name: str, **fields) -> dict:
    return {"type": "run_item", "name": name, "agent_name": "Assistant", **fields}


def numbered(run_id: str, bodies: list[dict]) -> list[dict]:
    return [{**body, "seq": seq, "run_id": run_id} for seq, body in enumerate(bodies, 1)]


def as_rows(events: list[dict]) -> list:
    start = timezone.now()
    return build_rows((e["seq"], e["type"], start + timedelta(milliseconds=e["seq"]), e) for e in events)


def store(run: Run, bodies: list[dict]) -> list[dict]:
    events = numbered(str(run.pk), bodies)
    RunEvent.objects.bulk_create([RunEvent(run=run, seq=e["seq"], type=e["type"], data=e) for e in events])
    return events


FIRST = "Let me check with the specialist. " * 10
SECOND = "17 * 23 = 391, computed by the calculator tool."
ARGS = '{"expression": "17 * 23"}'


def conversation_bodies(output: str = "391") -> list[dict]:
    """A handoff, then a tool call with streamed arguments, around two streamed messages."""
    started = {"type": "run_started", "conversation_id": None, "agent": "assistant", "provider": "offline"}
    usage = {"requests": 2, "input_tokens": 20, "output_tokens": 30, "total_tokens": 50}
    return [
        started,
        {"type": "agent_updated", "agent_name": "Assistant"},
        *deltas("msg_1", FIRST),
        item("message_output_created", item_type="message_output_item", content=FIRST),
        item("handoff_requested", item_type="handoff_call_item", tool_name="transfer_to_math", call_id="h1"),
        item(
            "handoff_occured", item_type="handoff_output_item", source_agent="Assistant", target_agent="Math"
        ),
        {"type": "agent_updated", "agent_name": "Math"},
        *calculate(output),
        *deltas("msg_2", SECOND, size=2),
        {"type": "raw_response", "event_type": "response.completed", "response_id": "resp_1"},
        {"type": "stream_complete", "final_output": SECOND, "usage": usage, "status": "completed"},
    ]


def calculate(output: str) -> list[dict]:
    """A `calculate` call whose arguments stream in 7 deltas, and its output."""
    return [
        *deltas("fc_1", ARGS, size=4, event_type="response.function_call_arguments.delta"),
        {"type": "raw_response", "event_type": "response.completed", "response_id": "resp_0"},
        item(
            "tool_called",
            item_type="tool_call_item",
            tool_name="calculate",
            tool_arguments=ARGS,
            call_id="c1",
        ),
        item("tool_output", item_type="tool_call_output_item", output=output, call_id="c1"),
    ]


def test_deltas_fold_into_one_row_per_item_and_calls_take_their_arguments():
    events = numbered("r1", conversation_bodies())
    rows = as_rows(events)

    kinds = [row.kind for row in rows]
    assert kinds == [
        "started",
        "agent",
        "text",
        "message",
        "handoff requested",
        "handoff",
        "agent",
        "tool call",
        "response",
        "tool output",
        "text",
        "response",
        "end",
    ]
    first, second = rows[2], rows[10]
    assert first.text == FIRST and first.count == len(deltas("msg_1", FIRST))
    assert (first.first_seq, first.last_seq) == (3, 2 + first.count)
    assert f"{first.count} deltas, seq {first.seq_label}" in first.note and "–" in first.seq_label  # noqa: RUF001
    assert second.text == SECOND and second.title == "msg_2"
    # The message's text is the streamed one: shown once, with a pointer to it.
    assert rows[3].text == "" and first.seq_label in rows[3].note
    assert rows[5].title == "Assistant -> Math"
    call = rows[7]  # the argument deltas and the tool_called event (after a response.completed), one row
    assert call.title == "calculate" and call.text == ARGS and "arguments in 7 deltas" in call.note
    assert call.seq_label == f"{call.first_seq}–{call.first_seq + 6}, {call.first_seq + 8}"  # noqa: RUF001
    assert call.count == 8 and rows[8].seq_label == str(call.first_seq + 7)
    assert rows[9].title == "calculate" and rows[9].text == "391"  # the output names its tool
    end = rows[-1]
    assert end.title == "completed" and "tokens 20 in + 30 out = 50" in end.note
    assert end.text == "" and f"the text of seq {second.seq_label}" in end.note
    assert rows[1].offset_label == "+0.001 s"
    # Folded rows keep at most 50 events for their raw JSON and say how many more there were.
    assert len(first.events) == 50 and first.more == first.count - 50
    assert first.raw.count("\n") == 49 and first.raw.startswith('{"type": "raw_response"')


def test_long_outputs_failed_searches_and_errors():
    progress = {"type": "research_progress", "stage": "searching", "completed": 2, "total": 4, "plan": []}
    events = numbered(
        "r2",
        [
            item(
                "tool_output",
                item_type="tool_call_output_item",
                output={"rows": ["x" * 900]},
                tool_name="sql",
            ),
            {**progress, "search": {"index": 1, "query": "lava", "status": "failed", "error": "timed out"}},
            {
                **progress,
                "completed": 3,
                "search": {"index": 0, "query": "ash", "status": "completed", "error": ""},
            },
            {"type": "error", "code": "model_unavailable", "message": "upstream 503"},
        ],
    )
    output, failed, done, error = as_rows(events)
    assert len(output.text) == CLIP_AT + 1 and output.text.endswith("…") and "under raw" in output.note
    assert "x" * 900 in output.raw
    assert failed.title == "searching 2 of 4" and failed.flag == "error" and "timed out" in failed.text
    assert "search 2: lava (failed)" in failed.text and "search failed" in failed.note
    assert done.flag == "" and done.text == "search 1: ash (completed)"
    assert (error.kind, error.title, error.text) == ("error", "model_unavailable", "upstream 503")
    assert error.flag == "error"


def timeline_of(page: str) -> str:
    return re.search(r'<div class="run-timeline">.*?</table>', page, re.S).group(0)


def test_run_page_shows_thousands_of_deltas_as_a_few_rows(staff_client, alice):
    run = Run.objects.create(owner=alice, agent="chat", input="hi", status="completed")
    answer = "".join(f"word{i} " for i in range(3000))
    words = [{**delta, "delta": f"word{i} "} for i, delta in enumerate(deltas("msg_big", "x" * 3000, size=1))]
    end = {"type": "stream_complete", "status": "completed"}
    store(run, [{"type": "run_started", "agent": "chat"}, *words, end])

    with CaptureQueriesContext(connection) as queries:
        response = staff_client.get(reverse("admin:agents_app_run_change", args=[run.pk]))
    assert response.status_code == 200
    assert sum("agents_app_runevent" in q["sql"] for q in queries.captured_queries) == 1
    page = response.content.decode()
    timeline = timeline_of(page)
    assert page.count(answer) == 1
    assert "3000 deltas, seq 2–3001" in timeline  # noqa: RUF001
    assert timeline.count("<tr") == 1 + 3  # the header and three rows for 3,002 events
    assert "<details" in timeline and "<summary>raw</summary>" in timeline and "… 2950 more" in timeline
    assert "all 3002 events" in timeline
    assert reverse("run-replay", args=[run.pk]) in timeline

    events_url = re.search(r'<a href="([^"]+)">all 3002 events', timeline).group(1).replace("&amp;", "&")
    listing = staff_client.get(events_url)
    assert listing.status_code == 200 and "3002 run events" in listing.content.decode()


def test_model_output_and_tool_output_are_escaped(staff_client, alice):
    run = Run.objects.create(owner=alice, agent="chat", input=HOSTILE, status="completed")
    store(run, [*calculate(HOSTILE), *deltas("msg_x", HOSTILE, size=5)])
    page = staff_client.get(reverse("admin:agents_app_run_change", args=[run.pk])).content.decode()
    assert "<script>alert" not in page and "<img src=x" not in page and "onerror=alert(1)>" not in page
    timeline = timeline_of(page)
    # The tool's output (shown and in its raw JSON) and the text assembled from the deltas.
    assert timeline.count("&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;") == 3


def test_page_loads_its_css_and_has_no_inline_styles(staff_client, alice):
    run = Run.objects.create(owner=alice, agent="chat", input="hi", status="completed")
    store(run, conversation_bodies())
    response = staff_client.get(reverse("admin:agents_app_run_change", args=[run.pk]))
    page = response.content.decode()
    assert 'href="/static/admin/agents_app/timeline.css"' in page
    assert "style=" not in timeline_of(page)
    assert "class='pretty-json'" in page and "style='white-space" not in page
    assert "style-src 'self'" in response.headers["Content-Security-Policy"]
    assert finders.find("admin/agents_app/timeline.css")
