"""A run ends, with exactly one terminal event and a consistent record, when its model's stream
stalls or when it outlasts AGENTS_RUN_TIMEOUT; what it produced is kept."""

import time

import pytest

from agents_app.models import Run, RunEvent

from .streams import stream_run

pytestmark = pytest.mark.django_db(transaction=True)


async def terminal_events(run_id) -> list[str]:
    return [
        e
        async for e in RunEvent.objects.filter(
            run_id=run_id, type__in=("stream_complete", "error")
        ).values_list("type", flat=True)
    ]


async def test_a_stalled_upstream_ends_the_run(alice, start_fake, use_fake, settings):
    fake = start_fake(text="alpha beta gamma delta epsilon", stall_after=2)
    use_fake(fake)
    settings.OPENAI_STREAM_IDLE_TIMEOUT = 1.0
    settings.OPENAI_MAX_RETRIES = 0
    started = time.monotonic()
    _client, events = await stream_run(alice.token, {"input": "hello"})
    assert time.monotonic() - started < 6  # the stall is seen within about OPENAI_STREAM_IDLE_TIMEOUT
    assert events[-1]["type"] == "error" and events[-1]["code"] == "model_unavailable"
    run = await Run.objects.aget(pk=events[-1]["run_id"])
    assert run.status == Run.Status.FAILED and run.error_code == "model_unavailable"
    assert run.final_output == "alpha beta "  # the deltas before the stall are kept
    assert await terminal_events(run.pk) == ["error"]


async def test_a_run_past_its_time_limit_fails(alice, settings, slow_model):
    settings.AGENTS_RUN_TIMEOUT = 0.5
    slow_model["seconds"] = 3
    started = time.monotonic()
    _client, events = await stream_run(alice.token, {"input": "hello"})
    assert time.monotonic() - started < 3
    assert events[-1]["type"] == "error" and events[-1]["code"] == "run_timeout"
    run = await Run.objects.aget(pk=events[-1]["run_id"])
    assert run.status == Run.Status.FAILED and "limit of 0.5 s" in run.error
    assert await terminal_events(run.pk) == ["error"]


async def test_turns_and_input_items_are_bounded(api_for, alice, settings):
    settings.AGENTS_MAX_TURNS = 1  # the calculator needs a second turn to answer
    failed = await api_for(alice).post("/api/agents/chat/run", {"input": "what is 17 * 23?"})
    assert failed.status_code == 500 and failed.json()["error_code"] == "max_turns_exceeded"
    settings.AGENTS_MAX_INPUT_ITEMS = 3
    many = [{"role": "user", "content": f"message {n}"} for n in range(4)]
    refused = await api_for(alice).post("/api/agents/chat/run", {"input": many})
    assert refused.status_code == 400 and "more than the limit of 3" in refused.json()["error"]["message"]
    assert await Run.objects.acount() == 1
