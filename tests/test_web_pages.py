"""The web app's pages without a browser: login, CSRF, ownership, CSP, and the API calls they make."""

import json

import pytest
from django.test import Client

from agents_app.models import Conversation, Run, RunEvent
from research_app.models import ResearchReport
from tokens_app.models import ApiToken, key_hash

pytestmark = pytest.mark.django_db

PAGES = ["/", "/research/", "/account/"]


def logged_in(user) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def finished_run(owner, conversation=None, **fields) -> Run:
    defaults = {"agent": "chat", "input": "hi", "status": Run.Status.COMPLETED, "final_output": "hello"}
    return Run.objects.create(owner=owner, conversation=conversation, **{**defaults, **fields})


def csrf_of(client: Client, path: str = "/account/") -> str:
    client.get(path)
    return client.cookies["csrftoken"].value


@pytest.mark.parametrize("path", [*PAGES, "/runs/00000000-0000-0000-0000-000000000000/replay/"])
def test_every_page_needs_a_login(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_login_then_the_pages_with_a_strict_policy(client, alice):
    assert client.get("/accounts/login/").status_code == 200
    response = client.post("/accounts/login/", {"username": "alice", "password": "pw-alice"})
    assert response.status_code == 302
    for path in PAGES:
        page = client.get(path)
        assert page.status_code == 200, path
        policy = page["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";") if d.strip())
        assert directives["default-src"] == "'self'" and directives["script-src"] == "'self'"
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert b"<script>" not in page.content and b" style=" not in page.content, path
    assert b"alice" in client.get("/").content


def test_the_api_docs_run_no_inline_script(client, alice):
    """Swagger UI and ReDoc need inline styles and a blob: worker, not inline scripts."""
    client.force_login(alice)
    for path in ("/docs", "/redoc"):
        page = client.get(path)
        directives = dict(
            d.strip().split(" ", 1) for d in page["Content-Security-Policy"].split(";") if d.strip()
        )
        assert directives["script-src"] == "'self'", path
        assert b"<script>" not in page.content, path


def test_the_login_form_needs_its_csrf_token(alice):
    client = Client(enforce_csrf_checks=True)
    response = client.post("/accounts/login/", {"username": "alice", "password": "pw-alice"})
    assert response.status_code == 403
    token = csrf_of(client, "/accounts/login/")
    response = client.post(
        "/accounts/login/", {"username": "alice", "password": "pw-alice", "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302


def test_token_forms_need_csrf_and_show_the_key_once(alice):
    client = logged_in(alice)
    first = ApiToken.objects.get(user=alice)
    assert client.post("/account/tokens/new", {"name": "ci"}).status_code == 403
    assert client.post(f"/account/tokens/{first.pk}/revoke").status_code == 403
    assert list(ApiToken.objects.filter(user=alice, revoked_at=None)) == [first]  # refused posts
    token = csrf_of(client)
    form = {"name": "ci", "expires_in": "30", "csrfmiddlewaretoken": token}
    page = client.post("/account/tokens/new", form)
    created = ApiToken.objects.get(user=alice, name="ci")
    key = page.context["new_key"]
    assert created.digest == key_hash(key) and key.encode() in page.content
    assert 29 <= (created.expires_at - created.created_at).days <= 30
    assert b"Authorization: Token " + key.encode() in page.content  # the curl line
    listing = client.get("/account/").content
    assert key.encode() not in listing and created.prefix.encode() in listing  # shown once
    client.post(f"/account/tokens/{first.pk}/revoke", {"csrfmiddlewaretoken": token})
    first.refresh_from_db()
    assert first.revoked_at is not None and created.revoked_at is None  # one token, not all
    assert client.get("/account/tokens/new").status_code == 405
    refused = client.post("/account/tokens/new", {"name": " ", "csrfmiddlewaretoken": token})
    assert refused.status_code == 400 and ApiToken.objects.filter(user=alice).count() == 2
    # Another user's token is not found, and stays as it was.
    other = logged_in(bob := type(alice).objects.create_user("bob2", password="pw"))
    revoke = other.post(f"/account/tokens/{created.pk}/revoke", {"csrfmiddlewaretoken": csrf_of(other)})
    assert revoke.status_code == 404
    created.refresh_from_db()
    assert created.revoked_at is None and bob.api_tokens.count() == 0


def test_the_chat_page_names_provider_and_model_but_not_the_providers_url(alice, settings):
    settings.AGENTS_MODEL_PROVIDER, settings.OPENAI_API_KEY = "openai", "sk-test"
    settings.OPENAI_BASE_URL = "http://models.internal:11434/v1"
    page = logged_in(alice).get("/").content.decode()
    assert '"provider": "openai"' in page and "models.internal" not in page and "sk-test" not in page


def test_staff_get_an_admin_link(alice, make_user):
    staff = make_user("sam", is_staff=True)
    assert b'href="/admin/"' not in logged_in(alice).get("/").content
    assert b'href="/admin/"' in logged_in(staff).get("/").content


@pytest.mark.django_db(transaction=True)  # the API's run reads are async views: real transactions
def test_another_users_things_are_404_on_pages_as_in_the_api(alice, bob, api_for):
    conversation = Conversation.objects.create(owner=bob, agent="chat", title="bob's")
    run = finished_run(bob, conversation)
    report = ResearchReport.objects.create(run=finished_run(bob, agent="research"), owner=bob, query="q")
    client = logged_in(alice)
    for path in (f"/c/{conversation.pk}/", f"/runs/{run.pk}/replay/", f"/research/{report.pk}/"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert b"bob" not in response.content
    for path in (f"/api/conversations/{conversation.pk}/turns", f"/api/runs/{run.pk}/turn"):
        assert client.get(path).status_code == 404, path
    owner = logged_in(bob)
    for path in (f"/c/{conversation.pk}/", f"/runs/{run.pk}/replay/", f"/research/{report.pk}/"):
        assert owner.get(path).status_code == 200, path


def test_staff_may_replay_any_run(alice, make_user):
    run = finished_run(alice, final_output="**done**")
    RunEvent.objects.create(run=run, seq=1, type="run_started", data={"type": "run_started", "seq": 1})
    staff = make_user("sam", is_staff=True, is_superuser=True)
    page = logged_in(staff).get(f"/runs/{run.pk}/replay/")
    assert page.status_code == 200
    config = json.loads(
        page.content.split(b'id="replay-config" type="application/json">')[1].split(b"</script>")[0]
    )
    assert config["turn"]["html"] == "<p><strong>done</strong></p>"
    assert [e["seq"] for e in config["events"]] == [1]


def test_creating_a_conversation_needs_csrf_and_a_chat_agent(alice):
    client = logged_in(alice)
    token = csrf_of(client)
    post = lambda body, **headers: client.post(  # noqa: E731
        "/api/conversations/", body, content_type="application/json", headers=headers
    )
    assert post({"agent": "chat"}).status_code == 403
    refused = post({"agent": "research"}, X_CSRFToken=token)
    assert refused.status_code == 400 and "unknown agent" in refused.json()["error"]["message"]
    assert not Conversation.objects.exists()
    created = post({"agent": "chat"}, X_CSRFToken=token)
    assert created.status_code == 201, created.content
    assert created.json()["title"] == "" and created.json()["agent"] == "chat"


@pytest.mark.django_db(transaction=True)
async def test_a_new_conversation_is_named_by_its_first_message(alice, api_for):
    api = api_for(alice)
    conversation = (await api.post("/api/conversations/", {"agent": "chat"})).json()
    run = await api.post(
        "/api/agents/chat/run", {"input": " Plan a   trip to Lyon ", "conversation_id": conversation["id"]}
    )
    assert run.status_code == 200, run.content
    assert (await Conversation.objects.aget(pk=conversation["id"])).title == "Plan a trip to Lyon"


def test_conversations_search_by_title_newest_first(alice, bob):
    for title in ("Lyon trip", "Paris notes", "lyon food"):
        Conversation.objects.create(owner=alice, agent="chat", title=title)
    Conversation.objects.create(owner=bob, agent="chat", title="lyon of bob")
    client = logged_in(alice)
    titles = [c["title"] for c in client.get("/api/conversations/?search=LYON").json()["results"]]
    assert titles == ["lyon food", "Lyon trip"]


def test_turns_show_steps_and_sanitized_answers_in_order(alice):
    conversation = Conversation.objects.create(owner=alice, agent="chat")
    first = finished_run(alice, conversation, input="<script>alert(1)</script>", final_output="ok")
    second = finished_run(
        alice,
        conversation,
        input=[{"role": "user", "content": "calc"}],
        final_output="[x](javascript:alert(1)) `code`",
    )
    RunEvent.objects.bulk_create(
        [
            RunEvent(run=second, seq=1, type="run_started", data={"type": "run_started"}),
            RunEvent(run=second, seq=2, type="raw_response", data={"type": "raw_response", "delta": "x"}),
            RunEvent(
                run=second,
                seq=3,
                type="run_item",
                data={
                    "type": "run_item",
                    "seq": 3,
                    "name": "tool_called",
                    "tool_name": "calculate",
                    "call_id": "c1",
                },
            ),
            RunEvent(
                run=second,
                seq=4,
                type="run_item",
                data={"type": "run_item", "seq": 4, "name": "message_output_created", "content": "x"},
            ),
        ]
    )
    turns = logged_in(alice).get(f"/api/conversations/{conversation.pk}/turns").json()["results"]
    assert [t["run_id"] for t in turns] == [str(first.pk), str(second.pk)]
    assert turns[0]["input"] == "<script>alert(1)</script>"  # text: the page shows it as text
    assert turns[1]["input"] == "calc"
    assert [s["name"] for s in turns[1]["steps"]] == ["tool_called"]
    assert "javascript" not in turns[1]["html"] and "<code>code</code>" in turns[1]["html"]


def test_a_page_404_is_a_page_and_an_api_404_is_json(alice):
    client = logged_in(alice)
    page = client.get("/no/such/page/")
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")
    api = client.get("/api/no/such/thing")
    assert api.status_code == 404 and api.json()["error"]["code"] == "not_found"


def test_log_out_is_a_post_with_csrf(alice):
    client = logged_in(alice)
    assert client.post("/accounts/logout/").status_code == 403
    response = client.post("/accounts/logout/", {"csrfmiddlewaretoken": csrf_of(client)})
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    assert client.get("/").status_code == 302
