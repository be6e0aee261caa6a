"""Automatic top-up (SPEC §14) under concurrency: debits crossing the threshold at once, two
workers and two reconcilers racing over the same top-ups, and many crossings against one
monthly limit. What must hold whatever the interleaving: at most one automatic deposit
pending per account, each credited at most once (and only when the card was charged), the
month's automatic deposits never past the limit, and books that balance.

Every assertion is scoped to the test's own accounts: the database is shared."""

import asyncio
from dataclasses import dataclass
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.finance.service import adjust_balance
from app.kit.errors import ApiError
from app.worker.runner import Worker
from tests.conftest import Member, SignUp, db_session, unique_email
from tests.finance.test_auto_top_up import automatic, drain, rule
from tests.money import (
    CHARGES_DECLINED,
    MASTERCARD,
    TIMEOUT_NOT_CHARGED,
    TIMEOUT_SUCCEEDED,
    VISA,
    add_card,
    balance,
    deposit,
    fund,
    order,
    settings,
)
from tests.smtp import SmtpServer
from tests.worker.conftest import drain_until, make_worker

ORDER_CENTS = 4_900  # ssl_dv, one year, paid from the balance


def cents(amount: str) -> int:
    return int(Decimal(amount) * 100)


@pytest.fixture
def worker(app: FastAPI, smtp_server: SmtpServer) -> Worker:
    return make_worker(app, smtp_server, reconcile_after_seconds=1.0)


@dataclass(frozen=True)
class TopUp:
    id: str
    status: str
    amount_cents: int
    failure_code: str | None


@dataclass(frozen=True)
class Books:
    """One account's money rows, read in one snapshot."""

    stored_cents: int
    ledger_sum_cents: int
    lowest_balance_after_cents: int
    # deposit id -> how many ledger entries credit it
    credits: dict[str, int]
    succeeded_deposits: set[str]
    top_ups: list[TopUp]


async def read_books(app: FastAPI, account_id: str) -> Books:
    async with db_session(app) as session:
        await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        params = {"account": account_id}
        stored = await session.scalar(
            text("SELECT balance_cents FROM account_balance WHERE account_id = :account"), params
        )
        ledger = (
            await session.execute(
                text(
                    "SELECT coalesce(sum(amount_cents), 0), coalesce(min(balance_after_cents), 0)"
                    " FROM ledger_entry WHERE account_id = :account"
                ),
                params,
            )
        ).one()
        credits = await session.execute(
            text(
                "SELECT deposit_id, count(*) FROM ledger_entry"
                " WHERE account_id = :account AND deposit_id IS NOT NULL GROUP BY deposit_id"
            ),
            params,
        )
        succeeded = await session.scalars(
            text("SELECT id FROM deposit WHERE account_id = :account AND status = 'succeeded'"),
            params,
        )
        top_ups = await session.execute(
            text(
                "SELECT id, status, amount_cents, failure_code FROM deposit"
                " WHERE account_id = :account AND source = 'auto_top_up' ORDER BY created_at"
            ),
            params,
        )
        return Books(
            stored_cents=stored or 0,
            ledger_sum_cents=int(ledger[0]),
            lowest_balance_after_cents=int(ledger[1]),
            credits={row[0]: row[1] for row in credits},
            succeeded_deposits=set(succeeded),
            top_ups=[TopUp(*row) for row in top_ups],
        )


async def assert_books_balance(app: FastAPI, client: httpx.AsyncClient, member: Member) -> Books:
    """Balance == sum of the ledger, never negative; each succeeded deposit credited exactly
    once and nothing else credited; at most one automatic deposit pending."""
    books = await read_books(app, member.account_id)
    assert books.stored_cents == books.ledger_sum_cents
    assert books.lowest_balance_after_cents >= 0
    assert books.credits == dict.fromkeys(books.succeeded_deposits, 1)
    assert len([t for t in books.top_ups if t.status == "pending"]) <= 1, books.top_ups
    assert cents(await balance(client, member)) == books.stored_cents
    return books


async def adjust(app: FastAPI, member: Member, amount_cents: int) -> bool:
    """An operator's adjustment (`billing adjust-balance`): False when a debit is refused."""
    try:
        await app.state.database.run(
            lambda unit: adjust_balance(unit, member.account_id, amount_cents, "concurrency test")
        )
    except ApiError as error:
        refusal = error.code
    else:
        return True
    assert refusal == "insufficient_funds"
    return False


async def lift_to(app: FastAPI, client: httpx.AsyncClient, member: Member, cents_: int) -> None:
    """Credit the balance back up to `cents_` (an adjustment: no card involved)."""
    short = cents_ - cents(await balance(client, member))
    if short > 0:
        assert await adjust(app, member, short)


