"""The chat page in Chromium: streaming, stop, reload and second tab mid-answer, the conversation list."""

import asyncio
import time

import pytest
from playwright.async_api import expect

from agents_app.models import Conversation, Run

pytestmark = [pytest.mark.browser, pytest.mark.live, pytest.mark.django_db(transaction=True)]

# The offline model echoes the message in its answer: a long message makes a long answer.
LONG = "Tell me about " + " ".join(f"topic{i}" for i in range(28))
LIVE = ".turn:last-child .answer.live"
DONE = ".turn:last-child .answer.rendered"
LAST_LIVE_TEXT = (
    "s => { const n = document.querySelectorAll(s); return n.length ? n[n.length - 1].textContent : null }"
)


async def send(page, text: str) -> None:
    await page.fill("#message", text)
    await page.press("#message", "Enter")


async def live_samples(page, until: str = DONE, at_least: int = 1) -> list[str]:
    """The streaming answer's text, sampled until `until` shows (each sample as the page had it)."""
    samples: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not await page.locator(until).count():
        text = await page.evaluate(LAST_LIVE_TEXT, LIVE)
        if text and (not samples or samples[-1] != text):
            samples.append(text)
        await asyncio.sleep(0.03)
    assert len(samples) >= at_least, samples
    return samples


async def final_run(user) -> Run:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        run = await Run.objects.filter(owner=user).order_by("-created_at").afirst()
        if run and not run.is_active:
            return run
        await asyncio.sleep(0.1)
    raise AssertionError("the run did not end")


async def test_log_in_send_and_see_the_answer_stream(browse, user):
    alice = await user("alice")
    page = await browse()
    await page.goto("/")
    assert "/accounts/login/" in page.url
    await page.fill("#id_username", "alice")
    await page.fill("#id_password", "pw-alice")
    await page.click("button[type=submit]")
    await page.wait_for_url("**/")
    assert "offline" in await page.inner_text("#agent-model")
    await page.fill("#message", "first line")
    await page.press("#message", "Shift+Enter")
    await page.type("#message", "second line")
    assert await page.input_value("#message") == "first line\nsecond line"
    await send(page, LONG)
    samples = await live_samples(page, at_least=3)
    run = await final_run(alice)
    # Token by token: each sample is a longer prefix of the stored answer.
    assert all(run.final_output.startswith(s) for s in samples)
    assert [len(s) for s in samples] == sorted({len(s) for s in samples})
    assert (await page.inner_text(DONE)).strip() == run.final_output.strip()
    assert f"{run.total_tokens} tokens" in await page.inner_text(".turn:last-child .turn-meta")
    assert await page.input_value("#message") == ""
    conversation = await Conversation.objects.aget(owner=alice)
    assert page.url.endswith(f"/c/{conversation.pk}/")
    await page.wait_for_selector(f"#conv-list li.current a:has-text('{LONG[:20]}')")
    assert (await page.inner_text("#conv-title")).startswith(LONG[:20])


async def test_tool_calls_show_inline_and_collapsed(browse, user):
    page = await browse(await user("alice"))
    await page.goto("/")
    await send(page, "What is 17 * 23?")
    await page.wait_for_selector(DONE)
    step = page.locator(".turn:last-child details.step").first
    assert "Tool call: calculate" in await step.inner_text()
    assert await step.get_attribute("open") is None  # collapsed
    await step.locator("summary").click()
    assert "391" in await step.inner_text() and "17 * 23" in await step.inner_text()
    assert "391" in await page.inner_text(DONE)


async def test_stop_mid_stream_ends_the_answer_as_cancelled(browse, user):
    alice = await user("alice")
    page = await browse(alice)
    await page.goto("/")
    await send(page, LONG)
    await page.wait_for_selector(LIVE)
    await page.click("#stop")
    await page.wait_for_selector(".turn:last-child .turn-meta:has-text('Stopped.')")
    run = await final_run(alice)
    assert run.status == Run.Status.CANCELLED
    assert await page.locator("#stop").is_hidden()
    assert len(run.final_output) < len(LONG)


