"""Sign-up, account and billing information, passwords and users, as a client sees them."""

import asyncio
import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

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
NEW_PASSWORD = "Staple-Orbit-Lantern-42"
BILLING_FIELDS = {
    "contact_name",
    "company_name",
    "email",
    "address_line1",
    "address_line2",
    "city",
    "region",
    "postal_code",
    "country",
    "tax_id",
}


def _signup_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"email": unique_email("signup"), "password": PASSWORD, "name": "Ada"}
    body.update(overrides)
    return body


def _password_change(current: str, new: str, confirmation: str | None = None) -> dict[str, str]:
    return {
        "current_password": current,
        "new_password": new,
        "new_password_confirmation": new if confirmation is None else confirmation,
    }


# Sign-up


async def test_signup_creates_an_account_and_its_first_admin(client: httpx.AsyncClient) -> None:
    email = unique_email("founder")
    response = await client.post(
        "/v1/signup",
        json={"email": email, "password": PASSWORD, "name": "Ada", "company_name": "Acme Ltd"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"account", "user"}
    account, user = body["account"], body["user"]
    assert set(account) == {"id", "name", "company_name", "email", "phone", "created_at"}
    assert account["id"].startswith("acct_")
    assert account["company_name"] == "Acme Ltd"
    assert account["email"] == email
    assert account["phone"] is None
    assert RFC3339_UTC.match(account["created_at"])
    assert set(user) == {"id", "email", "name", "role", "created_at"}
    assert user["id"].startswith("usr_")
    assert user["role"] == "admin"
    assert user["email"] == email
    assert user["name"] == "Ada"
    assert PASSWORD not in response.text

    me = await client.get(
        "/v1/me", headers={"Authorization": f"Bearer {await login(client, email)}"}
    )
    assert me.json()["role"] == "admin"
    assert me.json()["account"]["id"] == account["id"]


async def test_signup_ids_are_opaque_and_distinct(client: httpx.AsyncClient) -> None:
    first = (await client.post("/v1/signup", json=_signup_body())).json()
    second = (await client.post("/v1/signup", json=_signup_body())).json()
    assert first["account"]["id"] != second["account"]["id"]
    assert re.fullmatch(r"acct_[a-z0-9]{20,}", first["account"]["id"])
    assert re.fullmatch(r"usr_[a-z0-9]{20,}", first["user"]["id"])


async def test_signup_with_a_taken_email_is_409_email_taken(client: httpx.AsyncClient) -> None:
    email = unique_email("taken")
    assert (await client.post("/v1/signup", json=_signup_body(email=email))).status_code == 201
    again = await client.post("/v1/signup", json=_signup_body(email=email))
    assert_problem(again, 409, "email_taken")
    other_case = await client.post("/v1/signup", json=_signup_body(email=email.upper()))
    assert_problem(other_case, 409, "email_taken")


async def test_signup_with_the_email_of_a_user_in_another_account_is_409(
    client: httpx.AsyncClient, sign_up: SignUp, add_user: AddUser
) -> None:
    admin = await sign_up()
    finance = await add_user(admin, "finance")
    response = await client.post("/v1/signup", json=_signup_body(email=finance.email))
    assert_problem(response, 409, "email_taken")


async def test_concurrent_signups_with_one_email_make_one_account(
    client: httpx.AsyncClient,
) -> None:
    email = unique_email("race")
    responses = await asyncio.gather(
        *(client.post("/v1/signup", json=_signup_body(email=email)) for _ in range(3))
    )
    assert sorted(response.status_code for response in responses) == [201, 409, 409]
    for response in responses:
        if response.status_code == 409:
            assert_problem(response, 409, "email_taken")


async def test_signup_when_disabled_is_403_signup_disabled(database_url: str) -> None:
    app = create_app(make_settings(database_url, signup_enabled=False))
    try:
        async with client_for(app) as http:
            response = await http.post("/v1/signup", json=_signup_body())
            assert_problem(response, 403, "signup_disabled")
    finally:
        await app.state.database.dispose()


async def test_signups_past_the_hourly_limit_of_an_address_are_429(database_url: str) -> None:
    app = create_app(make_settings(database_url, signup_limit_per_hour=3))
    try:
        async with client_for(app) as http:
            for _ in range(3):
                assert (await http.post("/v1/signup", json=_signup_body())).status_code == 201
            response = await http.post("/v1/signup", json=_signup_body())
            assert_problem(response, 429, "too_many_attempts")
            assert 1 <= int(response.headers["retry-after"]) <= 3600
        async with client_for(app) as another_address:
            response = await another_address.post("/v1/signup", json=_signup_body())
            assert response.status_code == 201, response.text
    finally:
        await app.state.database.dispose()


async def test_a_burst_of_signups_from_one_address_makes_at_most_the_hourly_limit(
    database_url: str,
) -> None:
    """Sign-ups sent at the same moment count like sign-ups sent one by one."""
    app = create_app(make_settings(database_url, signup_limit_per_hour=3))
    try:
        async with client_for(app) as http:
            responses = await asyncio.gather(
                *(http.post("/v1/signup", json=_signup_body()) for _ in range(12))
            )
        created = [response for response in responses if response.status_code != 429]
        assert len(created) == 3
        for response in created:
            assert response.status_code == 201, response.text
        for response in responses:
            if response.status_code == 429:
                assert_problem(response, 429, "too_many_attempts")
                assert 1 <= int(response.headers["retry-after"]) <= 3600
    finally:
        await app.state.database.dispose()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"email": "not-an-email"}, "body.email"),
        ({"name": ""}, "body.name"),
        ({"name": "   "}, "body.name"),
        ({"name": "n" * 201}, "body.name"),
        ({"password": None}, "body.password"),
        ({"company_name": "c" * 201}, "body.company_name"),
        ({"id": "acct_mine"}, "body.id"),
        ({"role": "finance"}, "body.role"),
    ],
    ids=["email", "empty-name", "blank-name", "long-name", "no-password", "company", "id", "role"],
)
async def test_signup_with_an_invalid_body_is_422_with_the_field(
    client: httpx.AsyncClient, overrides: dict[str, Any], field: str
) -> None:
    response = await client.post("/v1/signup", json=_signup_body(**overrides))
    body = assert_problem(response, 422, "validation_error")
    assert field in error_fields(body)


