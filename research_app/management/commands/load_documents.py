from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from research_app.services import documents_load


class Command(BaseCommand):
    help = (
        "Add markdown (.md, .markdown) and text (.txt) files to the research corpus; directories are walked."
    )

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", type=Path)

    def handle(self, paths, **options):
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise CommandError(f"no such file or directory: {', '.join(missing)}")
        report(self, documents_load(paths))


def report(command: BaseCommand, outcome: dict[str, list[str]]) -> None:
    for line in outcome["skipped"]:
        if not line.endswith(": unchanged"):
            command.stderr.write(f"skipped {line}")
    command.stdout.write(
        f"{len(outcome['created'])} documents created, {len(outcome['updated'])} updated, "
        f"{len(outcome['skipped'])} skipped"
    )
