"""Schemathesis over the served OpenAPI schema, in process, signed in as an admin: no request,
valid or not, may get a 5xx or a response the schema does not describe.

Schemathesis' ASGI client serves calls on an event loop in a thread of its own, not the tests'
loop, so the app under test is built here with a NullPool engine (no connection outlives the
loop that opened it), and the admin is set up through that same synchronous client.

The schema does not depend on the database, so it is loaded when the module is collected, the
way `make openapi` renders it, and every call names the app under test. (Schemathesis' lazy
`from_fixture` schemas do not run under this pytest: they set `Function._nodeid`.)
"""

import json
from collections.abc import Iterator

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.main import create_app
from app.openapi_dump import served_schema
from tests.conftest import PASSWORD, make_settings, unique_email

# The foundation (SPEC §2, §3 and §13), and plans, subscriptions and invoices (§11: they move
# no money when called). The money domains (card, finance, orders) need a card on file and a
# balance to get past their error paths; they belong with their own fixtures.
FOUNDATION_TAGS = ["operations", "account", "users", "auth", "billing"]

# Negative data is still sent (invalid bodies, parameters and headers must get a 4xx
# problem, never a 5xx), but negative_data_rejection and positive_data_acceptance are left
# out: they judge our stricter-than-the-schema rules (password policy, phone and country
# validation, the signup and login throttles, unknown ids) as schema violations.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzzed_app(database_url: str) -> Iterator[FastAPI]:
    yield create_app(make_settings(database_url, db_pool="null"))
    asgi.shutdown_lifespans()


@pytest.fixture(scope="module")
def admin_headers(fuzzed_app: FastAPI) -> dict[str, str]:
    email = unique_email("fuzz")
    with asgi.get_client(fuzzed_app) as http:
        signup = http.post(
            "/v1/signup", json={"email": email, "password": PASSWORD, "name": "Fuzz Admin"}
        )
        assert signup.status_code == 201, signup.text
        token = http.post("/v1/auth/token", data={"username": email, "password": PASSWORD})
        assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


schema = schemathesis.openapi.from_dict(json.loads(served_schema())).include(tag=FOUNDATION_TAGS)


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_answers_every_request_within_its_schema(
    case: schemathesis.Case, fuzzed_app: FastAPI, admin_headers: dict[str, str]
) -> None:
    case.call_and_validate(app=fuzzed_app, headers=admin_headers, checks=CHECKS)
