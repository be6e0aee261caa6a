"""The hot path's database round trips, counted (asyncpg's query logger on every pooled
connection, which also sees BEGIN and COMMIT, and SQLAlchemy's statements): a balance order
is one statement, the caller's check with the order read along; a balance read is the
caller's statement with the balance read along. A change that adds one fails here, before it
shows in `make bench`."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from app.config import Settings
from app.main import create_app
from tests.conftest import SignUp, client_for
from tests.money import fund, key


@pytest.fixture
async def counted(settings: Settings) -> AsyncIterator[tuple[FastAPI, list[str]]]:
    statements: list[str] = []
    app = create_app(settings)

    def watch(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(
            lambda record: statements.append(record.query)
        )

    def orm(*args: Any) -> None:
        statements.append(args[2])  # the statement; the ORM's go past asyncpg's logger

    engine = app.state.database.engine.sync_engine
    event.listen(engine, "connect", watch)
    event.listen(engine, "before_cursor_execute", orm)
    yield app, statements
    await app.state.database.dispose()


async def _logged() -> None:
    """asyncpg calls its query loggers soon after a statement, not at once."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_balance_order_is_one_round_trip_and_a_balance_read_one(
    counted: tuple[FastAPI, list[str]], client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    app, statements = counted
    member = await sign_up()
    await fund(client, member, "500.00")
    api_key = await client.post(
        "/v1/api-keys", headers=member.headers, json={"name": "rt", "role": "user"}
    )
    headers = {"X-API-Key": api_key.json()["key"]}
    body = {"product_id": "ssl_dv", "common_name": "www.example.com", "validity_years": 1}
    async with client_for(app) as http:
        # Warm up: the process's catalogue and the connection's type introspection.
        warm = await http.post(
            "/v1/orders", headers={**headers, "Idempotency-Key": key()}, json=body
        )
        assert warm.status_code == 201, warm.text
        await http.get("/v1/finance/balance", headers=headers)

        await _logged()
        statements.clear()
        placed = await http.post(
            "/v1/orders", headers={**headers, "Idempotency-Key": key()}, json=body
        )
        assert placed.status_code == 201, placed.text
        await _logged()
        assert len(statements) == 1, statements
        assert "place_balance_order" in statements[0]
        assert "caller_by_api_key" in statements[0]

        await _logged()
        statements.clear()
        read = await http.get("/v1/finance/balance", headers=headers)
        assert read.status_code == 200
        assert read.json()["balance"] == "402.00"  # two orders of 49.00
        await _logged()
        assert len(statements) == 1, statements
        assert "account_balance" in statements[0]
        assert "caller_by_api_key" in statements[0]

        # A list is a transaction: BEGIN, the page, COMMIT, after the caller's statement.
        await _logged()
        statements.clear()
        listed = await http.get("/v1/orders", headers=headers)
        assert listed.status_code == 200
        await _logged()
        assert len(statements) == 4, statements
