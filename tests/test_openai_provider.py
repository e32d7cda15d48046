"""Provider selection, and the OpenAI path end to end against a local fake of the OpenAI API."""

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from agents import Agent, ModelSettings, OpenAIProvider, Runner
from pydantic import BaseModel

from agents_app import providers
from agents_app.ai_agents.chat import build_chat_agent
from agents_app.models import Run, RunEvent
from agents_app.providers import OfflineModelProvider
from tests.streams import SSEClient, text_of

FAKE_TEXT = "Hello from the fake OpenAI server, streamed in small pieces."


async def run_streamed(agent, input):
    result = Runner.run_streamed(agent, input, run_config=providers.run_config())
    events = [event async for event in result.stream_events()]
    return result, events


def text_deltas(events):
    return [
        e.data.delta
        for e in events
        if e.type == "raw_response_event" and e.data.type == "response.output_text.delta"
    ]


def run_items(events, name):
    return [e.item for e in events if e.type == "run_item_stream_event" and e.name == name]


def test_provider_is_chosen_from_settings(settings):
    settings.AGENTS_MODEL_PROVIDER = ""
    settings.OPENAI_API_KEY = ""
    settings.AGENTS_DEFAULT_MODEL = ""
    assert providers.provider_name() == "offline"
    assert isinstance(providers.get_model_provider(), OfflineModelProvider)
    assert providers.provider_info() == {
        "provider": "offline",
        "model": "offline-echo-1",
        "base_url": None,
        "api": "offline",
    }

    settings.OPENAI_API_KEY = "sk-test"
    assert providers.provider_name() == "openai"
    assert isinstance(providers.get_model_provider(), OpenAIProvider)
    assert providers.provider_info() == {
        "provider": "openai",
        "model": "gpt-4.1-mini",
        "base_url": None,
        "api": "responses",
    }

    settings.OPENAI_BASE_URL = "http://localhost:11434/v1"
    settings.AGENTS_DEFAULT_MODEL = "llama3.2"
    assert providers.provider_info() == {
        "provider": "openai",
        "model": "llama3.2",
        "base_url": "http://localhost:11434/v1",
        "api": "chat_completions",
    }

    settings.AGENTS_MODEL_PROVIDER = "offline"
    assert providers.provider_name() == "offline"
    assert providers.provider_info()["base_url"] is None


def test_run_config_asks_compatible_servers_for_usage(settings):
    settings.AGENTS_TRACES = True  # the default (tests without committed writes turn it off)
    settings.AGENTS_MODEL_PROVIDER = "openai"
    settings.OPENAI_API_KEY = "sk-test"
    settings.OPENAI_BASE_URL = "http://localhost:11434/v1"
    config = providers.run_config(model_settings=ModelSettings(temperature=0.2), workflow_name="chat")

    assert config.model == "gpt-4.1-mini"
    assert config.model_settings.include_usage is True
    assert config.model_settings.temperature == 0.2
    assert config.workflow_name == "chat"
    assert config.tracing_disabled is False  # traces go to the database

    settings.AGENTS_TRACES = False
    assert providers.run_config().tracing_disabled is True
    settings.AGENTS_TRACE_EXPORT = True
    settings.OPENAI_BASE_URL = ""
    config = providers.run_config()
    assert config.tracing_disabled is False
    assert config.model_settings is None


def test_tracing_goes_to_the_database_and_to_openai_only_when_asked(settings, monkeypatch):
    from agents.tracing.processors import BatchTraceProcessor

    from traces_app import exporter

    class OpenAIProcessor:
        def shutdown(self):
            installed.append("openai's shut down")

    openai_processor = OpenAIProcessor()
    installed = []
    monkeypatch.setattr(exporter, "_installed", {})  # as in a new process
    monkeypatch.setattr(exporter, "set_trace_processors", lambda processors: installed.append(processors))
    monkeypatch.setattr(exporter, "set_tracing_disabled", lambda disabled: installed.append(disabled))
    monkeypatch.setattr(exporter, "set_tracing_export_api_key", lambda key: installed.append(key))
    monkeypatch.setattr(exporter, "default_processor", lambda: openai_processor)

    settings.AGENTS_TRACES, settings.AGENTS_TRACE_EXPORT = True, False
    providers.configure_tracing()
    (database,), disabled = installed
    assert isinstance(database, BatchTraceProcessor) and disabled is False
    assert providers.run_config().tracing_disabled is False
    installed.clear()
    providers.configure_tracing()  # the next engine's start, same configuration: nothing changes
    assert installed == []

    settings.AGENTS_TRACE_EXPORT, settings.OPENAI_API_KEY = True, "sk-trace"
    providers.configure_tracing()
    assert installed[0] == "sk-trace" and installed[1][1:] == [openai_processor] and installed[2] is False

    installed.clear()
    settings.AGENTS_TRACES = settings.AGENTS_TRACE_EXPORT = False
    providers.configure_tracing()
    assert installed == [[], True, "openai's shut down"] and providers.run_config().tracing_disabled is True


@pytest.mark.parametrize("responses", [False, True], ids=["chat_completions", "responses"])
async def test_streamed_run_through_the_fake(start_fake, use_fake, responses):
    fake = start_fake(text=FAKE_TEXT, deltas=6)
    use_fake(fake, responses=responses)

    result, events = await run_streamed(build_chat_agent(), "Say hello")

    assert result.final_output == FAKE_TEXT
    assert len(text_deltas(events)) == 6
    usage = result.context_wrapper.usage
    assert (usage.requests, usage.input_tokens, usage.output_tokens) == (1, 12, 6)
    [request] = fake.requests
    assert request.path == ("/v1/responses" if responses else "/v1/chat/completions")
    assert request.authorization == "Bearer test-key"
    assert request.body["model"] == "gpt-4.1-mini"
    assert request.body["stream"] is True
    if not responses:
        assert request.body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("responses", [False, True], ids=["chat_completions", "responses"])
