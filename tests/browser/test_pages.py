"""Research, account, replay and admin pages in Chromium; hostile text; the 390 px layout; screenshots."""

import pytest
from playwright.async_api import expect

from agents_app.models import Run
from research_app.models import Document, ResearchReport

from ..live_server import free_port, start_server
from .conftest import screenshot
from .test_chat import DONE, final_run, send

pytestmark = [pytest.mark.browser, pytest.mark.live, pytest.mark.django_db(transaction=True)]

FOCUSED = "() => document.activeElement.id || document.activeElement.textContent.trim()"
# Research writes long structured outputs delta by delta: quick deltas keep its tests short.
MODEL_DELAY = "0.01"
HOSTILE = "<img src=x onerror=alert(1)> <script>alert(2)</script> [click](javascript:alert(3))"


@pytest.fixture
def corpus(db):
    from django.core.management import call_command

    call_command("load_demo_corpus", verbosity=0)


async def test_research_shows_progress_then_the_report(browse, user, corpus):
    alice = await user("alice")
    page = await browse(alice)
    await page.goto("/research/")
    await page.fill("#question", "How do WebSockets compare with server-sent events?")
    await page.click("#start")
    await page.wait_for_selector("#progress .stages li.active")
    # Each finished search is marked; k of n counts them.
    await page.wait_for_selector("#searches li.done", timeout=60_000)
    assert " of " in await page.inner_text("#search-count")
    await page.wait_for_selector("#report[data-status=completed]", timeout=60_000)
    report = await ResearchReport.objects.aget(owner=alice)
    assert page.url.endswith(f"/research/{report.pk}/")
    body = await page.inner_text("#report")
    assert "WebSocket" in body and "Every source the searches found" in body
    assert await page.locator(".report-list li").count() == 1
    followup = page.locator("button.followup").first
    question = await followup.get_attribute("data-question")
    await followup.click()
    await page.wait_for_selector("#progress:not(.hidden)")
    await page.click("#cancel")
    await page.wait_for_selector("#report[data-status=cancelled]", timeout=30_000)
    latest = await ResearchReport.objects.order_by("-created_at").afirst()
    assert latest.query == question and latest.status == ResearchReport.Status.CANCELLED
    assert await page.locator(".report-list li").count() == 2
    # Staff read the report and a document in the admin: styled from a stylesheet, so no inline
    # style breaks the Content-Security-Policy (the page watch fails the test on a violation).
    staff = await browse(await user("sam", is_staff=True, is_superuser=True))
    await staff.goto(f"/admin/research_app/researchreport/{report.pk}/change/")
    await expect(staff.locator(".research-rendered")).to_contain_text("WebSocket")
    assert await staff.locator(".research-rendered").evaluate("e => getComputedStyle(e).maxWidth") != "none"
    document = await Document.objects.afirst()
    await staff.goto(f"/admin/research_app/document/{document.pk}/change/")
    await expect(staff.locator(".research-rendered")).to_be_visible()


async def test_hostile_text_from_user_and_model_stays_text(browse, user):
    page = await browse(await user("alice"))
    await page.goto("/")
    await send(page, HOSTILE)
    await page.wait_for_selector(DONE)
    # The offline model quotes the message in its answer: both show the markup as text.
    assert await page.inner_text(".turn .user-msg") == HOSTILE
    answer = await page.inner_text(DONE)
    assert "<img src=x onerror=alert(1)>" in answer and "<script>alert(2)</script>" in answer
    assert await page.locator(".turn img, .turn script, .turn a[href^='javascript']").count() == 0
    await page.reload()
    await page.wait_for_selector(DONE)
    assert await page.locator(".turn img, .turn script, .turn a[href^='javascript']").count() == 0
    # (the `browse` fixture fails the test on any dialog, page error or CSP violation)


async def test_account_creates_shows_once_and_revokes_a_token(browse, user):
    alice = await user("alice")
    page = await browse(alice)
    await page.goto("/account/")
    await page.fill("input[name=name]", "laptop")
    await page.select_option("select[name=expires_in]", "30")
    await page.click("text=Create a token")
    key = (await page.inner_text("#new-key")).strip()
    assert key.startswith("das_") and len(key) == 44 and key != alice.token
    assert f"Authorization: Token {key}" in await page.inner_text("#curl")
    await page.goto("/account/")
    assert key not in await page.content() and key[:12] in await page.content()
    await page.click("button[aria-label='Revoke laptop']")
    await expect(page.get_by_text("Token “laptop” is revoked")).to_be_visible()
    assert key[:12] not in await page.content() and alice.token[:12] in await page.content()


