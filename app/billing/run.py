"""The billing run: once a month has ended, one invoice per account for it (in arrears: each
subscription's line is what it ran of the month, prorated to the cent), collected from the
account's default payment method, and retried on days 1, 3 and 7 after the first attempt when
that fails.

Exactly once, however many runs overlap or restart:
- an invoice is inserted with ON CONFLICT (account_id, period_start) DO NOTHING: the unique
  constraint, not a check in code, keeps a period from being billed twice;
- an attempt is claimed with one conditional UPDATE of a due invoice that also clears
  `next_attempt_at`: one run makes attempt n (the attempt's key, invoice and number, backs
  that up), and no other attempt is made while it is in flight;
- from the balance, the attempt is a ledger debit in the claim's own transaction (a unique
  index debits an invoice once); by card, it follows the two phases of a deposit: the
  pending attempt is committed, the card is charged outside any transaction under
  `invoice:{id}:attempt:{n}`, and settle_attempt() records the answer once. An unknown
  outcome stays pending until the reconciler asks the gateway.

A new invoice is due at once (`next_attempt_at` = its issue time), so a run that died after
making invoices leaves them to the next run, or the worker's next pass, to collect.
"""

import itertools
import logging
from collections.abc import Collection
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import selectinload

from app.accounts.models import Account
from app.billing.models import (
    AttemptOutcome,
    Invoice,
    InvoiceAttempt,
    InvoiceLine,
    InvoiceStatus,
    Plan,
    Subscription,
)
from app.billing.periods import (
    active_in,
    period_end_at,
    period_name,
    period_start_at,
    prorated_cents,
)
from app.billing.schemas import invoice_out
from app.finance.ledger import post_entry
from app.finance.models import LedgerEntryType
from app.gateway.base import Charge, Gateway
from app.kit import payments
from app.kit.clock import Clock
from app.kit.db import Database, UnitOfWork
from app.kit.errors import ApiError
from app.kit.ids import new_id
from app.payment_methods.models import Card, PaymentMethod
from app.payment_methods.settings import load_payment_settings
from app.webhooks.events import queue_event
from app.webhooks.models import EventType

logger = logging.getLogger(__name__)

# After the first attempt fails, retry this long after it; after the last retry fails, the
# invoice is uncollectible. A late retry does not move the ones after it.
RETRY_DELAYS = (timedelta(days=1), timedelta(days=3), timedelta(days=7))
# A charge the gateway never made (a crash, or a lost request the reconciler found no trace
# of) is our failure, not the customer's: it is tried again at once and does not move the
# schedule on. Still, a gateway that keeps losing charges cannot keep an invoice open for
# ever: after this many attempts in all, it is uncollectible.
CHARGE_NOT_MADE = "charge_not_made"
MAX_ATTEMPTS = 8
# The outcomes of an attempt that did not pay the invoice.
_FAILED = (AttemptOutcome.DECLINED, AttemptOutcome.FAILED)


@dataclass
class BillingReport:
    invoiced: int = 0
    paid: int = 0
    pending: int = 0  # a card charge with no answer yet: for the reconciler
    retrying: int = 0  # the attempt failed; another is scheduled
    uncollectible: int = 0
    errors: int = 0  # attempts that broke off on our side (logged)

    def count(self, invoice: Invoice) -> None:
        if invoice.status == InvoiceStatus.PAID:
            self.paid += 1
        elif invoice.status == InvoiceStatus.UNCOLLECTIBLE:
            self.uncollectible += 1
        elif invoice.next_attempt_at is None:
            self.pending += 1
        else:
            self.retrying += 1

    def __str__(self) -> str:
        return ", ".join(f"{name} {count}" for name, count in asdict(self).items())


async def bill_period(
    database: Database,
    gateway: Gateway,
    clock: Clock,
    period: date,
    *,
    account_ids: Collection[str] | None = None,
) -> BillingReport:
    """Invoice every account for `period` (once), a month that has ended on `clock`, and
    collect that period's due invoices. `account_ids` narrows the run to some accounts (tests
    and one-off operator runs)."""
    ends = period_end_at(period)
    if ends > clock.now():
        raise ApiError(
            "period_not_ended",
            422,
            f"The period {period:%Y-%m} has not ended yet: it ends at {ends:%Y-%m-%dT%H:%M:%SZ}."
            " Months are billed in arrears, once they have ended.",
        )
    report = BillingReport(invoiced=await create_invoices(database, clock, period, account_ids))
    await collect_due(database, gateway, clock, report, period=period, account_ids=account_ids)
    return report


@dataclass(frozen=True)
class _Line:
    subscription_id: str
    plan: Plan
    amount_cents: int
    description: str


