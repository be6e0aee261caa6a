"""Access tokens, the login throttle, API keys and /v1/me, as a client sees them."""

import asyncio
import re
import time

import httpx
import jwt
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from tests.conftest import (
    PASSWORD,
    AddUser,
    Member,
    SignUp,
    client_for,
    login,
    make_settings,
    unique_email,
)
from tests.problems import assert_problem, assert_unauthenticated, error_fields

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def _forge_token(secret: str, member: Member, *, expires_in: int, version: int = 0) -> str:
    now = int(time.time())
    claims = {
        "sub": member.user_id,
        "acct": member.account_id,
        "ver": version,
        "iat": now - 3600,
        "exp": now + expires_in,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


async def _create_key(
    client: httpx.AsyncClient, admin: Member, role: str = "user", **extra: object
) -> dict[str, object]:
    response = await client.post(
        "/v1/api-keys", headers=admin.headers, json={"name": f"{role} key", "role": role, **extra}
    )
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


# Tokens


async def test_login_returns_a_bearer_token_with_its_lifetime(
    client: httpx.AsyncClient, sign_up: SignUp, settings: Settings
) -> None:
    admin = await sign_up()
    response = await client.post(
        "/v1/auth/token", data={"username": admin.email, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == settings.access_token_ttl_seconds
    me = await client.get("/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200


async def test_login_accepts_the_email_in_another_case(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    token = await login(client, f"  {admin.email.upper()} ")
    me = await client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["user"]["id"] == admin.user_id


async def test_login_with_unknown_email_or_wrong_password_is_the_same_401(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    wrong_password = await client.post(
        "/v1/auth/token", data={"username": admin.email, "password": PASSWORD + "x"}
    )
    unknown_email = await client.post(
        "/v1/auth/token", data={"username": unique_email("nobody"), "password": PASSWORD}
    )
    first = assert_problem(wrong_password, 401, "invalid_credentials")
    second = assert_problem(unknown_email, 401, "invalid_credentials")
    first.pop("request_id")
    second.pop("request_id")
    assert first == second


@pytest.mark.parametrize(
    "username",
    ["a" * 400 + "@example.com", "nul\x00@example.com"],
    ids=["over-long", "nul-character"],
)
async def test_login_with_an_impossible_email_is_401_invalid_credentials(
    client: httpx.AsyncClient, username: str
) -> None:
    response = await client.post(
        "/v1/auth/token", data={"username": username, "password": PASSWORD}
    )
    assert_problem(response, 401, "invalid_credentials")


async def test_login_with_a_json_body_instead_of_a_form_is_422(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    response = await client.post(
        "/v1/auth/token", json={"username": admin.email, "password": PASSWORD}
    )
    body = assert_problem(response, 422, "validation_error")
    assert {"body.username", "body.password"} <= error_fields(body)


async def test_login_after_five_failures_is_429_even_with_right_password(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    for _ in range(5):
        response = await client.post(
            "/v1/auth/token", data={"username": admin.email, "password": "wrong-password-123"}
        )
        assert_problem(response, 401, "invalid_credentials")

    response = await client.post(
        "/v1/auth/token", data={"username": admin.email, "password": PASSWORD}
    )
    assert_problem(response, 429, "too_many_attempts")
    assert 1 <= int(response.headers["retry-after"]) <= 15 * 60

    async with client_for(app) as elsewhere:
        assert await login(elsewhere, admin.email)


async def test_login_past_the_per_email_budget_is_429_for_new_addresses_only(
    database_url: str, sign_up: SignUp
) -> None:
    """A stranger spreading failures over addresses cannot lock the owner out."""
    admin = await sign_up()
    app = create_app(make_settings(database_url, login_failures_per_email=4))
    try:
        async with client_for(app) as owner:
            assert await login(owner, admin.email)
            for _ in range(2):
                async with client_for(app) as attacker:
                    for _ in range(2):
                        response = await attacker.post(
                            "/v1/auth/token",
                            data={"username": admin.email, "password": "guess-password-1"},
                        )
                        assert_problem(response, 401, "invalid_credentials")
            async with client_for(app) as stranger:
                response = await stranger.post(
                    "/v1/auth/token", data={"username": admin.email, "password": PASSWORD}
                )
                assert_problem(response, 429, "too_many_attempts")
                assert int(response.headers["retry-after"]) >= 1
            assert await login(owner, admin.email)
    finally:
        await app.state.database.dispose()


def _assert_refused(response: httpx.Response) -> None:
    assert_problem(response, 429, "too_many_attempts")
    assert 1 <= int(response.headers["retry-after"]) <= 15 * 60


async def test_thirty_parallel_wrong_passwords_get_at_most_five_answers_before_429(
    app: FastAPI, sign_up: SignUp
) -> None:
    """Attempts sent at the same moment count like attempts sent one by one."""
    admin = await sign_up()
    async with client_for(app) as attacker:
        responses = await asyncio.gather(
            *(
                attacker.post(
                    "/v1/auth/token", data={"username": admin.email, "password": f"guess-{n}-xyz"}
                )
                for n in range(30)
            )
        )
        answered = [response for response in responses if response.status_code != 429]
        assert len(answered) <= 5
        for response in answered:
            assert_problem(response, 401, "invalid_credentials")
        for response in responses:
            if response.status_code == 429:
                _assert_refused(response)

        response = await attacker.post(
            "/v1/auth/token", data={"username": admin.email, "password": PASSWORD}
        )
        _assert_refused(response)
    async with client_for(app) as elsewhere:
        assert await login(elsewhere, admin.email)


async def test_logins_for_new_emails_past_the_per_address_budget_are_429(
    app: FastAPI, settings: Settings
) -> None:
    """One client cannot keep the CPU busy with password hashes for ever-new emails."""
    budget = settings.login_failures_per_address
    async with client_for(app) as http:
        responses = await asyncio.gather(
            *(
                http.post(
                    "/v1/auth/token",
                    data={"username": unique_email("nobody"), "password": PASSWORD},
                )
                for _ in range(budget + 10)
            )
        )
    answered = [response for response in responses if response.status_code != 429]
    assert len(answered) == budget
    for response in answered:
        assert_problem(response, 401, "invalid_credentials")
    for response in responses:
        if response.status_code == 429:
            _assert_refused(response)
    async with client_for(app) as elsewhere:
        response = await elsewhere.post(
            "/v1/auth/token", data={"username": unique_email("nobody"), "password": PASSWORD}
        )
        assert_problem(response, 401, "invalid_credentials")


async def test_impossible_emails_count_against_the_per_address_budget(database_url: str) -> None:
    app = create_app(make_settings(database_url, login_failures_per_address=3))
    try:
        async with client_for(app) as http:
            for _ in range(3):
                response = await http.post(
                    "/v1/auth/token", data={"username": "a" * 400, "password": PASSWORD}
                )
                assert_problem(response, 401, "invalid_credentials")
            response = await http.post(
                "/v1/auth/token", data={"username": unique_email("nobody"), "password": PASSWORD}
            )
            _assert_refused(response)
    finally:
        await app.state.database.dispose()


async def test_successful_logins_do_not_count_against_the_per_address_budget(
    database_url: str, sign_up: SignUp
) -> None:
    """Many users may log in from one address (an office behind one NAT)."""
    admins = [await sign_up() for _ in range(3)]
    app = create_app(make_settings(database_url, login_failures_per_address=2))
    try:
        async with client_for(app) as office:
            for admin in admins:
                assert await login(office, admin.email)
            for _ in range(2):
                response = await office.post(
                    "/v1/auth/token", data={"username": admins[0].email, "password": "typo-123x"}
                )
                assert_problem(response, 401, "invalid_credentials")
            response = await office.post(
                "/v1/auth/token", data={"username": admins[1].email, "password": PASSWORD}
            )
            _assert_refused(response)
    finally:
        await app.state.database.dispose()


# Who is calling


async def test_me_with_a_token_shows_the_user_and_role(
    client: httpx.AsyncClient, sign_up: SignUp, add_user: AddUser
) -> None:
    admin = await sign_up()
    finance = await add_user(admin, "finance")
    response = await client.get("/v1/me", headers=finance.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["role"] == "finance"
    assert body["api_key"] is None
    assert body["user"]["id"] == finance.user_id
    assert body["user"]["email"] == finance.email
    assert body["user"]["role"] == "finance"
    assert body["account"]["id"] == admin.account_id
    assert "password_hash" not in response.text


async def test_me_with_an_api_key_shows_the_key_and_no_user(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    created = await _create_key(client, admin, "finance")
    response = await client.get("/v1/me", headers={"X-API-Key": str(created["key"])})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"] is None
    assert body["role"] == "finance"
    assert body["api_key"]["id"] == created["id"]
    assert "key" not in body["api_key"]
    assert body["account"]["id"] == admin.account_id


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"X-API-Key": "bk_made-up-key"},
        {"X-API-Key": "k" * 500},
    ],
    ids=["missing", "malformed", "empty", "basic", "unknown-key", "oversized-key"],
)
async def test_missing_or_invalid_credentials_are_401_unauthenticated(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    assert_unauthenticated(await client.get("/v1/me", headers=headers))


async def test_who_is_calling_is_checked_before_the_idempotency_key_and_the_body(
    client: httpx.AsyncClient, sign_up: SignUp, add_user: AddUser
) -> None:
    """401, then 403, then the Idempotency-Key, then the body: nobody learns how a request
    would be judged before it is known that they may make it."""
    admin = await sign_up()
    user = await add_user(admin, "user")
    broken = {"product_id": 5, "validity_years": 9}
    unknown = await client.post("/v1/orders", headers={"X-API-Key": "bk_made-up-key"}, json=broken)
    assert_unauthenticated(unknown)
    refused = await client.post("/v1/api-keys", headers=user.headers, json={"role": "nobody"})
    assert_problem(refused, 403, "forbidden")
    no_key = await client.post("/v1/orders", headers=admin.headers, json=broken)
    assert_problem(no_key, 400, "idempotency_key_required")
    keyed = {**admin.headers, "Idempotency-Key": "judged-last"}
    invalid = await client.post("/v1/orders", headers=keyed, json=broken)
    assert_problem(invalid, 422, "validation_error")
    assert error_fields(invalid.json()) == {
        "body.product_id",
        "body.common_name",
        "body.validity_years",
    }


async def test_expired_token_is_401_unauthenticated(
    client: httpx.AsyncClient, sign_up: SignUp, settings: Settings
) -> None:
    admin = await sign_up()
    valid = _forge_token(settings.secret_key, admin, expires_in=600)
    response = await client.get("/v1/me", headers={"Authorization": f"Bearer {valid}"})
    assert response.status_code == 200, "the forged claims must match what the app issues"

    expired = _forge_token(settings.secret_key, admin, expires_in=-60)
    response = await client.get("/v1/me", headers={"Authorization": f"Bearer {expired}"})
    assert_unauthenticated(response)


async def test_token_signed_with_another_secret_is_401_unauthenticated(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    forged = _forge_token("another-secret-" + "x" * 40, admin, expires_in=600)
    response = await client.get("/v1/me", headers={"Authorization": f"Bearer {forged}"})
    assert_unauthenticated(response)


async def test_unsigned_token_is_401_unauthenticated(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    now = int(time.time())
    claims = {
        "sub": admin.user_id,
        "acct": admin.account_id,
        "ver": 0,
        "iat": now,
        "exp": now + 600,
    }
    unsigned = jwt.encode(claims, key=None, algorithm="none")
    response = await client.get("/v1/me", headers={"Authorization": f"Bearer {unsigned}"})
    assert_unauthenticated(response)


async def test_token_of_a_removed_user_is_401_unauthenticated(
    client: httpx.AsyncClient, sign_up: SignUp, add_user: AddUser
) -> None:
    admin = await sign_up()
    user = await add_user(admin, "user")
    response = await client.delete(f"/v1/users/{user.user_id}", headers=admin.headers)
    assert response.status_code == 204
    assert_unauthenticated(await client.get("/v1/me", headers=user.headers))


# API keys


async def test_api_key_secret_is_shown_once_and_has_at_least_128_bits(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    created = await _create_key(client, admin, "user", integration="azure_key_vault")
    assert set(created) == {
        "id",
        "key",
        "name",
        "role",
        "integration",
        "prefix",
        "created_at",
        "last_used_at",
    }
    assert str(created["id"]).startswith("key_")
    assert created["role"] == "user"
    assert created["integration"] == "azure_key_vault"
    assert created["last_used_at"] is None
    assert RFC3339_UTC.match(str(created["created_at"]))
    secret = str(created["key"])
    prefix = str(created["prefix"])
    assert secret.startswith(prefix)
    assert len(prefix) < len(secret) // 2
    # URL-safe base64 carries 6 bits a character: 22 characters are 132 bits.
    random_part = secret.removeprefix("bk_")
    assert re.fullmatch(r"[A-Za-z0-9_-]{22,}", random_part)

    listed = await client.get("/v1/api-keys", headers=admin.headers)
    assert listed.status_code == 200
    assert secret not in listed.text
    (item,) = listed.json()["data"]
    assert item["id"] == created["id"]
    assert "key" not in item
    assert listed.json()["has_more"] is False


async def test_api_keys_are_distinct_and_work_for_their_account(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    first = await _create_key(client, admin, "admin")
    second = await _create_key(client, admin, "admin")
    assert first["key"] != second["key"]
    assert first["prefix"] != second["prefix"]
    response = await client.get("/v1/account", headers={"X-API-Key": str(first["key"])})
    assert response.status_code == 200
    assert response.json()["id"] == admin.account_id


async def test_api_key_use_is_recorded_in_last_used_at(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    created = await _create_key(client, admin)
    await client.get("/v1/me", headers={"X-API-Key": str(created["key"])})
    listed = (await client.get("/v1/api-keys", headers=admin.headers)).json()["data"]
    assert RFC3339_UTC.match(listed[0]["last_used_at"])


async def test_deleted_api_key_is_rejected_at_once(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    created = await _create_key(client, admin, "admin")
    key_headers = {"X-API-Key": str(created["key"])}
    assert (await client.get("/v1/me", headers=key_headers)).status_code == 200

    response = await client.delete(f"/v1/api-keys/{created['id']}", headers=admin.headers)
    assert response.status_code == 204
    assert response.content == b""

    assert_unauthenticated(await client.get("/v1/me", headers=key_headers))
    listed = await client.get("/v1/api-keys", headers=admin.headers)
    assert listed.json()["data"] == []
    again = await client.delete(f"/v1/api-keys/{created['id']}", headers=admin.headers)
    assert_problem(again, 404, "not_found")


async def test_another_accounts_api_key_is_404_not_found(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    owner = await sign_up()
    stranger = await sign_up()
    created = await _create_key(client, owner)
    response = await client.delete(f"/v1/api-keys/{created['id']}", headers=stranger.headers)
    assert_problem(response, 404, "not_found")
    assert "role" not in response.json()
    still_works = await client.get("/v1/me", headers={"X-API-Key": str(created["key"])})
    assert still_works.status_code == 200


async def test_unknown_api_key_id_is_404_not_found(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    response = await client.delete("/v1/api-keys/key_doesnotexist", headers=admin.headers)
    assert_problem(response, 404, "not_found")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "ci", "role": "owner"}, "body.role"),
        ({"name": "ci", "role": "user", "integration": "aws"}, "body.integration"),
        ({"name": "", "role": "user"}, "body.name"),
        ({"role": "user"}, "body.name"),
        ({"name": "ci", "role": "user", "key": "bk_chosen-by-me"}, "body.key"),
        ({"name": "ci", "role": "user", "account_id": "acct_other"}, "body.account_id"),
    ],
    ids=["unknown-role", "unknown-integration", "empty-name", "no-name", "key", "account_id"],
)
async def test_api_key_create_with_invalid_body_is_422(
    client: httpx.AsyncClient, sign_up: SignUp, body: dict[str, str], field: str
) -> None:
    admin = await sign_up()
    response = await client.post("/v1/api-keys", headers=admin.headers, json=body)
    problem = assert_problem(response, 422, "validation_error")
    assert field in error_fields(problem)
