"""Schemathesis against the project's own OpenAPI schema, on a live server, authenticated, with
every check on (tests/schemathesis.toml's `[checks]`: no 5xx, no status code, header, content type or body the
schema does not document, schema-valid requests accepted, schema-violating ones refused, 405s
with `Allow`, stateful sequences over the links it infers). Its configuration is
tests/schemathesis.toml (what OpenAPI 3.0 cannot state, each with its reason).

Two runs: the fixed seed (SCHEMATHESIS_SEED, 1) so a failure on CI is reproducible, and a random
seed, printed, so each run also looks somewhere new. SCHEMATHESIS_EXAMPLES sets the examples
per operation and phase."""

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tokens_app.models import ApiToken, new_key

from .live_server import serving

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True), pytest.mark.timeout(900)]
EXAMPLES = os.environ.get("SCHEMATHESIS_EXAMPLES", "10")
FIXED_SEED = os.environ.get("SCHEMATHESIS_SEED", "1")
CONFIG = Path(__file__).with_name("schemathesis.toml")
ST = str(Path(sys.executable).with_name("st"))
# As in production: DEBUG off (JSON errors on API paths, no debug pages).
PRODUCTION = {"DEBUG": "false", "SECRET_KEY": "schemathesis-" + "k3y" * 20, "ALLOWED_HOSTS": "127.0.0.1"}
# The caller's own token gets an id no generated `DELETE /api/tokens/{id}` is likely to name,
# so the run does not revoke the key it runs with.
TOKEN_ID = 987_654_321_987_654


@pytest.fixture
def key(alice) -> str:
    key = new_key()
    token = ApiToken(id=TOKEN_ID, user=alice, name="schemathesis")
    token.set_key(key)
    token.save()
    return key


def schemathesis(url: str, key: str, seed: str, workdir: Path) -> tuple[int, str]:
    """`st run` with every check; its exit code and its report."""
    command = [
        ST,
        "--no-color",
        "--config-file",
        str(CONFIG),
        "run",
        f"{url}/api/schema/",
        "--seed",
        seed,
        "--max-examples",
        EXAMPLES,
        "--workers",
        "1",
        "--suppress-health-check",
        "all",
        "--header",
        f"Authorization: Token {key}",
    ]
    # Its working directory gets schemathesis's own cache (.schemathesis/).
    done = subprocess.run(command, capture_output=True, text=True, timeout=800, cwd=workdir)
    return done.returncode, done.stdout + done.stderr


def test_every_operation_keeps_to_the_schema_with_every_check(key, request, tmp_path):
    seeds = [FIXED_SEED, str(random.randrange(1, 2**31))]
    failures = []
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with serving(OFFLINE_MODEL_DELAY="0", **PRODUCTION) as url:
        for seed in seeds:
            code, report = schemathesis(url, key, seed, tmp_path)
            summary = " / ".join(line.strip() for line in report.splitlines()[-6:] if line.strip())
            with capture.global_and_fixture_disabled():
                print(f"\nschemathesis (every check) --seed {seed}: exit {code}; {summary}")
            if code != 0:
                failures.append(f"--seed {seed} (exit {code}):\n{report[-12000:]}")
    assert not failures, "\n\n".join(failures)
