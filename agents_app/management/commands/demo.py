import asyncio

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token

from agents_app import providers
from agents_app.runs.engine import close_engine, sweep_stale_runs

DEMO_USERS = [
    # (username, password, is_staff)
    ("demo", "demo-password", False),
    ("admin", "admin-password", True),
]


class Command(BaseCommand):
    help = "Prepare the demo (migrate, demo users and tokens, demo corpus) and serve it with daphne."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=settings.PORT)
        parser.add_argument("--no-serve", action="store_true", help="prepare only, do not start the server")

    def handle(self, host, port, no_serve, **options):
        call_command("migrate", interactive=False, verbosity=0)
        # Runs a previous server left running (it was killed) end `interrupted` before it serves.
        asyncio.run(_sweep())
        lines = []
        for username, password, staff in DEMO_USERS:
            user, created = get_user_model().objects.get_or_create(username=username)
            if created:
                user.set_password(password)
                user.is_staff = user.is_superuser = staff
                user.save()
            token, _ = Token.objects.get_or_create(user=user)
            shown = password if created or user.check_password(password) else "(changed by you)"
            lines.append(
                f"  {username:<6} password: {shown:<16} API token: {token.key}{'  (staff)' if staff else ''}"
            )
        self._load_corpus()
        info = providers.provider_info()
        base = f"http://{host}:{port}"
        self.stdout.write(
            "\n".join(
                [
                    "",
                    f"Django Agents Server demo — model provider: {info['provider']} ({info['model']})",
                    f"  home: {base}/   admin: {base}/admin/   API docs: {base}/docs",
                    f"  log in at {base}/accounts/login/ with:",
                    *lines,
                    f'  try: curl -H "Authorization: Token <token>" {base}/api/agents/',
                    "",
                ]
            )
        )
        if not no_serve:
            from daphne.cli import CommandLineInterface

            CommandLineInterface().run(["-b", host, "-p", str(port), "config.asgi:application"])

    def _load_corpus(self) -> None:
        from django.core.management import get_commands

        if "load_demo_corpus" in get_commands():
            call_command("load_demo_corpus", verbosity=0)


async def _sweep() -> None:
    await sweep_stale_runs()
    await close_engine()
