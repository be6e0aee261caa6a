"""The billing run over month boundaries (in arrears: each month once it has ended), and its
exactly-once guarantees: two runs at once, a run killed mid-way then run again, and the
worker's pass (SPEC §11). Proration to the cent is in test_arrears.py."""

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from app.billing.run import create_invoices
from app.kit.clock import ManualClock
from app.kit.errors import ApiError
from app.worker.reconcile import reconcile_pending
from app.worker.runner import Worker
from tests.billing.conftest import (
    DECEMBER,
    DECEMBER_1,
    JANUARY_1,
    NOVEMBER,
    RecordingGateway,
    bill,
    cancel,
    gateway_charges,
    invoice_of,
    invoices_of,
    retry,
    subscribe,
)
from tests.conftest import Member, SignUp, db_session
from tests.money import VISA, add_card, balance, deposit, fund, ledger, settings


async def test_runs_over_month_boundaries_bill_each_account_what_it_ran_the_month_before(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, clock: ManualClock
) -> None:
    by_card = await sign_up()  # the default of a new account: the card
    await add_card(client, by_card, VISA)
    by_balance = await sign_up()
    await fund(client, by_balance, "100.00")
    short = await sign_up()  # pays from a balance too low
    await fund(client, short, "10.00")
    leaving = await sign_up()
    await add_card(client, leaving)
    late = await sign_up()
    await add_card(client, late)

    # From 2026-11-14 10:00: 1,432,800 s of November's 2,592,000.
    await subscribe(client, by_card, "cloud_small")
    await subscribe(client, by_card, "support")
    await subscribe(client, by_balance, "cloud_large")
    await subscribe(client, short, "support")
    gone = await subscribe(client, leaving, "cloud_large")
    staying = await subscribe(client, leaving, "cloud_small")
    clock.set(DECEMBER_1 - timedelta(days=11))  # 2026-11-20 00:05: 482,700 s after it started
    assert (await cancel(client, leaving, gone))["ended_at"] == "2026-11-20T00:05:00Z"
    clock.set(DECEMBER_1 - timedelta(minutes=10))
    await subscribe(client, late, "cloud_small")  # 5 minutes of November: 0.23 cents
    everyone = (by_card, by_balance, short, leaving, late)

    # November has not ended: nothing is billed before it has.
    with pytest.raises(ApiError) as refused:
        await bill(app, clock, NOVEMBER, *everyone)
    assert refused.value.code == "period_not_ended"
    assert [await invoices_of(client, member) for member in everyone] == [[]] * 5

    clock.set(DECEMBER_1)
    report = await bill(app, clock, NOVEMBER, *everyone)
    # late's 5 minutes round to 0.00: no line, so no invoice.
    assert (report.invoiced, report.paid, report.retrying, report.uncollectible) == (4, 3, 1, 0)
    assert await invoices_of(client, late) == []
    clock.advance(timedelta(days=9))
    late_again = await subscribe(client, late, "support")  # from 2026-12-10 00:05

    def amounts(invoice: dict[str, Any]) -> list[tuple[str, str]]:
        return [(line["plan_id"], line["amount"]) for line in invoice["lines"]]

    # 2000 x 1,432,800 / 2,592,000 = 1105.56 cents; 5000 x ... = 2763.89; 8000 x ... = 4422.22
    card_invoice = await invoice_of(client, by_card, NOVEMBER)
    assert amounts(card_invoice) == [("cloud_small", "11.06"), ("support", "27.64")]
    assert (card_invoice["status"], card_invoice["total"]) == ("paid", "38.70")
    assert (card_invoice["payment_method"], card_invoice["card_last4"]) == ("card", "4242")
    charge, none = await gateway_charges(app, card_invoice)
    assert charge is not None
    assert (charge.status, charge.amount_cents) == ("succeeded", 3870)
    assert none is None
    assert [e["type"] for e in await ledger(client, by_card)] == []

    balance_invoice = await invoice_of(client, by_balance, NOVEMBER)
    assert (balance_invoice["status"], balance_invoice["payment_method"]) == ("paid", "balance")
    assert balance_invoice["total"] == "44.22"
    assert await gateway_charges(app, balance_invoice) == [None, None]
    debit, _ = await ledger(client, by_balance)
    assert (debit["type"], debit["amount"], debit["balance_after"]) == (
        "invoice",
        "-44.22",
        "55.78",
    )
    assert debit["invoice_id"] == balance_invoice["id"]
    assert debit["deposit_id"] is debit["order_id"] is None

    short_invoice = await invoice_of(client, short, NOVEMBER)
    assert (short_invoice["status"], short_invoice["total"]) == ("open", "27.64")
    [attempt] = short_invoice["attempts"]
    assert (attempt["payment_method"], attempt["outcome"]) == ("balance", "failed")
    assert attempt["failure_code"] == "insufficient_funds"
    assert short_invoice["next_attempt_at"] == "2026-12-02T00:05:00Z"
    assert await balance(client, short) == "10.00"

    # The canceled server for the 482,700 s it ran: 8000 x 482,700 / 2,592,000 = 1489.81.
    leaving_invoice = await invoice_of(client, leaving, NOVEMBER)
    assert [line["subscription_id"] for line in leaving_invoice["lines"]] == [
        gone["id"],
        staying["id"],
    ]
    assert amounts(leaving_invoice) == [("cloud_large", "14.90"), ("cloud_small", "11.06")]
    assert leaving_invoice["total"] == "25.96"

    # January 1st bills December: whole months at their prices, the canceled server not at
    # all, and the support plan from 2026-12-10 00:05 for 1,900,500 s of 2,678,400
    # (5000 x 1,900,500 / 2,678,400 = 3547.83 cents).
    clock.set(JANUARY_1)
    report = await bill(app, clock, DECEMBER, *everyone)
    assert report.invoiced == 5
    assert (await invoice_of(client, by_card))["total"] == "70.00"
    december = await invoice_of(client, late)
    assert amounts(december) == [("cloud_small", "20.00"), ("support", "35.48")]
    assert december["lines"][1]["subscription_id"] == late_again["id"]
    assert december["total"] == "55.48"
    assert amounts(await invoice_of(client, leaving)) == [("cloud_small", "20.00")]
    assert await balance(client, by_balance) == "55.78"  # too little for 80.00: untouched
    assert (await invoice_of(client, by_balance))["status"] == "open"
    assert (await invoice_of(client, short))["total"] == "50.00"
    assert [i["period_start"] for i in await invoices_of(client, by_card)] == [
        "2026-12-01",
        "2026-11-01",
    ]


