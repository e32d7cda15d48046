"""The reference server's stream and session paths, as its clients use them."""

import pytest

from .streams import stream_run, text_of

pytestmark = pytest.mark.django_db(transaction=True)

LIFECYCLE = (
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
)


def model_responses(events: list[dict]) -> list[list[str]]:
    """The raw event types of each model response of a run, in order."""
    responses: list[list[str]] = []
    for event in events:
        if event["type"] != "raw_response":
            continue
        if event["event_type"] == "response.created":
            responses.append([])
        responses[-1].append(event["event_type"])
    return responses


@pytest.mark.parametrize("path", ["/chat/stream", "/assistant/stream"])
async def test_reference_stream_forwards_every_raw_event(alice, path):
    _, events = await stream_run(alice.token, {"input": "what is 17 * 23?", "session_id": "123"}, path)
    responses = model_responses(events)
    assert len(responses) >= 2  # a tool call or handoff, then the answer
    for types in responses:
        assert types[0] == "response.created" and types[-1] == "response.completed"
        if "response.output_text.delta" in types:
            first_delta = types.index("response.output_text.delta")
            for kind in LIFECYCLE:
                assert types.index(kind) < first_delta
            assert "response.content_part.done" in types and "response.output_item.done" in types
    created = next(e for e in events if e.get("event_type") == "response.created")
    assert created["response_id"].startswith("resp") and created["status"] == "in_progress"
    added = next(e for e in events if e.get("event_type") == "response.output_item.added")
    assert added["item"]["type"] in ("message", "function_call") and "output_index" in added
    assert "391" in text_of(events) and events[-1]["type"] == "stream_complete"


async def test_native_stream_keeps_the_lighter_set_unless_asked(alice):
    _, light = await stream_run(alice.token, {"input": "what is 17 * 23?"})
    kinds = {e["event_type"] for e in light if e["type"] == "raw_response"}
    assert "response.created" not in kinds and "response.output_text.delta" in kinds
    _, full = await stream_run(
        alice.token, {"input": "what is 17 * 23?"}, "/api/agents/chat/stream?events=full"
    )
    assert "response.created" in {e["event_type"] for e in full if e["type"] == "raw_response"}
    _, body_full = await stream_run(alice.token, {"input": "hi", "events": "full"})
    assert any(e.get("event_type") == "response.created" for e in body_full)
    _, light_ref = await stream_run(alice.token, {"input": "hi", "events": "standard"}, "/chat/stream")
    assert not any(e.get("event_type") == "response.created" for e in light_ref)


async def test_session_history_read_and_cleared(alice, bob, api_for):
    api = api_for(alice)
    for text in ("Hi, my name is Ada.", "what is 2 + 3?"):
        answer = await api.post("/chat/run", {"input": text, "session_id": "s-42"})
        assert answer.status_code == 200, answer.content
    history = await api.get("/chat/session/s-42")
    assert history.status_code == 200
    items = history.json()["items"]
    users = [i["content"] for i in items if i.get("role") == "user"]
    assert users == ["Hi, my name is Ada.", "what is 2 + 3?"]
    assert any(i.get("type") == "function_call" for i in items)  # the calculator's call, in order
    assert items[-1].get("role") == "assistant"
    # Bob's session of the same name is his own (empty), and he cannot clear Alice's.
    assert (await api_for(bob).get("/chat/session/s-42")).json()["items"] == []
    assert (await api_for(bob).delete("/chat/session/s-42")).status_code == 204
    assert len((await api.get("/chat/session/s-42")).json()["items"]) == len(items)
    # The assistant's session of that name is another conversation.
    assert (await api.get("/assistant/session/s-42")).json()["items"] == []
    assert (await api.delete("/chat/session/s-42")).status_code == 204
    assert (await api.get("/chat/session/s-42")).json()["items"] == []
    remembered = await api.post("/chat/run", {"input": "who am i?", "session_id": "s-42"})
    assert "Ada" not in remembered.json()["final_output"]
    assert (await api_for(None).get("/chat/session/s-42")).status_code == 401
