"""A turn whose server process died mid-answer, on the chat page: live, the page shows it
interrupted once another process's sweep ends it, with the text it had streamed kept and marked
as cut off; after a reload, the same."""

from datetime import timedelta

import pytest
from django.utils import timezone

from agents_app.models import Run

from ..test_dead_owner import orphan

pytestmark = [pytest.mark.browser, pytest.mark.live, pytest.mark.django_db(transaction=True)]

CUT = ".turn.cut:last-child"
STOPPED = "The server stopped before the answer was finished."


async def test_an_interrupted_turn_keeps_its_text_marked(browse, user):
    alice = await user("alice")
    run = await orphan(alice, stale=False)
    # Fresh until the test says otherwise, however long the page takes to open.
    await Run.objects.filter(pk=run.pk).aupdate(heartbeat_at=timezone.now() + timedelta(minutes=5))
    page = await browse(alice)
    await page.goto(f"/c/{run.conversation_id}/")
    await page.wait_for_selector(".turn:last-child .answer.live:has-text('Hello wor')")
    # Its process is gone: once its heartbeat is old, the server's sweep ends it.
    old = timezone.now() - timedelta(seconds=60)
    await Run.objects.filter(pk=run.pk).aupdate(heartbeat_at=old)
    await page.wait_for_selector(f"{CUT} .turn-meta.error:has-text('{STOPPED}')", timeout=20_000)
    # The server's rendering of what it kept replaces the live text once fetched (the live text
    # holds the first agent's words too): the answering agent's text, marked as cut off.
    await page.wait_for_selector(f"{CUT} .answer.rendered:has-text('Hello wor')")
    assert "Let me ask the writer" not in await page.inner_text(f"{CUT} .answer.rendered")
    assert (await Run.objects.aget(pk=run.pk)).status == Run.Status.INTERRUPTED

    await page.reload()
    await page.wait_for_selector(f"{CUT} .answer.rendered:has-text('Hello wor')")
    assert STOPPED in await page.inner_text(f"{CUT} .turn-meta.error")
    # The box takes a new message: the conversation is not busy.
    assert await page.is_enabled("#message")