async def test_a_run_again_bills_nothing_twice(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, clock: ManualClock
) -> None:
    admin = await sign_up()
    await fund(client, admin, "100.00")
    await subscribe(client, admin, "support")
    clock.set(JANUARY_1)
    first = await bill(app, clock, DECEMBER, admin)
    clock.advance(timedelta(hours=1))
    again = await bill(app, clock, DECEMBER, admin)
    assert (first.invoiced, first.paid) == (1, 1)
    assert (again.invoiced, again.paid) == (0, 0)
    assert len(await invoices_of(client, admin)) == 1
    assert [e["type"] for e in await ledger(client, admin)] == ["invoice", "deposit"]


async def members_paying_every_way(client: httpx.AsyncClient, sign_up: SignUp) -> list[Member]:
    members = []
    for index in range(6):
        member = await sign_up()
        if index % 2:
            await fund(client, member, "200.00")
        else:
            await add_card(client, member)
        await subscribe(client, member, "cloud_small")
        await subscribe(client, member, "support")
        members.append(member)
    return members


async def assert_billed_once(
    app: FastAPI, client: httpx.AsyncClient, members: list[Member], charged_keys: list[str]
) -> None:
    """One paid invoice of 70.00 per account, paid by one ledger debit or one charge."""
    for index, member in enumerate(members):
        [invoice] = await invoices_of(client, member)
        assert (invoice["status"], invoice["total"], invoice["attempt_count"]) == (
            "paid",
            "70.00",
            1,
        )
        debits = [e for e in await ledger(client, member) if e["type"] == "invoice"]
        if index % 2:
            assert [d["invoice_id"] for d in debits] == [invoice["id"]]
            assert await balance(client, member) == "130.00"
        else:
            assert debits == []
            key = f"invoice:{invoice['id']}:attempt:1"
            assert charged_keys.count(key) == 1
            charge, none = await gateway_charges(app, invoice)
            assert charge is not None
            assert charge.status == "succeeded"
            assert none is None


