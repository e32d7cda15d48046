"""docs/events.md stays true: its JSON examples have exactly the fields real events have."""

import json
import re
from pathlib import Path

import pytest

from agents_app.models import RunEvent

from .streams import SSEClient, wait_finished

DOC = Path(__file__).resolve().parent.parent / "docs" / "events.md"
pytestmark = pytest.mark.django_db(transaction=True)


def documented_examples() -> list[dict]:
    blocks = re.findall(r"```json\n(.*?)```", DOC.read_text(), flags=re.S)
    return [json.loads(line) for block in blocks for line in block.splitlines() if line.strip()]


# Events of worker mode only: tests/test_workers.py checks their examples against real ones.
WORKER_MODE_ONLY = {("turn_restarted", None)}


def shape(event: dict) -> tuple:
    return event["type"], event.get("name") or event.get("event_type")


async def test_documented_examples_match_real_events(api_for, alice, settings):
    api = api_for(alice)
    await api.post("/api/agents/chat/run", {"input": "What is 17 * 23?"})
    await api.post("/api/agents/assistant/run", {"input": "Please calculate 12 + 30"})
    # A run that waits its turn behind another of its conversation.
    settings.OFFLINE_MODEL_DELAY = 0.02
    first = SSEClient(
        "POST", "/api/agents/chat/stream", {"input": "Tell me a story", "session_id": "d"}, alice.token
    )
    assert await first.start() == 200
    await first.read_until(lambda e: e["type"] == "run_started")
    queued = {"input": "And then?", "session_id": "d", "if_busy": "enqueue"}
    assert (await api.post("/api/agents/chat/run", queued)).status_code == 200
    await first.read_all()
    # A run that pauses for approval of a tool call, then is approved.
    paused = (await api.post("/api/agents/ops/run", {"input": "refund order A17 250"})).json()
    [call] = paused["approvals"]
    url = f"/api/runs/{paused['run_id']}/approvals/{call['approval_id']}"
    assert (await api.post(url, {"decision": "approve"})).status_code == 200
    await wait_finished(paused["run_id"])
    real: dict[tuple, set] = {}
    async for event in RunEvent.objects.all():
        real.setdefault(shape(event.data), set(event.data))
    examples = documented_examples()
    assert len(examples) >= 8
    for example in examples:
        if shape(example) in WORKER_MODE_ONLY:
            continue
        assert shape(example) in real, f"documented event {shape(example)} never happens"
        assert set(example) == real[shape(example)], f"fields of {shape(example)} differ from real events"
