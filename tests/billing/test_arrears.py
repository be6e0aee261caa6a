"""Billing in arrears (SPEC §11), through HTTP on a fixed clock: each month is billed once it
has ended, a line per subscription for the time it ran in it, `monthly price x seconds active
/ seconds in the month` rounded half-up to the cent. Every amount below is worked out by hand
in its comment: November has 2,592,000 seconds (30 days), December 2,678,400 (31 days)."""

import asyncio
import io
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from pypdf import PdfReader

from app.kit.clock import ManualClock
from app.kit.errors import ApiError
from tests.billing.conftest import (
    DECEMBER,
    DECEMBER_1,
    JANUARY,
    JANUARY_1,
    NOVEMBER,
    RecordingGateway,
    bill,
    cancel,
    invoice_of,
    invoices_of,
    subscribe,
)
from tests.conftest import SignUp
from tests.money import add_card, balance, fund, ledger

FEBRUARY = date(2027, 2, 1)
MARCH_1 = datetime(2027, 3, 1, 0, 5, tzinfo=UTC)


def amounts(invoice: dict[str, object]) -> list[tuple[object, object]]:
    lines = invoice["lines"]
    assert isinstance(lines, list)
    return [(line["plan_id"], line["amount"]) for line in lines]


async def test_a_whole_month_is_billed_exactly_the_monthly_price(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, clock: ManualClock
) -> None:
    admin = await sign_up()
    await add_card(client, admin)
    for plan in ("cloud_small", "cloud_large", "support"):
        await subscribe(client, admin, plan)  # 2026-11-14 10:00, running since
    clock.set(datetime(2026, 12, 1, tzinfo=UTC))  # its first moment ...
    exact = await subscribe(client, admin, "cloud_small")
    clock.set(datetime(2027, 1, 1, tzinfo=UTC))  # ... to the next month's first
    assert (await cancel(client, admin, exact))["ended_at"] == "2027-01-01T00:00:00Z"

    clock.set(JANUARY_1)
    assert (await bill(app, clock, DECEMBER, admin)).invoiced == 1
    invoice = await invoice_of(client, admin)
    assert (invoice["period_start"], invoice["period_end"]) == ("2026-12-01", "2026-12-31")
    assert amounts(invoice) == [
        ("cloud_small", "20.00"),
        ("cloud_large", "80.00"),
        ("support", "50.00"),
        ("cloud_small", "20.00"),
    ]
    assert (invoice["total"], invoice["currency"], invoice["status"]) == ("170.00", "USD", "paid")
    assert all(line["description"].endswith(" for December 2026") for line in invoice["lines"])

    # A shorter month is the same price: February 2027 (28 days), billed on March 1st.
    clock.set(MARCH_1)
    await bill(app, clock, JANUARY, admin)
    await bill(app, clock, FEBRUARY, admin)
    february = await invoice_of(client, admin, FEBRUARY)
    assert (february["period_start"], february["period_end"]) == ("2027-02-01", "2027-02-28")
    assert amounts(february) == [
        ("cloud_small", "20.00"),
        ("cloud_large", "80.00"),
        ("support", "50.00"),
    ]
    assert february["total"] == "150.00"


