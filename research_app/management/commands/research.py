import asyncio
import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from agents_app.errors import ServiceError
from agents_app.runs.engine import close_engine
from agents_app.runs.read import RunFollower
from research_app.models import ResearchReport
from research_app.services import query_validate, research_start


class Command(BaseCommand):
    help = "Research a question (a stored research run and report); prints progress, then the report."

    def add_arguments(self, parser):
        parser.add_argument("question")
        parser.add_argument("--user", default="cli", help="owner of the report (created if missing)")

    def handle(self, question, user, **options):
        try:
            question = query_validate(question)
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        owner, _ = get_user_model().objects.get_or_create(username=user)
        report_id = asyncio.run(self._research(owner, question))
        report = ResearchReport.objects.get(pk=report_id)
        if report.status != ResearchReport.Status.COMPLETED:
            raise CommandError(f"research ended with status {report.status}: {report.error or 'no report'}")
        self.stdout.write(report.markdown_report)
        self.stdout.write("Follow-up questions:")
        for question in report.follow_up_questions:
            self.stdout.write(f"  - {question}")
        self.stderr.write(f"[report {report.pk} stored · run {report.run_id}]")

    async def _research(self, owner, question: str) -> int:
        follower = RunFollower()
        run, report = await research_start(user=owner, query=question, reader=follower.inbox)
        async for _seq, raw in follower.events(run, started=True):
            self._show(json.loads(raw))
        await close_engine()
        return report.pk

    def _show(self, event: dict) -> None:
        err = self.stderr
        if event["type"] == "run_started":
            err.write(f"[research run {event['run_id']} · {event['provider']}/{event['model']}]")
        elif event["type"] == "error":
            err.write(f"[error {event.get('code')}: {event.get('message')}]")
        elif event["type"] == "research_progress":
            stage, done, total = event["stage"], event["completed"], event["total"]
            if stage == "planning":
                err.write("planning searches…")
            elif stage == "searching" and "search" not in event:
                err.write(f"searching ({total} searches):")
                for item in event["plan"]:
                    err.write(f"  · {item['query']} — {item['reason']}")
            elif stage == "searching":
                search = event["search"]
                found = ", ".join(s["title"] for s in event["sources"]) or "nothing"
                outcome = f"failed ({search['error']})" if search["status"] == "failed" else f"found {found}"
                err.write(f"  [{done}/{total}] {search['query']}: {outcome}")
            elif stage == "writing":
                err.write(f"writing the report from {len(event['sources'])} sources…")