def _weak_passwords(email: str) -> dict[str, str]:
    return {
        "too-short": "Xk9#mQ2$vL7",
        "too-long": "Xk9#mQ2$vL7p" * 10 + "abcdefghi",
        "common": "password1234",
        "common-with-suffix": "baseball2024!!",
        "the-email": email,
        "the-email-in-capitals": email.upper(),
    }


@pytest.mark.parametrize("kind", list(_weak_passwords("x@example.com")))
async def test_signup_with_a_weak_password_is_422_weak_password(
    client: httpx.AsyncClient, kind: str
) -> None:
    email = unique_email("weak")
    password = _weak_passwords(email)[kind]
    response = await client.post("/v1/signup", json=_signup_body(email=email, password=password))
    assert_problem(response, 422, "weak_password")
    assert password not in response.text


@pytest.mark.parametrize("length", [12, 128])
async def test_signup_accepts_passwords_of_12_to_128_characters(
    client: httpx.AsyncClient, length: int
) -> None:
    email = unique_email("edge")
    password = ("Xk9#mQ2$vL7p" * 11)[:length]
    response = await client.post("/v1/signup", json=_signup_body(email=email, password=password))
    assert response.status_code == 201, response.text
    assert await login(client, email, password)


# The account


async def test_account_shows_the_account_information(
    client: httpx.AsyncClient, sign_up: SignUp, add_user: AddUser
) -> None:
    admin = await sign_up(name="Ada", company_name="Acme Ltd")
    user = await add_user(admin, "user")
    response = await client.get("/v1/account", headers=user.headers)
    assert response.status_code == 200, response.text
    assert response.json() == admin.data["account"]


