"""The conventions of SPEC §1 every endpoint shares: request ids, security headers, body limit,
problem+json for routing and parsing failures, pagination, and how money is read and printed."""

import inspect
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from app.kit.errors import ApiError
from app.kit.money import format_amount, parse_amount
from app.main import create_app
from tests.conftest import PASSWORD, AddUser, SignUp, client_for, make_settings, unique_email
from tests.problems import assert_problem, error_fields

SECURITY_HEADERS = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
}
ONE_MIB = 1024 * 1024


def assert_security_headers(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.headers)


# Request ids and headers


async def test_request_id_is_echoed_when_sent(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": "req-abc.123:xyz"})
    assert response.headers["x-request-id"] == "req-abc.123:xyz"


async def test_request_id_is_generated_when_not_sent(client: httpx.AsyncClient) -> None:
    first = await client.get("/healthz")
    second = await client.get("/healthz")
    assert len(first.headers["x-request-id"]) >= 16
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_an_unusable_request_id_is_replaced(client: httpx.AsyncClient) -> None:
    sent = "x" * 300
    response = await client.get("/healthz", headers={"X-Request-ID": sent})
    assert response.headers["x-request-id"]
    assert response.headers["x-request-id"] != sent


async def test_problem_body_carries_the_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/me", headers={"X-Request-ID": "trace-42"})
    body = assert_problem(response, 401, "unauthenticated")
    assert body["request_id"] == "trace-42"
    assert response.headers["x-request-id"] == "trace-42"


async def test_security_headers_are_on_successes(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    response = await client.get("/v1/account", headers=admin.headers)
    assert response.status_code == 200
    assert_security_headers(response)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/v1/me", 401), ("GET", "/v1/nowhere", 404), ("DELETE", "/v1/account", 405)],
)
async def test_security_headers_and_request_id_are_on_errors(
    client: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    response = await client.request(method, path)
    assert response.status_code == status
    assert_security_headers(response)
    assert response.headers["x-request-id"]


# Body size


def _oversized_signup() -> bytes:
    body = {"email": unique_email(), "password": PASSWORD, "name": "n" * (ONE_MIB + 10)}
    return json.dumps(body).encode()


async def test_body_over_one_mib_is_413_payload_too_large(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/signup", content=_oversized_signup(), headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 413, "payload_too_large")
    assert_security_headers(response)


async def test_streamed_body_over_one_mib_is_413_payload_too_large(
    client: httpx.AsyncClient,
) -> None:
    payload = _oversized_signup()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 64 * 1024):
            yield payload[start : start + 64 * 1024]

    response = await client.post(
        "/v1/signup", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload_too_large")
    assert_security_headers(response)


async def test_body_just_under_one_mib_is_read(client: httpx.AsyncClient) -> None:
    padding = ONE_MIB - 200
    body = json.dumps({"email": unique_email(), "password": PASSWORD, "name": "n" * padding})
    assert len(body) <= ONE_MIB
    response = await client.post(
        "/v1/signup", content=body, headers={"Content-Type": "application/json"}
    )
    # Read and validated (the name is too long), not refused for its size.
    problem = assert_problem(response, 422, "validation_error")
    assert "body.name" in error_fields(problem)


# Routing and parsing failures


async def test_unknown_route_is_404_problem(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/v1/nowhere"), 404, "not_found")
    assert body["detail"] == "No such resource."


async def test_wrong_method_is_405_problem(client: httpx.AsyncClient) -> None:
    response = await client.delete("/v1/account")
    assert_problem(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/v1/account", "GET, HEAD, PATCH"),
        ("PUT", "/v1/orders", "GET, HEAD, POST"),
        ("DELETE", "/v1/orders/ord_123", "GET, HEAD"),
        ("GET", "/v1/orders/ord_123/cancel", "POST"),
        ("POST", "/v1/account/card", "GET, HEAD, PUT, DELETE"),
        ("PUT", "/v1/finance/deposits/dep_1.pdf", "GET, HEAD"),
    ],
)
async def test_a_405_allows_exactly_the_methods_of_its_path(
    client: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    response = await client.request(method, path)
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == allow


async def test_head_is_get_without_the_body_wherever_get_is_served(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    for path, headers in (("/healthz", {}), ("/v1/account", admin.headers)):
        got = await client.get(path, headers=headers)
        head = await client.head(path, headers=headers)
        assert (head.status_code, head.content) == (got.status_code, b"")
        assert head.headers["content-type"] == got.headers["content-type"]
        assert head.headers["content-length"] == got.headers["content-length"]
    unauthenticated = await client.head("/v1/account")
    assert (unauthenticated.status_code, unauthenticated.content) == (401, b"")
    refused = await client.head("/v1/orders/ord_123/cancel")
    assert (refused.status_code, refused.headers["allow"]) == (405, "POST")


async def test_malformed_json_is_422_validation_error(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/signup",
        content=b'{"email": "a@example.com",',
        headers={"Content-Type": "application/json"},
    )
    body = assert_problem(response, 422, "validation_error")
    assert error_fields(body)


async def test_a_json_array_instead_of_an_object_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/signup", json=[{"email": unique_email()}])
    body = assert_problem(response, 422, "validation_error")
    assert error_fields(body)


async def test_validation_errors_name_each_field(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/signup", json={"email": "nope", "password": PASSWORD, "balance": "10.00"}
    )
    body = assert_problem(response, 422, "validation_error")
    assert {"body.email", "body.name", "body.balance"} <= error_fields(body)


async def test_text_with_a_nul_character_is_422_not_a_server_error(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    signup = await client.post(
        "/v1/signup", json={"email": unique_email(), "password": PASSWORD, "name": "a\x00b"}
    )
    assert "body.name" in error_fields(assert_problem(signup, 422, "validation_error"))
    billing = await client.put("/v1/account/billing", headers=admin.headers, json={"city": "\x00"})
    assert "body.city" in error_fields(assert_problem(billing, 422, "validation_error"))


async def test_text_with_an_unpaired_surrogate_is_422_not_a_server_error(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    response = await client.patch(
        "/v1/account",
        headers={**admin.headers, "Content-Type": "application/json"},
        content=b'{"company_name": "Acme \\ud800 Ltd"}',
    )
    assert "body.company_name" in error_fields(assert_problem(response, 422, "validation_error"))


@pytest.mark.parametrize("path", ["/v1/users/usr_%00", "/v1/api-keys/%00key"])
async def test_an_id_with_a_nul_character_is_404_not_found(
    client: httpx.AsyncClient, sign_up: SignUp, path: str
) -> None:
    admin = await sign_up()
    response = await client.request(
        "DELETE" if "api-keys" in path else "GET", path, headers=admin.headers
    )
    assert_problem(response, 404, "not_found")
    assert_security_headers(response)


async def test_unexpected_failure_is_500_internal_error_without_details(
    database_url: str,
) -> None:
    app = create_app(make_settings(database_url))

    async def explode() -> None:
        raise RuntimeError("SELECT secret FROM vault -- stack detail")

    app.add_api_route("/v1/explode", explode)
    try:
        async with client_for(app) as http:
            response = await http.get("/v1/explode", headers={"X-Request-ID": "boom-1"})
        body = assert_problem(response, 500, "internal_error")
        assert body["request_id"] == "boom-1"
        assert "secret" not in response.text
        assert "Traceback" not in response.text
        assert_security_headers(response)
    finally:
        await app.state.database.dispose()


async def test_api_error_renders_its_code_status_and_headers(database_url: str) -> None:
    app = create_app(make_settings(database_url))

    async def payment_required() -> None:
        raise ApiError("insufficient_funds", 402, "Not enough.", headers={"X-Hint": "top-up"})

    app.add_api_route("/v1/pay", payment_required)
    try:
        async with client_for(app) as http:
            response = await http.get("/v1/pay")
        body = assert_problem(response, 402, "insufficient_funds")
        assert body["detail"] == "Not enough."
        assert body["title"] == "Payment Required"
        assert response.headers["x-hint"] == "top-up"
    finally:
        await app.state.database.dispose()


# Pagination (GET /v1/users)


@pytest.fixture
async def four_users(
    client: httpx.AsyncClient, sign_up: SignUp, add_user: AddUser
) -> tuple[dict[str, str], list[str]]:
    """An admin's headers and the account's user ids, newest first."""
    admin = await sign_up()
    ids = [admin.user_id]
    for role in ("user", "finance", "admin"):
        ids.append((await add_user(admin, role)).user_id)
    return admin.headers, ids[::-1]


async def test_users_are_listed_newest_first_one_page_at_a_time(
    client: httpx.AsyncClient, four_users: tuple[dict[str, str], list[str]]
) -> None:
    headers, ids = four_users
    everything = (await client.get("/v1/users", headers=headers)).json()
    assert [user["id"] for user in everything["data"]] == ids
    assert everything["has_more"] is False

    first = (await client.get("/v1/users", headers=headers, params={"limit": 3})).json()
    assert [user["id"] for user in first["data"]] == ids[:3]
    assert first["has_more"] is True

    second = (
        await client.get(
            "/v1/users", headers=headers, params={"limit": 3, "starting_after": ids[2]}
        )
    ).json()
    assert [user["id"] for user in second["data"]] == ids[3:]
    assert second["has_more"] is False


async def test_a_page_that_ends_exactly_at_the_last_item_has_no_more(
    client: httpx.AsyncClient, four_users: tuple[dict[str, str], list[str]]
) -> None:
    headers, ids = four_users
    page = (await client.get("/v1/users", headers=headers, params={"limit": 4})).json()
    assert len(page["data"]) == 4
    assert page["has_more"] is False
    after_last = await client.get("/v1/users", headers=headers, params={"starting_after": ids[-1]})
    assert after_last.json() == {"data": [], "has_more": False}


@pytest.mark.parametrize("limit", ["0", "101", "-1", "ten"])
async def test_a_limit_outside_1_to_100_is_422(
    client: httpx.AsyncClient, sign_up: SignUp, limit: str
) -> None:
    admin = await sign_up()
    response = await client.get("/v1/users", headers=admin.headers, params={"limit": limit})
    body = assert_problem(response, 422, "validation_error")
    assert error_fields(body) == {"query.limit"}


@pytest.mark.parametrize("limit", ["1", "100"])
async def test_limits_1_and_100_are_accepted(
    client: httpx.AsyncClient, sign_up: SignUp, limit: str
) -> None:
    admin = await sign_up()
    response = await client.get("/v1/users", headers=admin.headers, params={"limit": limit})
    assert response.status_code == 200
    assert len(response.json()["data"]) == 1


async def test_starting_after_that_is_not_an_id_is_422(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    for cursor in ("usr_doesnotexist", "usr_\x00", "x" * 65):
        response = await client.get(
            "/v1/users", headers=admin.headers, params={"starting_after": cursor}
        )
        body = assert_problem(response, 422, "validation_error")
        assert error_fields(body) == {"query.starting_after"}


async def test_starting_after_an_unknown_or_another_accounts_id_is_404(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    """Like any id that is not the caller's: it does not exist for them (SPEC §2)."""
    admin = await sign_up()
    stranger = await sign_up()
    for cursor in (stranger.user_id, "usr_" + "a" * 26):
        response = await client.get(
            "/v1/users", headers=admin.headers, params={"starting_after": cursor}
        )
        assert_problem(response, 404, "not_found")


# Money


@pytest.mark.parametrize(
    ("value", "cents"),
    [
        ("10", 1000),
        (10, 1000),
        ("10.5", 1050),
        (10.5, 1050),
        ("10.50", 1050),
        ("010.50", 1050),
        (1e3, 100000),
        ("0.01", 1),
        (0.1, 10),
        (19.99, 1999),
        (Decimal("7.25"), 725),
        ("1000000000.00", 100_000_000_000),
    ],
)
def test_amounts_with_at_most_two_decimals_are_read_as_cents(value: object, cents: int) -> None:
    assert parse_amount(value) == cents


@pytest.mark.parametrize(
    "value",
    [
        "10.123",
        10.123,
        "10.500",
        0,
        "0",
        "0.00",
        0.0,
        "-1",
        -1,
        "-0.01",
        "NaN",
        "nan",
        float("nan"),
        "Infinity",
        "-Infinity",
        float("inf"),
        True,
        False,
        None,
        [],
        "",
        "ten",
        "1,5",
        "1e400",
        "1e-400",
        "1000000000.01",
        " 10.50",
        "10.50 ",
        "+50.00",
        "1e3",
        "1E3",
        "1_000.00",
        "1,000.00",
        "50.",
        ".50",
        "\uff15\uff10.\uff10\uff10",  # fullwidth digits
        "\u0665\u0660.\u0660\u0660",  # Arabic-Indic digits
        "0x10",
        1e20,
        10**12,
        "9" * 40,
        1e300,
    ],
)
def test_amounts_that_are_not_positive_two_decimal_numbers_are_rejected(value: object) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        parse_amount(value)


@pytest.mark.parametrize(
    ("cents", "text"),
    [(0, "0.00"), (5, "0.05"), (50, "0.50"), (1050, "10.50"), (-15000, "-150.00"), (-5, "-0.05")],
)
def test_amounts_are_printed_with_exactly_two_decimals(cents: int, text: str) -> None:
    assert format_amount(cents) == text


def test_printed_amounts_read_back_to_the_same_cents() -> None:
    for cents in (1, 99, 100, 123_456, 100_000_000_000):
        assert parse_amount(format_amount(cents)) == cents


def test_no_dependency_runs_in_a_worker_thread(app: FastAPI) -> None:
    """FastAPI runs a plain `def` dependency in a thread pool; on every request that hand-off
    costs more than the dependency. Every dependency of every route is async, except
    FastAPI's own OAuth2 form class (the token endpoint only)."""

    def sync_calls(dependant: Any) -> list[str]:
        found = []
        for dep in dependant.dependencies:
            call = dep.call
            target = call if inspect.isfunction(call) else type(call).__call__
            if (
                not inspect.isclass(call)
                and not inspect.iscoroutinefunction(target)
                and not (inspect.isasyncgenfunction(target))
            ):
                found.append(getattr(call, "__qualname__", repr(call)))
            found += sync_calls(dep)
        return found

    def api_routes(routes: list[Any]) -> list[APIRoute]:
        found = []
        for route in routes:
            if isinstance(route, APIRoute):
                found.append(route)
            elif hasattr(route, "original_router"):  # FastAPI's wrapper of an included router
                found += api_routes(route.original_router.routes)
        return found

    routes = api_routes(app.routes)
    assert len(routes) > 20
    offenders = {f"{r.path}: {name}" for r in routes for name in sync_calls(r.dependant)}
    assert offenders == set()
