"""Tables of money held: the balance, its append-only ledger, and deposits."""

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.kit.db import Base, created_at_column
from app.kit.states import StateColumn, sql_in


class LedgerEntryType(StrEnum):
    """What moved the balance; an `adjustment` is an operator's correction."""

    DEPOSIT = "deposit"
    ORDER = "order"
    REFUND = "refund"
    ADJUSTMENT = "adjustment"
    INVOICE = "invoice"


class DepositStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class DepositSource(StrEnum):
    """Who made a deposit: a request to the API, or the automatic top-up (SPEC §14)."""

    API = "api"
    AUTO_TOP_UP = "auto_top_up"


class AccountBalance(Base):
    """The running balance and the sequence number of the last ledger entry.

    Every movement updates this row with one conditional UPDATE and appends the entry it
    returns, in the same transaction: the row lock orders the entries of an account, and
    `balance_after` of entry n is always `balance_after` of entry n-1 plus its amount.
    """

    __tablename__ = "account_balance"
    __table_args__ = (CheckConstraint("balance_cents >= 0", name="not_negative"),)

    account_id: Mapped[str] = mapped_column(
        ForeignKey("account.id", ondelete="CASCADE"), primary_key=True
    )
    balance_cents: Mapped[int] = mapped_column(BigInteger, server_default="0")
    last_entry_seq: Mapped[int] = mapped_column(BigInteger, server_default="0")


class LedgerEntry(Base):
    """One movement of the balance. Append-only: the database refuses UPDATE and DELETE."""

    __tablename__ = "ledger_entry"
    __table_args__ = (
        UniqueConstraint("account_id", "seq", name="uq_ledger_entry_account_id_seq"),
        CheckConstraint("balance_after_cents >= 0", name="balance_after_not_negative"),
        CheckConstraint("amount_cents <> 0", name="amount_not_zero"),
        CheckConstraint(sql_in("type", LedgerEntryType), name="type"),
        CheckConstraint(
            "(type = 'deposit' AND amount_cents > 0 AND deposit_id IS NOT NULL)"
            " OR (type = 'order' AND amount_cents < 0 AND order_id IS NOT NULL)"
            " OR (type = 'refund' AND amount_cents > 0 AND order_id IS NOT NULL)"
            " OR (type = 'invoice' AND amount_cents < 0 AND invoice_id IS NOT NULL)"
            " OR type = 'adjustment'",
            name="type_matches_amount",
        ),
        # A deposit is credited once, an order debited and refunded once, and an invoice
        # paid from the balance once, whatever retries.
        Index(
            "uq_ledger_entry_deposit_once",
            "deposit_id",
            unique=True,
            postgresql_where="deposit_id IS NOT NULL",
        ),
        Index(
            "uq_ledger_entry_order_once",
            "order_id",
            "type",
            unique=True,
            postgresql_where="order_id IS NOT NULL",
        ),
        Index(
            "uq_ledger_entry_invoice_once",
            "invoice_id",
            unique=True,
            postgresql_where="invoice_id IS NOT NULL",
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[LedgerEntryType] = mapped_column(StateColumn(LedgerEntryType, 20))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    balance_after_cents: Mapped[int] = mapped_column(BigInteger)
    deposit_id: Mapped[str | None] = mapped_column(String(40))
    order_id: Mapped[str | None] = mapped_column(String(40))
    invoice_id: Mapped[str | None] = mapped_column(String(40))
    description: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = created_at_column()


class Deposit(Base):
    __tablename__ = "deposit"
    __table_args__ = (
        CheckConstraint(sql_in("status", DepositStatus), name="status"),
        CheckConstraint("amount_cents > 0", name="amount_positive"),
        UniqueConstraint("account_id", "idempotency_key", name="uq_deposit_account_id_key"),
        Index("ix_deposit_account_id_created_at", "account_id", "created_at"),
        Index("ix_deposit_pending", "created_at", postgresql_where="status = 'pending'"),
        CheckConstraint(sql_in("source", DepositSource), name="source"),
        # At most one automatic top-up pending per account, whatever races.
        Index(
            "uq_deposit_one_pending_auto_top_up",
            "account_id",
            unique=True,
            postgresql_where="source = 'auto_top_up' AND status = 'pending'",
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    idempotency_key: Mapped[str] = mapped_column(String(255))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[DepositStatus] = mapped_column(StateColumn(DepositStatus, 20))
    failure_code: Mapped[str | None] = mapped_column(String(50))
    decline_code: Mapped[str | None] = mapped_column(String(50))
    card_brand: Mapped[str] = mapped_column(String(20))
    card_last4: Mapped[str] = mapped_column(String(4))
    gateway_charge_id: Mapped[str | None] = mapped_column(String(200))
    balance_after_cents: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = created_at_column()
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    source: Mapped[DepositSource] = mapped_column(
        StateColumn(DepositSource, 20), server_default=DepositSource.API.value
    )
    # An automatic top-up's charge begun by the worker: only then may the reconciler ask.
    charge_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
