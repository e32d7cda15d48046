"""Browser tests: Debian's Chromium driven by Playwright against daphne on a free port.

Playwright's async API: its sync API keeps an event loop running in the test's thread, where
Django then refuses the ORM calls the tests make.

Every page a test opens is watched: a page error, a dialog (`alert` from an injected script) or a
Content-Security-Policy violation in the console fails the test at its end.
"""

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.test import Client
from playwright.async_api import async_playwright

from ..live_server import ROOT, free_port, start_server

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = ROOT / "var" / "screenshots"


@pytest.fixture
async def chromium():
    if not shutil.which(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs it with apt-get")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    async with async_playwright() as playwright:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        yield browser
        await browser.close()


@pytest.fixture(scope="module")
def site(request, django_db_setup, django_db_blocker):
    """The base URL of a live server. Its offline model waits MODEL_DELAY seconds (a module's
    global, else 0.06: slow enough to act mid-answer) between deltas; SERVER_ENV (a module's
    global) adds to its environment."""
    port = free_port()
    delay = getattr(request.module, "MODEL_DELAY", "0.06")
    env = getattr(request.module, "SERVER_ENV", {})
    proc = start_server(port, OFFLINE_MODEL_DELAY=delay, RUN_HEARTBEAT_INTERVAL="1", **env)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


@dataclass
class Watch:
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    csp: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)  # CSP reports a test expects (a known, blocked load)

    def attach(self, page) -> None:
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("dialog", self._dialog)
        page.on("console", self._console)

    async def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        await dialog.dismiss()

    def _console(self, message) -> None:
        if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            if not any(text in message.text for text in self.allowed):
                self.csp.append(message.text)


@sync_to_async
def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


@pytest.fixture
def user(make_user):
    """await user("alice", **fields): a user (password "pw-alice") with an API token."""
    return sync_to_async(make_user)


@pytest.fixture
async def browse(chromium, site):
    """await browse(user, width=1280, dark=False): a page logged in as `user` (None: logged out)."""
    contexts, watch = [], Watch()

    async def open_page(user=None, width: int = 1280, height: int = 800, dark: bool = False):
        context = await chromium.new_context(
            base_url=site,
            viewport={"width": width, "height": height},
            color_scheme="dark" if dark else "light",
        )
        context.set_default_timeout(15_000)
        contexts.append(context)
        if user is not None:
            cookie = await session_cookie(user)
            await context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": site}])
        page = await context.new_page()
        watch.attach(page)
        return page

    open_page.watch = watch
    yield open_page
    for context in contexts:
        await context.close()
    assert not watch.errors, f"page errors: {watch.errors}"
    assert not watch.dialogs, f"dialogs opened (a script ran): {watch.dialogs}"
    assert not watch.csp, f"Content-Security-Policy violations: {watch.csp}"


async def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=path)
    return path
