"""The journal, the one write path of every event: batches, commit, then publish only what committed."""

import asyncio
import threading
import time

import pytest
from django.db import DataError, OperationalError

from agents_app.models import Conversation, Run, RunEvent
from agents_app.runs import store as store_module
from agents_app.runs.engine import get_engine
from agents_app.runs.journal import COMMITTED, VOID
from agents_app.runs.store import Entry, RunEnd, store

from .streams import SSEClient, stream_run, stream_until_first_delta

pytestmark = pytest.mark.django_db(transaction=True)


def delta(run_id, seq: int, text: str = "word ") -> dict:
    return {"type": "raw_response", "seq": seq, "run_id": str(run_id), "delta": text}


def failing_commit(monkeypatch, fails) -> dict:
    """The journal's commit raises what `fails(entries)` returns (None: commit as usual)."""
    real = store_module._commit
    state = {"failed": 0}

    def commit(entries):
        error = fails(entries)
        if error is not None:
            state["failed"] += 1
            raise error
        return real(entries)

    monkeypatch.setattr(store_module, "_commit", commit)
    return state


def slow_commit(monkeypatch, seconds: float, when=lambda entries: True) -> threading.Event:
    """The journal's commits of the batches `when` picks take `seconds` longer; the event is set
    as such a commit begins."""
    real = store_module._commit
    writing = threading.Event()

    def commit(entries):
        if when(entries):
            writing.set()
            time.sleep(seconds)
        return real(entries)

    monkeypatch.setattr(store_module, "_commit", commit)
    return writing


async def wait_for(event: threading.Event) -> None:
    async with asyncio.timeout(5):
        while not event.is_set():
            await asyncio.sleep(0.002)


async def test_a_refused_commit_publishes_nothing_and_the_run_ends_failed(alice, settings, monkeypatch):
    """The database refuses a batch of a run's events: none of them reaches a reader, the run is
    ended `failed` with one terminal event numbered right after its last stored event, and what
    the reader saw is exactly what the database holds."""
    settings.OFFLINE_MODEL_DELAY = 0.01
    client = await stream_until_first_delta(alice)
    run_id = client.events()[0]["run_id"]

    def fails(entries):
        stream = [e for e in entries if e.run_id == run_id and e.end is None]
        return DataError("value refused") if stream else None

    state = failing_commit(monkeypatch, fails)
    events = await client.read_all(timeout=5)
    assert state["failed"] >= 1
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    terminal = events[-1]
    assert terminal["type"] == "error" and terminal["code"] == "journal_failed"
    assert [e["type"] for e in events].count("error") == 1
    stored = [e.data async for e in RunEvent.objects.filter(run_id=run_id).order_by("seq")]
    assert stored == events
    run = await Run.objects.aget(pk=run_id)
    assert (run.status, run.error_code, run.last_seq) == ("failed", "journal_failed", terminal["seq"])
    # A reader that joins now sees the same record.
    join = SSEClient("GET", f"/api/runs/{run_id}/stream", token=alice.token)
    assert await join.start() == 200
    assert await join.read_all() == events


async def test_a_reader_joining_during_a_batch_sees_every_seq_once_in_order(alice, settings, monkeypatch):
    """A join subscribes, then replays what is stored; a batch committed in between reaches it
    both ways, and the cursor keeps each seq once."""
    settings.OFFLINE_MODEL_DELAY = 0.02
    writing = slow_commit(monkeypatch, 0.05)
    client = await stream_until_first_delta(alice, "Tell me a long story about rivers")
    run_id = client.events()[0]["run_id"]
    joins = []
    for _ in range(5):
        writing.clear()
        await wait_for(writing)
        join = SSEClient("GET", f"/api/runs/{run_id}/stream", token=alice.token)
        assert await join.start() == 200  # joined while a batch is being written
        joins.append(join)
    started = await client.read_all()
    for join in joins:
        events = await join.read_all()
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert events == started


async def test_a_second_cancel_while_the_run_ends_does_not_cut_its_stream_short(alice, settings, monkeypatch):
    """A cancel from another process reaches the run's executor twice: its signal, and the
    heartbeat finding the request in the database. The second one landed while the run was
    writing its end, ended the run's task early and so dropped its stream from the run's
    readers: the terminal event came only with the stream's idle poll, 15 s later."""
    settings.SSE_KEEPALIVE_INTERVAL = 60  # the idle poll must not stand in for the delivery
    settings.OFFLINE_MODEL_DELAY = 0.1
    client = await stream_until_first_delta(alice)
    run_id = client.events()[0]["run_id"]
    ending = slow_commit(monkeypatch, 0.3, when=lambda entries: any(e.end is not None for e in entries))
    executor = get_engine().executor
    assert executor.cancel_local(run_id, "immediate")
    await wait_for(ending)
    executor.cancel_local(run_id, "immediate")  # while the end is being written
    events = await client.read_all(timeout=3)
    assert events[-1]["type"] == "stream_complete" and events[-1]["status"] == "cancelled"
    assert (await Run.objects.aget(pk=run_id)).status == "cancelled"


