"""Dunning: a failed collection is retried 1, 3 and 7 days after the first attempt, with the
account's payment method and card of that day; then the invoice is paid or uncollectible.
Card attempts with an unknown outcome are settled by the reconciler (SPEC §9, §11)."""

from datetime import timedelta

import httpx
from fastapi import FastAPI

from app.billing.run import MAX_ATTEMPTS
from app.kit.clock import ManualClock
from app.worker.reconcile import reconcile_pending
from tests.billing.conftest import (
    DECEMBER,
    JANUARY_1,
    bill,
    gateway_charges,
    invoice_of,
    retry,
    subscribe,
)
from tests.conftest import SignUp
from tests.money import (
    CHARGES_DECLINED,
    TIMEOUT_NOT_CHARGED,
    TIMEOUT_SUCCEEDED,
    VISA,
    add_card,
    balance,
    deposit,
    fund,
    ledger,
)


async def reconcile(app: FastAPI, clock: ManualClock) -> None:
    await reconcile_pending(app.state.database, app.state.gateway, clock, timedelta(0))


async def test_a_declined_card_is_retried_on_days_1_3_7_then_paid_or_uncollectible(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, clock: ManualClock
) -> None:
    replaces = await sign_up()  # puts a good card on file before the last retry
    never = await sign_up()
    for member in (replaces, never):
        await add_card(client, member, CHARGES_DECLINED)  # saves fine, every charge declined
        await subscribe(client, member, "cloud_large")

    clock.set(JANUARY_1)
    report = await bill(app, clock, DECEMBER, replaces, never)
    assert (report.invoiced, report.paid, report.retrying) == (2, 0, 2)
    schedule = ["2027-01-02T00:05:00Z", "2027-01-04T00:05:00Z", "2027-01-08T00:05:00Z"]
    for member in (replaces, never):
        invoice = await invoice_of(client, member)
        assert (invoice["status"], invoice["next_attempt_at"]) == ("open", schedule[0])

    # Nothing is due before day 1.
    clock.set(JANUARY_1 + timedelta(hours=23, minutes=59))
    assert (await retry(app, clock, replaces, never)).retrying == 0
    # Days 1 and 3 (the worker may come by a little late: the schedule stays put).
    for day, next_attempt in ((1, schedule[1]), (3, schedule[2])):
        clock.set(JANUARY_1 + timedelta(days=day, minutes=2))
        assert (await retry(app, clock, replaces, never)).retrying == 2
        assert (await retry(app, clock, replaces, never)).retrying == 0  # not twice
        for member in (replaces, never):
            invoice = await invoice_of(client, member)
            assert (invoice["status"], invoice["next_attempt_at"]) == ("open", next_attempt)

    await add_card(client, replaces, VISA)
    clock.set(JANUARY_1 + timedelta(days=7))
    report = await retry(app, clock, replaces, never)
    assert (report.paid, report.uncollectible) == (1, 1)

    paid = await invoice_of(client, replaces)
    assert (paid["status"], paid["paid_at"], paid["next_attempt_at"]) == (
        "paid",
        "2027-01-08T00:05:00Z",
        None,
    )
    assert (paid["card_brand"], paid["card_last4"]) == ("visa", "4242")
    assert [
        (a["number"], a["attempted_at"], a["outcome"], a["decline_code"], a["card_last4"])
        for a in paid["attempts"]
    ] == [
        (1, "2027-01-01T00:05:00Z", "declined", "generic_decline", "0341"),
        (2, "2027-01-02T00:07:00Z", "declined", "generic_decline", "0341"),
        (3, "2027-01-04T00:07:00Z", "declined", "generic_decline", "0341"),
        (4, "2027-01-08T00:05:00Z", "succeeded", None, "4242"),
    ]
    charges = await gateway_charges(app, paid)
    assert [c.status if c else None for c in charges] == [
        "declined",
        "declined",
        "declined",
        "succeeded",
        None,
    ]
    assert charges[3] is not None
    assert charges[3].amount_cents == 8000

    given_up = await invoice_of(client, never)
    assert (given_up["status"], given_up["next_attempt_at"], given_up["paid_at"]) == (
        "uncollectible",
        None,
        None,
    )
    assert [a["outcome"] for a in given_up["attempts"]] == ["declined"] * 4
    assert all(a["failure_code"] == "card_declined" for a in given_up["attempts"])

    # Later passes leave both alone.
    clock.set(JANUARY_1 + timedelta(days=20))
    assert str(await retry(app, clock, replaces, never)) == (
        "invoiced 0, paid 0, pending 0, retrying 0, uncollectible 0, errors 0"
    )
    assert (await invoice_of(client, never))["attempt_count"] == 4


