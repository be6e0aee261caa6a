"""A database that goes away is the service's 503 `service_unavailable` with Retry-After,
never a 500: the sessions of the test database are ended under a burst of orders (as a
PostgreSQL restart or a failover ends them), and a service whose database refuses
connections answers 503 until it is back. Afterwards nothing answered 201 is lost, a retry
with the same key finds what was committed, and the books balance."""

import asyncio
import contextlib
import secrets

import asyncpg
import httpx
from fastapi import FastAPI

from app.main import create_app
from tests.conftest import SignUp, client_for, make_settings
from tests.money import fund, order
from tests.orders.test_concurrency import assert_books_balance
from tests.problems import assert_problem

ORDERS = 60


async def end_sessions(database_url: str, stop: asyncio.Event) -> int:
    """End every other session of the test database, again and again, until `stop`."""
    admin = await asyncpg.connect(database_url)
    ended = 0
    try:
        while not stop.is_set():
            ended += await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            await asyncio.sleep(0.03)
    finally:
        await admin.close()
    return ended


async def test_ended_sessions_under_a_burst_of_orders_are_503_and_nothing_is_lost(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, database_url: str
) -> None:
    member = await sign_up()
    await fund(client, member, "5000.00")
    keys = [f"outage-{secrets.token_hex(6)}-{n}" for n in range(ORDERS)]

    stop = asyncio.Event()
    killer = asyncio.create_task(end_sessions(database_url, stop))
    await asyncio.sleep(0.05)
    first = await asyncio.gather(*(order(client, member, key) for key in keys))
    stop.set()
    assert await killer > 0

    for response in first:
        assert response.status_code in (201, 409, 503), response.text
        if response.status_code == 503:
            assert_problem(response, 503, "service_unavailable")
            assert int(response.headers["retry-after"]) >= 1
    assert any(r.status_code == 503 for r in first), "no request met the outage"

    # The database is back: every request, retried with its key, is answered from what was
    # committed (a replay) or runs now; each key makes exactly one order.
    final = {}
    for key, response in zip(keys, first, strict=True):
        for _ in range(20):
            if response.status_code == 201:
                break
            await asyncio.sleep(0.05)
            response = await order(client, member, key)
        assert response.status_code == 201, response.text
        final[key] = response.json()
    for key, response in zip(keys, first, strict=True):
        if response.status_code == 201:
            assert final[key] == response.json()

    orders = {o["id"] for o in final.values()}
    assert len(orders) == ORDERS
    entries = await assert_books_balance(client, member, database_url)
    debits = {e["order_id"] for e in entries if e["type"] == "order"}
    assert debits == orders


async def test_a_database_that_refuses_connections_is_503() -> None:
    # A port nothing listens on: every connection is refused.
    app = create_app(make_settings("postgresql://postgres@127.0.0.1:9/none"))
    try:
        async with client_for(app) as http:
            health = await http.get("/healthz")
            assert health.status_code == 200
            ready = await http.get("/readyz")
            assert_problem(ready, 503, "not_ready")
            for request in (
                http.post(
                    "/v1/auth/token", data={"username": "a@example.com", "password": "x" * 12}
                ),
                http.get("/v1/me", headers={"X-API-Key": "sk_" + "a" * 40}),
                http.post(
                    "/v1/orders",
                    headers={"X-API-Key": "sk_" + "a" * 40, "Idempotency-Key": "k1"},
                    json={"product_id": "ssl_dv", "common_name": "a.example.com"},
                ),
            ):
                response = await request
                assert_problem(response, 503, "service_unavailable")
                assert response.headers["retry-after"]
    finally:
        with contextlib.suppress(Exception):
            await app.state.database.dispose()


async def test_a_request_that_finds_every_connection_in_use_is_503_then_served(
    client: httpx.AsyncClient, sign_up: SignUp, database_url: str
) -> None:
    member = await sign_up()
    await fund(client, member, "100.00")
    # A process with one pooled connection and no overflow, its connection held meanwhile.
    busy = create_app(make_settings(database_url, db_pool_size=1, db_pool_timeout_seconds=0.3))
    try:
        async with client_for(busy) as http:
            async with busy.state.database.engine.connect() as held:
                await held.exec_driver_sql("SELECT 1")
                balance = await http.get("/v1/finance/balance", headers=member.headers)
                refused = await order(http, member, "busy-1")
            for response in (balance, refused):
                assert_problem(response, 503, "service_unavailable")
                assert int(response.headers["retry-after"]) >= 1
                assert "busy" in response.json()["detail"]
            # The connection is free again: the same key now places the order, once.
            placed = await order(http, member, "busy-1")
            assert placed.status_code == 201, placed.text
            replay = await order(http, member, "busy-1")
            assert replay.json() == placed.json()
            balance = await http.get("/v1/finance/balance", headers=member.headers)
            assert balance.json()["balance"] == "51.00"
    finally:
        await busy.state.database.dispose()
