"""Streamed OpenAI events built by `model_validate` (agents_app/providers/fast_events.py)."""

import json

import pydantic
import pytest
from openai import AsyncOpenAI
from openai._models import construct_type
from openai.types.chat import ChatCompletionChunk
from openai.types.responses import ResponseStreamEvent

from agents_app import providers
from agents_app.ai_agents.chat import build_chat_agent
from agents_app.providers.fast_events import RESPONSE_EVENTS, FastEventsAsyncOpenAI
from tests.fake_openai import FakeOpenAI, Reply, _chat_frames, _responses_frames
from tests.test_openai_provider import run_streamed, text_deltas

MODEL = "gpt-4.1-mini"
DELTA_EVENTS = {"ResponseTextDeltaEvent", "ResponseFunctionCallArgumentsDeltaEvent"}
REPLIES = [Reply(text="Hello there, in a few words."), Reply(tool=("calculate", {"expression": "6 * 7"}))]


def wire_payloads(frames) -> list[dict]:
    payloads = []
    for frame, _is_delta in frames:
        data = frame.decode().split("data: ", 1)[1].strip()
        if data != "[DONE]":
            payloads.append(json.loads(data))
    return payloads


def without_nulls(value):
    """The same payload with null members left out, as OpenAI's servers often send them."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def chat_payloads() -> list[dict]:
    fake = FakeOpenAI(deltas=4)
    payloads = []
    for reply in REPLIES:
        payloads += wire_payloads(_chat_frames(fake, reply, MODEL, (12, 6), include_usage=True))
    return payloads


def responses_payloads() -> list[dict]:
    fake = FakeOpenAI(deltas=4)
    payloads = []
    for reply in REPLIES:
        payloads += wire_payloads(_responses_frames(fake, fake._response(reply, MODEL, (12, 6))))
    return payloads


def variants(payloads: list[dict]) -> list[dict]:
    """Each payload as sent, without its nulls, and with a member the types do not know."""
    out = []
    for payload in payloads:
        out += [payload, without_nulls(payload), {**payload, "obfuscation": "x7Yq"}]
    return out


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


def both_ways(cast_to, payload):
    fast = FastEventsAsyncOpenAI(api_key="k", base_url="http://127.0.0.1:9/v1")
    slow = AsyncOpenAI(api_key="k", base_url="http://127.0.0.1:9/v1")
    return (
        fast._process_response_data(data=payload, cast_to=cast_to, response=None),
        slow._process_response_data(data=payload, cast_to=cast_to, response=None),
    )


@pytest.mark.parametrize(
    "cast_to, payloads",
    [(ChatCompletionChunk, chat_payloads()), (ResponseStreamEvent, responses_payloads())],
    ids=["chat_completions", "responses"],
)
def test_every_streamed_event_comes_out_as_openai_builds_it(cast_to, payloads, monkeypatch):
    kinds = {p.get("type") or bool(p["choices"]) for p in payloads}
    assert len(kinds) >= 2  # text, tool calls, usage or lifecycle events: more than one kind
    validated = []
    real_validate = pydantic.BaseModel.model_validate.__func__

    def counting_validate(cls, *args, **kwargs):
        validated.append(cls)
        return real_validate(cls, *args, **kwargs)

    monkeypatch.setattr(pydantic.BaseModel, "model_validate", classmethod(counting_validate))
    fast_kinds = set()
    for payload in variants(payloads):
        fast, slow = both_ways(cast_to, payload)
        assert_same(fast, slow)
        fast_kinds.add(type(fast).__name__)
    # ... and every one of them came through the validator, not through openai's construct.
    assert len(validated) == 3 * len(payloads)
    assert fast_kinds >= ({"ChatCompletionChunk"} if cast_to is ChatCompletionChunk else DELTA_EVENTS)


@pytest.mark.parametrize(
    "instructions",
    [
        [{"role": "developer", "content": "Be brief."}],
        [{"type": "message", "role": "system", "content": [{"type": "input_text", "text": "Be brief."}]}],
        [{"type": "message", "id": "msg_1", "role": "assistant", "status": "completed", "content": []}],
        [{"type": "item_reference", "id": "msg_1"}, {"type": "message", "role": "user", "content": "hi"}],
    ],
    ids=["easy", "input_message", "output_message", "reference"],
)
def test_members_of_a_union_that_share_a_tag_come_out_as_openai_picks_them(instructions):
    """A `Response`'s instructions may be input items, and three kinds of them share
    `type: "message"`: openai's `construct_type` and the validator must pick the same class."""
    completed = next(p for p in responses_payloads() if p["type"] == "response.completed")
    payload = {**completed, "response": {**completed["response"], "instructions": instructions}}
    RESPONSE_EVENTS["response.completed"].model_validate(payload)  # valid: the fast path takes it
    fast, slow = both_ways(ResponseStreamEvent, payload)
    assert_same(fast, slow)


def test_what_the_validator_refuses_takes_openais_lenient_way():
    [first, *_] = chat_payloads()
    new_tier = {**first, "service_tier": "some-future-tier"}  # not in the Literal yet
    fast, slow = both_ways(ChatCompletionChunk, new_tier)
    assert fast.service_tier == "some-future-tier"
    assert_same(fast, slow)

    future_event = {"type": "response.some_future_event", "sequence_number": 3, "detail": {"a": 1}}
    fast, slow = both_ways(ResponseStreamEvent, future_event)
    assert_same(fast, slow)
    assert fast == construct_type(type_=ResponseStreamEvent, value=future_event)


@pytest.mark.parametrize("responses", [False, True], ids=["chat_completions", "responses"])
@pytest.mark.parametrize("fast_events", [True, False], ids=["fast", "openai"])
async def test_streamed_runs_skip_openais_construct(
    start_fake, use_fake, settings, monkeypatch, responses, fast_events
):
    """Through the provider, openai's `construct_type` builds no streamed event; with
    OPENAI_FAST_EVENTS off it builds every one."""
    settings.OPENAI_FAST_EVENTS = fast_events
    fake = start_fake(text="Built by the validator, one piece at a time.", deltas=5)
    use_fake(fake, responses=responses)
    constructed = []

    def counting_construct(*, type_, value):
        constructed.append(value.get("type", "chunk"))
        return construct_type(type_=type_, value=value)

    monkeypatch.setattr("openai._base_client.construct_type", counting_construct)
    result, events = await run_streamed(build_chat_agent(), "Say hello")

    assert result.final_output == "Built by the validator, one piece at a time."
    assert len(text_deltas(events)) == 5
    assert result.context_wrapper.usage.output_tokens == 5
    if not fast_events:
        assert constructed.count("response.output_text.delta" if responses else "chunk") >= 5
    else:
        assert constructed == []


def test_the_setting_picks_the_client_class(settings):
    settings.OPENAI_API_KEY = "k"
    for flag, cls in ((True, FastEventsAsyncOpenAI), (False, AsyncOpenAI)):
        settings.OPENAI_FAST_EVENTS = flag
        assert providers.openai_provider()._client_class is cls
