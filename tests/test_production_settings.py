"""Settings safe by default, and production settings that pass Django's deployment checks; CORS
closed unless origins are configured."""

import os
import secrets
import subprocess
import sys

import pytest

from .live_server import ROOT
from .streams import SSEClient

PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": secrets.token_urlsafe(64),
    "ALLOWED_HOSTS": "agents.example.com",
    "HTTPS": "true",
}


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "SECRET_KEY", "HTTPS")}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True
    )


def test_debug_is_off_unless_turned_on():
    # DEBUG empty: the default, whatever a developer's .env says (a set variable is not overridden).
    shown = manage(
        "shell",
        "-c",
        "from django.conf import settings; print(settings.DEBUG)",
        SECRET_KEY=PRODUCTION["SECRET_KEY"],
        DEBUG="",
    )
    assert shown.stdout.strip().splitlines()[-1] == "False", shown.stderr


def test_check_deploy_passes_with_the_production_variables():
    checked = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Without HTTPS the same check fails: the secure settings come from it.
    plain = manage("check", "--deploy", "--fail-level", "WARNING", **{**PRODUCTION, "HTTPS": "false"})
    assert plain.returncode != 0 and "SESSION_COOKIE_SECURE" in plain.stdout + plain.stderr


@pytest.mark.django_db
def test_cors_is_closed_by_default_and_open_per_origin(client, settings, alice):
    preflight = {"HTTP_ORIGIN": "https://app.example", "HTTP_ACCESS_CONTROL_REQUEST_METHOD": "POST"}
    closed = client.options("/api/agents/chat/run", **preflight)
    assert "access-control-allow-origin" not in closed.headers
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example"]
    opened = client.options(
        "/api/agents/chat/run", HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization,content-type", **preflight
    )
    assert opened.status_code == 200  # a preflight carries no credentials, and needs none
    assert opened.headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in opened.headers["access-control-allow-headers"]
    listed = client.get(
        "/api/agents/", HTTP_ORIGIN="https://app.example", HTTP_AUTHORIZATION=f"Token {alice.token}"
    )
    assert (
        listed.status_code == 200 and listed.headers["access-control-allow-origin"] == "https://app.example"
    )
    other = client.get(
        "/api/agents/", HTTP_ORIGIN="https://evil.example", HTTP_AUTHORIZATION=f"Token {alice.token}"
    )
    assert "access-control-allow-origin" not in other.headers
    page = client.options("/account/", **preflight)  # the web pages are not an API: never CORS
    assert "access-control-allow-origin" not in page.headers


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/api/agents/chat/stream", "/v1/chat/completions", "/api/agents/chat/ui"])
async def test_streaming_endpoints_answer_cors_as_the_rest_of_the_api(settings, alice, path):
    """The streaming endpoints are Channels consumers, outside Django's middleware: they answer
    preflights and carry the same CORS headers, for the configured origins only."""
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example"]
    origin = [(b"origin", b"https://app.example")]
    preflight = SSEClient(
        "OPTIONS",
        path,
        headers=[
            *origin,
            (b"access-control-request-method", b"POST"),
            (b"access-control-request-headers", b"authorization"),
        ],
    )
    assert await preflight.start() == 200  # no credentials needed for a preflight
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in preflight.headers["access-control-allow-headers"]
    body = {"input": "hi"} if path.startswith("/api/agents/chat/stream") else None
    body = body or {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    if path.endswith("/ui"):
        body = {
            "id": "c-1",
            "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
        }
    stream = SSEClient("POST", path, body, alice.token, headers=origin)
    assert await stream.start() == 200
    assert stream.headers["access-control-allow-origin"] == "https://app.example"
    assert "retry-after" in stream.headers["access-control-expose-headers"].lower()
    await drain(stream)
    refused = SSEClient("POST", path, body, "bad-key", headers=origin)
    assert await refused.start() == 401  # refusals carry them too, so the page can read the error
    assert refused.headers["access-control-allow-origin"] == "https://app.example"
    await drain(refused)
    foreign = SSEClient("POST", path, body, alice.token, headers=[(b"origin", b"https://evil.example")])
    assert await foreign.start() == 200
    assert "access-control-allow-origin" not in foreign.headers
    await drain(foreign)


async def drain(client: SSEClient) -> None:
    while not client.done:
        await client.read_chunk()


@pytest.mark.django_db
def test_api_errors_are_json_with_debug_off(client, settings):
    settings.DEBUG = False
    missing = client.get("/api/no-such-thing/")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    page = client.get("/no-such-page/")
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")


def test_a_sqlite_database_url_works(tmp_path):
    """DATABASE_URL may name an SQLite file: the PostgreSQL pool's options are for PostgreSQL only
    (sqlite3 refused the `pool` option, and the server did not start)."""
    url = f"sqlite:///{tmp_path / 'server.sqlite3'}"
    migrated = manage("migrate", "--no-input", DATABASE_URL=url, DEBUG="true")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    shown = manage(
        "shell",
        "-c",
        "from django.db import connection; from agents_app.models import Run; "
        "print(connection.vendor, Run.objects.count())",
        DATABASE_URL=url,
        DEBUG="true",
    )
    assert shown.stdout.strip().splitlines()[-1] == "sqlite 0", shown.stderr
