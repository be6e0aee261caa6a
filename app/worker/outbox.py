"""The transactional outbox: enqueue inside the caller's transaction, claim with
FOR UPDATE SKIP LOCKED under a lease, then record the outcome.

Delivery is at least once: a message is marked delivered only after its handler returned, so
a worker that dies between sending and marking sends it again once its lease runs out. Each
message carries a stable id that handlers pass on (an email's Message-ID), so a receiver can
drop the rare repeat.
"""

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import Interval, bindparam, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.worker.models import OutboxMessage


async def enqueue(conn: asyncpg.Connection, topic: str, payload: dict[str, Any]) -> None:
    """Inside the transaction open on `conn`: the message exists exactly when the event that
    caused it committed."""
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


async def claim(
    factory: async_sessionmaker[AsyncSession], limit: int, lease_seconds: float
) -> list[Claimed]:
    """Take up to `limit` due messages for one lease. Concurrent workers never take the same
    row: SKIP LOCKED passes over rows another claim is updating."""
    async with factory() as session, session.begin():
        rows = await session.execute(_CLAIM, {"limit": limit, "lease": lease_seconds})
        return [Claimed(row.id, row.topic, row.payload, row.attempts) for row in rows]


async def mark_done(
    factory: async_sessionmaker[AsyncSession], message: Claimed, status: str = "delivered"
) -> None:
    async with factory() as session, session.begin():
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message.id, OutboxMessage.status == "pending")
            .values(status=status, delivered_at=text("clock_timestamp()"), last_error=None)
        )


def backoff_seconds(attempts: int, base: float, cap: float) -> float:
    """Wait before the next attempt: base, then twice that, then four times, up to cap."""
    return float(min(cap, base * 2 ** (attempts - 1)))


async def mark_failed(
    factory: async_sessionmaker[AsyncSession],
    message: Claimed,
    error: str,
    *,
    retry_in: float | None,
) -> None:
    """Schedule another attempt in `retry_in` seconds, or, with None, dead-letter it."""
    values: dict[str, Any] = {"last_error": error[:500]}
    if retry_in is None:
        values["status"] = "dead"
    else:
        values["available_at"] = func.clock_timestamp() + bindparam(
            "retry_in", timedelta(seconds=retry_in), type_=Interval
        )
    async with factory() as session, session.begin():
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message.id, OutboxMessage.status == "pending")
            .values(**values)
        )


async def pending_count(factory: async_sessionmaker[AsyncSession]) -> int:
    async with factory() as session, session.begin():
        count = await session.scalar(
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


async def dead_letters(factory: async_sessionmaker[AsyncSession], limit: int) -> list[DeadLetter]:
    async with factory() as session, session.begin():
        rows = await session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.status == "dead")
            .order_by(OutboxMessage.id)
            .limit(limit)
        )
        return [
            DeadLetter(row.id, row.topic, row.attempts, row.last_error, row.created_at, row.payload)
            for row in rows
        ]


async def requeue_dead(factory: async_sessionmaker[AsyncSession], ids: list[int] | None) -> int:
    """Give dead letters (all of them with None) a fresh set of attempts."""
    query = update(OutboxMessage).where(OutboxMessage.status == "dead")
    if ids is not None:
        query = query.where(OutboxMessage.id.in_(ids))
    async with factory() as session, session.begin():
        result = await session.execute(
            query.values(status="pending", attempts=0, available_at=text("clock_timestamp()"))
        )
    return int(result.rowcount)  # type: ignore[attr-defined]
