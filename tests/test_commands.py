"""Management commands, start-up checks, OpenAPI docs, and the OpenAI path end to end through /run."""

import os
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from agents_app.models import Run
from tokens_app.auth import authenticate_key
from tokens_app.models import ApiToken

from .fake_openai import FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.django_db(transaction=True)
def test_run_agent_prints_streamed_answer():
    out, err = StringIO(), StringIO()
    call_command("run_agent", "chat", "What is 12 * 12?", stdout=out, stderr=err)
    assert "144" in out.getvalue()
    assert "[tool calculate(" in err.getvalue() and "completed" in err.getvalue()
    run = Run.objects.get()
    assert run.status == "completed" and run.owner.username == "cli"


@pytest.mark.django_db(transaction=True)
def test_run_agent_rejects_bad_input():
    with pytest.raises(CommandError, match="unknown agent"):
        call_command("run_agent", "nope", "hi")
    with pytest.raises(CommandError, match="empty"):
        call_command("run_agent", "chat", "  ")
    assert Run.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_demo_prepares_users_and_tokens():
    out = StringIO()
    call_command("demo", "--no-serve", stdout=out)
    text = out.getvalue()
    keys = re.findall(r"API token: (\S+)", text)
    assert len(keys) == 2 and all(key.startswith("das_") for key in keys)
    for username, key in zip(("demo", "admin"), keys, strict=True):
        assert authenticate_key(key).user.username == username
    assert "demo-password" in text and "offline" in text
    again = StringIO()
    call_command("demo", "--no-serve", stdout=again)  # idempotent: the same keys, no new tokens
    assert re.findall(r"API token: (\S+)", again.getvalue()) == keys
    assert ApiToken.objects.count() == 2


def _django_check(env: dict) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG")}
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True
    )


def test_weak_secret_key_refused_without_debug():
    refused = _django_check({"DEBUG": "false", "SECRET_KEY": "short"})
    assert refused.returncode != 0 and "SECRET_KEY" in refused.stderr
    missing = _django_check({"DEBUG": "false"})
    assert missing.returncode != 0 and "SECRET_KEY" in missing.stderr
    strong = _django_check(
        {"DEBUG": "false", "SECRET_KEY": "k3y-" + "".join(chr(65 + i % 50) for i in range(60))}
    )
    assert strong.returncode == 0, strong.stderr
    assert _django_check({"DEBUG": "maybe"}).returncode != 0


@pytest.mark.django_db
def test_openapi_docs_served_offline(client):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200 and b"/api/agents/{slug}/run" in schema.content
    docs = client.get("/docs")
    assert docs.status_code == 200 and b"swagger-ui" in docs.content and b"cdn" not in docs.content.lower()
    assert client.get("/redoc").status_code == 200


@pytest.mark.django_db(transaction=True)
async def test_openai_compatible_server_through_run_endpoint(api_for, alice, settings):
    with FakeOpenAI(text="Hello from the fake OpenAI server.", deltas=8) as fake:
        settings.AGENTS_MODEL_PROVIDER = ""
        settings.OPENAI_API_KEY = "test-key"
        settings.OPENAI_BASE_URL = fake.base_url
        response = await api_for(alice).post("/api/agents/chat/run", {"input": "hi"})
        assert response.status_code == 200, response.content
        body = response.json()
        assert body["final_output"] == "Hello from the fake OpenAI server."
        run = await Run.objects.aget(pk=body["run_id"])
        assert run.provider == "openai" and run.total_tokens > 0
        assert run.total_tokens == sum(inp + out for inp, out in fake.usages)
        assert fake.requests[0].authorization == "Bearer test-key"
        info = (await api_for(alice).get("/api/agents/chat/info")).json()
        assert info["provider"] == "openai"