async def test_flush_waits_for_the_batch_in_flight(alice, monkeypatch):
    """The terminal event is committed only after every earlier event, even one mid-write."""
    journal = get_engine().journal
    run = await Run.objects.acreate(owner=alice, agent="chat", input="x", status="running")
    writing = slow_commit(monkeypatch, 0.3)
    journal.append(str(run.pk), {"type": "run_started", "seq": 1, "run_id": str(run.pk)})
    await wait_for(writing)  # the batch has left the queue and is being written
    await journal.flush()
    assert await RunEvent.objects.filter(run=run).acount() == 1


async def test_a_run_whose_events_are_refused_costs_other_runs_nothing(alice, caplog):
    """One batch carries the events of many runs: when one run's rows cannot be stored (the run
    was deleted meanwhile, or a seq is already taken), the others' rows still are, and the
    refusal is logged."""
    journal = get_engine().journal
    kept = await Run.objects.acreate(owner=alice, agent="chat", input="x", status="running")
    gone = await Run.objects.acreate(owner=alice, agent="chat", input="y", status="running")
    taken = await Run.objects.acreate(owner=alice, agent="chat", input="z", status="running")
    await RunEvent.objects.acreate(run=taken, seq=1, type="run_started", data={"type": "run_started"})
    gone_pk = gone.pk
    await gone.adelete()
    for seq in (1, 2):
        for run_pk in (kept.pk, gone_pk, taken.pk):
            journal.append(str(run_pk), delta(run_pk, seq, "é"))
    await journal.flush()
    assert [e.seq async for e in RunEvent.objects.filter(run=kept).order_by("seq")] == [1, 2]
    assert [e.data["delta"] async for e in RunEvent.objects.filter(run=kept)] == ["é", "é"]
    assert not await RunEvent.objects.filter(run_id=gone_pk).aexists()
    assert [e.type async for e in RunEvent.objects.filter(run=taken)] == ["run_started"]
    assert f"events of run {gone_pk} could not be stored" in caplog.text
    assert f"events of run {taken.pk} could not be stored" in caplog.text
    # Their later events are dropped, not retried one batch after another.
    journal.append(str(gone_pk), delta(gone_pk, 3))
    assert str(gone_pk) in journal.lost and not journal._pending


async def test_ends_that_arrive_together_share_a_commit(alice, slow_model, monkeypatch):
    """A mass disconnect stops thousands of runs at once: their ends (status, terminal event,
    memory) share the journal's batches, and every run still gets its full record."""
    from agents_app.registry import get_spec
    from agents_app.runs.cancel import cancel_here
    from agents_app.runs.engine import get_engine
    from agents_app.runs.start import RunRequest, start_run

    batches = []
    real = store_module._commit

    def counting(entries):
        ends = sum(entry.end is not None for entry in entries)
        if ends:
            batches.append(ends)
        return real(entries)

    monkeypatch.setattr(store_module, "_commit", counting)
    slow_model["seconds"] = 30
    chat = get_spec("chat")
    started = [
        await start_run(RunRequest(user=alice, spec=chat, input=f"question {i}", session_key=f"s{i}"))
        for i in range(20)
    ]
    tasks = [get_engine().executor.tasks[str(run.pk)] for run in started]
    await asyncio.sleep(0.2)  # all waiting on the model
    assert all(cancel_here(run.pk) for run in started)
    await asyncio.wait(tasks, timeout=10)
    assert sum(batches) == 20 and len(batches) < 20, batches
    for run in started:
        await run.arefresh_from_db()
        assert run.status == "cancelled" and run.cancel_mode == "immediate" and run.finished_at
        last = await RunEvent.objects.filter(run=run).order_by("-seq").afirst()
        assert last.seq == run.last_seq and last.type == "stream_complete"
    memory = await Conversation.objects.filter(items__isnull=False).distinct().acount()
    assert memory == 20  # each run's input reached its conversation's memory


def test_an_end_holds_only_while_its_run_is_active(alice):
    """An end of a run that something else ended (or deleted) meanwhile is void: not stored,
    and it costs the other ends of its batch nothing."""
    runs = [Run.objects.create(owner=alice, agent="chat", input="x", status="running") for _ in range(3)]
    Run.objects.filter(pk=runs[1].pk).update(status="interrupted")
    batch = [
        Entry(
            str(run.pk),
            {"type": "stream_complete", "seq": 1},
            '{"type":"stream_complete","seq":1}',
            RunEnd({"status": "completed"}, "chat"),
        )
        for run in runs
    ]
    stored, refused = store(batch)
    assert [entry.run_id for entry in stored] == [str(runs[0].pk), str(runs[2].pk)] and refused == {}
    statuses = {str(r.pk): r.status for r in Run.objects.all()}
    assert [statuses[str(run.pk)] for run in runs] == ["completed", "interrupted", "completed"]
    assert not RunEvent.objects.filter(run=runs[1]).exists()
    assert COMMITTED != VOID


