"""Logs: with LOG_FORMAT=json one JSON object per line; a run logs one line when it starts and
one when it ends (never one per event), carrying its run id and the id of the request that
started it, which the response also carries (X-Request-ID)."""

import asyncio
import io
import json
import logging
import os
import subprocess
import sys

import pytest

from agents_app.logs import JsonFormatter, RequestIdFilter

from .live_server import ROOT
from .streams import SSEClient

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def json_log():
    """The run engine's log records, as the JSON lines LOG_FORMAT=json writes."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("agents_app.runs.execute")
    logger.addHandler(handler)
    old_level, logger.level = logger.level, logging.INFO
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)
    logger.setLevel(old_level)


async def lines_of(json_log, run_id: str, count: int = 2) -> list[dict]:
    for _ in range(100):  # the end's line follows the terminal event by a moment
        mine = [line for line in json_log() if line.get("run_id") == run_id]
        if len(mine) >= count:
            return mine
        await asyncio.sleep(0.02)
    raise AssertionError(f"no log lines for run {run_id}: {json_log()}")


async def test_a_stream_logs_its_run_start_and_end_with_the_request_id(alice, json_log):
    header = [(b"x-request-id", b"req-42")]
    body = {"input": "What is 6 * 7?"}
    client = SSEClient("POST", "/api/agents/chat/stream", body, alice.token, headers=header)
    assert await client.start() == 200
    assert client.headers["x-request-id"] == "req-42"
    events = await client.read_all()
    started, ended = await lines_of(json_log, events[0]["run_id"])
    assert started["message"].startswith("run ") and started["agent"] == "chat"
    assert started["request_id"] == ended["request_id"] == "req-42"
    assert started["user_id"] == ended["user_id"] == alice.pk
    assert ended["status"] == "completed" and ended["total_tokens"] > 0 and ended["duration_s"] >= 0
    assert len(json_log()) == 2  # one line each, whatever the number of events


async def test_rest_requests_get_an_id_when_they_bring_none(api_for, alice, json_log):
    response = await api_for(alice).post("/api/agents/chat/run", {"input": "hi"})
    request_id = response["X-Request-ID"]
    assert len(request_id) == 32
    lines = await lines_of(json_log, response.json()["run_id"])
    assert {line["request_id"] for line in lines} == {request_id}
    # An id that is not a plain token is replaced, not logged.
    odd = await api_for(alice).get("/api/agents/", **{"X-Request-ID": "a b\tc"})
    assert odd["X-Request-ID"] != "a b\tc" and len(odd["X-Request-ID"]) == 32


def test_log_format_json_writes_one_object_per_line():
    script = (
        "import django, logging; django.setup(); "
        "logging.getLogger('agents_app').warning('hello %s', 'there', extra={'run_id': 'r-1'}); "
        "logging.getLogger('agents_app').error('boom', exc_info=ZeroDivisionError('x'))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "DEBUG": "true", "LOG_FORMAT": "json"}
    done = python(script, env)
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    hello = next(line for line in lines if line["message"] == "hello there")
    assert hello["run_id"] == "r-1" and hello["level"] == "WARNING" and hello["time"].endswith("Z")
    assert "ZeroDivisionError" in next(line for line in lines if line["message"] == "boom")["exception"]
    env["LOG_FORMAT"] = "xml"
    refused = python(script, env)
    assert refused.returncode != 0 and "LOG_FORMAT must be" in refused.stderr


def python(script: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
