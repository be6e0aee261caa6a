"""Delivery (SPEC §12): every event type reaches a subscribed endpoint once per change,
signed so that Standard Webhooks' own library verifies it, with the object exactly as the API
returns it; failures are retried under the same webhook-id and listed attempt by attempt."""

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.billing.run import bill_period
from app.kit.clock import ManualClock
from app.worker.runner import Worker
from tests.billing.conftest import DECEMBER, JANUARY_1, NOVEMBER_14
from tests.conftest import SignUp
from tests.money import CHARGES_DECLINED, add_card, deposit, order, settings
from tests.webhooks.conftest import add_endpoint, path
from tests.webhooks.receiver import Received, Receiver


async def deliver_until(worker: Worker, done: Callable[[], bool], seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not done():
            await worker.deliver_due()
            await asyncio.sleep(0.02)


async def test_a_deposit_is_delivered_signed_with_the_deposit_as_the_api_returns_it(
    client: httpx.AsyncClient, sign_up: SignUp, receiver: Receiver, webhook_worker: Worker
) -> None:
    admin = await sign_up()
    hook = path()
    endpoint = await add_endpoint(client, admin, receiver.url(hook))
    assert endpoint["secret"].startswith("whsec_")

    await add_card(client, admin)
    made = await deposit(client, admin, "100.00")
    assert made.status_code == 201, made.text

    await deliver_until(webhook_worker, lambda: len(receiver.to(hook)) == 1)
    [delivery] = receiver.to(hook)
    assert delivery.verified_by(endpoint["secret"])
    event = delivery.event
    assert event["type"] == "deposit.succeeded"
    assert event["id"] == delivery.webhook_id
    assert event["id"].startswith("evt_")
    shown = await client.get(f"/v1/finance/deposits/{made.json()['id']}", headers=admin.headers)
    assert event["data"]["object"] == shown.json()
    listed = await client.get(f"/v1/events/{event['id']}", headers=admin.headers)
    assert listed.json() == event


@pytest.fixture
def billing_clock(app: FastAPI) -> Iterator[ManualClock]:
    previous = app.state.clock
    app.state.clock = ManualClock(NOVEMBER_14)
    yield app.state.clock
    app.state.clock = previous


def by_type(received: list[Received]) -> dict[str, list[dict[str, Any]]]:
    events: dict[str, list[dict[str, Any]]] = {}
    for delivery in received:
        events.setdefault(delivery.event["type"], []).append(delivery.event["data"]["object"])
    return events


async def test_every_event_type_is_delivered_once_per_change_and_verifies(
    app: FastAPI,
    client: httpx.AsyncClient,
    sign_up: SignUp,
    receiver: Receiver,
    webhook_worker: Worker,
    billing_clock: ManualClock,
) -> None:
    payer, decliner = await sign_up(), await sign_up()
    hooks = {payer.account_id: path(), decliner.account_id: path()}
    secrets_ = {}
    for member in (payer, decliner):
        endpoint = await add_endpoint(client, member, receiver.url(hooks[member.account_id]))
        secrets_[member.account_id] = endpoint["secret"]

    # deposit.succeeded, then order.paid with balance.low (100.00 -> 51.00 crosses 60.00),
    # order.canceled (back to 100.00), deposit.failed, and invoice.paid from the balance.
    await add_card(client, payer)
    deposited = await deposit(client, payer, "100.00")
    await settings(
        client,
        payer,
        balance_payments_enabled=True,
        default_payment_method="balance",
        low_balance_threshold="60.00",
    )
    paid = await order(client, payer)
    assert paid.status_code == 201, paid.text
    low = (await client.get("/v1/finance/balance", headers=payer.headers)).json()
    canceled = await client.post(f"/v1/orders/{paid.json()['id']}/cancel", headers=payer.headers)
    assert canceled.status_code == 200, canceled.text
    await add_card(client, payer, CHARGES_DECLINED)
    declined = await deposit(client, payer, "20.00")
    assert declined.status_code == 402, declined.text
    failed_deposit = await client.get(
        f"/v1/finance/deposits/{declined.json()['deposit_id']}", headers=payer.headers
    )
    # invoice.payment_failed: the other account's card declines every charge.
    await add_card(client, decliner, CHARGES_DECLINED)
    for member in (payer, decliner):
        response = await client.post(
            "/v1/subscriptions", headers=member.headers, json={"plan_id": "cloud_small"}
        )
        assert response.status_code == 201, response.text
    billing_clock.set(JANUARY_1)
    report = await bill_period(
        app.state.database,
        app.state.gateway,
        billing_clock,
        DECEMBER,
        account_ids=[payer.account_id, decliner.account_id],
    )
    assert (report.paid, report.retrying) == (1, 1)
    [invoice] = (await client.get("/v1/invoices", headers=payer.headers)).json()["data"]
    [unpaid] = (await client.get("/v1/invoices", headers=decliner.headers)).json()["data"]

    expected = {
        payer.account_id: {
            "deposit.succeeded": [deposited.json()],
            "order.paid": [paid.json()],
            "balance.low": [low],
            "order.canceled": [canceled.json()],
            "deposit.failed": [failed_deposit.json()],
            "invoice.paid": [invoice],
        },
        decliner.account_id: {"invoice.payment_failed": [unpaid]},
    }
    count = {account: sum(map(len, events.values())) for account, events in expected.items()}
    await deliver_until(
        webhook_worker,
        lambda: all(len(receiver.to(hooks[a])) >= n for a, n in count.items()),
    )
    await webhook_worker.deliver_due()  # nothing more comes
    for account, events in expected.items():
        received = receiver.to(hooks[account])
        assert by_type(received) == events
        assert all(delivery.verified_by(secrets_[account]) for delivery in received)
        assert len({delivery.webhook_id for delivery in received}) == len(received)
    # The events API lists the same events, newest first, and filters by type.
    listed = (await client.get("/v1/events?limit=100", headers=payer.headers)).json()["data"]
    assert sorted(e["id"] for e in listed) == sorted(
        d.webhook_id for d in receiver.to(hooks[payer.account_id])
    )
    assert [e["created_at"] for e in listed] == sorted(
        (e["created_at"] for e in listed), reverse=True
    )
    only = await client.get("/v1/events?type=order.paid", headers=payer.headers)
    assert [e["data"]["object"] for e in only.json()["data"]] == [paid.json()]


async def test_a_failing_receiver_gets_the_same_event_until_it_answers_2xx(
    client: httpx.AsyncClient, sign_up: SignUp, receiver: Receiver, webhook_worker: Worker
) -> None:
    admin = await sign_up()
    hook = path()
    endpoint = await add_endpoint(client, admin, receiver.url(hook), ["deposit.succeeded"])
    receiver.answer(500, 503, 200)

    await add_card(client, admin)
    assert (await deposit(client, admin, "50.00")).status_code == 201
    await deliver_until(webhook_worker, lambda: len(receiver.to(hook)) == 3)
    await asyncio.sleep(0.3)
    await webhook_worker.deliver_due()  # a success is not sent again

    tries = receiver.to(hook)
    assert len(tries) == 3
    assert len({t.webhook_id for t in tries}) == 1
    assert all(t.verified_by(endpoint["secret"]) for t in tries)
    assert len({t.body for t in tries}) == 1
    deliveries = await client.get(
        f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=admin.headers
    )
    assert deliveries.status_code == 200, deliveries.text
    rows = deliveries.json()["data"]
    assert [(d["attempt"], d["status"], d["response_status"]) for d in rows] == [
        (3, "succeeded", 200),
        (2, "failed", 503),
        (1, "failed", 500),
    ]
    assert {d["event_id"] for d in rows} == {tries[0].webhook_id}
    assert {d["event_type"] for d in rows} == {"deposit.succeeded"}
    assert rows[0]["next_attempt_at"] is None
    assert all(d["next_attempt_at"] is not None for d in rows[1:])
