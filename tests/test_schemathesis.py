"""Schemathesis against the project's own OpenAPI schema, on a live server, authenticated:
every operation, generated requests valid and invalid; no 5xx, no status code the schema does
not document, no response body that violates it. The number of requests is printed
(SCHEMATHESIS_EXAMPLES sets the examples per operation)."""

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tokens_app.models import ApiToken, new_key

from .live_server import serving

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "30"))  # about 1,400 requests
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
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


def exercise(operation, url: str, auth: dict, calls: dict) -> None:
    """EXAMPLES generated requests of one operation, each response checked."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: report the first failure
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(case=operation.as_strategy())
    def call(case):
        calls["n"] += 1
        case.cookies = {}  # authenticated by the token alone, not a generated session cookie
        response = case.call(base_url=url, headers=auth, timeout=30)
        case.validate_response(response, checks=CHECKS)

    call()


def test_every_operation_keeps_to_the_schema(key, request):
    auth = {"Authorization": f"Token {key}"}
    calls, failures = {"n": 0}, []
    with serving(OFFLINE_MODEL_DELAY="0", **PRODUCTION) as url:
        schema = schemathesis.openapi.from_url(f"{url}/api/schema/", headers=auth)
        operations = [result.ok() for result in schema.get_all_operations()]
        for operation in operations:
            try:
                exercise(operation, url, auth, calls)
            except (Exception, BaseExceptionGroup) as exc:  # every operation is tried; all failures listed
                failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:1500]}")
    line = f"schemathesis: {calls['n']} requests over {len(operations)} operations, {len(failures)} failing"
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n{line}")
    assert not failures, "\n\n".join(failures)
    assert len(operations) >= 40 and calls["n"] >= len(operations)
