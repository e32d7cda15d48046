"""Fault injection against the local fake OpenAI server, one matrix: each fault ends the run
with exactly one terminal event within 5 s of the fault, a Run row that says the same, and the
stored events equal to the streamed ones. Errors before the first token are retried (the
openai client's bounded retries with back-off, OPENAI_MAX_RETRIES); once the answer began to
stream, nothing is replayed: the run fails with its partial output kept."""

import time
from dataclasses import dataclass

import pytest
from django.db import DataError

from agents_app.models import ConversationItem, Run, RunEvent

from .streams import SSEClient
from .test_journal import failing_commit

pytestmark = pytest.mark.django_db(transaction=True)

FULL = "word0 word1 word2 word3 word4 word5"
TERMINAL = ("stream_complete", "error")


@dataclass
class Fault:
    fake: dict  # FakeOpenAI options
    status: str
    code: str
    text: str  # the run's streamed text, and so its final or partial output
    requests: int  # requests the fake gets: 1 + retries before the first token, 1 after


RETRIES = 2
MATRIX = {
    "500 before the first token, every try": Fault(
        {"fail": (500, "server_error")}, "failed", "model_unavailable", "", 1 + RETRIES
    ),
    "429 before the first token, every try": Fault(
        {"fail": (429, "rate_limit_exceeded")}, "failed", "model_rate_limited", "", 1 + RETRIES
    ),
    "500 twice, then an answer": Fault(
        {"fail": (500, "server_error"), "fail_first": 2}, "completed", "", FULL, 3
    ),
    "429 once, then an answer": Fault(
        {"fail": (429, "rate_limit_exceeded"), "fail_first": 1}, "completed", "", FULL, 2
    ),
    "connection dropped mid-stream": Fault(
        {"cut_after": 3}, "failed", "model_unavailable", "word0 word1 word2 ", 1
    ),
    "stall mid-stream": Fault({"stall_after": 3}, "failed", "model_unavailable", "word0 word1 word2 ", 1),
    "stall before the first token": Fault({"stall_after": 0}, "failed", "model_unavailable", "", 1),
}


def text_of(events) -> str:
    return "".join(e["delta"] for e in events if e.get("event_type") == "response.output_text.delta")


async def assert_consistent(events: list[dict], fault_at: float, status: str, code: str, text: str) -> Run:
    """One terminal event, last, within 5 s of the fault; the row and the stored events agree."""
    ended_at = time.monotonic()
    assert ended_at - fault_at < 5, f"terminal event {ended_at - fault_at:.1f} s after the fault"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["type"] in TERMINAL for e in events] == [False] * (len(events) - 1) + [True]
    terminal = events[-1]
    run = await Run.objects.aget(pk=terminal["run_id"])
    assert run.status == status and run.error_code == code
    assert run.last_seq == terminal["seq"] and run.finished_at is not None
    assert [e.data async for e in RunEvent.objects.filter(run=run).order_by("seq")] == events
    assert text_of(events) == text
    if status == "completed":
        assert terminal["type"] == "stream_complete" and terminal["final_output"] == text
    else:
        assert terminal["type"] == "error" and terminal["code"] == code
        assert (run.final_output or "") == text  # the partial answer is kept
    return run


@pytest.mark.parametrize("responses", [False, True], ids=["chat-completions", "responses"])
@pytest.mark.parametrize("name", list(MATRIX))
async def test_upstream_fault(name, responses, start_fake, use_fake, alice, settings):
    fault = MATRIX[name]
    settings.OPENAI_MAX_RETRIES = RETRIES
    settings.OPENAI_STREAM_IDLE_TIMEOUT = 1.0
    fake = start_fake(deltas=6, **fault.fake)
    use_fake(fake, responses=responses)
    client = SSEClient("POST", "/api/agents/chat/stream", {"input": "Say hello"}, alice.token)
    requested = time.monotonic()
    assert await client.start() == 200
    # The fault's moment: the request for faults before the first token, the last delta for the others.
    fault_at = requested
    while not client.done:
        before = len(text_of(client.events()))
        await client.read_chunk(timeout=10)
        if len(text_of(client.events())) > before:
            fault_at = time.monotonic()
    run = await assert_consistent(client.events(), fault_at, fault.status, fault.code, fault.text)
    assert len(fake.requests) == fault.requests  # retried before the first token only
    memory = await ConversationItem.objects.filter(conversation_id=run.conversation_id).acount()
    assert memory == (2 if fault.status == "completed" else 0)  # a failed run leaves memory as it was


