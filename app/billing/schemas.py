"""Bodies of plans, subscriptions and invoices."""

from datetime import date
from typing import Annotated

from pydantic import Field

from app.billing.models import AttemptOutcome, Invoice, InvoiceStatus, SubscriptionStatus
from app.billing.periods import last_day
from app.finance.schemas import Currency
from app.kit.money import Amount
from app.kit.schemas import RequestModel, ResponseModel, Timestamp
from app.payment_methods.models import PaymentMethod


class PlanOut(ResponseModel):
    id: str
    name: str
    monthly_price: Amount
    currency: Currency = "USD"


class PlanList(ResponseModel):
    """Every plan: `has_more` is always false (SPEC §1: every list carries it)."""

    data: list[PlanOut]
    has_more: bool = False


# The plans, as the migrations seed them (tests/billing check that they agree).
PLAN_IDS = ["cloud_large", "cloud_small", "support"]


class SubscriptionIn(RequestModel):
    plan_id: Annotated[str, Field(json_schema_extra={"enum": PLAN_IDS})]


class SubscriptionOut(ResponseModel):
    id: str
    plan_id: str
    monthly_price: Amount
    currency: Currency = "USD"
    status: SubscriptionStatus
    started_at: Timestamp
    # The part of this calendar month it runs in (from started_at, to ended_at if that is
    # sooner), billed in arrears once the month has ended; null once it has ended.
    current_period_start: Timestamp | None
    current_period_end: Timestamp | None
    # When DELETE ended it, the service with it (both null while it runs). Only a subscription
    # canceled at period end before billing moved to arrears has an ended_at after its
    # canceled_at (the 1st after it), and is active until then.
    canceled_at: Timestamp | None
    ended_at: Timestamp | None
    created_at: Timestamp


class InvoiceLineOut(ResponseModel):
    subscription_id: str
    plan_id: str
    description: str
    amount: Amount
    currency: Currency = "USD"


class InvoiceAttemptOut(ResponseModel):
    number: int
    attempted_at: Timestamp
    payment_method: PaymentMethod | None
    outcome: AttemptOutcome
    decline_code: str | None
    failure_code: str | None
    card_brand: str | None
    card_last4: str | None


class InvoiceOut(ResponseModel):
    id: str
    # The month billed, from its first day to its last (inclusive, as the PDF prints it).
    period_start: date
    period_end: date
    status: InvoiceStatus
    total: Amount
    currency: Currency = "USD"
    lines: list[InvoiceLineOut]
    payment_method: PaymentMethod | None
    card_brand: str | None
    card_last4: str | None
    attempt_count: int
    next_attempt_at: Timestamp | None
    attempts: list[InvoiceAttemptOut]
    issued_at: Timestamp
    paid_at: Timestamp | None
    created_at: Timestamp


def invoice_out(invoice: Invoice) -> InvoiceOut:
    return InvoiceOut(
        id=invoice.id,
        period_start=invoice.period_start,
        period_end=last_day(invoice.period_start),
        status=invoice.status,
        total=invoice.total_cents,
        lines=[
            InvoiceLineOut(
                subscription_id=line.subscription_id,
                plan_id=line.plan_id,
                description=line.description,
                amount=line.amount_cents,
            )
            for line in invoice.lines
        ],
        payment_method=invoice.payment_method,
        card_brand=invoice.card_brand,
        card_last4=invoice.card_last4,
        attempt_count=invoice.attempt_count,
        next_attempt_at=invoice.next_attempt_at,
        attempts=[
            InvoiceAttemptOut(
                number=attempt.number,
                attempted_at=attempt.attempted_at,
                payment_method=attempt.payment_method,
                outcome=attempt.outcome,
                decline_code=attempt.decline_code,
                failure_code=attempt.failure_code,
                card_brand=attempt.card_brand,
                card_last4=attempt.card_last4,
            )
            for attempt in invoice.attempts
        ],
        issued_at=invoice.issued_at,
        paid_at=invoice.paid_at,
        created_at=invoice.created_at,
    )