async def test_a_balance_too_low_follows_the_same_schedule_and_pays_once_funded(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, clock: ManualClock
) -> None:
    admin = await sign_up()
    await fund(client, admin, "30.00")
    await subscribe(client, admin, "support")
    clock.set(JANUARY_1)
    await bill(app, clock, DECEMBER, admin)
    invoice = await invoice_of(client, admin)
    assert invoice["attempts"][0]["failure_code"] == "insufficient_funds"
    assert invoice["next_attempt_at"] == "2027-01-02T00:05:00Z"

    topped_up = await deposit(client, admin, "25.00")
    assert topped_up.status_code == 201
    clock.set(JANUARY_1 + timedelta(days=1))
    assert (await retry(app, clock, admin)).paid == 1
    assert await balance(client, admin) == "5.00"
    assert [(e["type"], e["amount"]) for e in await ledger(client, admin)] == [
        ("invoice", "-50.00"),
        ("deposit", "25.00"),
        ("deposit", "30.00"),
    ]


async def test_no_card_on_file_is_a_failed_attempt_and_a_card_added_pays_the_retry(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, clock: ManualClock
) -> None:
    admin = await sign_up()
    await subscribe(client, admin, "cloud_small")
    clock.set(JANUARY_1)
    await bill(app, clock, DECEMBER, admin)
    first = await invoice_of(client, admin)
    assert [(a["payment_method"], a["outcome"], a["failure_code"]) for a in first["attempts"]] == [
        ("card", "failed", "no_card_on_file")
    ]
    assert await gateway_charges(app, first) == [None, None]
    await add_card(client, admin)
    clock.set(JANUARY_1 + timedelta(days=1))
    assert (await retry(app, clock, admin)).paid == 1


async def test_a_timed_out_charge_is_pending_until_the_reconciler_settles_it_once(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, clock: ManualClock
) -> None:
    admin = await sign_up()
    await add_card(client, admin, TIMEOUT_SUCCEEDED)  # times out, but did charge
    await subscribe(client, admin, "support")
    clock.set(JANUARY_1)
    report = await bill(app, clock, DECEMBER, admin)
    assert (report.invoiced, report.pending) == (1, 1)
    pending = await invoice_of(client, admin)
    assert (pending["status"], pending["next_attempt_at"]) == ("open", None)
    assert pending["attempts"][0]["outcome"] == "pending"
    # While the outcome is unknown no other attempt is made, however late it gets.
    clock.set(JANUARY_1 + timedelta(days=2))
    assert (await retry(app, clock, admin)).pending == 0
    await reconcile(app, clock)
    await reconcile(app, clock)
    paid = await invoice_of(client, admin)
    assert (paid["status"], paid["attempt_count"]) == ("paid", 1)
    assert paid["attempts"][0]["outcome"] == "succeeded"
    assert paid["paid_at"] == "2027-01-01T00:05:00Z"  # when it was charged


async def test_a_charge_the_gateway_never_made_is_tried_again_at_once(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, clock: ManualClock
) -> None:
    admin = await sign_up()
    await add_card(client, admin, TIMEOUT_NOT_CHARGED)  # times out, and did not charge
    await subscribe(client, admin, "support")
    clock.set(JANUARY_1)
    assert (await bill(app, clock, DECEMBER, admin)).pending == 1
    await reconcile(app, clock)
    lost = await invoice_of(client, admin)
    assert lost["attempts"][0]["outcome"] == "failed"
    assert lost["attempts"][0]["failure_code"] == "charge_not_made"
    assert lost["next_attempt_at"] == "2027-01-01T00:05:00Z"
    await add_card(client, admin, VISA)
    assert (await retry(app, clock, admin)).paid == 1
    paid = await invoice_of(client, admin)
    assert [a["outcome"] for a in paid["attempts"]] == ["failed", "succeeded"]


async def test_a_gateway_that_keeps_losing_charges_cannot_keep_an_invoice_open_for_ever(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, clock: ManualClock
) -> None:
    admin = await sign_up()
    await add_card(client, admin, TIMEOUT_NOT_CHARGED)
    await subscribe(client, admin, "cloud_small")
    clock.set(JANUARY_1)
    await bill(app, clock, DECEMBER, admin)
    for _ in range(MAX_ATTEMPTS):
        await reconcile(app, clock)
        await retry(app, clock, admin)
    invoice = await invoice_of(client, admin)
    assert (invoice["status"], invoice["attempt_count"]) == ("uncollectible", MAX_ATTEMPTS)
    assert {a["failure_code"] for a in invoice["attempts"]} == {"charge_not_made"}
