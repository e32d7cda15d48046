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