async def test_staff_replay_a_run_and_see_its_admin_timeline(browse, user):
    alice = await user("alice")
    page = await browse(alice)
    await page.goto("/")
    await send(page, "What is 6 * 7?")
    await page.wait_for_selector(DONE)
    run = await final_run(alice)
    staff = await browse(await user("sam", is_staff=True, is_superuser=True))
    await staff.goto(f"/admin/agents_app/run/{run.pk}/change/")
    await staff.click("text=Replay on the chat page")
    await staff.wait_for_url(f"**/runs/{run.pk}/replay/")
    await staff.wait_for_selector(".turn .answer.rendered")
    await staff.click("#play")
    await staff.wait_for_selector("#replay-state:has-text('events replayed')")
    assert "42" in await staff.inner_text(".turn .answer.rendered")
    assert "Tool call: calculate" in await staff.inner_text(".turn")


@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
async def test_pages_at_390_px_and_on_a_desktop(browse, user, corpus, dark):
    alice = await user("alice")
    theme = "dark" if dark else "light"
    desktop = await browse(alice, dark=dark)
    await desktop.goto("/")
    await send(desktop, "What is 12 * 12? Show it as `code` and explain.")
    await desktop.wait_for_selector(DONE)
    chat_url = desktop.url
    await screenshot(desktop, f"chat-{theme}")
    await desktop.goto("/research/")
    await desktop.fill("#question", "How does photosynthesis work?")
    await desktop.click("#start")
    await desktop.wait_for_selector("#report[data-status=completed]", timeout=60_000)
    research_url = desktop.url
    await screenshot(desktop, f"research-{theme}")
    await desktop.goto("/account/")
    await screenshot(desktop, f"account-{theme}")
    phone = await browse(alice, width=390, height=844, dark=dark)
    for url in (chat_url, research_url, "/account/", "/"):
        await phone.goto(url)
        await phone.wait_for_load_state("networkidle")
        width = await phone.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"{url} scrolls sideways at 390 px: {width}"
    await phone.goto(chat_url)
    await phone.wait_for_selector(DONE)
    await screenshot(phone, f"chat-390-{theme}")
    assert await phone.locator(".sidebar").is_hidden()
    await phone.click("#toggle-sidebar")
    assert await phone.locator(".sidebar").is_visible()


async def test_keyboard_focus_is_visible_and_in_order(browse, user):
    page = await browse(await user("alice"))
    await page.goto("/")
    order = []
    for _ in range(9):
        await page.keyboard.press("Tab")
        order.append(
            await page.evaluate(
                "() => document.activeElement.id || document.activeElement.textContent.trim()"
            )
        )
    # skip link, top navigation, log out, then the side list and the conversation
    assert order[0] == "Skip to content"
    assert order.index("Chat") < order.index("new-chat") < order.index("conv-search") < order.index("agent")
    outline = await page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"
    labels = await page.evaluate(
        "() => [...document.querySelectorAll('textarea, select, input')].filter(e => e.type !== 'hidden' && "
        "!e.labels.length && !e.getAttribute('aria-label')).map(e => e.id)"
    )
    assert labels == []


async def test_the_api_docs_render_and_load_nothing_from_outside(browse, user, site):
    page = await browse(await user("alice"))
    # ReDoc's bundle always asks for its "API docs by Redocly" logo from its CDN: the policy blocks it.
    browse.watch.allowed.append("cdn.redoc.ly/redoc/logo-mini.svg")
    loaded = []
    page.on("requestfinished", lambda request: loaded.append(request.url))
    await page.goto("/docs")
    await page.wait_for_selector(".swagger-ui .opblock", timeout=30_000)
    await page.goto("/redoc")
    await page.wait_for_selector("#redoc-container h1", timeout=30_000)
    await page.wait_for_load_state("networkidle")
    assert loaded and [url for url in loaded if not url.startswith((site, "blob:"))] == []


async def test_a_model_that_fails_is_said_in_words(browse, user, start_fake):
    """A server whose model provider refuses (the local fake OpenAI answering 429): the answer says so."""
    fake = start_fake(fail=(429, "rate_limit_exceeded"))
    port = free_port()
    proc = start_server(
        port,
        AGENTS_MODEL_PROVIDER="openai",
        OPENAI_API_KEY="test-key",
        OPENAI_BASE_URL=fake.base_url,
        OPENAI_MAX_RETRIES="0",
    )
    try:
        page = await browse(await user("alice"))  # the session cookie holds for any port of the host
        await page.goto(f"http://127.0.0.1:{port}/")
        await send(page, "Hello there")
        await page.wait_for_selector(".turn .turn-meta.error")
        assert "refused for rate or quota" in await page.inner_text(".turn .turn-meta")
        assert await page.input_value("#message") == "Hello there"  # back in the box, to send again
        run = await Run.objects.aget()
        assert run.error_code == "model_rate_limited"
    finally:
        proc.terminate()
        proc.wait(10)
