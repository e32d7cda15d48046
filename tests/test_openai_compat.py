"""The OpenAI-compatible API against a live server, driven by the real `openai` client and by the
Agents SDK using this server as its model provider."""

import asyncio

import httpx
import openai
import pytest
from agents import Agent, OpenAIChatCompletionsModel, OpenAIResponsesModel, Runner
from agents.run import RunConfig
from openai import AsyncOpenAI

from agents_app.models import Run, RunEvent

from .live_server import serving

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def base_url(django_db_setup, django_db_blocker):
    with serving(OFFLINE_MODEL_DELAY="0.02") as url:
        yield url


@pytest.fixture
def client(base_url, alice):
    return AsyncOpenAI(base_url=f"{base_url}/v1", api_key=alice.token, max_retries=0)


def run_of(response_id: str) -> Run:
    return Run.objects.get(pk=response_id.removeprefix("resp_"))


async def test_models_list_the_agents(client):
    models = await client.models.list()
    assert {m.id for m in models.data} == {"chat", "assistant", "ops"}  # research answers with a report
    assert (await client.models.retrieve("chat")).id == "chat"
    for name in ("gpt-unknown", "research"):
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve(name)
    with pytest.raises(openai.NotFoundError) as research:
        await client.chat.completions.create(model="research", messages=[{"role": "user", "content": "x"}])
    assert "/api/research/" in research.value.message


