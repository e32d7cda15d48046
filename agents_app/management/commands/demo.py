import asyncio
import base64
import hashlib
import hmac

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from agents_app import providers
from agents_app.runs.engine import close_engine, sweep_stale_runs
from tokens_app.models import KEY_PREFIX, ApiToken, key_hash, token_create

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
            shown = password if created or user.check_password(password) else "(changed by you)"
            staff_mark = "  (staff)" if staff else ""
            lines.append(f"  {username:<6} password: {shown:<16} API token: {_demo_key(user)}{staff_mark}")
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


def _demo_key(user) -> str:
    """The demo user's token, the same at every start: keys are stored hashed, so the demo derives
    its key from the installation's secret (as public as the demo's passwords) to print it again."""
    mac = hmac.new(settings.SECRET_KEY.encode(), f"demo-token:{user.username}".encode(), hashlib.sha256)
    key = KEY_PREFIX + base64.urlsafe_b64encode(mac.digest()).decode()[:40]
    token = ApiToken.objects.filter(digest=key_hash(key)).first()
    if token is None:
        token_create(user, "demo", key=key)
    elif not token.usable:
        return "(revoked or expired: create one at /account/)"
    return key


async def _sweep() -> None:
    await sweep_stale_runs()
    await close_engine()