async def queued_emails(app: FastAPI, account_id: str, kind: str) -> int:
    async with db_session(app) as session:
        count = await session.scalar(
            text(
                "SELECT count(*) FROM outbox_message WHERE topic = 'email'"
                " AND payload->>'kind' = :kind AND payload->>'account_id' = :account"
            ),
            {"kind": kind, "account": account_id},
        )
        return int(count or 0)


async def test_twenty_balance_orders_at_once_make_one_top_up_and_one_notice(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, worker: Worker
) -> None:
    admin = await sign_up()
    await fund(client, admin, "1020.00")
    await settings(client, admin, low_balance_threshold="1000.00")
    await rule(client, admin, threshold="1000.00", amount="200.00", monthly_limit="1000.00")

    placed = await asyncio.gather(*(order(client, admin) for _ in range(20)))
    assert [r.status_code for r in placed] == [201] * 20, [r.text for r in placed]

    [pending] = await automatic(client, admin)
    assert (pending["status"], pending["amount"]) == ("pending", "200.00")
    assert await balance(client, admin) == "40.00"  # 1020.00 - 20 x 49.00
    await assert_books_balance(app, client, admin)
    assert await queued_emails(app, admin.account_id, "low_balance") == 1

    await drain(worker)
    [made] = await automatic(client, admin)
    assert (made["status"], made["balance_after"]) == ("succeeded", "240.00")
    await assert_books_balance(app, client, admin)


async def test_orders_and_adjustments_crossing_at_once_while_one_is_pending_queue_nothing_more(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, worker: Worker
) -> None:
    admin = await sign_up()
    await fund(client, admin, "150.00")
    await rule(client, admin, threshold="100.00", amount="10.00", monthly_limit="1000.00")

    async def cross_at_once(*racing_workers: Worker) -> None:
        """From 150.00, three orders and three 1.00 adjustments at once take the balance to
        0.00: exactly one of them crosses 100.00, whichever it is."""
        await lift_to(app, client, admin, 15_000)
        assert cents(await balance(client, admin)) == 15_000
        before = (await read_books(app, admin.account_id)).top_ups
        credited_before = sum(t.amount_cents for t in before if t.status == "succeeded")
        results = await asyncio.gather(
            *(order(client, admin) for _ in range(3)),
            *(adjust(app, admin, -100) for _ in range(3)),
            *(w.deliver_due() for w in racing_workers),
        )
        orders, adjustments = results[:3], results[3:6]
        assert all(isinstance(r, httpx.Response) for r in orders)
        assert [r.status_code for r in orders if isinstance(r, httpx.Response)] == [201] * 3
        assert adjustments == [True] * 3
        books = await assert_books_balance(app, client, admin)
        # 150.00 debited, plus what the racing workers credited meanwhile.
        credited = sum(t.amount_cents for t in books.top_ups if t.status == "succeeded")
        assert books.stored_cents == credited - credited_before

    # Four crossings, none charged meanwhile: the first queues a top-up, the others nothing.
    for _ in range(4):
        await cross_at_once()
        [pending] = (await read_books(app, admin.account_id)).top_ups
        assert pending.status == "pending"

    # The worker settles it while the next crossing races it: one more at most, never two
    # pending at once, never a debit refused for it.
    await cross_at_once(worker)
    await drain(worker)
    books = await assert_books_balance(app, client, admin)
    assert 1 <= len(books.top_ups) <= 2
    assert {t.status for t in books.top_ups} == {"succeeded"}

    # Nothing pending now: the next crossing queues exactly one more.
    await cross_at_once()
    books = await assert_books_balance(app, client, admin)
    assert [t.status for t in books.top_ups][-1] == "pending"
    assert len([t for t in books.top_ups if t.status == "pending"]) == 1


@dataclass
class Racer:
    """An account whose top-ups the workers race over, and what its card does."""

    member: Member
    card: str
    orders: list[int]


