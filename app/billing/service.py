"""Rules of recurring charges as clients see them: plans, subscribing and canceling, and
reading invoices. The monthly run that makes and collects invoices is in billing/run.py.

Subscriptions are billed monthly in arrears (SPEC §11), by calendar month in UTC: once a
month has ended, its invoice bills every subscription for the time it ran in that month,
prorated to the cent (billing/periods.py). Canceling ends a subscription at once; the time it
ran in its last month is billed with that month.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Select, select
from sqlalchemy.orm import selectinload

from app.accounts.models import BillingInfo
from app.auth.principal import Principal
from app.billing.models import Invoice, InvoiceStatus, Plan, Subscription, SubscriptionStatus
from app.billing.periods import active_in, last_day, period_name, period_of
from app.billing.schemas import SubscriptionIn
from app.config import Settings
from app.kit.clock import Clock
from app.kit.db import UnitOfWork
from app.kit.errors import NotFound, validation_error
from app.kit.ids import new_id
from app.kit.pagination import PageRequest, paginate
from app.payment_methods.models import PaymentMethod
from app.receipts import Receipt, ReceiptLine, billed_to, card_label, render_pdf


async def list_plans(unit: UnitOfWork) -> list[Plan]:
    return list((await unit.session.scalars(select(Plan).order_by(Plan.position))).all())


# Subscriptions


@dataclass(frozen=True)
class SubscriptionView:
    """A subscription (with its plan) seen at a moment of the billing clock."""

    subscription: Subscription
    now: datetime

    @property
    def status(self) -> SubscriptionStatus:
        ended_at = self.subscription.ended_at
        if ended_at is not None and ended_at <= self.now:
            return SubscriptionStatus.CANCELED
        return SubscriptionStatus.ACTIVE

    @property
    def current_period(self) -> tuple[datetime, datetime] | None:
        """The part of this calendar month the subscription runs in, billed once the month
        has ended; None once it ended."""
        if self.status == SubscriptionStatus.CANCELED:
            return None
        subscription = self.subscription
        return active_in(period_of(self.now), subscription.started_at, subscription.ended_at)


async def create_subscription(
    unit: UnitOfWork, clock: Clock, principal: Principal, body: SubscriptionIn
) -> SubscriptionView:
    plan = await unit.session.get(Plan, body.plan_id)
    if plan is None:
        raise validation_error("body.plan_id", "is not a plan; see GET /v1/plans")
    now = clock.now()
    subscription = Subscription(
        id=new_id("sub"),
        account_id=principal.account_id,
        plan=plan,
        started_at=now,
        billed_from=now,
    )
    unit.session.add(subscription)
    await unit.session.flush()
    return SubscriptionView(subscription, now)


def _subscriptions_of(principal: Principal) -> Select[Subscription]:
    return (
        select(Subscription)
        .where(Subscription.account_id == principal.account_id)
        .options(selectinload(Subscription.plan))
    )


async def list_subscriptions(
    unit: UnitOfWork, clock: Clock, principal: Principal, page: PageRequest
) -> tuple[list[SubscriptionView], bool]:
    subscriptions, has_more = await paginate(unit, _subscriptions_of(principal), Subscription, page)
    now = clock.now()
    return [SubscriptionView(subscription, now) for subscription in subscriptions], has_more


async def get_subscription(
    unit: UnitOfWork, clock: Clock, principal: Principal, subscription_id: str
) -> SubscriptionView:
    subscription = await _load_subscription(unit, principal, subscription_id)
    return SubscriptionView(subscription, clock.now())


async def _load_subscription(
    unit: UnitOfWork, principal: Principal, subscription_id: str, *, for_update: bool = False
) -> Subscription:
    query = _subscriptions_of(principal).where(Subscription.id == subscription_id)
    if for_update:
        query = query.with_for_update().execution_options(populate_existing=True)
    subscription = await unit.session.scalar(query)
    if subscription is None:
        raise NotFound("subscription")
    return subscription


async def cancel_subscription(
    unit: UnitOfWork, clock: Clock, principal: Principal, subscription_id: str
) -> SubscriptionView:
    """End the subscription now: the time it ran in this month is billed once the month has
    ended. Canceling one that has ended changes nothing (the same answer); one canceled at
    period end before billing moved to arrears, and still running, ends now."""
    subscription = await _load_subscription(unit, principal, subscription_id, for_update=True)
    now = clock.now()
    if subscription.ended_at is None or subscription.ended_at > now:
        # Never before it started (a clock running behind the one that started it).
        subscription.ended_at = max(now, subscription.started_at)
        subscription.canceled_at = subscription.canceled_at or subscription.ended_at
        await unit.session.flush()
    return SubscriptionView(subscription, now)


# Invoices


def _invoices_of(principal: Principal) -> Select[Invoice]:
    return (
        select(Invoice)
        .where(Invoice.account_id == principal.account_id)
        .options(selectinload(Invoice.lines), selectinload(Invoice.attempts))
    )


async def list_invoices(
    unit: UnitOfWork, principal: Principal, page: PageRequest
) -> tuple[list[Invoice], bool]:
    return await paginate(unit, _invoices_of(principal), Invoice, page)


async def get_invoice(unit: UnitOfWork, principal: Principal, invoice_id: str) -> Invoice:
    return await _load_invoice(unit, principal, invoice_id)


async def _load_invoice(unit: UnitOfWork, principal: Principal, invoice_id: str) -> Invoice:
    invoice = await unit.session.scalar(_invoices_of(principal).where(Invoice.id == invoice_id))
    if invoice is None:
        raise NotFound("invoice")
    return invoice


async def render_invoice_pdf(
    unit: UnitOfWork, settings: Settings, principal: Principal, invoice_id: str
) -> bytes:
    invoice = await _load_invoice(unit, principal, invoice_id)
    billing = await unit.session.get(BillingInfo, principal.account_id)
    return await render_pdf(
        settings, invoice_receipt(invoice, billed_to(principal.account, billing))
    )


def invoice_receipt(invoice: Invoice, billed: list[str]) -> Receipt:
    period = invoice.period_start
    if invoice.status == InvoiceStatus.PAID:
        assert invoice.paid_at is not None
        status = f"Paid on {_day(invoice.paid_at)}"
    elif invoice.status == InvoiceStatus.UNCOLLECTIBLE:
        status = "Uncollectible: every attempt to collect it failed"
    elif invoice.next_attempt_at is not None:
        status = f"Open: payment due, next attempt on {_day(invoice.next_attempt_at)}"
    else:
        status = "Open: payment in progress"
    if invoice.payment_method == PaymentMethod.BALANCE:
        method = "Prepaid account balance"
    elif invoice.payment_method == PaymentMethod.CARD:
        method = card_label(invoice.card_brand, invoice.card_last4)
    else:
        method = "None: no default payment method"
    return Receipt(
        title="Receipt" if invoice.status == InvoiceStatus.PAID else "Invoice",
        number=invoice.id,
        issued_at=invoice.issued_at,
        details=[
            ("Period", f"{period_name(period)} ({period} to {last_day(period)})"),
            ("Issued", _day(invoice.issued_at)),
            ("Status", status),
        ],
        billed_to=billed,
        lines=[ReceiptLine(line.description, line.amount_cents) for line in invoice.lines],
        total_cents=invoice.total_cents,
        payment_method=method,
    )


def _day(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d}"
