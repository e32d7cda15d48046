"""Streamed OpenAI events built by `model_validate` (agents_app/providers/fast_events.py).

The recorded streams in tests/data (see its README) are served, through httpx2's MockTransport, to a
stock `AsyncOpenAI` and to `FastEventsAsyncOpenAI`, read through openai's public streaming API, and
the two must give equal objects, event by event.
"""

import collections
import json
import logging
import typing
from pathlib import Path

import httpx2
import pydantic
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionChunk
from openai.types.chat.chat_completion_chunk import Choice
from openai.types.responses import ResponseStreamEvent

from agents_app import providers
from agents_app.ai_agents.chat import build_chat_agent
from agents_app.providers import fast_events
from agents_app.providers import openai as openai_provider
from agents_app.providers.fast_events import FastEventsAsyncOpenAI
from tests.test_openai_provider import run_streamed, text_deltas

DATA = Path(__file__).parent / "data"
MODEL = "gpt-4.1-mini"
UNKNOWN = "x7Yq"  # the value of a member the types do not know


def recorded(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


RESPONSES = recorded("responses_stream.jsonl")
CHAT = recorded("chat_completions_stream.jsonl")


def without_nulls(value):
    """The same payload with null members left out, as OpenAI's servers often send them."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def with_unknown_everywhere(value):
    """An extra member in every object, nested ones too."""
    if isinstance(value, dict):
        return {**{k: with_unknown_everywhere(v) for k, v in value.items()}, "future_member": UNKNOWN}
    if isinstance(value, list):
        return [with_unknown_everywhere(v) for v in value]
    return value


VARIANTS = {
    "as_sent": lambda p: p,
    "without_nulls": without_nulls,
    "unknown_member": lambda p: {**p, "future_member": UNKNOWN},
    "unknown_member_everywhere": with_unknown_everywhere,
}


def sse_body(api: str, payloads: list[dict]) -> bytes:
    if api == "responses":  # the Responses API names each event; it sends no [DONE]
        frames = [f"event: {p.get('type')}\ndata: {json.dumps(p)}\n\n" for p in payloads]
    else:
        frames = [f"data: {json.dumps(p)}\n\n" for p in payloads] + ["data: [DONE]\n\n"]
    return "".join(frames).encode()


class CountingClient(FastEventsAsyncOpenAI):
    """The fast client, counting the events its fast way built, by class."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.built = collections.Counter()

    def validate_event(self, cls, data):
        event = super().validate_event(cls, data)
        self.built[type(event)] += 1
        return event


class FailingClient(FastEventsAsyncOpenAI):
    def validate_event(self, cls, data):
        raise RuntimeError("a bug in the fast way")


async def replay(client_class, api: str, payloads: list[dict]):
    """The events a client of `client_class` reads from a stream of these payloads, and the client."""
    body = sse_body(api, payloads)
    transport = httpx2.MockTransport(
        lambda request: httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)
    )
    client = client_class(
        api_key="k",
        base_url="http://upstream.test/v1",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=transport),
    )
    async with client:
        if api == "responses":
            stream = await client.responses.create(model=MODEL, input="hi", stream=True)
        else:
            stream = await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        events = [event async for event in stream]
    assert len(events) == len(payloads)
    return events, client


def assert_same(fast, slow, path="event"):
    """Same classes, values, fields set and extra members, all the way down."""
    assert type(fast) is type(slow), path
    if isinstance(slow, pydantic.BaseModel):
        assert fast.model_fields_set == slow.model_fields_set, path
        assert fast.__pydantic_extra__ == slow.__pydantic_extra__, path
        for name in type(slow).model_fields:
            assert_same(getattr(fast, name), getattr(slow, name), f"{path}.{name}")
    elif isinstance(slow, (list, tuple)):
        assert len(fast) == len(slow), path
        for i, (f, s) in enumerate(zip(fast, slow, strict=True)):
            assert_same(f, s, f"{path}[{i}]")
    elif isinstance(slow, dict):
        assert fast.keys() == slow.keys(), path
        for key in slow:
            assert_same(fast[key], slow[key], f"{path}.{key}")
    else:
        assert fast == slow, path


