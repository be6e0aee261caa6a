"""Payments with an unknown outcome are settled later by asking the gateway (SPEC §9)."""

import asyncio
from datetime import timedelta

import httpx
from fastapi import FastAPI

from app.worker.reconcile import reconcile_pending
from tests.conftest import SignUp
from tests.money import (
    TIMEOUT_NOT_CHARGED,
    TIMEOUT_SUCCEEDED,
    add_card,
    balance,
    deposit,
    fund,
    ledger,
    order,
)


async def reconcile(app: FastAPI) -> None:
    await reconcile_pending(app.state.database, app.state.gateway, app.state.clock, timedelta(0))


async def test_a_timed_out_deposit_that_happened_is_credited_exactly_once(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    await add_card(client, admin, TIMEOUT_SUCCEEDED)
    pending = await deposit(client, admin, "75.00")
    assert pending.status_code == 202
    # Two reconcilers at once: the deposit is credited once.
    await asyncio.gather(reconcile(app), reconcile(app))
    await reconcile(app)
    settled = await client.get(
        f"/v1/finance/deposits/{pending.json()['id']}", headers=admin.headers
    )
    assert settled.json()["status"] == "succeeded"
    assert settled.json()["balance_after"] == "75.00"
    assert await balance(client, admin) == "75.00"
    assert [e["type"] for e in await ledger(client, admin)] == ["deposit"]


async def test_a_timed_out_deposit_that_never_happened_fails(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    await add_card(client, admin, TIMEOUT_NOT_CHARGED)
    pending = await deposit(client, admin, "75.00")
    assert pending.status_code == 202
    await reconcile(app)
    settled = await client.get(
        f"/v1/finance/deposits/{pending.json()['id']}", headers=admin.headers
    )
    assert settled.json()["status"] == "failed"
    assert await balance(client, admin) == "0.00"


async def test_a_card_order_pending_payment_is_settled(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    await fund(client, admin, "10.00")
    await add_card(client, admin, TIMEOUT_SUCCEEDED)
    succeeded = await order(client, admin, payment_method="card")
    await add_card(client, admin, TIMEOUT_NOT_CHARGED)
    never = await order(client, admin, payment_method="card")
    assert succeeded.json()["status"] == never.json()["status"] == "pending_payment"
    await reconcile(app)
    paid = await client.get(f"/v1/orders/{succeeded.json()['id']}", headers=admin.headers)
    failed = await client.get(f"/v1/orders/{never.json()['id']}", headers=admin.headers)
    assert paid.json()["status"] == "paid"
    assert failed.json()["status"] == "failed"
    assert await balance(client, admin) == "10.00"
