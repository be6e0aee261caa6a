"""The outbox: messages written in the same transaction as the event that causes them."""

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Index, Integer, String, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, created_at_column

OUTBOX_STATUSES = ("pending", "delivered", "logged", "dead")


class OutboxMessage(Base):
    """A message to deliver at least once.

    `pending` rows are claimed by a worker with FOR UPDATE SKIP LOCKED, which also pushes
    `available_at` one lease ahead: a worker that dies holding a claim loses it when the lease
    runs out, and the message is delivered again. `logged` means delivered to the log because
    no SMTP server is configured; `dead` means given up after the last attempt.
    """

    __tablename__ = "outbox_message"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'delivered', 'logged', 'dead')", name="status"),
        Index(
            "ix_outbox_message_due",
            "available_at",
            "id",
            postgresql_where="status = 'pending'",
        ),
        Index("ix_outbox_message_dead", "id", postgresql_where="status = 'dead'"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(50))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(20), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    available_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.clock_timestamp()
    )
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = created_at_column()
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
