"""The transactional outbox: a message is written in the same transaction as the change that
causes it, claimed by a worker with FOR UPDATE SKIP LOCKED under a lease, then marked.

Delivery is at least once: a message is marked delivered only after its handler returned, so
a worker that dies between sending and marking sends it again once its lease runs out. Each
message carries a stable id that handlers pass on (an email's Message-ID), so a receiver can
drop the rare repeat.
"""

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Index,
    Integer,
    Interval,
    String,
    bindparam,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.kit.db import Base, UnitOfWork, created_at_column
from app.kit.states import StateColumn, sql_in


class OutboxStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    LOGGED = "logged"
    DEAD = "dead"
    # Nothing left to deliver it to (a webhook endpoint deleted, disabled or unsubscribed).
    DROPPED = "dropped"


class OutboxMessage(Base):
    """A message to deliver at least once.

    `pending` rows are claimed by a worker with FOR UPDATE SKIP LOCKED, which also pushes
    `available_at` one lease ahead: a worker that dies holding a claim loses it when the lease
    runs out, and the message is delivered again. `logged` means delivered to the log because
    no SMTP server is configured; `dead` means given up after the last attempt.
    """

    __tablename__ = "outbox_message"
    __table_args__ = (
        CheckConstraint(sql_in("status", OutboxStatus), name="status"),
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
    status: Mapped[OutboxStatus] = mapped_column(
        StateColumn(OutboxStatus, 20), server_default=OutboxStatus.PENDING.value
    )
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    available_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.clock_timestamp()
    )
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = created_at_column()
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


async def enqueue(unit: UnitOfWork, topic: str, payload: dict[str, Any]) -> None:
    """In the unit's transaction: the message exists exactly when the change that caused it
    committed."""
    conn = await unit.connection()
    await conn.execute(
        "INSERT INTO outbox_message (topic, payload) VALUES ($1, $2::jsonb)",
        topic,
        json.dumps(payload),
    )


@dataclass(frozen=True)
class Claimed:
    id: int
    topic: str
    payload: dict[str, Any]
    attempts: int  # including this one


_CLAIM = text(
    """
    UPDATE outbox_message
    SET attempts = attempts + 1,
        available_at = clock_timestamp() + make_interval(secs => :lease)
    WHERE id IN (
        SELECT id FROM outbox_message
        WHERE status = 'pending' AND available_at <= clock_timestamp()
        ORDER BY available_at, id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id, topic, payload, attempts
    """
)


async def claim(unit: UnitOfWork, limit: int, lease_seconds: float) -> list[Claimed]:
    """Take up to `limit` due messages for one lease. Concurrent workers never take the same
    row: SKIP LOCKED passes over rows another claim is updating."""
    rows = await unit.session.execute(_CLAIM, {"limit": limit, "lease": lease_seconds})
    return [Claimed(row.id, row.topic, row.payload, row.attempts) for row in rows]


async def mark_done(
    unit: UnitOfWork, message: Claimed, status: OutboxStatus = OutboxStatus.DELIVERED
) -> None:
    await unit.session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message.id, OutboxMessage.status == OutboxStatus.PENDING)
        .values(status=status, delivered_at=text("clock_timestamp()"), last_error=None)
    )


def backoff_seconds(attempts: int, base: float, cap: float) -> float:
    """Wait before the next attempt: base, then twice that, then four times, up to cap."""
    return float(min(cap, base * 2 ** (attempts - 1)))


async def mark_failed(
    unit: UnitOfWork, message: Claimed, error: str, *, retry_in: float | None
) -> None:
    """Schedule another attempt in `retry_in` seconds, or, with None, dead-letter it."""
    values: dict[str, Any] = {"last_error": error[:500]}
    if retry_in is None:
        values["status"] = OutboxStatus.DEAD
    else:
        values["available_at"] = func.clock_timestamp() + bindparam(
            "retry_in", timedelta(seconds=retry_in), type_=Interval
        )
    await unit.session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message.id, OutboxMessage.status == OutboxStatus.PENDING)
        .values(**values)
    )


async def pending_count(unit: UnitOfWork) -> int:
    count = await unit.session.scalar(
        text("SELECT count(*) FROM outbox_message WHERE status = 'pending'")
    )
    return int(count or 0)


@dataclass(frozen=True)
class DeadLetter:
    id: int
    topic: str
    attempts: int
    last_error: str | None
    created_at: datetime
    payload: dict[str, Any]


async def dead_letters(unit: UnitOfWork, limit: int) -> list[DeadLetter]:
    rows = await unit.session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.status == OutboxStatus.DEAD)
        .order_by(OutboxMessage.id)
        .limit(limit)
    )
    return [
        DeadLetter(row.id, row.topic, row.attempts, row.last_error, row.created_at, row.payload)
        for row in rows
    ]


async def requeue_dead(unit: UnitOfWork, ids: list[int] | None) -> int:
    """Give dead letters (all of them with None) a fresh set of attempts."""
    query = update(OutboxMessage).where(OutboxMessage.status == OutboxStatus.DEAD)
    if ids is not None:
        query = query.where(OutboxMessage.id.in_(ids))
    result = await unit.session.execute(
        query.values(
            status=OutboxStatus.PENDING, attempts=0, available_at=text("clock_timestamp()")
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
