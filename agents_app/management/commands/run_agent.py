import asyncio
import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from agents_app.api.serializers import validate_run_input
from agents_app.providers.responses_stream import TEXT_DELTA
from agents_app.registry import get_spec, slugs
from agents_app.runs.engine import close_engine
from agents_app.runs.read import RunFollower
from agents_app.runs.start import RunRequest, start_run


class Command(BaseCommand):
    help = (
        "Run an agent through the normal run path (stored like any run) and print the answer as it streams."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug", help="agent slug, e.g. chat")
        parser.add_argument("input", help="the message to send")
        parser.add_argument("--user", default="cli", help="username that owns the run (created if missing)")
        parser.add_argument("--session", default=None, help="session id: reuse a conversation's memory")

    def handle(self, slug, input, user, session, **options):
        spec = get_spec(slug)
        if spec is None:
            raise CommandError(f"unknown agent {slug!r}; known: {', '.join(slugs())}")
        try:
            validate_run_input(input)
        except Exception as exc:
            raise CommandError(str(exc)) from None
        owner, _ = get_user_model().objects.get_or_create(username=user)
        status = asyncio.run(self._run(spec, input, owner, session))
        if status != "completed":
            raise CommandError(f"run ended with status {status}")

    async def _run(self, spec, text, owner, session) -> str:
        follower = RunFollower()
        run = await start_run(
            RunRequest(user=owner, spec=spec, input=text, session_key=session), reader=follower.inbox
        )
        status = "failed"
        async for _seq, raw in follower.events(run, started=True):
            status = self._show(json.loads(raw)) or status
        await close_engine()
        return status

    def _show(self, event: dict) -> str | None:
        kind = event["type"]
        err = self.stderr
        if kind == "run_started":
            err.write(f"[run {event['run_id']} · {event['provider']}/{event['model']}]")
        elif kind == "raw_response" and event.get("event_type") == TEXT_DELTA:
            self.stdout.write(event["delta"], ending="")
            self.stdout.flush()
        elif kind == "agent_updated":
            err.write(f"\n[agent: {event['agent_name']}]")
        elif kind == "run_item" and event["name"] == "tool_called":
            err.write(f"\n[tool {event.get('tool_name')}({event.get('tool_arguments')})]")
        elif kind == "run_item" and event["name"] == "tool_output":
            err.write(f"[tool output: {event.get('output')}]")
        elif kind == "stream_complete":
            self.stdout.write("")
            err.write(f"[{event['status']} · usage {event['usage']}]")
            return event["status"]
        elif kind == "error":
            err.write(f"\n[error {event.get('code')}: {event.get('message')}]")
            return "failed"
        return None
