"""Login attempts are limited per account and IP address together (django-axes): after the limit,
even the right password is refused from that address until the lockout ends or staff reset it;
the same account from elsewhere, and other accounts from that address, are not locked."""

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def log_in(client, username, password, ip="203.0.113.7"):
    return client.post("/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=ip)


def test_thirty_wrong_passwords_then_the_right_one_is_refused(client, alice, settings):
    settings.AXES_FAILURE_LIMIT = 10
    for _ in range(30):
        log_in(client, "alice", "wrong")
    refused = log_in(client, "alice", "pw-alice")
    assert refused.status_code == 429
    assert "_auth_user_id" not in client.session
    # Someone else guessing cannot lock alice out elsewhere, nor that address's other accounts.
    assert log_in(client, "bob-not-here", "x").status_code == 200  # the form, with its error
    assert log_in(client, "alice", "pw-alice", ip="198.51.100.1").status_code == 302
    client.logout()
    call_command("axes_reset")
    assert log_in(client, "alice", "pw-alice").status_code == 302
    assert client.session["_auth_user_id"] == str(alice.pk)


def test_a_few_mistakes_are_forgiven_by_a_success(client, alice, settings):
    settings.AXES_FAILURE_LIMIT = 3
    for _ in range(2):
        assert log_in(client, "alice", "wrong").status_code == 200  # the form again, with its error
    assert log_in(client, "alice", "pw-alice").status_code == 302
    client.logout()
    for _ in range(2):
        log_in(client, "alice", "wrong")
    assert log_in(client, "alice", "pw-alice").status_code == 302  # the count started again


def test_behind_a_proxy_each_client_address_counts_on_its_own(client, alice, settings):
    """Every request comes from the proxy's address; with TRUSTED_PROXIES the lockout counts the
    client's, from X-Forwarded-For (without it, one client's failures lock everyone out)."""
    settings.AXES_FAILURE_LIMIT = 3

    def via_proxy(username, password, client_ip):
        return client.post(
            "/accounts/login/",
            {"username": username, "password": password},
            REMOTE_ADDR="10.0.0.1",
            HTTP_X_FORWARDED_FOR=client_ip,
        )

    for _ in range(3):
        via_proxy("alice", "x", "203.0.113.7")
    # Without TRUSTED_PROXIES every client is the proxy: one client's guesses lock alice for all.
    assert via_proxy("alice", "pw-alice", "198.51.100.1").status_code == 429
    call_command("axes_reset")
    settings.TRUSTED_PROXIES = 1
    for _ in range(3):
        via_proxy("alice", "x", "203.0.113.7")
    assert via_proxy("alice", "pw-alice", "203.0.113.7").status_code == 429  # that client is locked
    assert via_proxy("alice", "pw-alice", "198.51.100.1").status_code == 302  # alice elsewhere is not


def test_no_password_reset_by_email_is_mounted(client, alice):
    """The server sends no email: a reset form would only log an SMTP failure (and be an
    unthrottled way to make it try). Changing one's own password works."""
    for path in ("/accounts/password_reset/", "/accounts/reset/done/"):
        assert client.post(path, {"email": "a@example.com"}).status_code == 404
    client.force_login(alice)
    assert client.get("/accounts/password_change/").status_code == 200
