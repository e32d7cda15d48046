"""Approvals on the chat page in Chromium: a paused tool call shows with Approve / Reject, also
after a reload and in another tab, and the decision made in one tab shows in the other."""

import pytest

from agents_app.models import Approval, Run

from .test_chat import DONE, final_run, send

pytestmark = [pytest.mark.browser, pytest.mark.live, pytest.mark.django_db(transaction=True)]

MODEL_DELAY = "0.01"
CARD = ".turn:last-child .approval"


async def ask_ops(page, text: str = "refund order A17 250") -> None:
    await page.goto("/")
    await page.select_option("#agent", "ops")
    await send(page, text)
    await page.wait_for_selector(f"{CARD} button.approve")


async def test_reject_with_a_reason_and_the_tool_never_runs(browse, user):
    alice = await user("alice")
    page = await browse(alice)
    await ask_ops(page)
    # Every page's header counts the calls waiting; the approvals page leads back to the card.
    await page.goto("/account/")
    await page.click(".approvals-link:has-text('Approvals 1')")
    await page.click("text=Decide in the conversation")
    await page.wait_for_selector(f"{CARD} button.reject")
    card = page.locator(CARD)
    assert "Ops wants to run refund_order" in await card.inner_text()
    assert '"order_id": "A17"' in await card.inner_text()
    await card.locator(".approval-reason").fill("too much")
    await card.locator("button.reject").click()
    await page.wait_for_selector(f"{CARD}.rejected:has-text('Rejected by alice: too much.')")
    await page.wait_for_selector(DONE)
    assert "did not make the refund" in await page.inner_text(DONE)
    run = await final_run(alice)
    assert run.status == Run.Status.COMPLETED and "refunded" not in run.final_output
    approval = await Approval.objects.aget(run=run)
    assert (approval.status, approval.reason, approval.surface) == ("rejected", "too much", "websocket")


async def test_after_a_reload_and_from_another_tab(browse, user):
    alice = await user("alice")
    first = await browse(alice)
    await ask_ops(first)
    await first.reload()
    await first.wait_for_selector(f"{CARD} button.approve")  # still waiting, shown again
    second = await browse(alice)
    await second.goto(first.url)
    await second.wait_for_selector(f"{CARD} button.approve")
    await second.locator(f"{CARD} button.approve").click()
    for page in (first, second):
        await page.wait_for_selector(f"{CARD}.approved:has-text('Approved by alice.')")
        await page.wait_for_selector(DONE)
        assert "refunded 250.00 on order A17" in await page.inner_text(DONE)
    run = await final_run(alice)
    assert run.status == Run.Status.COMPLETED


async def test_staff_approve_in_the_admin(browse, user):
    alice = await user("alice")
    page = await browse(alice)
    await ask_ops(page)
    staff = await browse(await user("sam", is_staff=True, is_superuser=True))
    await staff.goto("/admin/agents_app/approval/?status__exact=pending")
    await staff.locator("button:has-text('Approve')").click()
    await staff.wait_for_selector(".messagelist :text('refund_order: approved.')")
    await page.wait_for_selector(f"{CARD}.approved:has-text('Approved by sam.')")
    await page.wait_for_selector(DONE)
    run = await final_run(alice)
    assert run.status == Run.Status.COMPLETED and "refunded 250.00" in run.final_output
