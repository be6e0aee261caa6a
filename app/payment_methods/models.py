"""Tables of how an account pays: its payment settings, and the card on file (only what the
gateway lets us keep: token, brand, last 4, expiry, holder)."""

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    String,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.kit.db import Base
from app.kit.states import StateColumn, sql_in


class PaymentMethod(StrEnum):
    """How an order or an invoice is paid: from the prepaid balance, or by the card on file."""

    BALANCE = "balance"
    CARD = "card"


class AutoTopUpStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class SuspendedReason(StrEnum):
    """Why an automatic top-up is suspended, until the settings are saved again."""

    CARD_DECLINED = "card_declined"
    NO_CARD_ON_FILE = "no_card_on_file"


# The automatic top-up rule (SPEC §14): all four set, or none (off).
_AUTO_TOP_UP_RULE = (
    "(auto_top_up_threshold_cents IS NULL AND auto_top_up_amount_cents IS NULL"
    " AND auto_top_up_monthly_limit_cents IS NULL AND auto_top_up_status IS NULL)"
    " OR (auto_top_up_threshold_cents IS NOT NULL AND auto_top_up_amount_cents IS NOT NULL"
    " AND auto_top_up_monthly_limit_cents IS NOT NULL AND auto_top_up_status IS NOT NULL"
    " AND auto_top_up_threshold_cents >= 0 AND auto_top_up_amount_cents > 0"
    " AND auto_top_up_monthly_limit_cents >= auto_top_up_amount_cents)"
)


class FinanceSettings(Base):
    """Payment modes of an account. No row means the defaults of a new account."""

    __tablename__ = "finance_settings"
    __table_args__ = (
        CheckConstraint(
            "balance_payments_enabled OR card_payments_enabled", name="one_method_enabled"
        ),
        CheckConstraint(
            "default_payment_method IS NULL"
            " OR (default_payment_method = 'balance' AND balance_payments_enabled)"
            " OR (default_payment_method = 'card' AND card_payments_enabled)",
            name="default_enabled",
        ),
        CheckConstraint("low_balance_threshold_cents >= 0", name="threshold_not_negative"),
        CheckConstraint(_AUTO_TOP_UP_RULE, name="auto_top_up_rule"),
        CheckConstraint(sql_in("auto_top_up_status", AutoTopUpStatus), name="auto_top_up_status"),
        CheckConstraint(
            sql_in("auto_top_up_suspended_reason", SuspendedReason),
            name="auto_top_up_suspended_reason",
        ),
        CheckConstraint(
            "(auto_top_up_suspended_reason IS NULL)"
            " = (auto_top_up_status IS DISTINCT FROM 'suspended')",
            name="auto_top_up_suspension",
        ),
    )

    account_id: Mapped[str] = mapped_column(
        ForeignKey("account.id", ondelete="CASCADE"), primary_key=True
    )
    balance_payments_enabled: Mapped[bool] = mapped_column(Boolean)
    card_payments_enabled: Mapped[bool] = mapped_column(Boolean)
    default_payment_method: Mapped[PaymentMethod | None] = mapped_column(
        StateColumn(PaymentMethod, 10)
    )
    low_balance_threshold_cents: Mapped[int | None] = mapped_column(BigInteger)
    # NULL: the account's contact email, following it when it changes.
    notification_emails: Mapped[list[str] | None] = mapped_column(ARRAY(String(320)))
    # Automatic top-up: when a debit takes the balance below the threshold, deposit the
    # amount by card, at most the monthly limit a month (app.finance.auto_top_up).
    auto_top_up_threshold_cents: Mapped[int | None] = mapped_column(BigInteger)
    auto_top_up_amount_cents: Mapped[int | None] = mapped_column(BigInteger)
    auto_top_up_monthly_limit_cents: Mapped[int | None] = mapped_column(BigInteger)
    auto_top_up_status: Mapped[AutoTopUpStatus | None] = mapped_column(
        StateColumn(AutoTopUpStatus, 20)
    )
    auto_top_up_suspended_reason: Mapped[SuspendedReason | None] = mapped_column(
        StateColumn(SuspendedReason, 40)
    )


class Card(Base):
    """The card on file: the gateway's token for it, and what a person recognises it by."""

    __tablename__ = "card"

    account_id: Mapped[str] = mapped_column(
        ForeignKey("account.id", ondelete="CASCADE"), primary_key=True
    )
    gateway_token: Mapped[str] = mapped_column(String(200))
    brand: Mapped[str] = mapped_column(String(20))
    last4: Mapped[str] = mapped_column(String(4))
    exp_month: Mapped[int] = mapped_column(Integer)
    exp_year: Mapped[int] = mapped_column(Integer)
    holder_name: Mapped[str | None] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.clock_timestamp(), nullable=False
    )