async def card_subscribers(
    client: httpx.AsyncClient, sign_up: SignUp, plan_id: str, count: int = 3
) -> list[Member]:
    members = []
    for _ in range(count):
        member = await sign_up()
        await add_card(client, member)
        await subscribe(client, member, plan_id)
        members.append(member)
    return members


async def test_two_runs_at_once_bill_each_account_and_period_once(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, clock: ManualClock
) -> None:
    members = await members_paying_every_way(client, sign_up)
    clock.set(JANUARY_1)
    gateway = RecordingGateway(app.state.gateway)
    first, second, third = await asyncio.gather(
        bill(app, clock, DECEMBER, *members, gateway=gateway),
        bill(app, clock, DECEMBER, *members, gateway=gateway),
        bill(app, clock, DECEMBER, *members, gateway=gateway),
    )
    assert first.invoiced + second.invoiced + third.invoiced == 6
    assert first.paid + second.paid + third.paid == 6
    assert len(gateway.charged_keys) == 3
    await assert_billed_once(app, client, members, gateway.charged_keys)


async def test_the_database_refuses_a_second_invoice_for_an_account_and_period(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, clock: ManualClock
) -> None:
    admin = await sign_up()
    await subscribe(client, admin)
    clock.set(JANUARY_1)
    assert await create_invoices(app.state.database, clock, DECEMBER, [admin.account_id]) == 1
    async with db_session(app) as session:
        with pytest.raises(IntegrityError, match="uq_invoice_account_id_period_start"):
            await session.execute(
                text(
                    "INSERT INTO invoice (id, account_id, period_start, status, total_cents,"
                    " issued_at) VALUES ('inv_twice', :account, '2026-12-01', 'open', 2000, now())"
                ),
                {"account": admin.account_id},
            )


async def test_a_run_killed_mid_way_then_run_again_charges_every_invoice_once(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, clock: ManualClock
) -> None:
    members = await card_subscribers(client, sign_up, "cloud_large")
    clock.set(JANUARY_1)
    # The run is killed as it is about to charge its second invoice: one paid, one attempt
    # committed as pending whose charge never left, one invoice not attempted at all.
    crashing = RecordingGateway(app.state.gateway, hang_on=2)
    run = asyncio.create_task(bill(app, clock, DECEMBER, *members, gateway=crashing))
    await crashing.hanging.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    before = [await invoice_of(client, member) for member in members]
    assert sorted(i["attempt_count"] for i in before) == [0, 1, 1]
    assert sorted(i["status"] for i in before) == ["open", "open", "paid"]

    # Restarted: the invoice with no attempt is collected; the one in flight is not touched
    # until the reconciler finds out that its charge never happened.
    clock.advance(timedelta(minutes=5))
    rerun = RecordingGateway(app.state.gateway)
    report = await bill(app, clock, DECEMBER, *members, gateway=rerun)
    assert (report.invoiced, report.paid) == (0, 1)
    await reconcile_pending(app.state.database, app.state.gateway, clock, timedelta(0))
    stuck = [
        i
        for i in await asyncio.gather(*(invoice_of(client, m) for m in members))
        if i["status"] == "open"
    ]
    [stuck_invoice] = stuck
    assert stuck_invoice["attempts"][0]["failure_code"] == "charge_not_made"
    assert stuck_invoice["next_attempt_at"] == "2027-01-01T00:10:00Z"  # at once, not day 1
    report = await bill(app, clock, DECEMBER, *members, gateway=rerun)
    assert report.paid == 1

    for member in members:
        invoice = await invoice_of(client, member)
        assert invoice["status"] == "paid"
        charges = await gateway_charges(app, invoice)
        assert [c.status if c else None for c in charges].count("succeeded") == 1
        assert charges[-1] is None
    assert len(set(crashing.charged_keys + rerun.charged_keys)) == 4


