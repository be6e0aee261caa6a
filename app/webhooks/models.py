"""Tables of webhooks: an account's endpoints, its events (kept 30 days, the events API) and
each attempt at delivering an event to an endpoint."""

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ARRAY,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.kit.db import Base, created_at_column
from app.kit.states import StateColumn, sql_in


class EventType(StrEnum):
    DEPOSIT_SUCCEEDED = "deposit.succeeded"
    DEPOSIT_FAILED = "deposit.failed"
    ORDER_PAID = "order.paid"
    ORDER_CANCELED = "order.canceled"
    BALANCE_LOW = "balance.low"
    INVOICE_PAID = "invoice.paid"
    INVOICE_PAYMENT_FAILED = "invoice.payment_failed"


class EndpointStatus(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class WebhookEndpoint(Base):
    """Where an account's events go. The signing secret itself is never stored: it is derived
    from `secret_seed` and the service's SECRET_KEY (app.webhooks.signing), so a copy of the
    database alone signs nothing. After a rotation the previous seed keeps signing beside the
    new one until `previous_secret_expires_at`."""

    __tablename__ = "webhook_endpoint"
    __table_args__ = (
        CheckConstraint(sql_in("status", EndpointStatus), name="status"),
        CheckConstraint("cardinality(events) > 0", name="events"),
        Index("ix_webhook_endpoint_account_id_created_at", "account_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(ARRAY(String(40)))
    description: Mapped[str | None] = mapped_column(String(500))
    status: Mapped[EndpointStatus] = mapped_column(StateColumn(EndpointStatus, 20))
    secret_seed: Mapped[bytes] = mapped_column(LargeBinary)
    previous_secret_seed: Mapped[bytes | None] = mapped_column(LargeBinary)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The first failed attempt since the last success: five days of that disables it.
    failing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()


class WebhookEvent(Base):
    """Something that happened to an account, with the object as the API returns it. Made
    only by the database function `queue_webhook_event`, in the transaction of the change it
    reports, which also queues its deliveries."""

    __tablename__ = "webhook_event"
    __table_args__ = (
        CheckConstraint(sql_in("type", EventType), name="type"),
        Index("ix_webhook_event_account_id_created_at", "account_id", "created_at", "id"),
        Index("ix_webhook_event_created_at", "created_at"),
    )

    id: Mapped[str] = mapped_column(
        String(40), primary_key=True, server_default=text("new_id('evt')")
    )
    account_id: Mapped[str] = mapped_column(ForeignKey("account.id", ondelete="CASCADE"))
    type: Mapped[EventType] = mapped_column(StateColumn(EventType, 40))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = created_at_column()


class WebhookDelivery(Base):
    """One attempt at delivering an event to an endpoint. The next attempt waits as the one
    `pending` row of its endpoint and event; the outbox message `webhook` carries it out."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        CheckConstraint(sql_in("status", DeliveryStatus), name="status"),
        CheckConstraint(sql_in("event_type", EventType), name="event_type"),
        UniqueConstraint("endpoint_id", "event_id", "attempt"),
        Index(
            "uq_webhook_delivery_one_pending",
            "endpoint_id",
            "event_id",
            unique=True,
            postgresql_where="status = 'pending'",
        ),
        Index("ix_webhook_delivery_endpoint_id_created_at", "endpoint_id", "created_at", "id"),
        Index("ix_webhook_delivery_event_id", "event_id"),
        Index("ix_webhook_delivery_due", "next_attempt_at", postgresql_where="status = 'pending'"),
    )

    id: Mapped[str] = mapped_column(
        String(40), primary_key=True, server_default=text("new_id('whd')")
    )
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoint.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(ForeignKey("webhook_event.id", ondelete="CASCADE"))
    event_type: Mapped[EventType] = mapped_column(StateColumn(EventType, 40))
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[DeliveryStatus] = mapped_column(StateColumn(DeliveryStatus, 20))
    response_status: Mapped[int | None] = mapped_column(SmallInteger)
    # Why an attempt failed without an HTTP answer (timeout, refused, url_not_allowed…).
    error: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = created_at_column()
    attempted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
