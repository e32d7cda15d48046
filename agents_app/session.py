"""The Agents SDK `Session` protocol on the Django ORM, so memory works on any Django database."""

from agents.memory.session import SessionABC
from asgiref.sync import sync_to_async
from django.db import transaction

from .models import Conversation, ConversationItem


class DjangoSession(SessionABC):
    """Conversation memory stored as `ConversationItem` rows of one `Conversation`."""

    def __init__(self, conversation: Conversation, empty: bool = False):
        """`empty=True` when the caller knows the conversation has no items yet (it was just
        created): the first read then needs no query."""
        self.conversation = conversation
        self.session_id = str(conversation.pk)
        self._empty = empty

    async def get_items(self, limit: int | None = None) -> list:
        if self._empty:
            return []
        qs = ConversationItem.objects.filter(conversation_id=self.conversation.pk)
        if limit is None:
            return [item.data async for item in qs.order_by("id").only("data")]
        latest = [item.data async for item in qs.order_by("-id").only("data")[:limit]]
        return latest[::-1]

    async def add_items(self, items: list) -> None:
        if not items:
            return
        self._empty = False
        rows = [ConversationItem(conversation_id=self.conversation.pk, data=_plain(i)) for i in items]
        await ConversationItem.objects.abulk_create(rows)

    async def pop_item(self):
        return await sync_to_async(self._pop_item)()

    def _pop_item(self):
        self._empty = False
        with transaction.atomic():
            item = (
                ConversationItem.objects.select_for_update()
                .filter(conversation_id=self.conversation.pk)
                .order_by("-id")
                .first()
            )
            if item is None:
                return None
            item.delete()
            return item.data

    async def clear_session(self) -> None:
        await ConversationItem.objects.filter(conversation_id=self.conversation.pk).adelete()


def _plain(item):
    """SDK items may be pydantic models or TypedDicts; store plain JSON."""
    if hasattr(item, "model_dump"):
        return item.model_dump(exclude_unset=True, mode="json")
    return item
