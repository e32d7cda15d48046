"""A server that starts ends the runs a dead process left `running`, before any request."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from agents_app.models import Run

from .live_server import serving

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]


def test_daphne_sweeps_stale_runs_at_start_without_a_request(alice):
    long_ago = timezone.now() - timedelta(hours=1)
    stale = [
        Run.objects.create(
            owner=alice, agent="chat", input="hi", status=Run.Status.RUNNING, heartbeat_at=long_ago
        )
        for _ in range(3)
    ]
    with serving(RUN_STALE_AFTER="5"):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if not Run.objects.filter(pk__in=[r.pk for r in stale], status=Run.Status.RUNNING).exists():
                break
            time.sleep(0.2)
    for run in stale:
        run.refresh_from_db()
        assert run.status == Run.Status.INTERRUPTED and run.error_code == "interrupted"
        assert run.events.filter(type="error").count() == 1
