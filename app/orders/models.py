"""Tables of the catalogue and of certificate orders."""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.kit.db import Base, created_at_column
from app.kit.states import StateColumn, sql_in
from app.payment_methods.models import PaymentMethod


class ValidationLevel(StrEnum):
    """How much the certificate authority checks: the domain, the organisation, or more."""

    DV = "dv"
    OV = "ov"
    EV = "ev"


class OrderStatus(StrEnum):
    PENDING_PAYMENT = "pending_payment"
    PAID = "paid"
    FAILED = "failed"
    CANCELED = "canceled"


class RefundStatus(StrEnum):
    """Of a canceled card order: the refund asked of the gateway, and its confirmation."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"


class Product(Base):
    __tablename__ = "product"
    __table_args__ = (CheckConstraint(sql_in("validation", ValidationLevel), name="validation"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    validation: Mapped[ValidationLevel] = mapped_column(StateColumn(ValidationLevel, 2))
    wildcard: Mapped[bool] = mapped_column(Boolean)
    price_per_year_cents: Mapped[int] = mapped_column(BigInteger)
    price_per_extra_san_cents: Mapped[int] = mapped_column(BigInteger)
    position: Mapped[int] = mapped_column(Integer)


class CertificateOrder(Base):
    __tablename__ = "certificate_order"
    __table_args__ = (
        CheckConstraint(sql_in("status", OrderStatus), name="status"),
        CheckConstraint(sql_in("payment_method", PaymentMethod), name="payment_method"),
        CheckConstraint(
            f"refund_status IS NULL OR {sql_in('refund_status', RefundStatus)}",
            name="refund_status",
        ),
        CheckConstraint("amount_cents > 0", name="amount_positive"),
        UniqueConstraint(
            "account_id", "idempotency_key", name="uq_certificate_order_account_id_key"
        ),
        Index("ix_certificate_order_account_id_created_at", "account_id", "created_at"),
        Index(
            "ix_certificate_order_unsettled",
            "created_at",
            postgresql_where="status = 'pending_payment' OR refund_status = 'pending'",
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    idempotency_key: Mapped[str] = mapped_column(String(255))
    product_id: Mapped[str] = mapped_column(ForeignKey("product.id"))
    common_name: Mapped[str] = mapped_column(String(253))
    sans: Mapped[list[str]] = mapped_column(ARRAY(String(253)))
    validity_years: Mapped[int] = mapped_column(Integer)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    payment_method: Mapped[PaymentMethod] = mapped_column(StateColumn(PaymentMethod, 10))
    status: Mapped[OrderStatus] = mapped_column(StateColumn(OrderStatus, 20))
    failure_code: Mapped[str | None] = mapped_column(String(50))
    decline_code: Mapped[str | None] = mapped_column(String(50))
    gateway_charge_id: Mapped[str | None] = mapped_column(String(200))
    refund_status: Mapped[RefundStatus | None] = mapped_column(StateColumn(RefundStatus, 20))
    gateway_refund_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = created_at_column()
    canceled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


@dataclass
class OrderDraft:
    """An order before it is stored, as plain values: the balance order's statement writes
    it (and its answer) in one go, and only an order paid by card becomes an ORM row."""

    id: str
    idempotency_key: str
    product_id: str
    common_name: str
    sans: list[str]
    validity_years: int
    amount_cents: int
    created_at: datetime
    payment_method: PaymentMethod = PaymentMethod.BALANCE
    status: OrderStatus = OrderStatus.PAID
    failure_code: str | None = None
    decline_code: str | None = None
    canceled_at: datetime | None = None

    def row(self, account_id: str) -> CertificateOrder:
        """The order as a row of `account_id` (the caller's, known once it was checked)."""
        return CertificateOrder(
            id=self.id,
            account_id=account_id,
            idempotency_key=self.idempotency_key,
            product_id=self.product_id,
            common_name=self.common_name,
            sans=self.sans,
            validity_years=self.validity_years,
            amount_cents=self.amount_cents,
            payment_method=self.payment_method,
            status=self.status,
            created_at=self.created_at,
        )