async def test_an_unexpected_error_on_one_invoice_does_not_hold_up_the_others(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, clock: ManualClock
) -> None:
    members = await card_subscribers(client, sign_up, "support")
    clock.set(JANUARY_1)
    broken = RecordingGateway(app.state.gateway, raise_on=1)
    report = await bill(app, clock, DECEMBER, *members, gateway=broken)
    assert (report.invoiced, report.paid, report.errors) == (3, 2, 1)
    # Its attempt was committed as pending: the reconciler finds no charge, and the next
    # pass charges it.
    await reconcile_pending(app.state.database, app.state.gateway, clock, timedelta(0))
    assert (await bill(app, clock, DECEMBER, *members)).paid == 1
    statuses = [(await invoice_of(client, member))["status"] for member in members]
    assert statuses == ["paid"] * 3


async def test_a_run_that_made_invoices_then_died_leaves_them_to_the_next_run(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, clock: ManualClock
) -> None:
    members = await members_paying_every_way(client, sign_up)
    clock.set(JANUARY_1)
    # Only the first phase ran: invoices made, nothing collected.
    made = await create_invoices(
        app.state.database, clock, DECEMBER, [m.account_id for m in members]
    )
    assert made == 6
    assert {(await invoice_of(client, m))["attempt_count"] for m in members} == {0}
    clock.advance(timedelta(minutes=30))
    gateway = RecordingGateway(app.state.gateway)
    first, second = await asyncio.gather(
        bill(app, clock, DECEMBER, *members, gateway=gateway),
        bill(app, clock, DECEMBER, *members, gateway=gateway),
    )
    assert first.invoiced == second.invoiced == 0
    assert first.paid + second.paid == 6
    await assert_billed_once(app, client, members, gateway.charged_keys)


async def test_a_worker_pass_bills_the_month_just_ended_and_makes_due_retries(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, clock: ManualClock
) -> None:
    admin = await sign_up()
    await add_card(client, admin)
    await subscribe(client, admin, "cloud_small")
    worker = Worker(app.state.settings, app.state.database, app.state.gateway, clock=clock)
    clock.set(DECEMBER_1 - timedelta(hours=1))
    await worker.bill()  # November has not ended: nothing yet, of any month
    assert await invoices_of(client, admin) == []

    clock.set(JANUARY_1 + timedelta(hours=3))
    first = await worker.bill()  # December; not January, which has only begun
    assert first.invoiced >= 1
    [invoice] = await invoices_of(client, admin)
    assert (invoice["period_start"], invoice["period_end"]) == ("2026-12-01", "2026-12-31")
    assert (invoice["status"], invoice["total"]) == ("paid", "20.00")
    assert invoice["issued_at"] == "2027-01-01T03:05:00Z"
    clock.advance(timedelta(minutes=5))
    await worker.bill()  # the next pass: nothing twice
    assert len(await invoices_of(client, admin)) == 1
    assert (await invoice_of(client, admin))["attempt_count"] == 1


async def test_settings_changed_between_runs_are_used_by_the_next_attempt(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, clock: ManualClock
) -> None:
    admin = await sign_up()
    await subscribe(client, admin, "support")
    await add_card(client, admin)
    await settings(client, admin, balance_payments_enabled=True, default_payment_method=None)
    clock.set(JANUARY_1)
    await bill(app, clock, DECEMBER, admin)
    invoice = await invoice_of(client, admin)
    assert invoice["attempts"][0]["failure_code"] == "payment_method_required"
    assert invoice["status"] == "open"
    paid = await deposit(client, admin, "60.00")
    assert paid.status_code == 201
    await settings(client, admin, default_payment_method="balance")
    clock.set(JANUARY_1 + timedelta(days=1))
    report = await retry(app, clock, admin)
    assert report.paid == 1
    assert await balance(client, admin) == "10.00"