async def test_a_part_month_is_billed_to_the_cent_rounded_half_up(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, clock: ManualClock
) -> None:
    admin = await sign_up()
    await fund(client, admin, "100.00")
    small = await subscribe(client, admin, "cloud_small")  # 2026-11-14 10:00
    await subscribe(client, admin, "support")
    await subscribe(client, admin, "cloud_large")

    clock.set(DECEMBER_1)
    report = await bill(app, clock, NOVEMBER, admin)
    assert (report.invoiced, report.paid) == (1, 1)
    invoice = await invoice_of(client, admin, NOVEMBER)
    # 2026-11-14 10:00 to 12-01 00:00 is 16 days 14 hours: 1,432,800 s of 2,592,000.
    #   cloud_small 2000 x 1,432,800 / 2,592,000 = 1105.56 cents -> 11.06 (up)
    #   support     5000 x 1,432,800 / 2,592,000 = 2763.89 cents -> 27.64 (up)
    #   cloud_large 8000 x 1,432,800 / 2,592,000 = 4422.22 cents -> 44.22 (down)
    assert amounts(invoice) == [
        ("cloud_small", "11.06"),
        ("support", "27.64"),
        ("cloud_large", "44.22"),
    ]
    assert invoice["total"] == "82.92"
    assert (invoice["period_start"], invoice["period_end"]) == ("2026-11-01", "2026-11-30")
    assert invoice["lines"][0] == {
        "subscription_id": small["id"],
        "plan_id": "cloud_small",
        "description": "Cloud server, small (2 vCPU, 4 GB) for November 2026,"
        " 2026-11-14 10:00:00 to 2026-12-01 00:00:00 UTC",
        "amount": "11.06",
        "currency": "USD",
    }
    assert await balance(client, admin) == "17.08"
    assert (await ledger(client, admin))[0]["amount"] == "-82.92"

    # The PDF prints the same month, lines and total.
    response = await client.get(f"/v1/invoices/{invoice['id']}.pdf", headers=admin.headers)
    assert response.status_code == 200
    reader = PdfReader(io.BytesIO(response.content))
    text = " ".join(" ".join(page.extract_text() for page in reader.pages).split())
    assert "November 2026 (2026-11-01 to 2026-11-30)" in text
    assert "2026-11-14 10:00:00 to 2026-12-01 00:00:00 UTC" in text
    for amount in ("11.06", "27.64", "44.22", "82.92 USD"):
        assert amount in text


async def test_a_subscription_canceled_the_day_it_was_made_is_billed_for_that_time_only(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, clock: ManualClock
) -> None:
    admin = await sign_up()
    await add_card(client, admin)
    clock.set(datetime(2026, 12, 10, 9, 0, tzinfo=UTC))
    made = [await subscribe(client, admin, plan) for plan in ("support", "cloud_large")]
    made.append(await subscribe(client, admin, "cloud_small"))
    clock.set(datetime(2026, 12, 10, 10, 51, 36, tzinfo=UTC))  # 1 h 51 min 36 s: 6,696 s
    for subscription in made:
        ended = await cancel(client, admin, subscription)
        assert (ended["status"], ended["ended_at"]) == ("canceled", "2026-12-10T10:51:36Z")

    clock.set(JANUARY_1)
    await bill(app, clock, DECEMBER, admin)
    invoice = await invoice_of(client, admin)
    #   support     5000 x 6,696 / 2,678,400 = 12.5 cents exactly -> 0.13 (half-up, not even)
    #   cloud_large 8000 x 6,696 / 2,678,400 = 20 cents
    #   cloud_small 2000 x 6,696 / 2,678,400 = 5 cents
    assert amounts(invoice) == [
        ("support", "0.13"),
        ("cloud_large", "0.20"),
        ("cloud_small", "0.05"),
    ]
    assert invoice["total"] == "0.38"
    assert invoice["status"] == "paid"
    assert invoice["lines"][0]["description"].endswith(
        " for December 2026, 2026-12-10 09:00:00 to 2026-12-10 10:51:36 UTC"
    )

    clock.set(JANUARY_1 + timedelta(days=31))  # February 1st: January owes nothing
    assert (await bill(app, clock, JANUARY, admin)).invoiced == 0
    assert [i["period_start"] for i in await invoices_of(client, admin)] == ["2026-12-01"]


