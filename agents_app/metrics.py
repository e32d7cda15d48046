"""Prometheus metrics (prometheus-client), served at /metrics to staff or with METRICS_TOKEN.

Several processes: set PROMETHEUS_MULTIPROC_DIR to a directory the server's processes share,
empty at start (prometheus-client's multiprocess mode); /metrics then sums every process's
values, counting the gauges of live processes only."""

import hmac
import os

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

from .models import Run

RUNS_STARTED = Counter("agents_runs_started", "Runs that began executing.", ["agent"])
RUNS_FINISHED = Counter("agents_runs_finished", "Runs that ended, by their status.", ["agent", "status"])
ACTIVE_RUNS = Gauge("agents_active_runs", "Runs executing now.", multiprocess_mode="livesum")
OPEN_STREAMS = Gauge("agents_open_streams", "SSE streams and sockets open now.", multiprocess_mode="livesum")
EVENTS_JOURNALLED = Counter("agents_events_journalled", "Run events stored.")
UPSTREAM_ERRORS = Counter("agents_upstream_errors", "Runs failed by the model provider, by code.", ["code"])
TIME_TO_FIRST_TOKEN = Histogram(
    "agents_time_to_first_token_seconds",
    "From a run's start to its first text delta.",
    ["agent"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
)
RUN_DURATION = Histogram(
    "agents_run_duration_seconds",
    "From a run's start to its end.",
    ["agent", "status"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 1800),
)


class QueueDepth:
    """Runs waiting for their turn, in every process: counted in the database at each scrape (a
    figure of the deployment, not of the process that answers the scrape)."""

    def collect(self):
        count = Run.objects.filter(status=Run.Status.QUEUED).count()
        yield GaugeMetricFamily(
            "agents_runs_queued", "Runs waiting for their turn (queued), in all.", value=count
        )


def registry() -> CollectorRegistry:
    """This scrape's metrics: the process's (or, with PROMETHEUS_MULTIPROC_DIR, every process's
    summed) and the queue's depth."""
    scrape = CollectorRegistry()
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        multiprocess.MultiProcessCollector(scrape)
    else:
        scrape.register(ProcessMetrics())
    scrape.register(QueueDepth())
    return scrape


class ProcessMetrics:
    """The default registry's metrics (this process's), inside a scrape's registry."""

    def collect(self):
        return REGISTRY.collect()


def _allowed(request) -> bool:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return True
    token = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    return bool(token) and hmac.compare_digest(header.encode(), f"Bearer {token}".encode())


def metrics_view(request):
    """The metrics, for staff (session) or a scraper sending `Authorization: Bearer <METRICS_TOKEN>`."""
    if not _allowed(request):
        body = {"error": {"code": "forbidden", "message": "staff or the metrics token only"}}
        return JsonResponse(body, status=403)
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)
