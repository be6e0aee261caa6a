"""Recurring charges under a clock the tests move: subscriptions made through the API, runs
and retries called the way the worker and the CLI call them, narrowed to the test's own
accounts (the database is shared with every other test)."""

import asyncio
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.billing.run import BillingReport, attempt_charge_key, bill_period, collect_due
from app.gateway.base import Charge, Gateway, SavedCard
from app.kit.clock import ManualClock
from tests.conftest import Member

# Mid-November: subscriptions made now run for part of November, then the whole of December.
NOVEMBER_14 = datetime(2026, 11, 14, 10, 0, tzinfo=UTC)
NOVEMBER = date(2026, 11, 1)
DECEMBER = date(2026, 12, 1)
JANUARY = date(2027, 1, 1)
# The worker's first passes of December and of January: they bill November, then December
# (in arrears).
DECEMBER_1 = datetime(2026, 12, 1, 0, 5, tzinfo=UTC)
JANUARY_1 = datetime(2027, 1, 1, 0, 5, tzinfo=UTC)


@pytest.fixture
def clock(app: FastAPI) -> Iterator[ManualClock]:
    """The app's billing clock, set to NOVEMBER_14 for this test only."""
    previous = app.state.clock
    app.state.clock = ManualClock(NOVEMBER_14)
    yield app.state.clock
    app.state.clock = previous


async def subscribe(
    client: httpx.AsyncClient, member: Member, plan_id: str = "cloud_small"
) -> dict[str, Any]:
    response = await client.post(
        "/v1/subscriptions", headers=member.headers, json={"plan_id": plan_id}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def cancel(client: httpx.AsyncClient, member: Member, subscription: dict[str, Any]) -> Any:
    response = await client.delete(
        f"/v1/subscriptions/{subscription['id']}", headers=member.headers
    )
    assert response.status_code == 200, response.text
    return response.json()


async def invoices_of(client: httpx.AsyncClient, member: Member) -> list[dict[str, Any]]:
    response = await client.get("/v1/invoices?limit=100", headers=member.headers)
    assert response.status_code == 200, response.text
    invoices: list[dict[str, Any]] = response.json()["data"]
    return invoices


async def invoice_of(
    client: httpx.AsyncClient, member: Member, period: date = DECEMBER
) -> dict[str, Any]:
    """`member`'s one invoice of `period` (by default December: a whole month)."""
    [invoice] = [i for i in await invoices_of(client, member) if i["period_start"] == str(period)]
    return invoice


async def bill(
    app: FastAPI,
    clock: ManualClock,
    period: date,
    *members: Member,
    gateway: Gateway | None = None,
) -> BillingReport:
    """A billing run over `members`' accounts, as `billing bill --period` runs it."""
    return await bill_period(
        app.state.database,
        gateway or app.state.gateway,
        clock,
        period,
        account_ids=[member.account_id for member in members],
    )


async def retry(app: FastAPI, clock: ManualClock, *members: Member) -> BillingReport:
    """The due attempts of `members`' invoices, as the worker makes them."""
    return await collect_due(
        app.state.database,
        app.state.gateway,
        clock,
        account_ids=[member.account_id for member in members],
    )


async def gateway_charges(app: FastAPI, invoice: dict[str, Any]) -> list[Charge | None]:
    """What the gateway holds under the key of each attempt made, and of the next one."""
    gateway: Gateway = app.state.gateway
    return [
        await gateway.find_charge(attempt_charge_key(invoice["id"], number))
        for number in range(1, invoice["attempt_count"] + 2)
    ]


class RecordingGateway:
    """The app's gateway, with every charge's idempotency key recorded. With `hang_on`, the
    n-th charge never reaches the gateway and never returns (`hanging` is set then): a test
    kills the run there. With `raise_on`, the n-th charge raises an unexpected error."""

    def __init__(
        self, gateway: Gateway, *, hang_on: int | None = None, raise_on: int | None = None
    ) -> None:
        self.gateway = gateway
        self.hang_on = hang_on
        self.raise_on = raise_on
        self.hanging = asyncio.Event()
        self.charged_keys: list[str] = []

    async def save_card(self, card: Any = None, *, token: str | None = None) -> SavedCard:
        return await self.gateway.save_card(card, token=token)

    async def charge(
        self, card_token: str, amount_cents: int, *, idempotency_key: str, description: str
    ) -> Charge:
        self.charged_keys.append(idempotency_key)
        if len(self.charged_keys) == self.hang_on:
            self.hanging.set()
            await asyncio.Event().wait()
        if len(self.charged_keys) == self.raise_on:
            raise RuntimeError("a bug")
        return await self.gateway.charge(
            card_token, amount_cents, idempotency_key=idempotency_key, description=description
        )

    async def refund(self, charge_id: str, amount_cents: int, *, idempotency_key: str) -> Any:
        return await self.gateway.refund(charge_id, amount_cents, idempotency_key=idempotency_key)

    async def find_charge(self, idempotency_key: str) -> Charge | None:
        return await self.gateway.find_charge(idempotency_key)

    async def aclose(self) -> None:
        pass
