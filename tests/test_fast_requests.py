"""Model request bodies without openai's transform walk (agents_app/providers/fast_requests.py)."""

import contextlib
import datetime
import json
from typing import Annotated, Required

import pytest
from openai import omit
from openai._utils import PropertyInfo
from openai._utils._transform import async_maybe_transform as openai_transform
from openai.resources.chat.completions import completions as chat_completions
from openai.resources.responses import responses as responses_resource
from openai.types.chat import completion_create_params
from openai.types.chat.chat_completion_message_param import ChatCompletionMessageParam
from openai.types.responses import response_create_params
from pydantic import BaseModel
from typing_extensions import TypedDict

from agents_app.ai_agents.chat import build_chat_agent
from agents_app.providers import fast_requests
from agents_app.providers.fast_events import FastEventsAsyncOpenAI
from tests.test_openai_provider import run_streamed

CHAT = completion_create_params.CompletionCreateParamsStreaming
RESPONSES = response_create_params.ResponseCreateParamsStreaming
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": [{"type": "text", "text": "what is 6 * 7?"}]},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "calculate", "arguments": '{"e": 1}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "42"},
]


def chat_body(**overrides):
    body = {
        "model": "gpt-4.1-mini",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": omit,
        "tools": [{"type": "function", "function": {"name": "calculate", "parameters": {"type": "object"}}}],
        "metadata": {"tenant": "a"},
        "top_p": None,
    }
    return {**body, **overrides}


class Note(BaseModel):
    role: str
    content: str


class Aliased(TypedDict, total=False):
    card_id: Required[Annotated[str, PropertyInfo(alias="cardID")]]
    when: Annotated[datetime.date, PropertyInfo(format="iso8601")]


@pytest.fixture
def transform_calls(monkeypatch):
    """openai's own walk, counted, under the fast path."""
    calls = []

    async def counting(data, expected_type):
        calls.append(expected_type)
        return await openai_transform(data, expected_type)

    fast = fast_requests.fast_maybe_transform(counting)
    monkeypatch.setattr(chat_completions, "async_maybe_transform", fast)
    return calls


async def test_a_plain_body_comes_out_as_openai_makes_it_without_the_walk(transform_calls):
    body = chat_body()
    fast = await chat_completions.async_maybe_transform(body, CHAT)
    assert fast == await openai_transform(body, CHAT)
    assert "temperature" not in fast and fast["top_p"] is None  # omitted dropped, null kept
    assert transform_calls == []


@pytest.mark.parametrize(
    "overrides",
    [
        {"messages": [Note(role="user", content="hi")]},  # a pydantic model
        {"messages": tuple(MESSAGES)},  # an iterable that is not a list
        {"stream_options": {"include_usage": omit}},  # an omitted value further down
        {"metadata": {1: "a"}},  # a key that is not a string
    ],
    ids=["model", "tuple", "nested_omit", "int_key"],
)
async def test_anything_else_takes_openais_walk(transform_calls, overrides):
    body = chat_body(**overrides)
    assert await chat_completions.async_maybe_transform(body, CHAT) == await openai_transform(body, CHAT)
    assert transform_calls == [CHAT]


async def test_a_type_that_renames_or_formats_always_takes_openais_walk(transform_calls):
    assert not fast_requests.transform_can_change(CHAT)
    assert not fast_requests.transform_can_change(RESPONSES)
    assert fast_requests.transform_can_change(Aliased)
    assert fast_requests.transform_can_change(list[Aliased | str])

    data = {"card_id": "c1", "when": datetime.date(2026, 11, 25)}
    fast = await chat_completions.async_maybe_transform(data, Aliased)
    assert fast == {"cardID": "c1", "when": "2026-11-25"}
    assert transform_calls == [Aliased]


async def test_a_type_the_check_cannot_read_takes_openais_walk(transform_calls):
    class Unresolved(TypedDict, total=False):
        note: "NoSuchType"  # noqa: F821  (a hint that does not resolve)

    unhashable = Annotated[str, {"not": "hashable"}]
    for expected_type in (Unresolved, unhashable):
        assert fast_requests.transform_can_change(expected_type)
    for expected_type in (Unresolved, unhashable):
        with contextlib.suppress(NameError, TypeError):  # openai's walk may fail on it; ours must not
            await chat_completions.async_maybe_transform({"note": "x"}, expected_type)
    assert transform_calls == [Unresolved, unhashable]


def test_the_check_reaches_every_message_type():
    """The message union's members are walked, not only the top-level params."""
    assert not fast_requests.transform_can_change(ChatCompletionMessageParam)
    assert fast_requests.plain(MESSAGES)
    assert not fast_requests.plain([{"a": (1,)}])
    assert not fast_requests.plain(["x", True, 1.5, None, Note(role="a", content="b")])


def test_only_a_fast_events_client_installs_it(monkeypatch):
    for module in (chat_completions, responses_resource):
        monkeypatch.setattr(module, "async_maybe_transform", openai_transform)
    from openai import AsyncOpenAI

    AsyncOpenAI(api_key="k", base_url="http://127.0.0.1:9/v1")
    assert chat_completions.async_maybe_transform is openai_transform
    FastEventsAsyncOpenAI(api_key="k", base_url="http://127.0.0.1:9/v1")
    for module in (chat_completions, responses_resource):
        assert module.async_maybe_transform.original is openai_transform


@pytest.mark.parametrize("responses", [False, True], ids=["chat_completions", "responses"])
async def test_the_bodies_of_a_tool_run_are_the_ones_openai_would_send(
    start_fake, use_fake, monkeypatch, responses
):
    """The SDK's real requests (a tool call, then its result): the fast path takes every one, and
    openai's walk gives the same bodies; the fake received them."""
    fake = start_fake(text="Done.", tool_calls={"calculate": {"expression": "6 * 7"}})
    use_fake(fake, responses=responses)
    module = responses_resource if responses else chat_completions
    seen, walked = [], []

    async def recording(data, expected_type):
        walked.append(expected_type)
        return await openai_transform(data, expected_type)

    fast = fast_requests.fast_maybe_transform(recording)

    async def spy(data, expected_type):
        seen.append((data, expected_type))
        return await fast(data, expected_type)

    FastEventsAsyncOpenAI(api_key="k", base_url=fake.base_url)  # installs; then spy on top
    monkeypatch.setattr(module, "async_maybe_transform", spy)

    result, _events = await run_streamed(build_chat_agent(), "what is six times seven?")

    assert result.final_output == "Tool results: 42. Done."
    assert len(seen) == len(fake.requests) == 2
    assert walked == []
    for (data, expected_type), received in zip(seen, fake.requests, strict=True):
        body = await openai_transform(data, expected_type)
        assert await fast(data, expected_type) == body
        assert json.loads(json.dumps(body)) == received.body
