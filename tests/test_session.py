"""The ORM implementation of the SDK Session protocol: memory across runs, isolation between users."""

import pytest

from agents_app import providers
from agents_app.models import Conversation, ConversationItem, Run
from agents_app.session import DjangoSession

from .conftest import RepeatingModel, ScriptedProvider
from .streams import stream_until_first_delta

pytestmark = pytest.mark.django_db(transaction=True)


async def test_session_protocol_methods(alice):
    conversation = await Conversation.objects.acreate(owner=alice, agent="chat")
    session = DjangoSession(conversation)
    assert await session.get_items() == []
    assert await session.pop_item() is None
    await session.add_items([{"role": "user", "content": f"m{i}"} for i in range(4)])
    assert [i["content"] for i in await session.get_items()] == ["m0", "m1", "m2", "m3"]
    assert [i["content"] for i in await session.get_items(limit=2)] == ["m2", "m3"]
    assert (await session.pop_item())["content"] == "m3"
    assert len(await session.get_items()) == 3
    await session.clear_session()
    assert await session.get_items() == []


async def test_deferred_session_keeps_items_until_taken(alice):
    conversation = await Conversation.objects.acreate(owner=alice, agent="chat")
    await ConversationItem.objects.acreate(conversation=conversation, data={"role": "user", "content": "m0"})
    session = DjangoSession(conversation, deferred=True)
    await session.add_items([{"role": "user", "content": f"m{i}"} for i in (1, 2, 3)])
    assert await ConversationItem.objects.acount() == 1
    assert [i["content"] for i in await session.get_items()] == ["m0", "m1", "m2", "m3"]
    assert [i["content"] for i in await session.get_items(limit=3)] == ["m1", "m2", "m3"]
    assert (await session.pop_item())["content"] == "m3"
    rows = session.take_rows()
    assert [r.data["content"] for r in rows] == ["m1", "m2"] and session.take_rows() == []
    await ConversationItem.objects.abulk_create(rows)
    assert [i["content"] for i in await DjangoSession(conversation).get_items()] == ["m0", "m1", "m2"]


async def test_a_run_writes_its_memory_with_its_end(alice, settings):
    # The SDK saves the input before its first model call: that write must not sit on the
    # way to the first token. The memory is written in the transaction that ends the run.
    settings.OFFLINE_MODEL_DELAY = 0.05
    client = await stream_until_first_delta(alice)
    run = await Run.objects.aget(pk=client.events()[0]["run_id"])
    assert run.status == "running"
    assert await ConversationItem.objects.filter(conversation_id=run.conversation_id).acount() == 0
    await client.read_all()
    items = [i.data async for i in ConversationItem.objects.filter(conversation_id=run.conversation_id)]
    assert [i.get("role") for i in items] == ["user", "assistant"]
    assert items[0]["content"] == "Tell me about forests"


async def test_memory_across_two_runs(api_for, alice):
    api = api_for(alice)
    first = (
        await api.post("/api/agents/chat/run", {"input": "Hi! My name is Ada and I live in Lyon."})
    ).json()
    second = await api.post(
        "/api/agents/chat/run", {"input": "What is my name?", "conversation_id": first["conversation_id"]}
    )
    assert second.status_code == 200
    assert "Ada" in second.json()["final_output"]
    items = [i.data async for i in ConversationItem.objects.filter(conversation_id=first["conversation_id"])]
    user_texts = [i.get("content") for i in items if i.get("role") == "user"]
    assert user_texts == ["Hi! My name is Ada and I live in Lyon.", "What is my name?"]


async def test_users_never_share_memory(api_for, alice, bob):
    await api_for(alice).post("/chat/run", {"input": "My name is Ada.", "session_id": "123"})
    answer = (await api_for(bob).post("/chat/run", {"input": "What is my name?", "session_id": "123"})).json()
    assert "Ada" not in answer["final_output"]
    bob_items = ConversationItem.objects.filter(conversation__owner=bob)
    assert not [i async for i in bob_items if "Ada" in str(i.data)]
    alice_again = (
        await api_for(alice).post("/chat/run", {"input": "What is my name?", "session_id": "123"})
    ).json()
    assert "Ada" in alice_again["final_output"]


async def test_a_failed_run_leaves_the_memory_as_it_was(api_for, alice, monkeypatch):
    """Its input is not replayed to later runs (it may be what failed), and a retry is not doubled."""
    api = api_for(alice)
    first = (await api.post("/api/agents/chat/run", {"input": "Hi! My name is Ada."})).json()
    conversation = first["conversation_id"]

    async def upstream_down(call):
        raise RuntimeError("upstream is down")

    offline = providers.get_model_provider
    broken = ScriptedProvider(RepeatingModel(upstream_down))
    monkeypatch.setattr(providers, "get_model_provider", lambda: broken)
    await api.post("/api/agents/chat/run", {"input": "What is my name?", "conversation_id": conversation})
    failed = await Run.objects.filter(conversation_id=conversation).order_by("-created_at").afirst()
    assert (failed.status, failed.input) == ("failed", "What is my name?")
    assert "upstream is down" in failed.error

    monkeypatch.setattr(providers, "get_model_provider", offline)
    retry = await api.post(
        "/api/agents/chat/run", {"input": "What is my name?", "conversation_id": conversation}
    )
    assert retry.status_code == 200 and "Ada" in retry.json()["final_output"]
    items = [
        i.data async for i in ConversationItem.objects.filter(conversation_id=conversation).order_by("id")
    ]
    assert [i.get("content") for i in items if i.get("role") == "user"] == [
        "Hi! My name is Ada.",
        "What is my name?",
    ]
