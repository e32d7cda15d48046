"""Deleting a conversation, or clearing its memory, only while it has no active run.

The check and the write share a transaction that holds the conversation's row, so a run cannot
start in between: a start that inserts its run meanwhile waits for the row (PostgreSQL locks it
for the foreign key; SQLite's write transactions take turns) and then finds the conversation gone
(`start.create_run` answers 404) or its memory cleared."""

from django.db import transaction

from .errors import ConversationBusy
from .models import Conversation, ConversationItem, Run


def conversation_delete(conversation: Conversation) -> None:
    with transaction.atomic():
        if _locked_and_idle(conversation, "delete a conversation"):
            conversation.delete()


def conversation_clear(conversation: Conversation) -> None:
    """The conversation's memory emptied (the conversation and its runs stay)."""
    with transaction.atomic():
        if _locked_and_idle(conversation, "clear a session"):
            ConversationItem.objects.filter(conversation=conversation).delete()


def _locked_and_idle(conversation: Conversation, what: str) -> bool:
    """Lock the conversation's row; False if it is gone; ConversationBusy if a run is active."""
    if not list(Conversation.objects.select_for_update().filter(pk=conversation.pk).values_list("pk")):
        return False
    active = Run.objects.active().filter(conversation=conversation).values_list("pk", flat=True).first()
    if active is not None:
        raise ConversationBusy(f"cannot {what} while a run is active", active_run_id=str(active))
    return True
