"""First-token priority: streams under way pause while a new run goes to its first output."""

import asyncio
import time

import pytest
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel

from agents_app.executor import current_executor
from agents_app.models import RunEvent
from agents_app.priority import FirstTokenPriority, _taking_turns, yield_to_first_tokens
from agents_app.providers.openai import openai_provider

from .streams import SSEClient, stream_run, stream_until_first_delta, wait_finished

pytestmark = pytest.mark.django_db(transaction=True)


async def turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_ticket_pauses_until_it_ends_then_two_turns_more():
    priority = FirstTokenPriority(5)
    first, second = priority.ticket(), priority.ticket()
    assert priority.paused and priority.waiting == 2
    first.end()
    first.end()  # ending twice counts once
    await turns()
    assert priority.paused and priority.waiting == 1
    second.end()
    assert priority.paused  # the first output's write goes out before streams resume
    await asyncio.sleep(0)
    assert priority.paused
    await turns()
    assert not priority.paused and priority.waiting == 0


async def test_a_ticket_expires_after_max_pause():
    priority = FirstTokenPriority(0.05)
    ticket = priority.ticket()
    await asyncio.sleep(0.15)
    assert ticket.ended and priority.waiting == 0 and not priority.paused


async def test_under_a_flood_of_new_runs_streams_under_way_keep_half_the_time():
    priority = FirstTokenPriority(0.2)
    start = time.monotonic()
    states: list[tuple[float, bool]] = []
    tickets = []
    while time.monotonic() - start < 0.9:
        tickets.append(priority.ticket())  # a new run every 10 ms, none reaching its first token
        states.append((time.monotonic() - start, priority.paused))
        await asyncio.sleep(0.01)
    paused_at = [t for t, paused in states if paused]
    open_at = [t for t, paused in states if not paused]
    assert paused_at and open_at
    # Paused from the start, open after max_pause for at least as long, then paused again.
    assert all(t < 0.25 for t in paused_at if t < 0.3)
    assert [t for t in open_at if 0.25 < t < 0.35] and not [t for t in paused_at if 0.25 < t < 0.35]
    assert [t for t in paused_at if t > 0.45]
    for ticket in tickets:
        ticket.end()


async def test_max_pause_zero_turns_it_off():
    priority = FirstTokenPriority(0)
    ticket = priority.ticket()
    assert not priority.paused
    ticket.end()
    assert priority.waiting == 0


def model_events(client: SSEClient) -> int:
    return sum(1 for e in client.events() if e["type"] == "raw_response")


async def test_a_stream_under_way_pauses_while_a_new_run_starts(alice, settings):
    settings.OFFLINE_MODEL_DELAY = 0.01
    settings.RUN_FIRST_TOKEN_MAX_PAUSE = 5
    client = await stream_until_first_delta(alice, "Tell me a long story about forests and rivers")
    run_id = client.events()[0]["run_id"]
    priority = current_executor().priority
    await asyncio.sleep(0.1)
    assert not priority.paused
    ticket = priority.ticket()  # a run on its way to its first output
    # What was already emitted drains; then nothing more is produced while the ticket lasts.
    await asyncio.sleep(0.1)
    stored = await RunEvent.objects.filter(run_id=run_id).acount()
    await asyncio.sleep(0.5)  # fifty deltas' time at this pace
    assert await RunEvent.objects.filter(run_id=run_id).acount() == stored
    while not client.comm.output_queue.empty():
        await client.read_chunk()
    assert not client.done
    before = model_events(client)
    ticket.end()
    events = await client.read_all()
    assert model_events(client) > before and events[-1]["status"] == "completed"


async def test_a_new_stream_holds_priority_until_its_first_output_is_handed_over(alice, settings):
    settings.OFFLINE_MODEL_DELAY = 0.05
    settings.RUN_FIRST_TOKEN_MAX_PAUSE = 5
    client = SSEClient("POST", "/api/agents/chat/stream", {"input": "Tell me about forests"}, alice.token)
    assert await client.start() == 200
    priority = current_executor().priority
    assert priority.waiting == 1  # run_started is out; its first output is not yet
    await client.read_until(lambda e: e["type"] == "raw_response")
    await asyncio.sleep(0.01)
    assert priority.waiting == 0 and not priority.paused
    await client.read_all()