async def create_invoices(
    database: Database, clock: Clock, period: date, account_ids: Collection[str] | None = None
) -> int:
    """Make the missing invoices of `period`, one transaction per account; returns how many
    this call made (an invoice another run made first is not counted).

    A line per subscription that ran in the period (from its `billed_from`), for the part it
    ran; a line that rounds to 0.00 is left out, and an account with no line gets no invoice.
    Only for a period that has ended: cancellations end a subscription at the moment they are
    made, so what a subscription ran in a past month no longer changes."""
    starts, ends = period_start_at(period), period_end_at(period)
    query = (
        select(Subscription, Plan)
        .join(Plan, Plan.id == Subscription.plan_id)
        .where(
            Subscription.billed_from < ends,
            or_(Subscription.ended_at.is_(None), Subscription.ended_at > starts),
            ~exists().where(
                Invoice.account_id == Subscription.account_id, Invoice.period_start == period
            ),
        )
        .order_by(Subscription.account_id, Subscription.started_at, Subscription.created_at)
    )
    if account_ids is not None:
        query = query.where(Subscription.account_id.in_(account_ids))
    rows = await database.run(lambda unit: _all(unit, query))
    made = 0
    for account_id, subscriptions in itertools.groupby(rows, key=lambda row: row[0].account_id):
        lines = [
            line
            for subscription, plan in subscriptions
            if (line := _line(period, subscription, plan)) is not None
        ]
        if not lines:
            continue
        if await database.run(
            lambda unit: _create_invoice(unit, clock, account_id, period, lines)  # noqa: B023
        ):
            made += 1
    return made


def _line(period: date, subscription: Subscription, plan: Plan) -> _Line | None:
    """What `subscription` owes for `period`; None when that is nothing (under half a cent)."""
    active = active_in(period, subscription.billed_from, subscription.ended_at)
    if active is None:
        return None
    amount = prorated_cents(plan.monthly_price_cents, period, *active)
    if amount == 0:
        return None
    description = f"{plan.name} for {period_name(period)}"
    if active != (period_start_at(period), period_end_at(period)):
        start, end = active
        description += f", {start:%Y-%m-%d %H:%M:%S} to {end:%Y-%m-%d %H:%M:%S} UTC"
    return _Line(subscription.id, plan, amount, description)


async def _all(unit: UnitOfWork, query: Any) -> list[Any]:
    return list((await unit.session.execute(query)).all())


async def _create_invoice(
    unit: UnitOfWork, clock: Clock, account_id: str, period: date, lines: list[_Line]
) -> bool:
    session = unit.session
    now = clock.now()
    invoice_id = await session.scalar(
        insert(Invoice)
        .values(
            id=new_id("inv"),
            account_id=account_id,
            period_start=period,
            status=InvoiceStatus.OPEN,
            total_cents=sum(line.amount_cents for line in lines),
            attempt_count=0,
            issued_at=now,
            next_attempt_at=now,
        )
        .on_conflict_do_nothing(index_elements=[Invoice.account_id, Invoice.period_start])
        .returning(Invoice.id)
    )
    if invoice_id is None:  # another run billed this account and period first
        return False
    session.add_all(
        InvoiceLine(
            invoice_id=invoice_id,
            position=position,
            subscription_id=line.subscription_id,
            plan_id=line.plan.id,
            description=line.description,
            amount_cents=line.amount_cents,
        )
        for position, line in enumerate(lines, start=1)
    )
    await session.flush()
    return True


async def collect_due(
    database: Database,
    gateway: Gateway,
    clock: Clock,
    report: BillingReport | None = None,
    *,
    period: date | None = None,
    account_ids: Collection[str] | None = None,
) -> BillingReport:
    """Attempt every open invoice whose next attempt is due (of one period, or of all)."""
    report = report or BillingReport()
    query = (
        select(Invoice.id)
        .where(Invoice.status == InvoiceStatus.OPEN, Invoice.next_attempt_at <= clock.now())
        .order_by(Invoice.next_attempt_at, Invoice.id)
    )
    if period is not None:
        query = query.where(Invoice.period_start == period)
    if account_ids is not None:
        query = query.where(Invoice.account_id.in_(account_ids))
    due = [row[0] for row in await database.run(lambda unit: _all(unit, query))]
    for invoice_id in due:
        try:
            invoice = await database.run(
                lambda unit: collect_invoice(unit, gateway, clock, invoice_id)  # noqa: B023
            )
        except Exception:
            # One invoice must not hold up the others. What its attempt committed stands: a
            # claim that rolled back leaves it due, a card attempt left pending is the
            # reconciler's.
            logger.exception("invoice %s: attempt failed", invoice_id)
            report.errors += 1
            continue
        if invoice is not None:
            report.count(invoice)
    return report