async def test_events_and_ends_wait_out_a_database_outage(alice, settings, monkeypatch):
    """Persist, then publish, even when the database is away for a while (a restart, a
    failover): the stream stalls, then goes on; nothing is lost, nothing is out of order, and
    the run's end (its final output, usage and terminal event exist nowhere else) is retried
    until the database is back."""
    settings.OFFLINE_MODEL_DELAY = 0.01
    until = {"at": None}

    def fails(entries):
        now = time.monotonic()
        until["at"] = until["at"] or now + 1.5
        return OperationalError("server closed the connection unexpectedly") if now < until["at"] else None

    state = failing_commit(monkeypatch, fails)
    _, events = await stream_run(alice.token, {"input": "What is 17 * 23?"})
    assert state["failed"] >= 3
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "stream_complete" and events[-1]["status"] == "completed"
    stored = [e.data async for e in RunEvent.objects.filter(run_id=events[0]["run_id"]).order_by("seq")]
    assert stored == events
    run = await Run.objects.aget(pk=events[0]["run_id"])
    assert run.status == "completed" and "391" in run.final_output and run.total_tokens > 0


async def test_a_refused_end_ends_the_run_failed_without_its_result(alice, settings, monkeypatch):
    """A result the database cannot store (here: refused outright) does not leave the run
    `running`: it ends `failed`, with an error terminal event under the same seq."""
    refused = {"once": False}

    def fails(entries):
        if any(e.end is not None and e.end.fields["status"] == "completed" for e in entries):
            refused["once"] = True
            return DataError("unsupported Unicode escape sequence")
        return None

    failing_commit(monkeypatch, fails)
    _, events = await stream_run(alice.token, {"input": "What is 17 * 23?"})
    assert refused["once"]
    assert events[-1]["type"] == "error" and events[-1]["code"] == "journal_failed"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    run = await Run.objects.aget(pk=events[0]["run_id"])
    assert (run.status, run.final_output, run.last_seq) == ("failed", None, events[-1]["seq"])


async def test_a_channel_layer_outage_is_logged_once_not_per_batch(alice, caplog, recording_layer):
    """Redis down: every batch of every watched run fails to publish (readers fall back to the
    database). One warning with the traceback, not thousands; one more when it works again."""
    engine = get_engine()
    run = await Run.objects.acreate(owner=alice, agent="chat", input="x", status="running")
    recording_layer.down.add("group_send")
    for seq in range(1, 31):  # a run of another process: published to its group
        engine.journal.append(str(run.pk), delta(run.pk, seq))
        await engine.journal.flush()
    recording_layer.down.clear()
    engine.journal.append(str(run.pk), delta(run.pk, 31))
    await engine.journal.flush()
    warnings = [r for r in caplog.records if r.name == "agents_app.runs.retry" and r.levelname == "WARNING"]
    assert [r.exc_info is not None for r in warnings] == [True, False]
    assert "works again after 30 failures" in warnings[-1].getMessage()
    assert await RunEvent.objects.filter(run=run).acount() == 31


def test_event_json_is_compact_strict_and_never_refused():
    """Every event is encoded once (orjson): compact, non-ASCII kept as is, NaN as null (strict
    JSON a browser can parse); what orjson refuses falls back to the standard encoder."""
    import json

    from agents_app.runs.events import encode

    event = {"type": "raw_response", "seq": 3, "delta": "héllo ✓", "output_index": 0}
    assert encode(event) == '{"type":"raw_response","seq":3,"delta":"héllo ✓","output_index":0}'
    assert json.loads(encode({"score": float("nan"), "big": float("inf")})) == {"score": None, "big": None}
    # Keys that are not strings and integers beyond 64 bits: the standard encoder's output.
    assert encode({"counts": {1: 2}, "n": 2**70}) == '{"counts":{"1":2},"n":1180591620717411303424}'


async def test_events_are_stored_as_they_were_sent(alice):
    """The journal hands the database already-encoded events (on PostgreSQL a batch is one JSON
    array parameter): quotes, backslashes, control characters, non-ASCII and big numbers come
    back as they went in."""
    journal = get_engine().journal
    run = await Run.objects.acreate(owner=alice, agent="chat", input="x", status="running")
    texts = ['say "hi"', "back\\slash \\n", "tab\there\nnewline", "héllo ✓ 🚀", "</script><b>", "\u2028"]
    sent = [delta(run.pk, seq, text) for seq, text in enumerate(texts, start=1)]
    sent.append(
        {"type": "raw_response", "seq": 7, "run_id": str(run.pk), "n": 2**53, "x": 0.25, "none": None}
    )
    for event in sent:
        journal.append(str(run.pk), event)
    await journal.flush()
    stored = [e.data async for e in RunEvent.objects.filter(run=run).order_by("seq")]
    assert stored == sent
