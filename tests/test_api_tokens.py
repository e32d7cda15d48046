"""API tokens: hashed, named, expiring, several per user; created and revoked by their owner
(/api/tokens/, the account page) and by staff (the admin); a revoked or expired token refused
everywhere, and the streams and sockets it opened closed within one keep-alive interval."""

import time
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from django.utils import timezone

from agents_app.models import Run
from tokens_app.auth import authenticate_key
from tokens_app.models import ApiToken, token_create, token_revoke

from .streams import SSEClient, wait_finished, ws_client


def session_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_owner_creates_lists_uses_and_revokes_tokens(alice):
    client = session_client(alice)
    expires = timezone.now() + timedelta(days=7)
    body = {"name": "ci", "expires_at": expires.isoformat()}
    created = client.post("/api/tokens/", body, "application/json")
    assert created.status_code == 201, created.content
    body = created.json()
    key = body["key"]
    assert key.startswith("das_") and len(key) == 44 and body["prefix"] == key[:12]
    # Only a hash is stored: no column holds the key.
    row = ApiToken.objects.filter(pk=body["id"]).values().get()
    assert key not in [str(value) for value in row.values()]
    listed = client.get("/api/tokens/").json()["results"]
    assert {t["name"] for t in listed} == {"test", "ci"} and all("key" not in t for t in listed)
    assert client.get(f"/api/tokens/{body['id']}/").json()["expires_at"] is not None
    # The key works with either header, and its use is recorded.
    api = Client()
    assert api.get("/api/agents/", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 200
    assert api.get("/api/agents/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 200
    assert ApiToken.objects.get(pk=body["id"]).last_used_at is not None
    assert client.delete(f"/api/tokens/{body['id']}/").status_code == 204
    refused = api.get("/api/agents/", HTTP_AUTHORIZATION=f"Token {key}")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "token_revoked"
    assert refused["WWW-Authenticate"] == "Token"
    assert [t["name"] for t in client.get("/api/tokens/").json()["results"]] == ["test"]
    assert client.delete(f"/api/tokens/{body['id']}/").status_code == 404  # revoked: gone
    # The other token still works: revoking one is not revoking all.
    assert api.get("/api/agents/", HTTP_AUTHORIZATION=f"Token {alice.token}").status_code == 200


@pytest.mark.django_db
def test_a_token_cannot_mint_tokens(alice):
    refused = Client().post(
        "/api/tokens/", {"name": "more"}, "application/json", HTTP_AUTHORIZATION=f"Token {alice.token}"
    )
    assert refused.status_code == 403 and "signed-in user" in refused.json()["error"]["message"]
    assert ApiToken.objects.filter(user=alice).count() == 1


@pytest.mark.django_db
def test_bad_token_requests_change_nothing(alice, settings):
    client = session_client(alice)

    def create(body):
        return client.post("/api/tokens/", body, "application/json")

    blank = create({"name": "  "})
    assert blank.status_code == 400 and blank.json()["error"]["fields"]["name"]
    past = create({"name": "old", "expires_at": "2020-01-01T00:00:00Z"})
    assert past.status_code == 400 and "future" in past.json()["error"]["message"]
    assert create({}).status_code == 400
    settings.API_TOKENS_PER_USER = 2
    assert create({"name": "second"}).status_code == 201
    capped = create({"name": "third"})
    assert capped.status_code == 400 and "revoke one first" in capped.json()["error"]["message"]
    assert ApiToken.objects.filter(user=alice).count() == 2
    assert client.get("/api/tokens/abc/").status_code == 404


@pytest.mark.django_db
def test_another_users_token_is_missing(alice, bob):
    mine = ApiToken.objects.get(user=alice)
    other = session_client(bob)
    assert other.get(f"/api/tokens/{mine.pk}/").status_code == 404
    assert other.delete(f"/api/tokens/{mine.pk}/").status_code == 404
    assert ApiToken.objects.get(pk=mine.pk).revoked_at is None


@pytest.mark.django_db
def test_an_expired_token_is_refused(alice):
    ApiToken.objects.filter(user=alice).update(expires_at=timezone.now() - timedelta(seconds=1))
    refused = Client().get("/api/agents/", HTTP_AUTHORIZATION=f"Token {alice.token}")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "token_expired"
    listed = session_client(alice).get("/api/tokens/").json()["results"]
    assert listed[0]["expired"] is True  # shown, so its owner can see why


@pytest.mark.django_db
def test_staff_create_and_revoke_tokens_in_the_admin(alice, make_user):
    staff = session_client(make_user("sam", is_staff=True, is_superuser=True))
    page = staff.post(
        "/admin/tokens_app/apitoken/add/", {"user": alice.pk, "name": "from support"}, follow=True
    )
    token = ApiToken.objects.get(name="from support")
    message = next(str(m) for m in page.context["messages"])
    key = message.split(": ")[1].split(" ")[0]
    assert authenticate_key(key) == token and token.user == alice
    listing = staff.get("/admin/tokens_app/apitoken/?state=active").content.decode()
    assert token.prefix in listing and key not in listing
    staff.post(
        "/admin/tokens_app/apitoken/",
        {"action": "revoke", "_selected_action": [token.pk]},
    )
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert Client().get("/api/agents/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 401


@pytest.mark.django_db(transaction=True)
def test_keys_of_drfs_authtoken_table_migrate_hashed(alice):
    """Databases from before this app kept DRF's authtoken keys in clear: they keep working,
    and their clear text is gone."""
    timestamp = "timestamp with time zone" if connection.vendor == "postgresql" else "datetime"
    old_key = "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, created {timestamp} NOT NULL, "
            "user_id integer NOT NULL)"
        )
        cursor.execute(
            "INSERT INTO authtoken_token (key, created, user_id) VALUES (%s, %s, %s)",
            [old_key, timezone.now(), alice.pk],
        )
    try:
        executor = MigrationExecutor(connection)
        executor.migrate([("tokens_app", "0001_initial")])
        executor = MigrationExecutor(connection)
        executor.migrate([("tokens_app", "0002_from_authtoken")])
        assert authenticate_key(old_key).user == alice
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM authtoken_token")
            assert cursor.fetchone()[0] == 0
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE authtoken_token")


@pytest.fixture
def second_token(alice):
    """A token of Alice's that the test revokes, and its key."""
    return token_create(alice, "to revoke")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("on_disconnect", ["continue", "cancel"])
async def test_a_revoked_token_closes_its_stream(alice, second_token, settings, slow_model, on_disconnect):
    settings.SSE_KEEPALIVE_INTERVAL = 0.5
    slow_model["seconds"] = 10
    token, key = second_token
    client = SSEClient("POST", f"/api/agents/chat/stream?on_disconnect={on_disconnect}", {"input": "hi"}, key)
    assert await client.start() == 200
    events = await client.read_until(lambda e: e["type"] == "run_started")
    run_id = events[0]["run_id"]
    await sync_to_async(token_revoke)(token)
    revoked = time.monotonic()
    await client.read_all(timeout=3)  # the response ends...
    assert time.monotonic() - revoked < 0.5 + 0.5  # ...within one keep-alive interval (and a margin)
    run = await Run.objects.aget(pk=run_id)
    if on_disconnect == "cancel":
        assert (await wait_finished(run_id)).status == Run.Status.CANCELLED
    else:
        assert run.is_active  # the run is not the token's: it goes on, for its owner's other clients
        rejoin = SSEClient("GET", f"/api/runs/{run_id}/stream", token=key)
        assert await rejoin.start() == 401 and (await rejoin.read_all()) == []
        assert rejoin.json()["error"]["code"] == "token_revoked"
        await sync_to_async(Run.objects.filter(pk=run_id).update)(status=Run.Status.CANCELLED)


@pytest.mark.django_db(transaction=True)
async def test_an_expiring_token_closes_its_join(alice, settings, slow_model):
    settings.SSE_KEEPALIVE_INTERVAL = 0.5
    slow_model["seconds"] = 10
    starter = SSEClient("POST", "/api/agents/chat/stream", {"input": "hi"}, alice.token)
    assert await starter.start() == 200
    run_id = (await starter.read_until(lambda e: e["type"] == "run_started"))[0]["run_id"]
    _token, key = await sync_to_async(token_create)(alice, "short", timezone.now() + timedelta(seconds=1))
    join = SSEClient("GET", f"/api/runs/{run_id}/stream", token=key)
    assert await join.start() == 200
    await join.read_all(timeout=3)
    assert not join.events() or join.events()[-1]["type"] != "stream_complete"
    assert (await Run.objects.aget(pk=run_id)).is_active
    await starter.disconnect()
    await sync_to_async(Run.objects.filter(pk=run_id).update)(status=Run.Status.CANCELLED)


@pytest.mark.django_db(transaction=True)
async def test_a_revoked_token_closes_its_socket(alice, second_token, settings, slow_model):
    settings.SSE_KEEPALIVE_INTERVAL = 0.5
    slow_model["seconds"] = 10
    token, key = second_token
    ws = ws_client(token=key)
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "run", "input": "hi", "on_disconnect": "cancel"})
    run_id = (await ws.receive_json_from(5))["run_id"]
    await sync_to_async(token_revoke)(token)
    revoked = time.monotonic()
    while (event := await ws.receive_json_from(3))["type"] != "error":
        assert event["run_id"] == run_id  # the run's events until then
    assert event["code"] == "token_revoked"
    assert (await ws.receive_output(3))["code"] == 4401
    assert time.monotonic() - revoked < 0.5 + 0.5
    await ws.disconnect()
    assert (await wait_finished(run_id)).status == Run.Status.CANCELLED


@pytest.mark.django_db(transaction=True)
async def test_a_socket_takes_no_message_once_its_token_is_revoked(alice, second_token, settings):
    settings.SSE_KEEPALIVE_INTERVAL = 60  # the message is refused without waiting for a check
    token, key = second_token
    ws = ws_client(token=key)
    assert (await ws.connect())[0]
    await sync_to_async(token_revoke)(token)
    await ws.send_json_to({"type": "run", "input": "hi"})
    assert (await ws.receive_json_from(3))["code"] == "token_revoked"
    assert (await ws.receive_output(3))["code"] == 4401
    assert await Run.objects.acount() == 0