def attempt_charge_key(invoice_id: str, number: int) -> str:
    return f"invoice:{invoice_id}:attempt:{number}"


@dataclass(frozen=True)
class _Claim:
    invoice: Invoice
    number: int
    card_token: str | None  # set when the attempt is a card charge still to make


async def collect_invoice(
    unit: UnitOfWork, gateway: Gateway, clock: Clock, invoice_id: str
) -> Invoice | None:
    """Make the next attempt at a due invoice; None when it is not due (any more)."""
    claim = await _claim_attempt(unit, clock, invoice_id)
    if claim is None or claim.card_token is None:
        return claim.invoice if claim else None
    charge = payments.CardCharge(
        _attempt_ref(invoice_id, claim.number),
        attempt_charge_key(invoice_id, claim.number),
        claim.card_token,
        claim.invoice.total_cents,
        f"Invoice {invoice_id}",
    )
    settled = await payments.charge_pending(unit, gateway, charge, _settle_with(clock))
    return settled or claim.invoice


def _attempt_ref(invoice_id: str, number: int) -> str:
    return f"{invoice_id}/{number}"


def _settle_with(clock: Clock) -> payments.Settle[Invoice]:
    async def settle(
        unit: UnitOfWork, ref: str, charge: Charge | None, decline_code: str | None
    ) -> Invoice:
        invoice_id, number = ref.rsplit("/", 1)
        return await settle_attempt(unit, clock, invoice_id, int(number), charge, decline_code)

    return settle


async def _claim_attempt(unit: UnitOfWork, clock: Clock, invoice_id: str) -> _Claim | None:
    session = unit.session
    now = clock.now()
    # Row locks make a second claimer wait and then find next_attempt_at cleared: one wins.
    invoice = await session.scalar(
        update(Invoice)
        .where(
            Invoice.id == invoice_id,
            Invoice.status == InvoiceStatus.OPEN,
            Invoice.next_attempt_at <= now,
        )
        .values(attempt_count=Invoice.attempt_count + 1, next_attempt_at=None)
        .returning(Invoice),
        execution_options={"populate_existing": True},
    )
    if invoice is None:
        return None
    account = await session.get_one(Account, invoice.account_id)
    settings = await load_payment_settings(unit, account.id, account.email)
    method = settings.default_payment_method
    attempt = InvoiceAttempt(
        invoice_id=invoice.id,
        number=invoice.attempt_count,
        attempted_at=now,
        payment_method=method,
        amount_cents=invoice.total_cents,
        outcome=AttemptOutcome.PENDING,
    )
    invoice.payment_method = method
    invoice.card_brand = invoice.card_last4 = None  # of this attempt, if by card
    session.add(attempt)
    card_token = None
    if method is None:
        _fail(attempt, now, "payment_method_required")
    elif not settings.enabled(method):
        _fail(attempt, now, "payment_method_disabled")
    elif method == PaymentMethod.BALANCE:
        posting = await post_entry(
            unit,
            account_id=invoice.account_id,
            type=LedgerEntryType.INVOICE,
            amount_cents=-invoice.total_cents,
            invoice_id=invoice.id,
            description=f"Invoice {invoice.id}: {period_name(invoice.period_start)}",
        )
        if posting is None:
            _fail(attempt, now, "insufficient_funds")
        else:
            attempt.outcome = AttemptOutcome.SUCCEEDED
            attempt.settled_at = now
    else:
        card = await session.get(Card, invoice.account_id)
        if card is None:
            _fail(attempt, now, "no_card_on_file")
        else:
            attempt.card_brand = invoice.card_brand = card.brand
            attempt.card_last4 = invoice.card_last4 = card.last4
            card_token = card.gateway_token
    await session.flush()
    await _apply_outcome(unit, invoice, attempt, now)
    return _Claim(invoice, attempt.number, card_token)


def _fail(attempt: InvoiceAttempt, now: datetime, failure_code: str) -> None:
    attempt.outcome = AttemptOutcome.FAILED
    attempt.failure_code = failure_code
    attempt.settled_at = now


