"""`manage.py run_worker`: a worker process of the worker tier (RUN_EXECUTION=worker)."""

import asyncio

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from agents_app.runs.jobs import in_workers
from agents_app.runs.worker import work


class Command(BaseCommand):
    help = (
        "Execute runs from the job queue (RUN_EXECUTION=worker): run any number, on any machine "
        "that reaches PostgreSQL and Redis."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--concurrency",
            type=int,
            default=settings.WORKER_CONCURRENCY,
            help="runs executed at once (default: WORKER_CONCURRENCY)",
        )

    def handle(self, *args, concurrency: int, **options):
        if not in_workers():
            raise CommandError("runs execute in-process: workers need RUN_EXECUTION=worker (and PostgreSQL)")
        if concurrency < 1:
            raise CommandError("--concurrency must be at least 1")
        asyncio.run(work(concurrency))
