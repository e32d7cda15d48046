"""The chat page when a worker dies mid-answer (worker mode): the cut turn's text goes, a notice
says why, the turn streams again from its checkpoint and the answer ends once, live and after a
reload."""

import signal

import pytest

from agents_app.models import Run

from ..live_server import needs_worker_tier, start_worker
from .test_chat import DONE, send

pytestmark = [
    pytest.mark.browser,
    pytest.mark.live,
    pytest.mark.django_db(transaction=True),
    needs_worker_tier(),
]

SERVER_ENV = {"RUN_EXECUTION": "worker"}
WORKER_ENV = {"RUN_WORKER_DEAD_AFTER": "3"}


async def test_a_turn_cut_by_a_dead_worker_is_replaced_not_repeated(browse, user):
    alice = await user("alice")
    first = start_worker(OFFLINE_MODEL_DELAY="0.3", **WORKER_ENV)
    second = None
    try:
        page = await browse(alice)
        await page.goto("/")
        await send(page, "What is 6*7?")
        # The answer's second turn (after the calculator) has begun: its worker dies.
        await page.wait_for_selector(".turn:last-child details.step ~ .answer.live")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        second = start_worker(OFFLINE_MODEL_DELAY="0.6", **WORKER_ENV)
        notice = (
            ".turn:last-child .turn-meta:has-text('Interrupted (the worker running it stopped answering)')"
        )
        await page.wait_for_selector(notice, timeout=20_000)
        # The cut turn's text is gone (the turn streams again, once); the tool call before it stays.
        live = page.locator(".turn:last-child .answer.live")
        assert await live.count() <= 1
        assert (await live.all_inner_texts() or [""])[0].count("6*7") <= 1
        assert await page.locator(".turn:last-child details.step").count() == 1
        await page.wait_for_selector(DONE, timeout=20_000)
        assert (await page.inner_text(DONE)).count("42") == 1
        run = await Run.objects.filter(owner=alice).alatest("created_at")
        assert run.status == Run.Status.COMPLETED and run.restarts == 1

        await page.reload()
        await page.wait_for_selector(DONE)
        assert await page.locator(".turn:last-child details.step").count() == 1
        assert (await page.inner_text(DONE)).count("42") == 1
    finally:
        for worker in (first, second):
            if worker is not None and worker.poll() is None:
                worker.terminate()
                worker.wait(15)
