"""The ORM implementation of the SDK Session protocol: memory across runs, isolation between users."""

import pytest

from agents_app.models import Conversation, ConversationItem
from agents_app.session import DjangoSession

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