async def test_a_line_under_half_a_cent_is_left_out_and_nothing_to_bill_is_no_invoice(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, clock: ManualClock
) -> None:
    both = await sign_up()
    only_short = await sign_up()
    for member in (both, only_short):
        await add_card(client, member)
    start = datetime(2026, 12, 10, 9, 0, tzinfo=UTC)
    clock.set(start)
    short = await subscribe(client, both, "support")
    longer = await subscribe(client, both, "support")
    alone = await subscribe(client, only_short, "support")
    # 5000 x 267 / 2,678,400 = 0.498 cents -> 0; 5000 x 268 / 2,678,400 = 0.5003 -> 1 cent.
    clock.set(start + timedelta(seconds=267))
    await cancel(client, both, short)
    await cancel(client, only_short, alone)
    clock.set(start + timedelta(seconds=268))
    await cancel(client, both, longer)

    clock.set(JANUARY_1)
    report = await bill(app, clock, DECEMBER, both, only_short)
    assert (report.invoiced, report.paid) == (1, 1)
    invoice = await invoice_of(client, both)
    assert [(line["subscription_id"], line["amount"]) for line in invoice["lines"]] == [
        (longer["id"], "0.01")
    ]
    assert invoice["total"] == "0.01"
    assert await invoices_of(client, only_short) == []


async def test_a_subscription_canceled_in_an_earlier_month_is_not_billed_again(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, clock: ManualClock
) -> None:
    admin = await sign_up()
    await add_card(client, admin)
    subscription = await subscribe(client, admin, "support")  # 2026-11-14 10:00
    clock.set(datetime(2026, 11, 20, 16, 30, tzinfo=UTC))
    await cancel(client, admin, subscription)

    clock.set(DECEMBER_1)
    await bill(app, clock, NOVEMBER, admin)
    # 6 days 6 h 30 min = 541,800 s: 5000 x 541,800 / 2,592,000 = 1045.14 cents -> 10.45
    assert amounts(await invoice_of(client, admin, NOVEMBER)) == [("support", "10.45")]

    for moment, period in ((JANUARY_1, DECEMBER), (JANUARY_1 + timedelta(days=31), JANUARY)):
        clock.set(moment)
        report = await bill(app, clock, period, admin)
        assert (report.invoiced, report.paid) == (0, 0)
    assert [i["period_start"] for i in await invoices_of(client, admin)] == ["2026-11-01"]
    again = await cancel(client, admin, subscription)  # the same answer, months later
    assert again["ended_at"] == "2026-11-20T16:30:00Z"


async def test_a_month_is_refused_until_it_has_ended(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, clock: ManualClock
) -> None:
    admin = await sign_up()
    await add_card(client, admin)
    await subscribe(client, admin, "cloud_small")
    clock.set(datetime(2026, 11, 30, 23, 59, 59, 999999, tzinfo=UTC))
    # The current month, and one not begun.
    for period, ends in ((NOVEMBER, "2026-12-01T00:00:00Z"), (DECEMBER, "2027-01-01T00:00:00Z")):
        with pytest.raises(ApiError) as refused:
            await bill(app, clock, period, admin)
        assert (refused.value.code, refused.value.status) == ("period_not_ended", 422)
        assert f"{period:%Y-%m} has not ended yet: it ends at {ends}" in str(refused.value.detail)
    assert await invoices_of(client, admin) == []

    clock.set(datetime(2026, 12, 1, tzinfo=UTC))  # November's last moment has passed
    assert (await bill(app, clock, NOVEMBER, admin)).invoiced == 1
    with pytest.raises(ApiError):
        await bill(app, clock, DECEMBER, admin)


async def test_overlapping_runs_of_a_month_make_one_invoice_per_account(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, clock: ManualClock
) -> None:
    members = []
    for _ in range(4):
        member = await sign_up()
        await add_card(client, member)
        await subscribe(client, member, "support")  # part of November: 27.64
        members.append(member)
    clock.set(DECEMBER_1)
    gateway = RecordingGateway(app.state.gateway)
    reports = await asyncio.gather(
        *(bill(app, clock, NOVEMBER, *members, gateway=gateway) for _ in range(3))
    )
    assert sum(report.invoiced for report in reports) == 4
    assert sum(report.paid for report in reports) == 4
    assert len(gateway.charged_keys) == len(set(gateway.charged_keys)) == 4
    for member in members:
        [invoice] = await invoices_of(client, member)
        assert (invoice["total"], invoice["status"], invoice["attempt_count"]) == (
            "27.64",
            "paid",
            1,
        )
