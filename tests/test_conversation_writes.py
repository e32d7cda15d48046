"""Deleting a conversation, or clearing its memory, while a run starts in it: the delete holds the
conversation's row from its check for active runs to its commit, so the start waits and then finds
the conversation gone (404), instead of a run that the delete's cascade erases or a delete that
fails at its commit."""

import threading

import pytest
from django.db import connections
from django.db.models.signals import pre_delete

from agents_app.conversations import conversation_delete
from agents_app.errors import NotFound
from agents_app.models import Conversation, Run
from agents_app.registry import get_spec
from agents_app.runs.start import RunRequest, create_run

pytestmark = pytest.mark.django_db(transaction=True)


def in_thread(fn, outcome: dict) -> threading.Thread:
    """`fn()` on a thread (a connection) of its own; its result or error in `outcome`."""

    def run():
        try:
            outcome["result"] = fn()
        except Exception as exc:
            outcome["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_run_cannot_start_in_a_conversation_being_deleted(alice):
    conversation = Conversation.objects.create(owner=alice, agent="chat", title="doomed")
    locked, go = threading.Event(), threading.Event()

    def pause(sender, instance, **kwargs):  # inside the delete, after its check for active runs
        if isinstance(instance, Conversation):
            locked.set()
            go.wait(10)

    pre_delete.connect(pause, weak=False)
    deleted, started = {}, {}
    try:
        deleting = in_thread(lambda: conversation_delete(conversation), deleted)
        assert locked.wait(10)
        request = RunRequest(user=alice, spec=get_spec("chat"), input="hi", conversation_id=conversation.pk)
        starting = in_thread(lambda: create_run(request, "worker"), started)
        starting.join(0.5)
        assert starting.is_alive(), "the start went ahead while the delete held the conversation"
        go.set()
        deleting.join(10)
        starting.join(30)
    finally:
        go.set()
        pre_delete.disconnect(pause)
    assert "error" not in deleted, deleted
    assert isinstance(started.get("error"), NotFound), started
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not Run.objects.filter(conversation_id=conversation.pk).exists()
