"""Every HTTP response carries the security headers, including those Django's middleware never
sees (the streaming consumers, a refused Host) and a consumer's unhandled failure, which is a
JSON 500 rather than the ASGI server's HTML page."""

import json

import pytest

from agents_app.api.sse import RunJoinConsumer

from .streams import SSEClient, stream_run

pytestmark = pytest.mark.django_db(transaction=True)

HEADERS = ("x-content-type-options", "x-frame-options", "referrer-policy", "content-security-policy")


def assert_secured(headers: dict) -> None:
    assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
    assert all(name in headers for name in HEADERS), headers


async def test_streams_refusals_and_refused_hosts_carry_them(alice):
    _client, events = await stream_run(alice.token, {"input": "hi"})
    joined = SSEClient("GET", f"/api/runs/{events[0]['run_id']}/stream", None, alice.token)
    assert await joined.start() == 200
    assert_secured(joined.headers)
    assert joined.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    await joined.read_all()
    refused = SSEClient("POST", "/api/agents/chat/stream", {"input": ""}, alice.token)
    assert await refused.start() == 400
    assert_secured(refused.headers)
    evil = SSEClient("GET", "/api/agents/", None, alice.token, headers=[(b"host", b"evil.example")])
    evil.scope["headers"] = [h for h in evil.scope["headers"] if h[0] != b"host"] + [
        (b"host", b"evil.example")
    ]
    assert await evil.start() == 400
    assert_secured(evil.headers)


async def test_a_page_keeps_its_own_policy():
    page = SSEClient("GET", "/accounts/login/", None)
    assert await page.start() == 200
    assert_secured(page.headers)
    assert page.headers["content-security-policy"] != "default-src 'none'; frame-ancestors 'none'"
    assert "script-src 'self'" in page.headers["content-security-policy"]


async def test_an_unhandled_failure_is_a_json_500_with_them(alice, monkeypatch):
    async def broken(self, body):
        raise RuntimeError("a bug")

    monkeypatch.setattr(RunJoinConsumer, "open", broken)
    client = SSEClient("GET", "/api/runs/00000000-0000-0000-0000-000000000000/stream", None, alice.token)
    assert await client.start() == 500
    await client.read_all()
    assert json.loads(client.raw) == {"error": {"code": "server_error", "message": "internal server error"}}
    assert_secured(client.headers)
