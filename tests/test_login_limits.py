"""Login attempts are limited per account and per IP address (django-axes): after the limit, even
the right password is refused until the lockout ends or staff reset it."""

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
    # The account is locked from anywhere, and that address for every account.
    assert log_in(client, "alice", "pw-alice", ip="198.51.100.1").status_code == 429
    assert log_in(client, "bob-not-here", "x").status_code == 429
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

    for n in range(3):
        via_proxy(f"guess-{n}", "x", "203.0.113.7")
    assert via_proxy("alice", "pw-alice", "198.51.100.1").status_code == 429  # the proxy is locked
    call_command("axes_reset")
    settings.TRUSTED_PROXIES = 1
    for n in range(3):
        via_proxy(f"guess-{n}", "x", "203.0.113.7")
    assert via_proxy("guess-9", "x", "203.0.113.7").status_code == 429  # that client is locked
    assert via_proxy("alice", "pw-alice", "198.51.100.1").status_code == 302  # others are not
