"""An event exists exactly when the change it reports committed: none for a change rolled
back (by the service's own rules or by a failure after the event was queued)."""

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text

from app.finance.schemas import BalanceOut
from app.kit.db import UnitOfWork
from app.webhooks.events import queue_event
from app.webhooks.models import EventType, WebhookEvent
from app.worker.runner import Worker
from tests.conftest import Member, SignUp, db_session
from tests.money import add_card, deposit, order, settings
from tests.webhooks.conftest import add_endpoint


async def events_of(app: FastAPI, member: Member) -> list[str]:
    async with db_session(app) as session:
        rows = await session.scalars(
            select(WebhookEvent.type).where(WebhookEvent.account_id == member.account_id)
        )
        return [str(t) for t in rows]


async def test_an_order_refused_for_want_of_funds_raises_no_event(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    endpoint = await add_endpoint(client, admin, "https://hooks.partner.invalid/a")
    await add_card(client, admin)
    assert (await deposit(client, admin, "20.00")).status_code == 201
    await settings(client, admin, balance_payments_enabled=True, default_payment_method="balance")
    assert (await order(client, admin)).status_code == 402  # 49.00 > 20.00
    assert await events_of(app, admin) == ["deposit.succeeded"]
    # The order's event is stored before the debit and goes with the order: nothing of it
    # reached the endpoint's deliveries either.
    attempts = await client.get(
        f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=admin.headers
    )
    assert [a["event_type"] for a in attempts.json()["data"]] == ["deposit.succeeded"]


async def test_an_event_queued_in_a_transaction_that_rolls_back_is_gone_with_it(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    endpoint = await add_endpoint(client, admin, "https://hooks.partner.invalid/a")

    class Rollback(Exception):
        pass

    async def work(unit: UnitOfWork) -> None:
        low = BalanceOut(balance=0, low_balance_threshold=100, below_threshold=True)
        await queue_event(unit, admin.account_id, EventType.BALANCE_LOW, low)
        raise Rollback

    with pytest.raises(Rollback):
        await app.state.database.run(work)
    assert await events_of(app, admin) == []
    response = await client.get("/v1/events", headers=admin.headers)
    assert response.json()["data"] == []
    attempts = await client.get(
        f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=admin.headers
    )
    assert attempts.json()["data"] == []


async def test_events_are_kept_30_days_then_pruned(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, webhook_worker: Worker
) -> None:
    admin = await sign_up()
    await add_card(client, admin)
    assert (await deposit(client, admin, "20.00")).status_code == 201
    [event] = (await client.get("/v1/events", headers=admin.headers)).json()["data"]
    async with db_session(app) as session:
        await session.execute(
            text("UPDATE webhook_event SET created_at = now() - interval '31 days' WHERE id = :id"),
            {"id": event["id"]},
        )
    gone = await client.get(f"/v1/events/{event['id']}", headers=admin.headers)
    assert gone.status_code == 404
    await webhook_worker.prune()
    assert await events_of(app, admin) == []