async def test_chat_completion_whole_and_streamed(client, alice):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "what is 17 * 23?"}]
    completion = await client.chat.completions.create(model="chat", messages=messages)
    run = await Run.objects.aget(pk=completion.id.removeprefix("chatcmpl-"))
    answer = completion.choices[0].message.content
    assert "391" in answer and answer == run.final_output
    assert completion.usage.total_tokens == run.total_tokens > 0
    assert run.owner_id == alice.pk and run.conversation_id is None  # stateless: the history is the input
    assert run.input[0] == {"role": "system", "content": "Be brief."}

    stream = await client.chat.completions.create(
        model="chat", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    run = await Run.objects.aget(pk=chunks[0].id.removeprefix("chatcmpl-"))
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 3
    assert text == run.final_output and "391" in text
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == run.total_tokens


async def test_responses_stream_and_memory(client):
    stream = await client.responses.create(model="chat", input="Hi, my name is Ada.", stream=True)
    events = [event async for event in stream]
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types.index("response.output_item.added") < types.index("response.output_text.delta")
    assert types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    first = events[-1].response
    run = await Run.objects.aget(pk=first.id.removeprefix("resp_"))
    assert first.output_text == run.final_output
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == run.final_output

    second = await client.responses.create(model="chat", input="who am i?", previous_response_id=first.id)
    assert "Ada" in second.output_text and second.previous_response_id == first.id
    again = await Run.objects.aget(pk=second.id.removeprefix("resp_"))
    assert again.conversation_id == run.conversation_id
    # Only the latest response of a conversation continues it.
    with pytest.raises(openai.BadRequestError) as refused:
        await client.responses.create(model="chat", input="and now?", previous_response_id=first.id)
    assert refused.value.param == "previous_response_id"


async def test_background_retrieve_and_cancel(client, settings):
    response = await client.responses.create(
        model="chat", input="Tell me a long story about " + "dragons " * 40, background=True
    )
    assert response.status in ("queued", "in_progress") and response.background
    retrieved = await client.responses.retrieve(response.id)
    assert retrieved.id == response.id and retrieved.status in ("queued", "in_progress")
    cancelled = await client.responses.cancel(response.id)
    assert cancelled.status == "cancelled"
    run = await Run.objects.aget(pk=response.id.removeprefix("resp_"))
    assert run.status == Run.Status.CANCELLED
    with pytest.raises(openai.BadRequestError):
        await client.responses.cancel(response.id)
    done = await client.responses.create(model="chat", input="what is 2 + 2?", background=True)
    for _ in range(100):
        done = await client.responses.retrieve(done.id)
        if done.status == "completed":
            break
        await asyncio.sleep(0.1)
    assert done.status == "completed" and "4" in done.output_text
    deleted = await client.responses.delete(done.id)
    assert deleted is None or getattr(deleted, "deleted", True)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(done.id)


async def test_cut_stream_resumes_with_starting_after(client):
    stream = await client.responses.create(model="chat", input="Tell me about " + "rivers " * 30, stream=True)
    seen = []
    async for event in stream:
        seen.append(event)
        if event.type == "response.output_text.delta" and len(seen) > 6:
            break
    await stream.close()  # the connection is cut mid-stream; the run goes on
    response_id = seen[0].response.id
    resumed = await client.responses.retrieve(
        response_id, stream=True, starting_after=seen[-1].sequence_number
    )
    rest = [event async for event in resumed]
    numbers = [e.sequence_number for e in seen + rest]
    assert numbers == list(range(len(numbers)))  # every event once, none missing
    assert rest[-1].type == "response.completed"
    text = "".join(e.delta for e in seen + rest if e.type == "response.output_text.delta")
    assert (
        text == rest[-1].response.output_text == (await asyncio.to_thread(run_of, response_id)).final_output
    )
    # A finished response replays its whole stream; past its end is refused.
    replay = [e async for e in await client.responses.retrieve(response_id, stream=True)]
    assert [e.sequence_number for e in replay] == numbers
    with pytest.raises(openai.BadRequestError):
        await client.responses.retrieve(response_id, stream=True, starting_after=len(numbers) + 5)


async def test_errors_are_openai_errors(client, base_url, bob):
    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.code == "model_not_found"
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as tools:
        await client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], tools=[tool]
        )
    assert tools.value.param == "tools"
    with pytest.raises(openai.BadRequestError) as sampling:
        await client.responses.create(model="chat", input="hi", temperature=0.2)
    assert sampling.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as n:
        await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], n=2)
    assert n.value.param == "n"
    bad_key = AsyncOpenAI(base_url=f"{base_url}/v1", api_key="not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await bad_key.models.list()
    with pytest.raises(openai.AuthenticationError):
        await bad_key.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    mine = await client.responses.create(model="chat", input="hello")
    other = AsyncOpenAI(base_url=f"{base_url}/v1", api_key=bob.token, max_retries=0)
    for call in (
        other.responses.retrieve(mine.id),
        other.responses.cancel(mine.id),
        other.responses.delete(mine.id),
        other.responses.create(model="chat", input="hi", previous_response_id=mine.id),
        other.responses.retrieve("resp_not-an-id"),
    ):
        with pytest.raises(openai.NotFoundError):
            await call
    assert await RunEvent.objects.filter(run_id=mine.id.removeprefix("resp_")).aexists()  # untouched
    async with httpx.AsyncClient(base_url=base_url) as http:
        garbled = await http.post(
            "/v1/chat/completions",
            content=b"{not json",
            headers={"Authorization": f"Bearer {bob.token}", "Content-Type": "application/json"},
        )
        cursor = await http.get(
            f"/v1/responses/{mine.id}?stream=true&starting_after=x",
            headers={"Authorization": f"Bearer {bob.token}"},
        )
    assert garbled.status_code == 400 and set(garbled.json()["error"]) == {"message", "type", "param", "code"}
    assert cursor.status_code == 404  # another user's response: not found before anything else


@pytest.mark.parametrize("api", ["chat_completions", "responses"])
async def test_agents_sdk_uses_this_server_as_its_model(client, api):
    model_class = OpenAIChatCompletionsModel if api == "chat_completions" else OpenAIResponsesModel
    agent = Agent(name="Client agent", model=model_class(model="chat", openai_client=client))
    config = RunConfig(tracing_disabled=True)
    result = await Runner.run(agent, "what is 17 * 23?", run_config=config)
    assert "391" in result.final_output
    streamed = Runner.run_streamed(agent, "what is 12 * 12?", run_config=config)
    deltas = [
        e.data.delta
        async for e in streamed.stream_events()
        if e.type == "raw_response_event" and e.data.type == "response.output_text.delta"
    ]
    assert "144" in streamed.final_output and "".join(deltas) == streamed.final_output


async def decide_over_rest(base_url, token, metadata: dict, decision: str = "approve") -> None:
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Token {token}"}) as rest:
        for approval_id in metadata["approval_ids"].split(","):
            url = f"/api/runs/{metadata['run_id']}/approvals/{approval_id}"
            response = await rest.post(url, json={"decision": decision, "reason": "checked"})
            assert response.status_code == 200, response.text


async def test_a_paused_response_is_incomplete_then_goes_on(client, base_url, alice):
    # Streamed: the stream ends at the pause with response.incomplete, the calls in its metadata.
    stream = await client.responses.create(model="ops", input="refund order A17 250", stream=True)
    events = [event async for event in stream]
    paused = events[-1].response
    assert events[-1].type == "response.incomplete" and paused.status == "incomplete"
    metadata = paused.metadata
    assert metadata["incomplete_reason"] == "approval_required"
    assert metadata["approvals_url"] == f"/api/runs/{metadata['run_id']}/approvals/"
    assert paused.id == "resp_" + metadata["run_id"].replace("-", "")
    assert (await client.responses.retrieve(paused.id)).status == "incomplete"

    await decide_over_rest(base_url, alice.token, metadata)
    rest = await client.responses.retrieve(paused.id, stream=True, starting_after=events[-1].sequence_number)
    rest = [event async for event in rest]
    numbers = [e.sequence_number for e in events + rest]
    assert numbers == list(range(len(numbers)))  # one stream numbering across the pause
    assert rest[0].type == "response.in_progress" and rest[-1].type == "response.completed"
    done = rest[-1].response
    assert "refunded 250.00 on order A17" in done.output_text
    assert "incomplete_reason" not in done.metadata
    assert (await client.responses.retrieve(paused.id)).status == "completed"

    # Not streamed: the answer comes at the pause, incomplete, instead of waiting for a decision.
    response = await client.responses.create(model="ops", input="refund order A17 250")
    assert response.status == "incomplete" and response.metadata["approval_ids"]
    await decide_over_rest(base_url, alice.token, response.metadata, "reject")
    for _ in range(100):
        response = await client.responses.retrieve(response.id)
        if response.status == "completed":
            break
        await asyncio.sleep(0.05)
    assert "did not make the refund" in response.output_text


async def test_a_paused_chat_completion_ends_with_length_and_its_approvals(client, base_url, alice):
    messages = [{"role": "user", "content": "refund order A17 250"}]
    completion = await client.chat.completions.create(model="ops", messages=messages)
    assert completion.choices[0].finish_reason == "length"
    metadata = completion.metadata
    assert metadata["incomplete_reason"] == "approval_required"
    assert metadata["run_id"].replace("-", "") == completion.id.removeprefix("chatcmpl-")

    stream = await client.chat.completions.create(model="ops", messages=messages, stream=True)
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices[0].finish_reason == "length"
    metadata = chunks[-1].model_extra["metadata"]
    run = await Run.objects.aget(pk=metadata["run_id"])
    assert run.status == Run.Status.AWAITING_APPROVAL  # the stream ended; the run waits
    await decide_over_rest(base_url, alice.token, metadata)
    for _ in range(100):
        run = await Run.objects.aget(pk=run.pk)
        if run.status == Run.Status.COMPLETED:
            break
        await asyncio.sleep(0.05)
    assert "refunded 250.00 on order A17" in run.final_output


async def test_metadata_is_bounded_as_openai_bounds_it(client):
    too_many = {f"k{i}": "v" for i in range(17)}
    for metadata, param in [
        (too_many, "metadata"),
        ({"k" * 65: "v"}, "metadata"),
        ({"k": "v" * 513}, "metadata.k"),
        ({"k": 5}, "metadata.k"),
    ]:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.responses.create(model="chat", input="hi", metadata=metadata)
        assert refused.value.param == param
    fits = {f"k{i}": "v" * 512 for i in range(16)}
    response = await client.responses.create(model="chat", input="hi", metadata=fits)
    assert response.metadata == fits
    assert await Run.objects.filter(options__metadata__k0__isnull=False).acount() == 1
