"""The statements a run's start uses instead of the ORM's (agents_app/prepared.py): they read and
write exactly what the ORM would, and token auth keeps DRF's rules on every surface."""

import uuid
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from agents_app import prepared
from agents_app.auth import CLOSE_UNAUTHENTICATED
from agents_app.models import Conversation, ConversationItem, Run, RunEvent

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


def test_a_run_s_end_writes_what_the_orm_writes_in_one_statement_on_postgresql(alice):
    from agents_app.executor import _commit_ends

    ours, orm = (
        Run.objects.create(
            owner=alice,
            agent="chat",
            input="hi",
            status=Run.Status.RUNNING,
            conversation=Conversation.objects.create(owner=alice, agent="chat"),
        )
        for _ in range(2)
    )
    fields = dict(
        status=Run.Status.COMPLETED,
        final_output={"text": ["naïve ✓", 1.5, None]},
        error="",
        error_code="",
        response_id="resp_1",
        current_turn=2,
        finished_at=timezone.now(),
        last_seq=7,
        requests=1,
        input_tokens=3,
        output_tokens=4,
        total_tokens=7,
    )
    Run.objects.filter(pk=orm.pk).update(**fields)
    event = {
        "type": "stream_complete",
        "seq": 7,
        "run_id": str(ours.pk),
        "final_output": fields["final_output"],
    }
    roles = ["user", "assistant", "user", "assistant"]
    items = [
        ConversationItem(conversation_id=ours.conversation_id, data={"role": r, "n": n})
        for n, r in enumerate(roles)
    ]
    before = ours.conversation.updated_at
    statements = []

    def record(execute, sql, params, many, context):
        statements.append(sql.split()[0].upper())
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        assert _commit_ends([(ours, fields, event, items)]) == [None]

    # One round trip on PostgreSQL; elsewhere one transaction of statements built once.
    assert statements == (
        ["WITH"] if connection.vendor == "postgresql" else ["BEGIN", "UPDATE", "UPDATE", "INSERT", "INSERT"]
    )
    ours.refresh_from_db()
    orm.refresh_from_db()
    differ = {"id", "conversation_id", "created_at"}
    assert {k: v for k, v in field_values(ours).items() if k not in differ} == {
        k: v for k, v in field_values(orm).items() if k not in differ
    }
    stored = ConversationItem.objects.filter(conversation_id=ours.conversation_id).order_by("id")
    assert [(i.data["role"], i.data["n"]) for i in stored] == list(zip(roles, range(4), strict=True))
    assert all(i.created_at for i in stored)
    [row] = RunEvent.objects.filter(run=ours)
    assert (row.seq, row.type, row.data) == (7, "stream_complete", event)
    assert Conversation.objects.get(pk=ours.conversation_id).updated_at > before


def test_many_ends_go_in_statements_of_a_bounded_size(alice, monkeypatch):
    """A mass disconnect's thousands of ends would pass the limit on parameters per statement."""
    from agents_app import executor

    monkeypatch.setattr(executor, "ENDS_PER_COMMIT", 3)
    calls = []
    update_and_add = prepared.update_and_add
    monkeypatch.setattr(prepared, "update_and_add", lambda *a: calls.append(len(a[0])) or update_and_add(*a))
    runs = [
        Run.objects.create(owner=alice, agent="chat", input="hi", status=Run.Status.RUNNING) for _ in range(7)
    ]
    fields = {"status": Run.Status.CANCELLED, "finished_at": timezone.now(), "last_seq": 1}
    ends = [(run, fields, {"type": "stream_complete", "seq": 1, "run_id": str(run.pk)}, []) for run in runs]
    assert executor._commit_ends(ends) == [None] * 7
    assert calls == [3, 3, 1]  # the updates of each statement: runs (no conversations here)
    assert Run.objects.filter(status=Run.Status.CANCELLED).count() == 7
    assert RunEvent.objects.filter(run__in=runs).count() == 7
