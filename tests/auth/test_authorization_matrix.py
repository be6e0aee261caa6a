"""Who may call what: every endpoint of SPEC §2-3 against every kind of caller.

The callers are built once for the module (one account with an admin, a finance user, a
user and an API key of each role, a revoked key, and a foreign account's admin); every
cell that changes something works on a target of its own.
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import PASSWORD, Member, client_for, login, unique_email
from tests.problems import assert_problem, assert_unauthenticated

TOKEN_CALLERS = ("admin", "finance", "user")
KEY_CALLERS = ("admin_key", "finance_key", "user_key")
NO_ACCESS_CALLERS = ("anonymous", "revoked_key")
CALLERS = TOKEN_CALLERS + KEY_CALLERS + NO_ACCESS_CALLERS
FOREIGN = "foreign_admin"


@dataclass
class World:
    http: httpx.AsyncClient
    owner: Member
    members: dict[str, Member]
    keys: dict[str, str]
    foreign: Member
    targets: dict[str, str] = field(default_factory=dict)
    rotations: int = 0

    def headers(self, caller: str) -> dict[str, str]:
        if caller in self.members:
            return self.members[caller].headers
        if caller in self.keys:
            return {"X-API-Key": self.keys[caller]}
        if caller == FOREIGN:
            return self.foreign.headers
        assert caller == "anonymous"
        return {}

    async def new_user(self) -> str:
        response = await self.http.post(
            "/v1/users",
            headers=self.owner.headers,
            json={
                "email": unique_email("target"),
                "name": "T",
                "role": "user",
                "password": PASSWORD,
            },
        )
        assert response.status_code == 201, response.text
        user_id: str = response.json()["id"]
        return user_id

    async def new_key(self) -> str:
        response = await self.http.post(
            "/v1/api-keys", headers=self.owner.headers, json={"name": "target", "role": "user"}
        )
        assert response.status_code == 201, response.text
        key_id: str = response.json()["id"]
        return key_id


async def _sign_up(http: httpx.AsyncClient) -> Member:
    email = unique_email("matrix")
    response = await http.post(
        "/v1/signup", json={"email": email, "password": PASSWORD, "name": "Owner"}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return Member(
        email=email,
        user_id=body["user"]["id"],
        account_id=body["account"]["id"],
        token=await login(http, email),
    )


async def _add_user(http: httpx.AsyncClient, owner: Member, role: str) -> Member:
    email = unique_email(role)
    response = await http.post(
        "/v1/users",
        headers=owner.headers,
        json={"email": email, "name": role, "role": role, "password": PASSWORD},
    )
    assert response.status_code == 201, response.text
    return Member(
        email=email,
        user_id=response.json()["id"],
        account_id=owner.account_id,
        token=await login(http, email),
        role=role,
    )


@pytest.fixture(scope="module")
async def world(app: FastAPI) -> AsyncIterator[World]:
    async with client_for(app) as http:
        owner = await _sign_up(http)
        members = {role: await _add_user(http, owner, role) for role in TOKEN_CALLERS}
        keys: dict[str, str] = {}
        for caller in (*KEY_CALLERS, "revoked_key"):
            role = "admin" if caller == "revoked_key" else caller.removesuffix("_key")
            response = await http.post(
                "/v1/api-keys", headers=owner.headers, json={"name": caller, "role": role}
            )
            assert response.status_code == 201, response.text
            keys[caller] = response.json()["key"]
            if caller == "revoked_key":
                revoked = await http.delete(
                    f"/v1/api-keys/{response.json()['id']}", headers=owner.headers
                )
                assert revoked.status_code == 204
        world = World(
            http=http, owner=owner, members=members, keys=keys, foreign=await _sign_up(http)
        )
        world.targets["user"] = members["user"].user_id
        yield world


Body = Callable[[World, str], Awaitable[dict[str, Any] | None]]
Target = Callable[[World], Awaitable[str]]


async def _no_body(world: World, caller: str) -> None:
    return None


def _fixed(body: dict[str, Any]) -> Body:
    async def make(world: World, caller: str) -> dict[str, Any]:
        return body

    return make


async def _new_user_body(world: World, caller: str) -> dict[str, Any]:
    return {"email": unique_email("added"), "name": "Added", "role": "user", "password": PASSWORD}


async def _password_body(world: World, caller: str) -> dict[str, Any]:
    member = world.members.get(caller)
    current = member.password if member else PASSWORD
    world.rotations += 1
    new = f"Rotated-Password-{world.rotations:04d}"
    return {"current_password": current, "new_password": new, "new_password_confirmation": new}


async def _existing_user(world: World) -> str:
    return world.targets["user"]


async def _fresh_user(world: World) -> str:
    return await world.new_user()


async def _fresh_key(world: World) -> str:
    return await world.new_key()


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    # "member": any role; "admin": admins only; "own_password": signed-in users, not keys.
    rule: str
    success: int
    body: Body = _no_body
    target: Target | None = None

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


ENDPOINTS = [
    Endpoint("GET", "/v1/me", "member", 200),
    Endpoint("GET", "/v1/account", "member", 200),
    Endpoint("PATCH", "/v1/account", "admin", 200, _fixed({"company_name": "Matrix Ltd"})),
    Endpoint("GET", "/v1/account/billing", "member", 200),
    Endpoint("PUT", "/v1/account/billing", "admin", 200, _fixed({"country": "DE"})),
    Endpoint("PUT", "/v1/account/password", "own_password", 204, _password_body),
    Endpoint("POST", "/v1/api-keys", "admin", 201, _fixed({"name": "new", "role": "user"})),
    Endpoint("GET", "/v1/api-keys", "admin", 200),
    Endpoint("DELETE", "/v1/api-keys/{id}", "admin", 204, target=_fresh_key),
    Endpoint("POST", "/v1/users", "admin", 201, _new_user_body),
    Endpoint("GET", "/v1/users", "admin", 200),
    Endpoint("GET", "/v1/users/{id}", "admin", 200, target=_existing_user),
    Endpoint("PATCH", "/v1/users/{id}", "admin", 200, _fixed({"name": "Renamed"}), _existing_user),
    Endpoint("DELETE", "/v1/users/{id}", "admin", 204, target=_fresh_user),
]


def expected_status(endpoint: Endpoint, caller: str) -> int:
    if caller in NO_ACCESS_CALLERS:
        return 401
    if caller == FOREIGN:
        return 404
    role = caller.removesuffix("_key")
    if endpoint.rule == "own_password":
        return endpoint.success if caller in TOKEN_CALLERS else 403
    if endpoint.rule == "admin" and role != "admin":
        return 403
    return endpoint.success


CELLS = [
    pytest.param(endpoint, caller, id=f"{endpoint}-{caller}")
    for endpoint in ENDPOINTS
    for caller in (*CALLERS, *((FOREIGN,) if endpoint.target else ()))
]


@pytest.mark.parametrize(("endpoint", "caller"), CELLS)
async def test_access(world: World, endpoint: Endpoint, caller: str) -> None:
    path = endpoint.path
    if endpoint.target is not None:
        path = path.replace("{id}", await endpoint.target(world))
    body = await endpoint.body(world, caller)
    response = await world.http.request(
        endpoint.method, path, headers=world.headers(caller), json=body
    )

    expected = expected_status(endpoint, caller)
    if expected == 401:
        assert_unauthenticated(response)
    elif expected == 403:
        assert_problem(response, 403, "forbidden")
    elif expected == 404:
        assert_problem(response, 404, "not_found")
    else:
        assert response.status_code == expected, response.text

    if endpoint.rule == "own_password" and response.status_code == 204:
        # The caller's token died with the change; sign in again for the next cells.
        assert body is not None
        member = world.members[caller]
        member.password = body["new_password"]
        member.token = await login(world.http, member.email, member.password)


async def test_a_foreign_admin_sees_nothing_of_the_account(world: World) -> None:
    """Another account's ids behave like ids that never existed, for every id endpoint."""
    headers = world.headers(FOREIGN)
    for path in (f"/v1/users/{world.owner.user_id}", "/v1/users/usr_nosuchuser"):
        response = await world.http.get(path, headers=headers)
        body = assert_problem(response, 404, "not_found")
        assert world.owner.email not in response.text
        assert set(body) == {"type", "title", "status", "detail", "code", "request_id"}
        assert body["detail"] == "No such user."
