"""A run sends the model a window of its conversation's memory, cut at a user message; the whole
history stays stored."""

import pytest

from agents_app.models import ConversationItem
from agents_app.session import MemoryWindow

pytestmark = pytest.mark.django_db(transaction=True)


def user(text):
    return {"role": "user", "content": text}


def call(n):
    return {"type": "function_call", "call_id": f"c{n}", "name": "calculate", "arguments": "{}"}


def output(n):
    return {"type": "function_call_output", "call_id": f"c{n}", "output": "4"}


def answer(text):
    return {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}


HISTORY = [
    user("one"), answer("1"),
    user("two"), call(2), output(2), answer("2"),
    user("three"), call(3), output(3), answer("3"),
]  # fmt: skip


@pytest.mark.parametrize(
    "window,first",
    [
        (MemoryWindow(max_items=4), "three"),  # 4 items reach into turn two: cut at "three"
        (MemoryWindow(max_items=6), "three"),  # one short of turn two whole
        (MemoryWindow(max_items=8), "two"),
        (MemoryWindow(max_items=100), "one"),
        (MemoryWindow(max_items=2), "three"),  # the last turn is larger than the window: whole
        (MemoryWindow(max_tokens=60), "three"),
    ],
)
def test_the_window_starts_at_a_user_message(window, first):
    cut = window.cut(HISTORY)
    assert cut[0] == user(first)
    assert HISTORY[-len(cut) :] == cut
    calls = {i["call_id"] for i in cut if i.get("type") == "function_call"}
    outputs = {i["call_id"] for i in cut if i.get("type") == "function_call_output"}
    assert calls == outputs  # no call without its output, or output without its call


async def test_a_run_sees_the_window_and_the_history_stays_whole(api_for, alice, settings):
    api = api_for(alice)
    first = await api.post("/chat/run", {"input": "Hi, my name is Ada.", "session_id": "w"})
    for text in ("what is 2 + 2?", "what is 3 + 3?", "what is 4 + 4?"):
        assert (await api.post("/chat/run", {"input": text, "session_id": "w"})).status_code == 200
    conversation_id = first.json()["conversation_id"]
    settings.AGENTS_MEMORY_MAX_ITEMS = 100
    assert (
        "Ada"
        in (await api.post("/chat/run", {"input": "who am i?", "session_id": "w"})).json()["final_output"]
    )
    stored = await ConversationItem.objects.filter(conversation_id=conversation_id).acount()
    settings.AGENTS_MEMORY_MAX_ITEMS = 6  # the last turns only: Ada's introduction is out of the window
    forgot = await api.post("/chat/run", {"input": "who am i?", "session_id": "w"})
    assert "Ada" not in forgot.json()["final_output"]
    history = await api.get("/chat/session/w")
    assert history.json()["items"][0]["content"] == "Hi, my name is Ada."
    assert len(history.json()["items"]) > stored  # everything is kept, the new turn too