async def settle_attempt(
    unit: UnitOfWork,
    clock: Clock,
    invoice_id: str,
    number: int,
    charge: Charge | None,
    decline_code: str | None,
) -> Invoice:
    """Record the gateway's definite answer for a pending card attempt, exactly once: a
    succeeded charge pays the invoice; a declined one (decline_code), or none at all (both
    None: the gateway never made it), schedules the next attempt or gives up."""
    session = unit.session
    now = clock.now()
    values: dict[str, object] = {"settled_at": now}
    if charge is not None and charge.status == "succeeded":
        values.update(outcome=AttemptOutcome.SUCCEEDED, gateway_charge_id=charge.charge_id)
    elif charge is None and decline_code is None:
        values.update(outcome=AttemptOutcome.FAILED, failure_code=CHARGE_NOT_MADE)
    else:
        values.update(
            outcome=AttemptOutcome.DECLINED,
            failure_code="card_declined",
            decline_code=decline_code or "generic_decline",
            gateway_charge_id=charge.charge_id if charge else None,
        )
    attempt = await session.scalar(
        update(InvoiceAttempt)
        .where(
            InvoiceAttempt.invoice_id == invoice_id,
            InvoiceAttempt.number == number,
            InvoiceAttempt.outcome == AttemptOutcome.PENDING,
        )
        .values(**values)
        .returning(InvoiceAttempt),
        execution_options={"populate_existing": True},
    )
    invoice = await session.get_one(
        Invoice, invoice_id, with_for_update=True, populate_existing=True
    )
    if attempt is not None:  # else settled already, by a reconciler or an earlier call
        await _apply_outcome(unit, invoice, attempt, now)
    return invoice


async def _apply_outcome(
    unit: UnitOfWork, invoice: Invoice, attempt: InvoiceAttempt, now: datetime
) -> None:
    """Move the invoice on after a settled attempt; a pending one leaves it waiting. A paid
    invoice raises invoice.paid, a failed attempt invoice.payment_failed (not a charge the
    gateway never made: that one is ours to retry, not the customer's to hear of)."""
    event: EventType | None = None
    if attempt.outcome == AttemptOutcome.SUCCEEDED:
        invoice.status = InvoiceStatus.PAID
        invoice.paid_at = attempt.attempted_at  # when the money moved, if we learn it later
        event = EventType.INVOICE_PAID
    elif attempt.outcome in _FAILED:
        if attempt.failure_code != CHARGE_NOT_MADE:
            event = EventType.INVOICE_PAYMENT_FAILED
        if invoice.attempt_count >= MAX_ATTEMPTS:
            invoice.status = InvoiceStatus.UNCOLLECTIBLE
        elif attempt.failure_code == CHARGE_NOT_MADE:
            invoice.next_attempt_at = now  # our failure, not the customer's: try again now
        else:
            await _schedule_retry(unit, invoice)
    await unit.session.flush()
    if event is not None:
        shown = await unit.session.scalar(
            select(Invoice)
            .where(Invoice.id == invoice.id)
            .options(selectinload(Invoice.lines), selectinload(Invoice.attempts))
            .execution_options(populate_existing=True)
        )
        assert shown is not None
        await queue_event(unit, invoice.account_id, event, invoice_out(shown))


async def _schedule_retry(unit: UnitOfWork, invoice: Invoice) -> None:
    session = unit.session
    failed = (
        select(func.count())
        .select_from(InvoiceAttempt)
        .where(
            InvoiceAttempt.invoice_id == invoice.id,
            InvoiceAttempt.outcome.in_(_FAILED),
            InvoiceAttempt.failure_code != CHARGE_NOT_MADE,
        )
    )
    failures = await session.scalar(failed) or 0
    if failures > len(RETRY_DELAYS):
        invoice.status = InvoiceStatus.UNCOLLECTIBLE
        return
    first = await session.scalar(
        select(InvoiceAttempt.attempted_at).where(
            InvoiceAttempt.invoice_id == invoice.id, InvoiceAttempt.number == 1
        )
    )
    assert first is not None
    invoice.next_attempt_at = first + RETRY_DELAYS[failures - 1]


async def _pending_attempts(
    unit: UnitOfWork, older_than: timedelta | None
) -> list[payments.Pending]:
    query = (
        select(InvoiceAttempt, Invoice.account_id)
        .join(Invoice, Invoice.id == InvoiceAttempt.invoice_id)
        .where(InvoiceAttempt.outcome == AttemptOutcome.PENDING)
    )
    rows = await payments.pending_rows(unit, query, InvoiceAttempt.created_at, older_than)
    return [
        payments.Pending(
            "invoice",
            _attempt_ref(attempt.invoice_id, attempt.number),
            account_id,
            attempt.amount_cents,
            attempt.created_at,
            wait,
            note=f"attempt {attempt.number}",
        )
        for attempt, account_id, wait in rows
    ]


def _attempt_key(pending: payments.Pending) -> str:
    invoice_id, number = pending.ref.rsplit("/", 1)
    return attempt_charge_key(invoice_id, int(number))


# No charge under an attempt's key means the gateway never made it (charge_not_made): the
# invoice moves on to its next try.
INVOICE_ATTEMPTS = payments.charge_kind("invoice", _pending_attempts, _attempt_key, _settle_with)