async def test_reload_mid_stream_continues_without_duplicated_text(browse, user):
    alice = await user("alice")
    page = await browse(alice)
    await page.goto("/")
    await send(page, LONG)
    before = await live_samples(page, until=f"{LIVE}:has-text('topic5')")
    await page.reload()
    after = await live_samples(page)
    run = await final_run(alice)
    assert run.status == Run.Status.COMPLETED
    for sample in before + after:
        assert run.final_output.startswith(sample), sample  # no repeated and no missing text
    assert (await page.inner_text(DONE)).strip() == run.final_output.strip()
    assert await page.locator(".turn").count() == 1


async def test_a_second_tab_shows_the_same_live_answer(browse, user):
    alice = await user("alice")
    first = await browse(alice)
    await first.goto("/")
    await send(first, LONG)
    await first.wait_for_selector(LIVE)
    second = await browse(alice)
    await second.goto(first.url)
    samples = await live_samples(second)
    run = await final_run(alice)
    assert all(run.final_output.startswith(s) for s in samples)
    await first.wait_for_selector(DONE)
    assert await second.inner_text(DONE) == await first.inner_text(DONE)
    assert await second.inner_text(".turn:last-child .user-msg") == LONG
    # While an answer runs, another tab's message is refused and its text stays in the box.
    await send(first, LONG)
    await first.wait_for_selector(f"{LIVE}:has-text('topic1')")
    await second.reload()
    await second.wait_for_selector(LIVE)
    await send(second, "kept text")
    await second.wait_for_selector("#status .alert.error")
    assert "still answering" in await second.inner_text("#status")
    assert await second.input_value("#message") == "kept text"
    await final_run(alice)  # the run ends within the test


async def test_conversations_new_rename_search_delete(browse, user):
    alice = await user("alice")
    page = await browse(alice)
    await page.goto("/")
    for text in ("Plan a trip to Lyon", "Bake sourdough bread"):
        await page.click("#new-chat")
        await send(page, text)
        await page.wait_for_selector(DONE)
    await expect(page.locator("#conv-list li")).to_have_count(2)
    titles = await page.locator("#conv-list li a").all_inner_texts()
    assert titles == ["Bake sourdough bread chat", "Plan a trip to Lyon chat"]  # newest first
    lyon = page.locator("#conv-list li", has_text="Lyon")
    await lyon.hover()
    await lyon.get_by_role("button", name="Rename").click()
    await page.fill("#conv-list input[aria-label='New title']", "Lyon weekend")
    await page.press("#conv-list input[aria-label='New title']", "Enter")
    await page.wait_for_selector("#conv-list li a:has-text('Lyon weekend')")
    assert await Conversation.objects.filter(owner=alice, title="Lyon weekend").aexists()
    await page.fill("#conv-search", "weekend")
    await expect(page.locator("#conv-list li")).to_have_count(1)
    await page.locator("#conv-list li a").click()
    await page.wait_for_selector(".turn .answer.rendered")
    assert await page.inner_text("#conv-title") == "Lyon weekend"
    await page.get_by_role("button", name="Delete Lyon weekend").click()
    await page.locator("#conv-list").get_by_role("button", name="Delete", exact=True).click()
    await expect(page.locator("#conv-list li")).to_have_count(0)
    assert not await Conversation.objects.filter(owner=alice, title="Lyon weekend").aexists()
    assert await page.inner_text("#conv-title") == "New conversation"
    await page.fill("#conv-search", "")
    await expect(page.locator("#conv-list li")).to_have_count(1)


async def test_a_lost_connection_comes_back_and_the_answer_completes(browse, user):
    alice = await user("alice")
    page = await browse(alice)
    sockets = []

    def through(ws):  # the page's sockets reach the server through a route this test can cut
        ws.connect_to_server()
        sockets.append(ws)

    await page.route_web_socket("**/ws/conversations/**", through)
    await page.goto("/")
    await send(page, "Tell me about " + " ".join(f"item{i}" for i in range(30)))
    before = await live_samples(page, until=f"{LIVE}:has-text('item3')")
    await sockets[-1].close(code=1001, reason="cut by the test")
    await page.wait_for_selector("#status:has-text('Reconnecting')")
    after = await live_samples(page)
    assert len(sockets) == 2  # it came back by itself
    run = await final_run(alice)
    assert run.status == Run.Status.COMPLETED
    for sample in before + after:
        assert run.final_output.startswith(sample), sample
    assert (await page.inner_text(DONE)).strip() == run.final_output.strip()
    assert await page.inner_text("#status") == ""
