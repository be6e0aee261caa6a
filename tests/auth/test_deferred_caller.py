"""A caller checked by the route's first statement (`MemberCaller`, `Caller.along`): what
`ApiRoute` guarantees whatever the route does, shown on a route of the test's own beside the
app's: no answer goes to a caller the database has not accepted."""

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from app.auth.principal import MemberCaller
from app.config import Settings
from app.kit.routing import ApiRoute, Unit
from app.main import create_app
from tests.conftest import SignUp, client_for
from tests.problems import assert_problem, assert_unauthenticated


async def _forgetful(caller: MemberCaller, unit: Unit) -> dict[str, str]:
    """A route that never asks the database about its caller."""
    return {"said": "hello"}


async def _reading(caller: MemberCaller, unit: Unit) -> dict[str, object]:
    row = await caller.along(unit, "$1::text AS echoed", "along")
    return {"echoed": row["echoed"], "account": caller.principal.account_id}


@pytest.fixture
async def app_with_routes(settings: Settings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    app.router.routes.insert(0, ApiRoute("/test/forgetful", _forgetful, methods=["GET"]))
    app.router.routes.insert(0, ApiRoute("/test/reading", _reading, methods=["GET"]))
    yield app
    await app.state.database.dispose()


async def test_a_route_that_never_reads_along_still_answers_only_a_checked_caller(
    app_with_routes: FastAPI, client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    member = await sign_up()
    key = await client.post(
        "/v1/api-keys", headers=member.headers, json={"name": "deferred", "role": "user"}
    )
    assert key.status_code == 201, key.text
    async with client_for(app_with_routes) as http:
        made_up = await http.get("/test/forgetful", headers={"X-API-Key": "bk_made-up"})
        assert_unauthenticated(made_up)
        accepted = await http.get("/test/forgetful", headers={"X-API-Key": key.json()["key"]})
        assert accepted.status_code == 200, accepted.text
        assert accepted.json() == {"said": "hello"}


async def test_columns_read_along_run_only_for_a_caller_the_database_accepts(
    app_with_routes: FastAPI, sign_up: SignUp
) -> None:
    member = await sign_up()
    async with client_for(app_with_routes) as http:
        read = await http.get("/test/reading", headers=member.headers)
        assert read.status_code == 200, read.text
        assert read.json() == {"echoed": "along", "account": member.account_id}
        forged = {"Authorization": member.headers["Authorization"] + "x"}
        assert_unauthenticated(await http.get("/test/reading", headers=forged))
        nobody = await http.get("/test/reading")
        assert_problem(nobody, 401, "unauthenticated")
