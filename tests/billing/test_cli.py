"""`billing bill --period` and `billing retry-invoices`, run as operators run them: in a
process of their own, on the system clock (or --as-of's), checked through the public API.

The subscriptions date from February 2019 on the app's clock, so March 2019 is a period no
other test bills: a whole month, over long ago."""

from datetime import UTC, date, datetime
from fractions import Fraction
from math import floor

import httpx
from fastapi import FastAPI

from app.config import Settings
from app.kit.clock import ManualClock
from tests.billing.conftest import invoice_of, subscribe
from tests.conftest import SignUp
from tests.money import CHARGES_DECLINED, add_card, fund
from tests.test_cli import billing

MARCH_2019 = date(2019, 3, 1)


async def test_bill_invoices_a_period_once_and_retry_invoices_reports(
    app: FastAPI, settings: Settings, client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    by_card = await sign_up()
    await add_card(client, by_card)
    by_balance = await sign_up()
    await fund(client, by_balance, "100.00")
    declined = await sign_up()
    await add_card(client, declined, CHARGES_DECLINED)
    previous = app.state.clock
    app.state.clock = ManualClock(datetime(2019, 2, 10, 12, 0, tzinfo=UTC))
    try:
        await subscribe(client, by_card, "cloud_large")
        await subscribe(client, by_balance, "support")
        await subscribe(client, declined, "cloud_small")
    finally:
        app.state.clock = previous

    code, out, err = await billing(settings, "bill", "--period", "2019-03")
    assert code == 0, err
    assert out.strip() == (
        "2019-03: invoiced 3, paid 2, pending 0, retrying 1, uncollectible 0, errors 0"
    )
    card_invoice = await invoice_of(client, by_card, MARCH_2019)
    assert (card_invoice["status"], card_invoice["total"]) == ("paid", "80.00")
    assert (await invoice_of(client, by_balance, MARCH_2019))["payment_method"] == "balance"
    open_invoice = await invoice_of(client, declined, MARCH_2019)
    assert open_invoice["status"] == "open"

    code, out, err = await billing(settings, "bill", "--period", "2019-03")
    assert code == 0, err
    assert (
        out.strip()
        == "2019-03: invoiced 0, paid 0, pending 0, retrying 0, uncollectible 0, errors 0"
    )

    # Its retry is due a day after the first attempt, on the system clock: not yet.
    code, out, err = await billing(settings, "retry-invoices", "--account", declined.account_id)
    assert code == 0, err
    assert out.strip() == "invoiced 0, paid 0, pending 0, retrying 0, uncollectible 0, errors 0"
    assert (await invoice_of(client, declined, MARCH_2019))["attempt_count"] == 1


async def test_bill_refuses_a_month_not_ended_or_not_a_month(settings: Settings) -> None:
    this_month = f"{datetime.now(UTC):%Y-%m}"
    for args in (
        ("--period", this_month),  # the current month, on the system clock
        ("--period", "2099-01"),
        ("--period", "2019-03", "--as-of", "2019-03-31T23:59:59.999999Z"),  # a moment too soon
    ):
        code, out, err = await billing(settings, "bill", *args)
        assert code == 1, args
        assert "period_not_ended" in err
        assert "has not ended yet" in err
        assert "billed in arrears" in err
        assert out == ""
    for period in ("2026-13", "December"):
        code, _, err = await billing(settings, "bill", "--period", period)
        assert code == 2, period
        assert "YYYY-MM" in err


async def test_bill_as_of_next_month_rehearses_this_month_in_arrears(
    settings: Settings, client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    """This month is billed on the 1st of the next: `--as-of` runs the CLI on that clock, so an
    operator (or the README's walk-through) can see its invoice now."""
    admin = await sign_up()
    await add_card(client, admin)
    server = await subscribe(client, admin, "cloud_large")
    support = await subscribe(client, admin, "support")
    response = await client.delete(f"/v1/subscriptions/{support['id']}", headers=admin.headers)
    assert response.json()["status"] == "canceled"
    started = datetime.fromisoformat(server["started_at"])
    this_month = date(started.year, started.month, 1)
    next_month = date(this_month.year + this_month.month // 12, this_month.month % 12 + 1, 1)
    period = f"{this_month:%Y-%m}"

    code, _, err = await billing(
        settings, "bill", "--period", period, "--account", admin.account_id
    )
    assert code == 1
    assert "period_not_ended" in err

    code, out, err = await billing(
        settings, "bill", "--period", period, "--account", admin.account_id,
        "--as-of", f"{next_month}T00:05:00Z",
    )  # fmt: skip
    assert code == 0, err
    assert out.strip().startswith(f"{period}: invoiced 1, paid 1")
    invoice = await invoice_of(client, admin, this_month)
    assert (invoice["period_start"], invoice["status"]) == (str(this_month), "paid")
    # The server from its start to the month's end, rounded half-up to the cent; the support
    # plan ran for a moment only, under half a cent: no line.
    ends = datetime(next_month.year, next_month.month, 1, tzinfo=UTC)
    month = (ends - datetime(this_month.year, this_month.month, 1, tzinfo=UTC)).total_seconds()
    ran = (ends - started).total_seconds()  # whole seconds: started_at as printed
    cents = floor(Fraction(8000 * int(ran), int(month)) + Fraction(1, 2))
    [line] = invoice["lines"]
    assert (line["subscription_id"], line["plan_id"]) == (server["id"], "cloud_large")
    assert line["amount"] == invoice["total"] == f"{cents // 100}.{cents % 100:02d}"

    code, _, err = await billing(settings, "bill", "--period", period, "--as-of", "tomorrow")
    assert code == 2
    assert "ISO" in err
