"""Database plumbing: the declarative base, engine and session factory, and the embedded
PostgreSQL used when DATABASE_URL is unset.

Sessions do not autobegin: every transaction is opened explicitly by a service
(`async with session.begin():`), so each boundary can be found by reading the service.
"""

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import DateTime, MetaData, func, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import NullPool

from app.config import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


T = TypeVar("T")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def created_at_column() -> Mapped[datetime]:
    # clock_timestamp(), not now(): rows made in one transaction still order by creation.
    return mapped_column(
        DateTime(timezone=True), server_default=func.clock_timestamp(), nullable=False
    )


def async_url(url: str) -> str:
    """Accept postgres://, postgresql:// or postgresql+asyncpg:// and return the asyncpg form."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url.removeprefix(prefix)
    raise ValueError("DATABASE_URL must be a PostgreSQL URL")


def create_engine(settings: Settings) -> AsyncEngine:
    if settings.database_url is None:
        raise RuntimeError(
            "DATABASE_URL is not set (the launcher sets it for the embedded database)"
        )
    options: dict[str, Any] = {"pool_pre_ping": False}
    if settings.db_pool == "null":
        options["poolclass"] = NullPool
    else:
        options.update(pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow)
    return create_async_engine(async_url(settings.database_url), **options)


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autobegin=False)


@asynccontextmanager
async def raw_connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection as asyncpg sees it, for the hot path's single statements (the
    caller of every request, the idempotency record, the balance). It skips the ORM and
    statement compilation; outside `conn.transaction()` each statement commits on its own,
    with no BEGIN or COMMIT round trip. SQL is plain text with $n parameters."""
    async with engine.connect() as connection:
        pooled = await connection.get_raw_connection()
        driver: asyncpg.Connection = pooled.driver_connection
        yield driver


def engine_of(session: AsyncSession) -> AsyncEngine:
    engine = session.bind
    assert isinstance(engine, AsyncEngine)
    return engine


async def driver_connection(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under the session's transaction: raw statements on it belong to
    that transaction (the ledger's, for one)."""
    connection = await session.connection()
    pooled = await connection.get_raw_connection()
    driver: asyncpg.Connection = pooled.driver_connection
    if not driver.is_in_transaction():
        # SQLAlchemy sends BEGIN with the session's first statement: without one yet, a raw
        # statement would commit on its own.
        await connection.execute(text("SELECT 1"))
        assert driver.is_in_transaction()
    return driver


def start_embedded_postgres(data_dir: str, name: str = "pg") -> str:
    """Start (or join) the embedded PostgreSQL under data_dir and return its URL.

    The server stops when the last process that joined it exits.
    """
    import warnings

    import pgserver

    root = Path(data_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(root / name, cleanup_mode="stop")  # type: ignore[attr-defined]
    url: str = server.get_uri()
    return url


_RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock detected


def is_retryable(error: BaseException) -> bool:
    """A serialization failure or a deadlock, raised by asyncpg or wrapped by SQLAlchemy."""
    candidates: list[object] = [error]
    if isinstance(error, DBAPIError):
        candidates += [error.orig, getattr(error.orig, "__cause__", None)]
    return any(getattr(c, "sqlstate", None) in _RETRYABLE_SQLSTATES for c in candidates)


async def _with_retries(run: Callable[[], Awaitable[T]], attempts: int) -> T:
    for attempt in range(1, attempts + 1):
        try:
            return await run()
        except Exception as error:
            if attempt == attempts or not is_retryable(error):
                raise
            await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))
    raise AssertionError("unreachable")


async def in_transaction(
    session: AsyncSession, work: Callable[[], Awaitable[T]], attempts: int = 5
) -> T:
    """Run `work` in a transaction of `session`, again from the start when PostgreSQL aborts
    it for a serialization failure or a deadlock: those are never a client's 5xx."""

    async def once() -> T:
        async with session.begin():
            return await work()

    return await _with_retries(once, attempts)


async def in_raw_transaction(
    engine: AsyncEngine, work: Callable[[asyncpg.Connection], Awaitable[T]], attempts: int = 5
) -> T:
    """`in_transaction` for the hot path: `work` in a transaction of a raw pooled connection."""

    async def once() -> T:
        async with raw_connection(engine) as conn, conn.transaction():
            return await work(conn)

    return await _with_retries(once, attempts)
