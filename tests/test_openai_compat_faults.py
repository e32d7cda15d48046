"""The OpenAI-compatible API when the model's provider fails (the local fake OpenAI answering 429
or 500), through the real ASGI application: errors in OpenAI's shape, never retried by the
clients (a retry would be a second run), and a consistent run record."""

import json

import pytest

from agents_app.models import Run

from .streams import SSEClient

pytestmark = pytest.mark.django_db(transaction=True)
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def failing(start_fake, use_fake, settings):
    def fail(status: int, kind: str):
        use_fake(start_fake(fail=(status, kind)))
        settings.OPENAI_MAX_RETRIES = 0

    return fail


async def request(alice, path, body) -> SSEClient:
    client = SSEClient("POST", path, body, alice.token)
    await client.start(timeout=20)
    await client.read_all(timeout=20)
    return client


def data_lines(raw: bytes) -> list:
    return [line[6:] for line in raw.decode().split("\n") if line.startswith("data: ")]


async def test_a_failed_run_is_a_502_in_openai_shape(alice, failing):
    failing(429, "rate_limit_exceeded")
    client = await request(alice, "/v1/chat/completions", CHAT)
    assert client.status == 502
    assert client.headers["x-should-retry"] == "false"
    error = json.loads(client.raw)["error"]
    assert error["type"] == "server_error" and error["code"] == "model_rate_limited"
    run = await Run.objects.order_by("-created_at").afirst()
    assert run.status == Run.Status.FAILED and run.error_code == "model_rate_limited"


async def test_a_failed_streamed_completion_ends_with_an_error_object(alice, failing):
    failing(500, "server_error")
    client = await request(alice, "/v1/chat/completions", {**CHAT, "stream": True})
    assert client.status == 200
    last = json.loads(data_lines(client.raw)[-1])
    assert last["error"]["code"] == "model_unavailable" and "[DONE]" not in data_lines(client.raw)


async def test_a_failed_streamed_response_ends_with_response_failed(alice, failing):
    failing(429, "rate_limit_exceeded")
    client = await request(alice, "/v1/responses", {"model": "chat", "input": "hello", "stream": True})
    events = [json.loads(line) for line in data_lines(client.raw)]
    assert events[0]["type"] == "response.created"
    failed = events[-1]
    assert failed["type"] == "response.failed" and failed["response"]["status"] == "failed"
    assert failed["response"]["error"]["code"] == "rate_limit_exceeded"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


async def test_refusals_change_nothing(alice):
    before = await Run.objects.acount()
    for path, body in [
        ("/v1/chat/completions", {**CHAT, "messages": []}),
        (
            "/v1/chat/completions",
            {**CHAT, "messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]},
        ),
        ("/v1/chat/completions", {**CHAT, "stream": "yes"}),
        ("/v1/chat/completions", [1, 2]),
        ("/v1/responses", {"model": "chat"}),
        ("/v1/responses", {"model": "chat", "input": [{"type": "function_call_output", "call_id": "c"}]}),
        (
            "/v1/responses",
            {"model": "chat", "input": [{"role": "user", "content": [{"type": "input_audio"}]}]},
        ),
        ("/v1/responses", {"model": "chat", "input": "hi", "previous_response_id": "resp_" + "0" * 32}),
        ("/v1/responses", {"model": "chat", "input": "hi", "include": ["reasoning.encrypted_content"]}),
    ]:
        client = await request(alice, path, body)
        assert 400 <= client.status < 500, (body, client.raw)
        error = json.loads(client.raw)["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"], body
    assert await Run.objects.acount() == before


async def test_stream_cursors_must_be_numbers_within_the_stream(alice):
    created = await request(alice, "/v1/responses", {"model": "chat", "input": "hello"})
    response_id = json.loads(created.raw)["id"]
    for cursor in ("x", "-1", "1e3", "99999"):
        client = SSEClient(
            "GET", f"/v1/responses/{response_id}?stream=true&starting_after={cursor}", None, alice.token
        )
        assert await client.start() == 400, cursor
        await client.read_all()
        assert json.loads(client.raw)["error"]["param"] == "starting_after"
    tail = SSEClient("GET", f"/v1/responses/{response_id}?stream=true&starting_after=3", None, alice.token)
    assert await tail.start() == 200
    await tail.read_all()
    numbers = [json.loads(line)["sequence_number"] for line in data_lines(tail.raw)]
    assert numbers[0] == 4 and numbers == list(range(4, numbers[-1] + 1))
