from django.core.management.base import BaseCommand

from research_app.management.commands.load_documents import report
from research_app.services import CORPUS_DIR, documents_load


class Command(BaseCommand):
    help = "Load the demo corpus shipped in research_app/corpus/ (texts written for this project)."

    def handle(self, **options):
        outcome = documents_load([CORPUS_DIR], source_prefix="corpus:")
        if options["verbosity"] > 0:
            report(self, outcome)