def assert_streams_equal(fast_events, slow_events):
    for i, (fast, slow) in enumerate(zip(fast_events, slow_events, strict=True)):
        assert_same(fast, slow, f"event[{i}] ({getattr(slow, 'type', 'chunk')})")
        assert fast.model_dump(warnings=False) == slow.model_dump(warnings=False), i


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "api, payloads", [("responses", RESPONSES), ("chat", CHAT)], ids=["responses", "chat"]
)
async def test_the_recorded_streams_come_out_as_openai_builds_them(api, payloads, variant):
    sent = [VARIANTS[variant](payload) for payload in payloads]
    slow, _ = await replay(AsyncOpenAI, api, sent)
    fast, client = await replay(CountingClient, api, sent)
    assert_streams_equal(fast, slow)
    if variant != "unknown_member_everywhere":  # there, some (in dicts of typed values) are refused
        # ... and the fast way built every one of them, not openai's construct.
        assert client.built == collections.Counter(type(event) for event in fast)


def union_members(union) -> set[type]:
    return set(typing.get_args(typing.get_args(union)[0]))  # Annotated[Union[...], <discriminator>]


async def test_the_recording_holds_every_event_type_of_the_installed_openai():
    """A new member of `ResponseStreamEvent` (a later openai) fails here until it is recorded."""
    events, _ = await replay(AsyncOpenAI, "responses", RESPONSES)
    missing = union_members(ResponseStreamEvent) - {type(event) for event in events}
    assert not missing, f"record these in tests/data (see its README): {sorted(c.__name__ for c in missing)}"
    assert set(fast_events.RESPONSE_EVENTS.values()) == union_members(ResponseStreamEvent)


def models_under(cls, seen=None) -> set[type[pydantic.BaseModel]]:
    seen = set() if seen is None else seen
    if cls not in seen:
        seen.add(cls)
        for field in cls.model_fields.values():
            for model in annotation_models(field.annotation):
                models_under(model, seen)
    return seen


def annotation_models(annotation):
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from annotation_models(arg)


def set_members(value, found):
    """(class, member) of every non-null member in these objects, declared or extra."""
    if isinstance(value, pydantic.BaseModel):
        for name in [*type(value).model_fields, *(value.model_extra or {})]:
            member = getattr(value, name)
            if member is not None:
                found.add((type(value), name))
                set_members(member, found)
    elif isinstance(value, list):
        for item in value:
            set_members(item, found)
    return found


async def test_the_recording_holds_every_chunk_shape_of_the_installed_openai():
    """Every member of every class in a chunk is set somewhere (a later openai's new member fails
    here until it is recorded); and what the SDK's stream handler reads: each finish reason, the
    usage-only last chunk, reasoning as compatible servers send it."""
    chunks, _ = await replay(AsyncOpenAI, "chat", CHAT)
    found = set_members(chunks, set())
    expected = {(cls, name) for cls in models_under(ChatCompletionChunk) for name in cls.model_fields}
    assert not expected - found, (
        f"record chunks with these set: {sorted((c.__name__, n) for c, n in expected - found)}"
    )
    deltas = {name for cls, name in found if cls.__name__ == "ChoiceDelta"}
    assert {"reasoning_content", "reasoning", "thinking_blocks"} <= deltas
    finish_reason = Choice.model_fields["finish_reason"].annotation  # Optional[Literal[...]]
    reasons = set(typing.get_args(typing.get_args(finish_reason)[0]))
    assert reasons == {choice.finish_reason for chunk in chunks for choice in chunk.choices} - {None}
    assert any(chunk.choices == [] and chunk.usage is not None for chunk in chunks)