async def test_two_workers_and_two_reconcilers_racing_settle_every_top_up_exactly_once(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, smtp_server: SmtpServer
) -> None:
    # A lease far shorter than a timed-out charge: while one worker waits on the gateway,
    # the other claims the same message again. (No webhook endpoints here to outlast.)
    workers = [
        make_worker(
            app,
            smtp_server,
            reconcile_after_seconds=1.0,
            outbox_lease_seconds=0.05,
            webhook_timeout_seconds=0.02,
        )
        for _ in range(2)
    ]
    racers: list[Racer] = []
    for card in (VISA, TIMEOUT_SUCCEEDED, TIMEOUT_NOT_CHARGED, CHARGES_DECLINED):
        member = await sign_up()
        await fund(client, member, "120.00")
        await rule(client, member, threshold="100.00", amount="10.00", monthly_limit="1000.00")
        await add_card(client, member, card)
        racers.append(Racer(member, card, []))

    async def cross(racer: Racer) -> None:
        """Cross 100.00 if the balance allows, then credit it back above."""
        placed = await order(client, racer.member)
        racer.orders.append(placed.status_code)
        await lift_to(app, client, racer.member, 12_000)

    async def deliver(worker: Worker) -> None:
        for _ in range(3):
            await worker.deliver_due()
            await asyncio.sleep(0.1)

    async def race(crossing: bool) -> None:
        await asyncio.gather(
            *(deliver(w) for w in workers),
            *(w.reconcile() for w in workers),
            *(cross(r) for r in racers if crossing),
        )
        for racer in racers:
            await assert_books_balance(app, client, racer.member)

    for _ in range(6):
        await race(crossing=True)

    async def unsettled() -> bool:
        for racer in racers:
            top_ups = (await read_books(app, racer.member.account_id)).top_ups
            if any(t.status == "pending" for t in top_ups):
                return True
        return False

    async with asyncio.timeout(20):
        while await unsettled():
            await race(crossing=False)
            await asyncio.sleep(0.1)

    by_card = {}
    for racer in racers:
        # A debit racing a settlement is never refused for it: paid, or too little money.
        assert set(racer.orders) <= {201, 402}, (racer.card, racer.orders)
        books = await assert_books_balance(app, client, racer.member)
        assert books.top_ups, racer.card
        by_card[racer.card] = (books, racer.member)

    visa, _ = by_card[VISA]
    assert {t.status for t in visa.top_ups} == {"succeeded"}
    # Timed out after the charge: credited once each, after reconciliation.
    charged, _ = by_card[TIMEOUT_SUCCEEDED]
    assert {t.status for t in charged.top_ups} == {"succeeded"}
    assert all(charged.credits[t.id] == 1 for t in charged.top_ups)
    # Timed out before the charge: failed, nothing credited, and the rule stays on.
    lost, lost_member = by_card[TIMEOUT_NOT_CHARGED]
    assert {(t.status, t.failure_code) for t in lost.top_ups} == {("failed", "charge_not_made")}
    assert not set(lost.credits) & {t.id for t in lost.top_ups}
    shown = (await client.get("/v1/finance/settings", headers=lost_member.headers)).json()
    assert shown["auto_top_up"]["status"] == "active"
    # Declined: one top-up, failed; suspended once (one email), and no retry charged.
    declined, declined_member = by_card[CHARGES_DECLINED]
    assert [(t.status, t.failure_code) for t in declined.top_ups] == [("failed", "card_declined")]
    shown = (await client.get("/v1/finance/settings", headers=declined_member.headers)).json()
    assert (shown["auto_top_up"]["status"], shown["auto_top_up"]["suspended_reason"]) == (
        "suspended",
        "card_declined",
    )
    assert await queued_emails(app, declined_member.account_id, "auto_top_up_suspended") == 1