async def test_account_update_changes_only_the_fields_sent(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    response = await client.patch(
        "/v1/account", headers=admin.headers, json={"company_name": "Renamed GmbH"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["company_name"] == "Renamed GmbH"
    assert body["name"] == admin.data["account"]["name"]
    assert body["email"] == admin.email
    assert (await client.get("/v1/account", headers=admin.headers)).json() == body


async def test_account_update_normalises_the_phone_to_e164(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    response = await client.patch(
        "/v1/account", headers=admin.headers, json={"phone": "+1 (415) 555-2671"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["phone"] == "+14155552671"
    cleared = await client.patch("/v1/account", headers=admin.headers, json={"phone": None})
    assert cleared.json()["phone"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"phone": "call me maybe"}, "body.phone"),
        ({"phone": "+1 415 555"}, "body.phone"),
        ({"email": "nope"}, "body.email"),
        ({"name": None}, "body"),
        ({"email": None}, "body"),
        ({"role": "admin"}, "body.role"),
        ({"balance": "1000000.00"}, "body.balance"),
        ({"id": "acct_other"}, "body.id"),
    ],
    ids=["phone", "short-phone", "email", "null-name", "null-email", "role", "balance", "id"],
)
async def test_account_update_with_an_invalid_body_is_422(
    client: httpx.AsyncClient, sign_up: SignUp, body: dict[str, Any], field: str
) -> None:
    admin = await sign_up()
    response = await client.patch("/v1/account", headers=admin.headers, json=body)
    problem = assert_problem(response, 422, "validation_error")
    assert field in error_fields(problem)
    after = await client.get("/v1/account", headers=admin.headers)
    assert after.json() == admin.data["account"]


async def test_account_update_changes_the_contact_email_in_lower_case(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    response = await client.patch(
        "/v1/account", headers=admin.headers, json={"email": "Billing@Example.COM"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["email"] == "billing@example.com"


# Billing information


async def test_billing_information_is_all_null_until_first_set(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    response = await client.get("/v1/account/billing", headers=admin.headers)
    assert response.status_code == 200, response.text
    assert response.json() == dict.fromkeys(BILLING_FIELDS)


async def test_billing_information_is_replaced_whole(
    client: httpx.AsyncClient, sign_up: SignUp, add_user: AddUser
) -> None:
    admin = await sign_up()
    full = {
        "contact_name": "Grace Hopper",
        "company_name": "Acme Ltd",
        "email": "Invoices@Acme.example",
        "address_line1": "1 Market St",
        "address_line2": "Suite 5",
        "city": "San Francisco",
        "region": "CA",
        "postal_code": "94105",
        "country": "US",
        "tax_id": "US123456789",
    }
    response = await client.put("/v1/account/billing", headers=admin.headers, json=full)
    assert response.status_code == 200, response.text
    expected = {**full, "email": "invoices@acme.example"}
    assert response.json() == expected
    user = await add_user(admin, "user")
    assert (await client.get("/v1/account/billing", headers=user.headers)).json() == expected

    replaced = await client.put(
        "/v1/account/billing", headers=admin.headers, json={"city": "Berlin", "country": "DE"}
    )
    assert replaced.status_code == 200
    after = (await client.get("/v1/account/billing", headers=admin.headers)).json()
    assert after == {**dict.fromkeys(BILLING_FIELDS), "city": "Berlin", "country": "DE"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"country": "XX"}, "body.country"),
        ({"country": "USA"}, "body.country"),
        ({"country": "us"}, "body.country"),  # ISO 3166 codes are capitals, as the schema says
        ({"email": "nope"}, "body.email"),
        ({"postal_code": "9" * 21}, "body.postal_code"),
        ({"vat_rate": "0"}, "body.vat_rate"),
    ],
    ids=["unknown-country", "alpha-3", "lower-case", "email", "long-postcode", "unknown-field"],
)
async def test_billing_with_an_invalid_body_is_422(
    client: httpx.AsyncClient, sign_up: SignUp, body: dict[str, Any], field: str
) -> None:
    admin = await sign_up()
    response = await client.put("/v1/account/billing", headers=admin.headers, json=body)
    problem = assert_problem(response, 422, "validation_error")
    assert field in error_fields(problem)


# Passwords


async def test_password_change_ends_every_earlier_token(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    token_a = admin.headers
    assert (await client.get("/v1/me", headers=token_a)).status_code == 200

    response = await client.put(
        "/v1/account/password", headers=token_a, json=_password_change(PASSWORD, NEW_PASSWORD)
    )
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert NEW_PASSWORD not in str(response.headers)

    assert_unauthenticated(await client.get("/v1/me", headers=token_a))
    old = await client.post("/v1/auth/token", data={"username": admin.email, "password": PASSWORD})
    assert_problem(old, 401, "invalid_credentials")
    new_token = await login(client, admin.email, NEW_PASSWORD)
    me = await client.get("/v1/me", headers={"Authorization": f"Bearer {new_token}"})
    assert me.status_code == 200
    assert me.json()["user"]["id"] == admin.user_id


async def test_password_change_leaves_other_users_signed_in(
    client: httpx.AsyncClient, sign_up: SignUp, add_user: AddUser
) -> None:
    admin = await sign_up()
    user = await add_user(admin, "user")
    response = await client.put(
        "/v1/account/password", headers=user.headers, json=_password_change(PASSWORD, NEW_PASSWORD)
    )
    assert response.status_code == 204
    assert (await client.get("/v1/me", headers=admin.headers)).status_code == 200
    assert_unauthenticated(await client.get("/v1/me", headers=user.headers))


async def test_password_change_with_wrong_current_password_is_400(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    response = await client.put(
        "/v1/account/password",
        headers=admin.headers,
        json=_password_change("Not-My-Password-99", NEW_PASSWORD),
    )
    assert_problem(response, 400, "invalid_current_password")
    assert (await client.get("/v1/me", headers=admin.headers)).status_code == 200
    assert await login(client, admin.email)


async def test_password_change_with_different_confirmation_is_422(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    response = await client.put(
        "/v1/account/password",
        headers=admin.headers,
        json=_password_change(PASSWORD, NEW_PASSWORD, NEW_PASSWORD + "!"),
    )
    assert_problem(response, 422, "password_confirmation_mismatch")
    assert await login(client, admin.email)


@pytest.mark.parametrize("kind", list(_weak_passwords("x@example.com")))
async def test_password_change_to_a_weak_password_is_422_weak_password(
    client: httpx.AsyncClient, sign_up: SignUp, kind: str
) -> None:
    admin = await sign_up()
    weak = _weak_passwords(admin.email)[kind]
    response = await client.put(
        "/v1/account/password", headers=admin.headers, json=_password_change(PASSWORD, weak)
    )
    assert_problem(response, 422, "weak_password")
    assert (await client.get("/v1/me", headers=admin.headers)).status_code == 200


async def test_password_change_after_five_wrong_current_passwords_is_429(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    """A stolen token is no way to guess the password: the login throttle applies."""
    admin = await sign_up()
    wrong = _password_change("Not-My-Password-99", NEW_PASSWORD)
    for _ in range(5):
        response = await client.put("/v1/account/password", headers=admin.headers, json=wrong)
        assert_problem(response, 400, "invalid_current_password")
    right = _password_change(PASSWORD, NEW_PASSWORD)
    response = await client.put("/v1/account/password", headers=admin.headers, json=right)
    assert_problem(response, 429, "too_many_attempts")
    assert int(response.headers["retry-after"]) >= 1


async def test_parallel_wrong_current_passwords_get_at_most_five_answers_before_429(
    app: FastAPI, sign_up: SignUp
) -> None:
    admin = await sign_up()
    wrong = _password_change("Not-My-Password-99", NEW_PASSWORD)
    async with client_for(app) as thief:
        responses = await asyncio.gather(
            *(
                thief.put("/v1/account/password", headers=admin.headers, json=wrong)
                for _ in range(15)
            )
        )
    answered = [response for response in responses if response.status_code != 429]
    assert len(answered) <= 5
    for response in answered:
        assert_problem(response, 400, "invalid_current_password")
    for response in responses:
        if response.status_code == 429:
            assert_problem(response, 429, "too_many_attempts")
            assert int(response.headers["retry-after"]) >= 1


async def test_password_change_with_the_right_password_is_not_counted_as_a_failure(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    """A right current password with a weak new one is refused, but is no failed guess."""
    admin = await sign_up()
    weak = _password_change(PASSWORD, "short")
    for _ in range(6):
        response = await client.put("/v1/account/password", headers=admin.headers, json=weak)
        assert_problem(response, 422, "weak_password")


async def test_password_change_with_an_api_key_is_403(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    created = await client.post(
        "/v1/api-keys", headers=admin.headers, json={"name": "ci", "role": "admin"}
    )
    response = await client.put(
        "/v1/account/password",
        headers={"X-API-Key": created.json()["key"]},
        json=_password_change(PASSWORD, NEW_PASSWORD),
    )
    assert_problem(response, 403, "forbidden")
    assert await login(client, admin.email)


# Users


async def test_admin_adds_a_user_who_can_log_in(client: httpx.AsyncClient, sign_up: SignUp) -> None:
    admin = await sign_up()
    email = unique_email("new")
    response = await client.post(
        "/v1/users",
        headers=admin.headers,
        json={"email": email, "name": "Fin", "role": "finance", "password": PASSWORD},
    )
    assert response.status_code == 201, response.text
    user = response.json()
    assert set(user) == {"id", "email", "name", "role", "created_at"}
    assert user["id"].startswith("usr_")
    assert (user["email"], user["name"], user["role"]) == (email, "Fin", "finance")
    assert RFC3339_UTC.match(user["created_at"])

    token = await login(client, email)
    me = await client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["role"] == "finance"
    assert me.json()["account"]["id"] == admin.account_id

    fetched = await client.get(f"/v1/users/{user['id']}", headers=admin.headers)
    assert fetched.status_code == 200
    assert fetched.json() == user


async def test_adding_a_user_with_a_taken_email_is_409(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    other = await sign_up()
    response = await client.post(
        "/v1/users",
        headers=admin.headers,
        json={"email": other.email.upper(), "name": "Dup", "role": "user", "password": PASSWORD},
    )
    assert_problem(response, 409, "email_taken")


@pytest.mark.parametrize(
    ("overrides", "status", "code"),
    [
        ({"role": "owner"}, 422, "validation_error"),
        ({"password": "password1234"}, 422, "weak_password"),
        ({"password": "short"}, 422, "weak_password"),
        ({"account_id": "acct_other"}, 422, "validation_error"),
    ],
    ids=["role", "common-password", "short-password", "account_id"],
)
async def test_adding_a_user_with_an_invalid_body_fails(
    client: httpx.AsyncClient, sign_up: SignUp, overrides: dict[str, str], status: int, code: str
) -> None:
    admin = await sign_up()
    body = {"email": unique_email(), "name": "N", "role": "user", "password": PASSWORD}
    response = await client.post("/v1/users", headers=admin.headers, json={**body, **overrides})
    assert_problem(response, status, code)


async def test_user_update_renames_and_changes_the_role(
    client: httpx.AsyncClient, sign_up: SignUp, add_user: AddUser
) -> None:
    admin = await sign_up()
    member = await add_user(admin, "user")
    response = await client.patch(
        f"/v1/users/{member.user_id}", headers=admin.headers, json={"name": "Promoted"}
    )
    assert response.status_code == 200, response.text
    assert (response.json()["name"], response.json()["role"]) == ("Promoted", "user")

    response = await client.patch(
        f"/v1/users/{member.user_id}", headers=admin.headers, json={"role": "finance"}
    )
    assert response.status_code == 200
    assert (response.json()["name"], response.json()["role"]) == ("Promoted", "finance")
    me = await client.get("/v1/me", headers=member.headers)
    assert me.json()["role"] == "finance"


@pytest.mark.parametrize(
    "body",
    [{"role": "owner"}, {"role": None}, {"name": None}, {"email": "x@example.com"}],
    ids=["unknown-role", "null-role", "null-name", "email"],
)
async def test_user_update_with_an_invalid_body_is_422(
    client: httpx.AsyncClient, sign_up: SignUp, add_user: AddUser, body: dict[str, Any]
) -> None:
    admin = await sign_up()
    member = await add_user(admin, "user")
    response = await client.patch(f"/v1/users/{member.user_id}", headers=admin.headers, json=body)
    assert_problem(response, 422, "validation_error")


async def test_removed_user_is_gone_and_cannot_log_in(
    client: httpx.AsyncClient, sign_up: SignUp, add_user: AddUser
) -> None:
    admin = await sign_up()
    member = await add_user(admin, "finance")
    response = await client.delete(f"/v1/users/{member.user_id}", headers=admin.headers)
    assert response.status_code == 204
    assert response.content == b""

    assert_problem(
        await client.get(f"/v1/users/{member.user_id}", headers=admin.headers), 404, "not_found"
    )
    listed = (await client.get("/v1/users", headers=admin.headers)).json()["data"]
    assert member.user_id not in {user["id"] for user in listed}
    failed = await client.post(
        "/v1/auth/token", data={"username": member.email, "password": PASSWORD}
    )
    assert_problem(failed, 401, "invalid_credentials")
    again = await client.delete(f"/v1/users/{member.user_id}", headers=admin.headers)
    assert_problem(again, 404, "not_found")


async def test_removed_users_email_may_be_used_again(
    client: httpx.AsyncClient, sign_up: SignUp, add_user: AddUser
) -> None:
    admin = await sign_up()
    member = await add_user(admin, "user")
    await client.delete(f"/v1/users/{member.user_id}", headers=admin.headers)
    response = await client.post(
        "/v1/users",
        headers=admin.headers,
        json={"email": member.email, "name": "Back", "role": "user", "password": PASSWORD},
    )
    assert response.status_code == 201, response.text
    assert response.json()["id"] != member.user_id


@pytest.mark.parametrize(
    ("method", "body"),
    [("GET", None), ("PATCH", {"name": "Hijacked"}), ("DELETE", None)],
)
async def test_another_accounts_user_is_404_not_found(
    client: httpx.AsyncClient, sign_up: SignUp, method: str, body: dict[str, str] | None
) -> None:
    owner = await sign_up()
    stranger = await sign_up()
    response = await client.request(
        method, f"/v1/users/{owner.user_id}", headers=stranger.headers, json=body
    )
    problem = assert_problem(response, 404, "not_found")
    assert owner.email not in response.text
    assert "email" not in problem
    unchanged = await client.get(f"/v1/users/{owner.user_id}", headers=owner.headers)
    assert unchanged.json() == owner.data["user"]


async def test_unknown_user_id_is_404_not_found(client: httpx.AsyncClient, sign_up: SignUp) -> None:
    admin = await sign_up()
    response = await client.get("/v1/users/usr_doesnotexist", headers=admin.headers)
    assert_problem(response, 404, "not_found")


async def test_the_last_admin_cannot_be_removed_or_demoted(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    removed = await client.delete(f"/v1/users/{admin.user_id}", headers=admin.headers)
    assert_problem(removed, 409, "last_admin")
    demoted = await client.patch(
        f"/v1/users/{admin.user_id}", headers=admin.headers, json={"role": "finance"}
    )
    assert_problem(demoted, 409, "last_admin")
    me = await client.get("/v1/me", headers=admin.headers)
    assert me.json()["role"] == "admin"


async def test_an_admin_may_be_demoted_or_removed_once_another_admin_exists(
    client: httpx.AsyncClient, sign_up: SignUp, add_user: AddUser
) -> None:
    admin = await sign_up()
    second = await add_user(admin, "admin")
    demoted = await client.patch(
        f"/v1/users/{admin.user_id}", headers=second.headers, json={"role": "user"}
    )
    assert demoted.status_code == 200, demoted.text
    assert demoted.json()["role"] == "user"
    assert_problem(await client.get("/v1/users", headers=admin.headers), 403, "forbidden")

    last = await client.delete(f"/v1/users/{second.user_id}", headers=second.headers)
    assert_problem(last, 409, "last_admin")
    removed = await client.delete(f"/v1/users/{admin.user_id}", headers=second.headers)
    assert removed.status_code == 204


async def test_two_admins_demoting_each_other_at_once_leave_one_admin(
    client: httpx.AsyncClient, sign_up: SignUp, add_user: AddUser
) -> None:
    first = await sign_up()
    second = await add_user(first, "admin")
    responses = await asyncio.gather(
        client.patch(f"/v1/users/{second.user_id}", headers=first.headers, json={"role": "user"}),
        client.patch(f"/v1/users/{first.user_id}", headers=second.headers, json={"role": "user"}),
    )
    assert sorted(response.status_code for response in responses) == [200, 409]
    loser = next(response for response in responses if response.status_code == 409)
    assert_problem(loser, 409, "last_admin")
    roles = [
        (await client.get("/v1/me", headers=member.headers)).json()["role"]
        for member in (first, second)
    ]
    assert sorted(roles) == ["admin", "user"]


async def test_a_non_admin_member_can_be_removed_while_one_admin_remains(
    client: httpx.AsyncClient, sign_up: SignUp, add_user: AddUser
) -> None:
    admin = await sign_up()
    member: Member = await add_user(admin, "finance")
    response = await client.delete(f"/v1/users/{member.user_id}", headers=admin.headers)
    assert response.status_code == 204
    assert (await client.get("/v1/me", headers=admin.headers)).json()["role"] == "admin"


async def test_demoting_an_admin_to_admin_is_not_a_demotion(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    response = await client.patch(
        f"/v1/users/{admin.user_id}", headers=admin.headers, json={"role": "admin"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["role"] == "admin"


async def test_users_list_is_limited_to_the_account(
    client: httpx.AsyncClient, sign_up: SignUp, add_user: AddUser
) -> None:
    admin = await sign_up()
    await sign_up()
    member = await add_user(admin, "user")
    response = await client.get("/v1/users", headers=admin.headers)
    assert response.status_code == 200
    body = response.json()
    assert [user["id"] for user in body["data"]] == [member.user_id, admin.user_id]
    assert body["has_more"] is False