async def test_the_first_output_skips_the_flush_interval(alice, settings):
    # Later events wait for the next flush (one insert per interval under load); the first
    # output is what a user waits for, so it goes out at once.
    settings.RUN_EVENT_FLUSH_INTERVAL = 3
    client = SSEClient("POST", "/api/agents/chat/stream", {"input": "Tell me about forests"}, alice.token)
    started = time.monotonic()
    assert await client.start() == 200
    await client.read_until(lambda e: e["type"] == "raw_response", timeout=10)
    assert time.monotonic() - started < 1.5
    await client.read_all()


async def test_no_ticket_outlives_its_request_or_run(api_for, alice, bob, settings, slow_model):
    settings.RUN_FIRST_TOKEN_MAX_PAUSE = 30  # an unended ticket would still be waiting at the end
    slow_model["seconds"] = 0
    await stream_run(alice.token, {"input": "hello"})
    priority = current_executor().priority
    # Refused before a run exists: bad token, bad body, unknown agent, wrong method.
    for client in (
        SSEClient("POST", "/api/agents/chat/stream", {"input": "x"}, "not-a-token"),
        SSEClient("POST", "/api/agents/chat/stream", {"nope": 1}, alice.token),
        SSEClient("POST", "/api/agents/nobody/stream", {"input": "x"}, alice.token),
        SSEClient("GET", "/api/agents/chat/stream", None, alice.token),
    ):
        assert await client.start() >= 400
        await client.read_all()
    # Cancelled before its first output.
    slow_model["seconds"] = 5
    client = SSEClient("POST", "/api/agents/chat/stream?on_disconnect=cancel", {"input": "x"}, bob.token)
    assert await client.start() == 200
    await client.read_until(lambda e: e["type"] == "run_started")
    assert priority.waiting == 1
    await client.disconnect()
    run_id = client.events()[0]["run_id"]
    assert (await wait_finished(run_id)).status == "cancelled"
    # Runs started over REST: one that completes, one refused on a busy conversation.
    slow_model["seconds"] = 0.3
    api = api_for(alice)
    body = {"input": "hi", "session_id": "busy"}
    first, second = await asyncio.gather(
        api.post("/api/agents/chat/run", body), api.post("/api/agents/chat/run", body)
    )
    assert sorted([first.status_code, second.status_code]) == [200, 409]
    await turns()
    assert priority.waiting == 0 and not priority.paused


async def test_openai_models_take_turns_and_keep_their_class(settings):
    settings.OPENAI_API_KEY = "test-key"
    settings.OPENAI_BASE_URL = "http://127.0.0.1:9/v1"
    model = openai_provider().get_model("gpt-test")
    assert isinstance(model, OpenAIChatCompletionsModel)
    assert model.stream_response.takes_turns
    wrapped = model.stream_response
    assert yield_to_first_tokens(model).stream_response is wrapped  # cached models: wrapped once


class Event:
    def __init__(self, type: str) -> None:
        self.type = type


async def test_a_starting_run_pauses_once_its_first_output_is_produced():
    """Between its first output and that output's hand-over (store, then send) a new run does not
    stream on while others still wait for theirs."""
    priority = FirstTokenPriority(5)
    own, other = priority.ticket(), priority.ticket()

    async def model_stream():
        for kind in ("response.created", "response.output_text.delta", "response.output_text.delta"):
            yield Event(kind)

    stream = _taking_turns(model_stream(), own)
    assert (await anext(stream)).type == "response.created"
    assert (await anext(stream)).type == "response.output_text.delta"  # its first output
    third = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.05)
    assert not third.done() and not own.ended  # paused, though its own ticket still runs
    other.end()
    own.end()
    assert (await asyncio.wait_for(third, 1)).type == "response.output_text.delta"
    await stream.aclose()
