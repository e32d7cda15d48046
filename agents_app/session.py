"""The Agents SDK `Session` protocol on the Django ORM, so memory works on any Django database."""

import inspect
from dataclasses import dataclass

from agents.memory.session import SessionABC
from django.db import transaction

from .db import in_sync_thread
from .models import Conversation, ConversationItem


@dataclass(frozen=True)
class MemoryWindow:
    """How much of a conversation a run sends to the model: at most `max_items` items and about
    `max_tokens` tokens (estimated as 4 characters each; 0: no bound), always starting at a user
    message, so a turn (its tool calls and their outputs) is never cut in two. A last turn larger
    than the window is sent whole."""

    max_items: int = 0
    max_tokens: int = 0

    def cut(self, items: list) -> list:
        """The end of `items` that fits, from a user message (`items` must reach back to one
        before the window's start, or hold the whole conversation)."""
        start, size = len(items), 0
        while start > 0:
            size += len(str(items[start - 1])) // 4
            if (self.max_items and len(items) - start + 1 > self.max_items) or (
                self.max_tokens and size > self.max_tokens
            ):
                break
            start -= 1
        for index in range(start, len(items)):
            if _is_user_message(items[index]):
                return items[index:]
        last_user = next((i for i in range(len(items) - 1, -1, -1) if _is_user_message(items[i])), 0)
        return items[min(start, last_user) :]


def _is_user_message(item) -> bool:
    return isinstance(item, dict) and item.get("role") == "user" and item.get("type", "message") == "message"


class DjangoSession(SessionABC):
    """Conversation memory stored as `ConversationItem` rows of one `Conversation`.

    `deferred=True` (the executor's runs): added items stay in memory until the run's final
    commit writes them (`take_rows`), in the transaction that ends the run. The SDK saves a
    run's input before its first model call, so writing it then put a database round trip on
    the way to the first token; and a run that never ends leaves no half-written memory.
    """

    def __init__(
        self,
        conversation: Conversation,
        empty: bool = False,
        deferred: bool = False,
        window: MemoryWindow | None = None,
    ):
        """`empty=True` when the caller knows the conversation has no items yet (it was just
        created): the first read then needs no query. `window`: what a run reads of the stored
        history (the executor's runs); all of it stays stored."""
        self.conversation = conversation
        self.session_id = str(conversation.pk)
        self._empty = empty
        self._pending: list | None = [] if deferred else None
        self._window = window

    async def get_items(self, limit: int | None = None) -> list:
        if self._empty:
            stored = []
        elif self._window is not None and limit is None:
            stored = await self._windowed()
        else:
            stored = await self._stored(limit)
        items = stored + (self._pending or [])
        if limit is None:
            return items
        return items[-limit:] if limit > 0 else []

    async def _windowed(self) -> list:
        """The stored history cut to the window. It reads twice the item bound (or all, for a
        token bound alone) so that the window's first user message is among what it read; a
        window with no user message reads everything, to send the last turn whole."""
        window = self._window
        reach = 2 * window.max_items if window.max_items else None
        items = await self._stored(reach)
        cut = window.cut(items)
        if reach is not None and len(items) == reach and not any(map(_is_user_message, cut[:1])):
            cut = window.cut(await self._stored(None))
        return cut

    async def _stored(self, limit: int | None) -> list:
        return await in_sync_thread(self._read)(limit)

    def _read(self, limit: int | None) -> list:
        qs = ConversationItem.objects.filter(conversation_id=self.conversation.pk)
        if limit is None:
            return list(qs.order_by("id").values_list("data", flat=True))
        return list(qs.order_by("-id").values_list("data", flat=True)[:limit])[::-1]

    async def add_items(self, items: list) -> None:
        if not items:
            return
        if self._pending is not None:
            self._pending.extend(_plain(i) for i in items)
            return
        self._empty = False
        await in_sync_thread(ConversationItem.objects.bulk_create)(self._rows([_plain(i) for i in items]))

    def pending_items(self) -> list:
        """The deferred items so far (a checkpoint keeps them, to give them to `restore`)."""
        return list(self._pending or [])

    def restore(self, items: list) -> None:
        """Defer `items` again: a run taken over from its checkpoint (they were never written)."""
        self._pending = [*items, *(self._pending or [])]

    def take_rows(self) -> list[ConversationItem]:
        """The deferred items as unsaved rows, in order, for the caller to save."""
        if not self._pending:
            return []
        pending, self._pending = self._pending, []
        self._empty = False
        return self._rows(pending)

    def _rows(self, items: list) -> list[ConversationItem]:
        return [ConversationItem(conversation_id=self.conversation.pk, data=item) for item in items]

    async def pop_item(self):
        if self._pending:
            return self._pending.pop()
        return await in_sync_thread(self._pop_item)()

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
        if self._pending:
            self._pending.clear()
        await in_sync_thread(ConversationItem.objects.filter(conversation_id=self.conversation.pk).delete)()


# For each run the SDK asks `inspect.signature` about five times whether these take a `wrapper`;
# a stored signature answers without building one from the code again (8.5 -> 3.6 µs a question
# alone, ~40 µs each in a GIL profile of a saturated server).
for _name in ("get_items", "add_items", "pop_item", "clear_session"):
    _method = getattr(DjangoSession, _name)
    _method.__signature__ = inspect.signature(_method)


def _plain(item):
    """SDK items may be pydantic models or TypedDicts; store plain JSON."""
    if hasattr(item, "model_dump"):
        return item.model_dump(exclude_unset=True, mode="json")
    return item