async def test_a_refused_session_write_ends_the_run_failed(alice, monkeypatch):
    """The run's memory is written with its end: if the database refuses it, the run ends
    `failed` (journal_failed) at once, the conversation's memory as it was, never a hang."""

    def fails(entries):
        if any(e.end is not None and e.end.memory for e in entries):
            return DataError("the memory rows are refused")
        return None

    state = failing_commit(monkeypatch, fails)
    client = SSEClient("POST", "/api/agents/chat/stream", {"input": "Hello"}, alice.token)
    started = time.monotonic()
    assert await client.start() == 200
    events = await client.read_all(timeout=10)
    assert state["failed"] >= 1
    run = await Run.objects.aget(pk=events[-1]["run_id"])
    assert run.status == "failed" and run.error_code == "journal_failed"
    assert time.monotonic() - started < 5
    assert [e["type"] in TERMINAL for e in events].count(True) == 1 and events[-1]["type"] == "error"
    assert await ConversationItem.objects.filter(conversation_id=run.conversation_id).acount() == 0


async def test_a_tool_that_fails_gives_the_agent_its_error_and_the_run_goes_on(start_fake, use_fake, alice):
    """Arguments the tool cannot take (it raises): the agent gets the error text as the tool's
    output, answers, and the run completes."""
    fake = start_fake(tool_calls={"calculate": {"no_such_argument": 1}}, text="I could not compute it.")
    use_fake(fake)
    client = SSEClient("POST", "/api/agents/chat/stream", {"input": "What is 2 + 2?"}, alice.token)
    assert await client.start() == 200
    events = await client.read_all(timeout=10)
    outputs = [e for e in events if e.get("name") == "tool_output"]
    assert len(outputs) == 1 and "error" in str(outputs[0]["output"]).lower()
    assert events[-1]["type"] == "stream_complete" and events[-1]["status"] == "completed"
    # The fake quotes the tool results it was given: the agent saw the error.
    assert "An error occurred while running the tool" in events[-1]["final_output"]
    assert len(fake.requests) == 2  # the call, then the answer after the tool's error


async def stream_run(alice) -> tuple[list[dict], float]:
    """One chat run over SSE: its events and how long it took."""
    client = SSEClient("POST", "/api/agents/chat/stream", {"input": "Say hello"}, alice.token)
    started = time.monotonic()
    assert await client.start() == 200
    events = await client.read_all(timeout=30)
    return events, time.monotonic() - started


async def test_an_upstream_that_never_answers_holds_a_run_for_the_first_byte_deadline_only(
    start_fake, use_fake, alice, settings
):
    """Tries that each wait out the idle timeout used to add up ((retries + 1) x 5 s here):
    OPENAI_FIRST_BYTE_TIMEOUT bounds the wait for the answer to begin, every retry included."""
    settings.OPENAI_MAX_RETRIES, settings.OPENAI_STREAM_IDLE_TIMEOUT = 2, 5.0
    settings.OPENAI_FIRST_BYTE_TIMEOUT = 1.5
    fake = start_fake(hang_first=100)
    use_fake(fake)
    events, took = await stream_run(alice)
    assert 1.4 < took < 4, f"the run ended after {took:.1f} s"
    run = await assert_consistent(events, time.monotonic() - took + 1.5, "failed", "model_unavailable", "")
    assert "did not begin to answer within 1.5 s" in run.error
    assert len(fake.requests) == 1  # the one try outlasted the deadline: no retry after it


async def test_retries_go_on_within_the_first_byte_deadline(start_fake, use_fake, alice, settings):
    """A try cut by the idle timeout is retried while the deadline has room, and the run completes."""
    settings.OPENAI_MAX_RETRIES, settings.OPENAI_STREAM_IDLE_TIMEOUT = 2, 0.5
    settings.OPENAI_FIRST_BYTE_TIMEOUT = 10.0
    fake = start_fake(hang_first=1, deltas=6)
    use_fake(fake)
    events, took = await stream_run(alice)
    assert events[-1]["type"] == "stream_complete" and text_of(events) == FULL
    assert len(fake.requests) == 2 and took < 5


@pytest.mark.parametrize(
    ("retry_after", "status", "requests"),
    [("60", "failed", 1), ("0.2", "completed", 2)],
    ids=["past-the-deadline", "within-it"],
)
async def test_retry_after_is_honoured_only_while_it_fits_the_deadline(
    retry_after, status, requests, start_fake, use_fake, alice, settings
):
    """A 429 asking for 60 s, with a 5 s deadline, ends the run at once with the upstream's
    refusal (openai's own retries slept it out, twice); a short Retry-After is waited, then the
    retry answers."""
    settings.OPENAI_MAX_RETRIES, settings.OPENAI_FIRST_BYTE_TIMEOUT = 2, 5.0
    fake = start_fake(fail=(429, "rate_limit_exceeded"), fail_first=1, retry_after=retry_after, deltas=6)
    use_fake(fake)
    events, took = await stream_run(alice)
    run = await Run.objects.aget(pk=events[-1]["run_id"])
    assert run.status == status and len(fake.requests) == requests and took < 3
    if status == "failed":
        assert run.error_code == "model_rate_limited" and events[-1]["code"] == "model_rate_limited"
    else:
        assert 0.2 <= took and text_of(events) == FULL
