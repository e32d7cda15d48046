"""Shared fixtures: users with tokens, async API clients, a fresh channel layer and offline model per
test, and fakes of the OpenAI API."""

import asyncio
import json
from collections.abc import Callable

import pytest
from agents import ModelProvider
from agents.testing import ScriptedModel, assistant_message
from agents.tracing import flush_traces
from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import channel_layers
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.test import AsyncClient, override_settings

from agents_app.runs.engine import close_engine
from tests.fake_openai import FakeOpenAI
from tokens_app.models import token_create


@pytest.fixture(scope="session", autouse=True)
def _close_worker_thread_connections(django_db_setup):
    """The journal's writer thread and asgiref's sync thread may keep a database connection;
    close them before the test database is dropped, which PostgreSQL refuses while other
    sessions use it."""
    yield
    from asgiref.sync import sync_to_async
    from django.db import connections

    from agents_app.runs.store import on_writer_thread

    on_writer_thread(connections.close_all)
    asyncio.run(sync_to_async(connections.close_all)())  # thread-sensitive: the sync thread's


class QuickPBKDF2(PBKDF2PasswordHasher):
    """Django's PBKDF2 hasher at one iteration (Django's docs: subclass it to change the work
    factor). Its hashes keep the `pbkdf2_sha256` name and their iteration count, so the live
    servers' default hashers verify them (and upgrade them at login)."""

    iterations = 1


@pytest.fixture(scope="session", autouse=True)
def _quick_passwords():
    """A user's password takes 0.3 s to hash at Django's default work factor; the suite creates
    hundreds of users."""
    with override_settings(PASSWORD_HASHERS=["tests.conftest.QuickPBKDF2"]):
        yield


@pytest.fixture(autouse=True)
def _offline_fast(settings):
    """Tests never reach a network model and never wait for the demo pace."""
    settings.AGENTS_MODEL_PROVIDER = "offline"
    settings.OPENAI_API_KEY = ""
    settings.OFFLINE_MODEL_DELAY = 0
    settings.RUN_HEARTBEAT_INTERVAL = 0.5
    # Tests start runs and streams faster than any person would (tests/test_limits.py sets rates).
    settings.THROTTLE_RUN_START = settings.THROTTLE_STREAM_OPEN = ""


@pytest.fixture(autouse=True)
def _fresh_channel_layer():
    """In-memory layers hold asyncio queues bound to one loop; each test gets a new one (a test
    that changes CHANNEL_LAYERS gets the new configuration's: Channels resets its layers then)."""
    channel_layers.set(DEFAULT_CHANNEL_LAYER, channel_layers.make_backend(DEFAULT_CHANNEL_LAYER))


@pytest.fixture(autouse=True)
async def _close_engine(request, settings):
    """Stop the test loop's run engine so the loop closes cleanly (see RunExecutor.aclose), and
    write the test's traces while its database is there (the trace processor's thread would
    write them into the next test's, or after the last, into none).

    Traces are written by the processor's own thread and connection, so only a test whose writes
    are committed (`transaction=True`) can have them: in any other test they would wait for the
    test's open transaction (SQLite's lock, 20 s) and then be dropped for their missing runs.
    There the runs are not traced. The settings are restored after this (it uses `settings`),
    so the engine stops on the channel layer it started on."""
    marker = request.node.get_closest_marker("django_db")
    committed = bool(marker and marker.kwargs.get("transaction"))
    settings.AGENTS_TRACES = settings.AGENTS_TRACES and committed
    yield
    await close_engine()
    if settings.AGENTS_TRACES:
        await asyncio.to_thread(flush_traces)


@pytest.fixture
def recording_layer(settings):
    """The channel layer, recording its calls (`tests.layers.RecordingLayer`)."""
    from channels.layers import get_channel_layer

    config = dict(settings.CHANNEL_LAYERS["default"].get("CONFIG", {}))
    config.pop("hosts", None)
    config.pop("prefix", None)
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "tests.layers.RecordingLayer", "CONFIG": config}}
    return get_channel_layer()


@pytest.fixture
def make_user(db):
    def make(username: str = "alice", **extra):
        user = get_user_model().objects.create_user(username=username, password="pw-" + username, **extra)
        user.token = token_create(user, "test")[1]
        return user

    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


class Api:
    """AsyncClient that sends a token and JSON bodies."""

    def __init__(self, token: str | None):
        self.client = AsyncClient()
        self.headers = {"Authorization": f"Token {token}"} if token else {}

    async def get(self, path: str, **headers):
        return await self.client.get(path, headers={**self.headers, **headers})

    async def post(self, path: str, body=None, raw: str | None = None, **headers):
        data = raw if raw is not None else json.dumps(body if body is not None else {})
        return await self.client.post(
            path, data, content_type="application/json", headers={**self.headers, **headers}
        )

    async def patch(self, path: str, body):
        return await self.client.patch(
            path, json.dumps(body), content_type="application/json", headers=self.headers
        )

    async def delete(self, path: str):
        return await self.client.delete(path, headers=self.headers)


@pytest.fixture
def api_for() -> Callable[[object], Api]:
    return lambda user: Api(getattr(user, "token", None) if user else None)


class RepeatingModel(ScriptedModel):
    """`agents.testing`'s scripted model answering every call with one responder: each public model
    call first enqueues a step (its public `enqueue`), then runs as the scripted model does."""

    def __init__(self, responder):
        super().__init__()
        self.responder = responder

    async def get_response(self, *args, **kwargs):
        self.enqueue({"responder": self.responder})
        return await super().get_response(*args, **kwargs)

    async def stream_response(self, *args, **kwargs):
        self.enqueue({"responder": self.responder})
        async for event in super().stream_response(*args, **kwargs):
            yield event


class ScriptedProvider(ModelProvider):
    def __init__(self, model):
        self.model = model

    def get_model(self, model_name):
        return self.model


@pytest.fixture
def slow_model(monkeypatch):
    """Every model call takes `seconds` and answers "done"; returns a setter for the delay."""
    state = {"seconds": 1.0, "calls": 0}

    async def respond(call):
        state["calls"] += 1
        await asyncio.sleep(state["seconds"])
        return [assistant_message("done")]

    from agents_app import providers

    monkeypatch.setattr(providers, "get_model_provider", lambda: ScriptedProvider(RepeatingModel(respond)))
    return state


@pytest.fixture
def start_fake():
    """Starts fakes on free ports; all are stopped after the test."""
    started = []

    def start(**options):
        fake = FakeOpenAI(**options).start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.stop()


@pytest.fixture
def use_fake(settings):
    """Points the OpenAI provider at a fake: Chat Completions by default, Responses with responses=True."""

    def use(fake, responses=False):
        settings.AGENTS_MODEL_PROVIDER = ""
        settings.OPENAI_API_KEY = "test-key"
        settings.OPENAI_BASE_URL = fake.base_url
        settings.OPENAI_USE_RESPONSES = True if responses else None

    return use
