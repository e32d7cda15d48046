"""The statements a run's start uses instead of the ORM's (agents_app/prepared.py): they read and
write exactly what the ORM would, and token auth keeps DRF's rules on every surface."""

import uuid
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from agents_app import prepared
from agents_app.auth import CLOSE_UNAUTHENTICATED
from agents_app.models import Conversation, Run

from .streams import SSEClient, ws_client

pytestmark = pytest.mark.django_db(transaction=True)


def field_values(obj) -> dict:
    return {f.attname: getattr(obj, f.attname) for f in type(obj)._meta.concrete_fields}


def test_token_with_user_reads_what_the_orm_reads(make_user):
    user = make_user("carol", email="carol@example.com", first_name="Carol", is_staff=True)
    user.last_login = timezone.now() - timedelta(days=3, microseconds=7)
    user.save()
    token = prepared.token_with_user(user.token)
    orm = Token.objects.select_related("user").get(key=user.token)
    assert field_values(token) == field_values(orm)
    assert field_values(token.user) == field_values(orm.user)
    # Converted as the ORM converts (SQLite hands back text and integers for these).
    assert token.user.is_staff is True and token.user.is_superuser is False
    assert token.created.tzinfo is not None and token.user.last_login == user.last_login
    assert token.user_id == user.pk and token._state.adding is False
    assert prepared.token_with_user("no-such-key") is None


def test_insert_writes_what_the_orm_writes(alice):
    now = timezone.now()
    values = dict(
        owner=alice,
        agent="chat",
        input=[{"role": "user", "content": "naïve ✓"}],
        context={"nested": {"n": 1.5, "none": None}},
        provider="offline",
        model="m",
        status=Run.Status.RUNNING,
        started_at=now,
        heartbeat_at=now,
        worker_channel="w!1",
    )
    conversation = Conversation(owner=alice, agent="chat", title="t")
    prepared.insert(conversation)
    assert conversation._state.adding is False and conversation.created_at and conversation.updated_at
    ours = Run(conversation=conversation, **values)
    prepared.insert(ours)
    theirs = Run.objects.create(**values)
    skip = {"id", "created_at", "conversation_id"}
    read = field_values(Run.objects.get(pk=ours.pk))
    assert {k: v for k, v in read.items() if k not in skip} == {
        k: v for k, v in field_values(Run.objects.get(pk=theirs.pk)).items() if k not in skip
    }
    assert read["created_at"] == ours.created_at and read["conversation_id"] == conversation.pk
    assert Conversation.objects.get(pk=conversation.pk).title == "t"


def test_insert_keeps_the_database_rules(alice):
    conversation = Conversation(owner=alice, agent="chat")
    prepared.insert(conversation)
    prepared.insert(Run(owner=alice, agent="chat", conversation=conversation, input="a", status="running"))
    second = Run(owner=alice, agent="chat", conversation=conversation, input="b", status="running")
    with pytest.raises(IntegrityError), transaction.atomic():
        prepared.insert(second)  # one active run per conversation
    with pytest.raises(ValueError):
        prepared.insert(Run(id=None, owner=alice, agent="chat", input="c"))
    assert Run.objects.count() == 1


def test_a_new_conversation_and_its_run_go_in_together(alice):
    """A start that opens a conversation writes it with its run: on PostgreSQL in one statement
    (one round trip, one commit and so one WAL flush instead of two), elsewhere in one
    transaction. Either both rows are written or neither."""
    from django.db import connection

    statements = []

    def count(execute, sql, params, many, context):
        statements.append(sql.split()[0].upper())
        return execute(sql, params, many, context)

    conversation = Conversation(owner=alice, agent="chat", title="t")
    run = Run(owner=alice, agent="chat", conversation=conversation, input="a", status="running")
    with connection.execute_wrapper(count):
        prepared.insert(conversation, run)
    writes = [s for s in statements if s in ("INSERT", "WITH")]
    assert writes == (["WITH"] if connection.vendor == "postgresql" else ["INSERT", "INSERT"])
    assert Run.objects.get(pk=run.pk).conversation_id == conversation.pk
    assert not conversation._state.adding and not run._state.adding

    # The run's row is refused (its primary key is taken): the new conversation is not kept.
    lonely = Conversation(owner=alice, agent="chat", title="lonely")
    clash = Run(id=run.pk, owner=alice, agent="chat", conversation=lonely, input="b", status="completed")
    with pytest.raises(IntegrityError):
        prepared.insert(lonely, clash)
    assert not Conversation.objects.filter(pk=lonely.pk).exists()
    assert Conversation.objects.count() == 1 and Run.objects.count() == 1


@pytest.fixture
def inactive(make_user):
    user = make_user("dormant")
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)
    return user


@pytest.mark.parametrize("who", ["inactive", "unknown"])
async def test_token_refusals_keep_drfs_rules(api_for, inactive, who):
    token = inactive.token if who == "inactive" else uuid.uuid4().hex
    message = "User inactive or deleted." if who == "inactive" else "Invalid token."
    rest = await api_for(None).get("/api/runs/", Authorization=f"Token {token}")
    assert rest.status_code == 401 and rest.json()["error"]["message"] == message
    sse = SSEClient("POST", "/api/agents/chat/stream", {"input": "hi"}, token)
    assert await sse.start() == 401
    await sse.read_all()
    assert sse.json()["error"]["message"] == message
    ws = ws_client(token=token)
    await ws.connect()
    assert (await ws.receive_output(1)) == {"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED}
    assert await sync_to_async(Run.objects.count)() == 0
