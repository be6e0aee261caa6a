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
from app.kit.states import StateColumn


class PaymentMethod(StrEnum):
    """How an order or an invoice is paid: from the prepaid balance, or by the card on file."""

    BALANCE = "balance"
    CARD = "card"


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
