"""manage.py prune: apply the retention settings (agents_app/retention.py, docs/retention.md).
Safe to run while the server serves; schedule it daily (cron, a systemd timer)."""

from django.core.management.base import BaseCommand

from agents_app.retention import prune


class Command(BaseCommand):
    help = "Delete run events, traces and idle conversations past their retention, in batches."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=5_000, help="rows per delete statement")

    def handle(self, *args, batch_size: int, **options):
        pruned = prune(batch=max(1, batch_size), log=lambda line: self.stdout.write(f"pruned {line}"))
        self.stdout.write(
            f"done: {pruned.events} events, {pruned.traces} traces, {pruned.conversations} conversations"
        )