async def test_what_the_validator_refuses_takes_openais_lenient_way():
    first = CHAT[0]
    new_tier = {**first, "service_tier": "some-future-tier"}  # not in the Literal yet
    slow, _ = await replay(AsyncOpenAI, "chat", [new_tier])
    fast, client = await replay(CountingClient, "chat", [new_tier])
    assert fast[0].service_tier == "some-future-tier"
    assert_streams_equal(fast, slow)
    assert not client.built

    future_event = {"type": "response.some_future_event", "sequence_number": 3, "detail": {"a": 1}}
    slow, _ = await replay(AsyncOpenAI, "responses", [future_event])
    fast, client = await replay(CountingClient, "responses", [future_event])
    assert_streams_equal(fast, slow)
    assert not client.built


@pytest.mark.parametrize(
    "api, payloads", [("responses", RESPONSES), ("chat", CHAT)], ids=["responses", "chat"]
)
async def test_an_error_in_the_fast_way_takes_openais_way(api, payloads, caplog):
    fast_events._warn_failure.cache_clear()
    slow, _ = await replay(AsyncOpenAI, api, payloads)
    with caplog.at_level(logging.WARNING, logger=fast_events.__name__):
        fast, _ = await replay(FailingClient, api, payloads)
    assert_streams_equal(fast, slow)
    [warning] = [r for r in caplog.records if "fast event parsing failed" in r.getMessage()]
    assert "RuntimeError" in warning.getMessage()


def test_the_setting_and_the_openai_version_pick_the_client_class(settings, monkeypatch, caplog):
    settings.OPENAI_API_KEY = "k"
    for flag, cls in ((True, FastEventsAsyncOpenAI), (False, AsyncOpenAI)):
        settings.OPENAI_FAST_EVENTS = flag
        assert providers.openai_provider()._client_class is cls

    # An openai the module was not tested with: the stock client, and a warning once.
    monkeypatch.setattr(fast_events, "TESTED_OPENAI_VERSIONS", frozenset({"0.0.1"}))
    openai_provider._warn_untested.cache_clear()
    settings.OPENAI_FAST_EVENTS = True
    with caplog.at_level(logging.WARNING, logger=openai_provider.__name__):
        assert providers.openai_provider()._client_class is AsyncOpenAI
        assert providers.openai_provider()._client_class is AsyncOpenAI
    [warning] = [r for r in caplog.records if "not among the versions" in r.getMessage()]
    assert "OPENAI_FAST_EVENTS" in warning.getMessage()


@pytest.mark.parametrize("responses", [False, True], ids=["chat_completions", "responses"])
async def test_streamed_runs_are_the_same_either_way(start_fake, use_fake, settings, monkeypatch, responses):
    """Runs through the SDK against the fake server: the fast way builds the events when
    OPENAI_FAST_EVENTS is on, none when off, and the runs stream the same events."""
    fake = start_fake(text="Built by the validator, one piece at a time.", deltas=5)
    use_fake(fake, responses=responses)
    built = []
    original = FastEventsAsyncOpenAI.validate_event

    def counting(self, cls, data):
        built.append(cls)
        return original(self, cls, data)

    monkeypatch.setattr(FastEventsAsyncOpenAI, "validate_event", counting)
    runs = {}
    for fast in (True, False):
        settings.OPENAI_FAST_EVENTS = fast
        built.clear()
        result, events = await run_streamed(build_chat_agent(), "Say hello")
        assert result.final_output == "Built by the validator, one piece at a time."
        assert len(text_deltas(events)) == 5
        assert result.context_wrapper.usage.output_tokens == 5
        assert len(built) >= 5 if fast else built == []
        runs[fast] = [
            (e.type, getattr(e, "name", None), getattr(e.data, "type", None), getattr(e.data, "delta", None))
            if e.type == "raw_response_event"
            else (e.type, getattr(e, "name", None))
            for e in events
        ]
    assert runs[True] == runs[False]
