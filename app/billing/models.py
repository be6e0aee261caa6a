"""Tables of recurring charges: plans, subscriptions, and the monthly invoices with their lines
and every attempt to collect them."""

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.kit.db import Base, created_at_column
from app.kit.states import StateColumn, sql_in
from app.payment_methods.models import PaymentMethod


# Not a column: worked out from `ended_at` at a moment of the billing clock.
class SubscriptionStatus(StrEnum):
    """Canceled once the subscription has ended (at once on DELETE; at the end of the month
    for one canceled at period end before billing moved to arrears)."""

    ACTIVE = "active"
    CANCELED = "canceled"


class InvoiceStatus(StrEnum):
    OPEN = "open"
    PAID = "paid"
    UNCOLLECTIBLE = "uncollectible"


class AttemptOutcome(StrEnum):
    """How one try at collecting an invoice ended; its `failure_code` says why it failed."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    FAILED = "failed"


class Plan(Base):
    __tablename__ = "plan"
    __table_args__ = (CheckConstraint("monthly_price_cents > 0", name="price_positive"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    monthly_price_cents: Mapped[int] = mapped_column(BigInteger)
    position: Mapped[int] = mapped_column(Integer)


class Subscription(Base):
    """A plan an account uses from `started_at` until `ended_at`, billed in arrears each month
    for the time it ran in it from `billed_from` on.

    `started_at`, `billed_from`, `canceled_at` and `ended_at` are moments of the billing
    clock; `created_at` is when the row was written (the order of lists). DELETE sets
    `canceled_at` and `ended_at` to the same moment. `billed_from` is `started_at`, except
    for subscriptions made while billing was in advance: the rest of their first month was
    free, so it is the 1st after it (the migration to arrears, 0006); one of those canceled
    at period end kept its `ended_at`, the 1st after its `canceled_at`."""

    __tablename__ = "subscription"
    __table_args__ = (
        CheckConstraint("(canceled_at IS NULL) = (ended_at IS NULL)", name="ended_when_canceled"),
        CheckConstraint("ended_at >= started_at", name="ended_after_start"),
        CheckConstraint("billed_from >= started_at", name="billed_after_start"),
        Index("ix_subscription_account_id_created_at", "account_id", "created_at"),
        Index("ix_subscription_billed_from", "billed_from"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    plan_id: Mapped[str] = mapped_column(ForeignKey("plan.id"))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    billed_from: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    canceled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()

    plan: Mapped[Plan] = relationship(lazy="raise")


class Invoice(Base):
    """What an account owes for one period (a month, billed once it has ended). One per account
    and period, whatever runs at once.

    `next_attempt_at` is when to try collecting it next: the run sets it to the moment the
    invoice is made; an attempt in flight, a paid or an uncollectible invoice has none."""

    __tablename__ = "invoice"
    __table_args__ = (
        UniqueConstraint("account_id", "period_start", name="uq_invoice_account_id_period_start"),
        CheckConstraint(sql_in("status", InvoiceStatus), name="status"),
        CheckConstraint("total_cents > 0", name="total_positive"),
        CheckConstraint(
            f"payment_method IS NULL OR {sql_in('payment_method', PaymentMethod)}",
            name="payment_method",
        ),
        CheckConstraint("attempt_count >= 0", name="attempt_count_not_negative"),
        CheckConstraint("status = 'paid' OR paid_at IS NULL", name="paid_at_when_paid"),
        CheckConstraint("status = 'open' OR next_attempt_at IS NULL", name="no_attempt_closed"),
        Index("ix_invoice_account_id_created_at", "account_id", "created_at"),
        Index("ix_invoice_due", "next_attempt_at", postgresql_where="status = 'open'"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    period_start: Mapped[date] = mapped_column(Date)
    status: Mapped[InvoiceStatus] = mapped_column(StateColumn(InvoiceStatus, 20))
    total_cents: Mapped[int] = mapped_column(BigInteger)
    # Of the latest attempt: how it was (to be) paid, and with which card.
    payment_method: Mapped[PaymentMethod | None] = mapped_column(StateColumn(PaymentMethod, 10))
    card_brand: Mapped[str | None] = mapped_column(String(20))
    card_last4: Mapped[str | None] = mapped_column(String(4))
    attempt_count: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()

    lines: Mapped[list["InvoiceLine"]] = relationship(lazy="raise", order_by="InvoiceLine.position")
    attempts: Mapped[list["InvoiceAttempt"]] = relationship(
        lazy="raise", order_by="InvoiceAttempt.number"
    )


class InvoiceLine(Base):
    __tablename__ = "invoice_line"
    __table_args__ = (
        UniqueConstraint(
            "invoice_id", "subscription_id", name="uq_invoice_line_invoice_id_subscription_id"
        ),
        CheckConstraint("amount_cents > 0", name="amount_positive"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    invoice_id: Mapped[str] = mapped_column(ForeignKey("invoice.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    subscription_id: Mapped[str] = mapped_column(ForeignKey("subscription.id"))
    plan_id: Mapped[str] = mapped_column(ForeignKey("plan.id"))
    description: Mapped[str] = mapped_column(String(300))
    amount_cents: Mapped[int] = mapped_column(BigInteger)


class InvoiceAttempt(Base):
    """One try at collecting an invoice. The primary key (invoice, number) lets exactly one
    run make attempt n; a card attempt is charged under the gateway key of its number."""

    __tablename__ = "invoice_attempt"
    __table_args__ = (
        CheckConstraint(sql_in("outcome", AttemptOutcome), name="outcome"),
        CheckConstraint(
            f"payment_method IS NULL OR {sql_in('payment_method', PaymentMethod)}",
            name="payment_method",
        ),
        CheckConstraint("number > 0", name="number_positive"),
        Index("ix_invoice_attempt_pending", "created_at", postgresql_where="outcome = 'pending'"),
    )

    invoice_id: Mapped[str] = mapped_column(
        ForeignKey("invoice.id", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    attempted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    payment_method: Mapped[PaymentMethod | None] = mapped_column(StateColumn(PaymentMethod, 10))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    outcome: Mapped[AttemptOutcome] = mapped_column(StateColumn(AttemptOutcome, 20))
    decline_code: Mapped[str | None] = mapped_column(String(50))
    failure_code: Mapped[str | None] = mapped_column(String(50))
    card_brand: Mapped[str | None] = mapped_column(String(20))
    card_last4: Mapped[str | None] = mapped_column(String(4))
    gateway_charge_id: Mapped[str | None] = mapped_column(String(200))
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()