async def test_many_crossings_never_pass_the_monthly_limit_and_every_one_still_notifies(
    app: FastAPI,
    client: httpx.AsyncClient,
    sign_up: SignUp,
    worker: Worker,
    smtp_server: SmtpServer,
) -> None:
    admin = await sign_up()
    await fund(client, admin, "120.00")
    watcher = unique_email("watcher")
    await settings(client, admin, low_balance_threshold="100.00", notification_emails=[watcher])
    # Room for three 10.00 top-ups in 35.00; a fourth would make 40.00.
    await rule(client, admin, threshold="100.00", amount="10.00", monthly_limit="35.00")

    async def lift_above_threshold() -> None:
        """An API deposit back into [100.00, 149.00): the next order crosses again."""
        short = 10_000 - cents(await balance(client, admin))
        if short > 0:
            amount = Decimal(max(short, 1_000)) / 100
            assert (await deposit(client, admin, f"{amount:.2f}")).status_code == 201

    async def month_total() -> int:
        top_ups = (await read_books(app, admin.account_id)).top_ups
        return sum(t.amount_cents for t in top_ups if t.status in ("pending", "succeeded"))

    crossings = 0
    for crossing in range(12):
        await lift_above_threshold()
        declining = crossing == 1
        if declining:  # this one is declined: a failed top-up does not use up the limit
            await add_card(client, admin, CHARGES_DECLINED)
        # The crossing races a worker pass (settling nothing, or the top-up just queued).
        placed, _ = await asyncio.gather(order(client, admin), worker.deliver_due())
        assert placed.status_code == 201, placed.text
        crossings += 1
        assert await month_total() <= 3_500
        await drain(worker)
        assert await month_total() <= 3_500
        await assert_books_balance(app, client, admin)
        if declining:
            await add_card(client, admin, VISA)
            assert (await rule(client, admin, "100.00", "10.00", "35.00"))["status"] == "active"

    top_ups = (await read_books(app, admin.account_id)).top_ups
    assert [(t.status, t.amount_cents) for t in top_ups] == [
        ("succeeded", 1_000),
        ("failed", 1_000),
        ("succeeded", 1_000),
        ("succeeded", 1_000),
    ]
    # The limit reached is no suspension: the rule is on, it just has no room this month.
    shown = (await client.get("/v1/finance/settings", headers=admin.headers)).json()
    assert shown["auto_top_up"]["status"] == "active"

    # Every crossing still sent its low-balance notice, with or without a top-up.
    def notices() -> int:
        return len([m for m in smtp_server.inbox.to(watcher) if "Low balance" in m["Subject"]])

    await drain_until(worker, lambda: notices() >= crossings)
    assert notices() == crossings

    # A higher limit makes room again: the next crossing tops up, to exactly the new limit.
    await rule(client, admin, threshold="100.00", amount="10.00", monthly_limit="40.00")
    await lift_above_threshold()
    assert (await order(client, admin)).status_code == 201
    await drain(worker)
    assert await month_total() == 4_000
    await lift_above_threshold()
    assert (await order(client, admin)).status_code == 201
    await drain(worker)
    assert await month_total() == 4_000
    await assert_books_balance(app, client, admin)


async def test_a_top_up_queued_before_the_card_was_removed_is_not_charged_to_the_next_card(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, worker: Worker
) -> None:
    """The removal wins its race with the worker: the rule is suspended (SPEC §14: "until
    the settings are saved again"), so the top-up it had queued must not be charged to a
    card added afterwards, before anyone saved the settings again."""
    admin = await sign_up()
    await fund(client, admin, "120.00")
    await rule(client, admin)
    assert (await order(client, admin)).status_code == 201  # 71.00: queues 200.00
    [queued] = await automatic(client, admin)
    assert queued["status"] == "pending"

    removed = await client.delete("/v1/account/card", headers=admin.headers)
    assert removed.status_code == 204, removed.text
    await add_card(client, admin, VISA)
    shown = (await client.get("/v1/finance/settings", headers=admin.headers)).json()
    assert shown["auto_top_up"]["status"] == "suspended"

    await drain(worker)
    [settled] = await automatic(client, admin)
    assert (settled["status"], settled["failure_code"]) == ("failed", "auto_top_up_not_active")
    assert await balance(client, admin) == "71.00"
    await assert_books_balance(app, client, admin)


async def test_a_card_removed_while_the_worker_charges_the_top_up_never_lets_the_next_one_pay(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, worker: Worker
) -> None:
    """The removal and the worker's charge race, on several accounts at once: the old card
    is charged (the charge began first) or nothing is; a card added afterwards never is."""
    admins = [await sign_up() for _ in range(4)]
    for admin in admins:
        await fund(client, admin, "120.00")  # the VISA ending 4242
        await rule(client, admin)
        assert (await order(client, admin)).status_code == 201  # 71.00: queues 200.00

    async def remove_card(admin: Member) -> None:
        removed = await client.delete("/v1/account/card", headers=admin.headers)
        assert removed.status_code == 204, removed.text

    await asyncio.gather(worker.deliver_due(), *(remove_card(admin) for admin in admins))
    for admin in admins:
        await add_card(client, admin, MASTERCARD)
    await drain(worker)

    for admin in admins:
        [top_up] = await automatic(client, admin)
        shown = (await client.get("/v1/finance/settings", headers=admin.headers)).json()
        assert shown["auto_top_up"]["suspended_reason"] == "no_card_on_file"
        if top_up["status"] == "succeeded":
            async with db_session(app) as session:
                charged = await session.scalar(
                    text("SELECT card_last4 FROM deposit WHERE id = :id"), {"id": top_up["id"]}
                )
            assert charged == "4242"  # the card on file when the charge began
            assert await balance(client, admin) == "271.00"
        else:  # seen suspended, or seen active and then the card gone
            assert top_up["status"] == "failed", top_up
            assert top_up["failure_code"] in ("auto_top_up_not_active", "no_card_on_file")
            assert await balance(client, admin) == "71.00"
        await assert_books_balance(app, client, admin)