async def test_tool_call_round_trip_through_the_fake(start_fake, use_fake, responses):
    fake = start_fake(text="Done.", tool_calls={"calculate": {"expression": "6 * 7"}})
    use_fake(fake, responses=responses)

    result, events = await run_streamed(build_chat_agent(), "what is six times seven?")

    [called] = run_items(events, "tool_called")
    assert called.raw_item.name == "calculate"
    assert [item.output for item in run_items(events, "tool_output")] == ["42"]
    assert result.final_output == "Tool results: 42. Done."
    assert len(fake.requests) == 2
    assert "42" in json.dumps(fake.requests[1].body)
    assert result.context_wrapper.usage.requests == 2
    assert result.context_wrapper.usage.total_tokens == sum(i + o for i, o in fake.usages)


class Answer(BaseModel):
    title: str
    points: list[str]
    confident: bool


@pytest.mark.parametrize("responses", [False, True], ids=["chat_completions", "responses"])
async def test_structured_output_through_the_fake(start_fake, use_fake, responses):
    fake = start_fake()
    use_fake(fake, responses=responses)
    agent = Agent(name="Structured", instructions="Answer in the schema.", output_type=Answer)

    result = await Runner.run(agent, "tides", run_config=providers.run_config())

    assert isinstance(result.final_output, Answer)
    assert result.final_output.points
    body = fake.requests[0].body
    fmt = body["text"]["format"] if responses else body["response_format"]
    assert fmt["type"] == "json_schema"


async def test_fake_answers_non_streaming_chat_completions(start_fake, use_fake):
    fake = start_fake(text=FAKE_TEXT)
    use_fake(fake)
    result = await Runner.run(build_chat_agent(), "Say hello", run_config=providers.run_config())
    assert result.final_output == FAKE_TEXT
    assert fake.requests[0].body.get("stream") in (None, False)


def test_fake_runs_as_a_separate_process():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, str(Path(__file__).with_name("fake_openai.py")), "--port", str(port)]
    command += ["--deltas", "5", "--delay", "0"]
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    body["stream_options"] = {"include_usage": True}
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert "fake OpenAI API" in process.stdout.readline()
            response = None
            for _ in range(50):  # the banner prints just before uvicorn binds the port
                try:
                    response = httpx.post(
                        f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=10
                    )
                    break
                except httpx.ConnectError:
                    time.sleep(0.1)
        finally:
            process.terminate()
    assert response is not None
    lines = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")) == 5
    assert chunks[-1]["usage"]["completion_tokens"] == 5


UPSTREAM_FAILURES = [
    ((429, "rate_limit_exceeded"), "model_rate_limited"),
    ((401, "invalid_api_key"), "model_auth_failed"),
    ((400, "invalid_request_error"), "model_request_rejected"),
    ((503, "server_error"), "model_unavailable"),
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("failure,code", UPSTREAM_FAILURES, ids=[code for _, code in UPSTREAM_FAILURES])
async def test_upstream_failures_have_their_own_codes(start_fake, use_fake, api_for, alice, failure, code):
    """A run that fails at the model's provider says which way (retry later, fix the key, a
    refused request) and is a 502 over REST, not a 500 that blames this server."""
    use_fake(start_fake(fail=failure))
    response = await api_for(alice).post("/api/agents/chat/run", {"input": "Say hello"})
    assert response.status_code == 502, response.content
    body = response.json()
    assert body["error_code"] == code and "fake upstream failure" in body["error"]
    run = await Run.objects.aget(pk=body["run_id"])
    assert (run.status, run.error_code) == ("failed", code)


@pytest.mark.django_db(transaction=True)
async def test_an_answer_cut_mid_stream_fails_with_what_came_before_it_kept(start_fake, use_fake, alice):
    use_fake(start_fake(deltas=10, cut_after=4))
    client = SSEClient("POST", "/api/agents/chat/stream", {"input": "Say hello"}, alice.token)
    assert await client.start() == 200
    events = await client.read_all()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert text_of(events) == "word0 word1 word2 word3 "
    terminal = events[-1]
    assert terminal["type"] == "error" and terminal["code"] == "model_unavailable"
    run = await Run.objects.aget(pk=terminal["run_id"])
    assert run.status == "failed" and run.error_code == "model_unavailable"
    assert [e.data async for e in RunEvent.objects.filter(run=run).order_by("seq")] == events


@pytest.mark.django_db(transaction=True)
async def test_a_silent_upstream_times_out_and_retries_follow_the_settings(
    start_fake, use_fake, api_for, alice, settings
):
    """OPENAI_TIMEOUT bounds the silence between two chunks (a hung provider does not hold a
    run for openai's default ten minutes); OPENAI_MAX_RETRIES is the client's retry count."""
    settings.OPENAI_TIMEOUT, settings.OPENAI_MAX_RETRIES = 0.3, 0
    use_fake(start_fake(deltas=5, delay=2.0))
    started = time.monotonic()
    response = await api_for(alice).post("/api/agents/chat/run", {"input": "Say hello"})
    assert time.monotonic() - started < 3
    assert response.status_code == 502 and response.json()["error_code"] == "model_unavailable"

    down = start_fake(fail=(503, "server_error"))
    use_fake(down)
    await api_for(alice).post("/api/agents/chat/run", {"input": "Say hello"})
    assert len(down.requests) == 1
    settings.OPENAI_MAX_RETRIES = 2
    await api_for(alice).post("/api/agents/chat/run", {"input": "Say hello"})
    assert len(down.requests) == 1 + 3
