"""The database: the declarative base, the engine, the embedded PostgreSQL, and the unit of
work through which every service reaches PostgreSQL.

A unit of work is one request's (or one worker or operator task's) use of the database: an
ORM session and the asyncpg connection under it, on one pooled connection and in one
transaction. `Database.run(work)` is the only place a transaction is opened, committed and
retried; routes get theirs from `app.kit.routing.ApiRoute`, the worker and the CLI call
`run` for each task. Services receive the unit, write through it and never commit, with one
exception made in one place: the two-phase payment (`app.kit.payments`) commits what it is
about to charge for, because a card is never charged inside a transaction.

A lost or refused connection is `DatabaseUnavailable` (503 with Retry-After), the broken
connection is dropped from the pool, and the next unit gets a fresh one. So is a unit that
waited `DB_POOL_TIMEOUT_SECONDS` for a pooled connection, all of them in use.
"""

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import DateTime, MetaData, func
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.util import greenlet_spawn

from app.config import Settings
from app.kit.errors import ApiError

logger = logging.getLogger(__name__)

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


# Behind PgBouncer in transaction pooling mode a client's next transaction may run on another
# server connection, and another client's on this one: a named prepared statement would be
# missing there, or its name taken. Neither asyncpg (its statement cache) nor SQLAlchemy (its
# prepared statement cache) then keeps one: every statement goes as an unnamed one, parsed
# with its execution. Nothing else of ours lives in the server session between transactions
# (locks are pg_advisory_xact_lock, no SET, LISTEN, temporary table or held cursor).
WITHOUT_PREPARED_STATEMENTS: dict[str, Any] = {
    "statement_cache_size": 0,
    "prepared_statement_cache_size": 0,
}


def create_engine(settings: Settings) -> AsyncEngine:
    if settings.database_url is None:
        raise RuntimeError(
            "DATABASE_URL is not set (the launcher sets it for the embedded database)"
        )
    # Bound parameters never reach a log line or an error message (they may be an email, a
    # password digest or a token's subject).
    options: dict[str, Any] = {"pool_pre_ping": False, "hide_parameters": True}
    options.update(
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
    )
    if settings.database_pgbouncer:
        options["connect_args"] = dict(WITHOUT_PREPARED_STATEMENTS)
    return create_async_engine(async_url(settings.database_url), **options)


def start_embedded_postgres(data_dir: str, name: str = "pg") -> str:
    """Start (or join) the embedded PostgreSQL under data_dir and return its URL.

    The server stops when the last process that joined it exits.
    """
    import warnings

    root = Path(data_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    # pgserver warns on import where XDG_RUNTIME_DIR is unset (a container, CI) and then
    # uses /tmp, which is fine: not a warning to print at every start.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        server = pgserver.get_server(root / name, cleanup_mode="stop")  # type: ignore[attr-defined]
    url: str = server.get_uri()
    return url


_RETRY_HINT = "Retry shortly (with the same Idempotency-Key, a retry finds what was already done)."


class DatabaseUnavailable(ApiError):
    def __init__(
        self, detail: str = "The database is not reachable right now; nothing was lost."
    ) -> None:
        super().__init__(
            "service_unavailable", 503, f"{detail} {_RETRY_HINT}", headers={"Retry-After": "2"}
        )


def _all_connections_busy() -> DatabaseUnavailable:
    return DatabaseUnavailable("The service is busy: no database connection came free in time.")


_RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock detected
# Class 08 (connection exception) and the shutdown states of class 57: the server went away
# or is not taking connections yet.
_UNAVAILABLE_SQLSTATES = {"57P01", "57P02", "57P03", "53300"}


def _causes(error: BaseException) -> list[BaseException]:
    """The error, what SQLAlchemy wrapped, and what it was raised from."""
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [error]
    while pending and len(seen) < 10:
        current = pending.pop()
        if current is None or any(current is known for known in seen):
            continue
        seen.append(current)
        pending += [getattr(current, "orig", None), current.__cause__, current.__context__]
    return seen


def _sqlstate(error: BaseException) -> str | None:
    state = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return state if isinstance(state, str) else None


def is_retryable(error: BaseException) -> bool:
    """A serialization failure or a deadlock, raised by asyncpg or wrapped by SQLAlchemy."""
    return any(_sqlstate(cause) in _RETRYABLE_SQLSTATES for cause in _causes(error))


def is_disconnect(error: BaseException) -> bool:
    """The connection was lost, refused or left unusable: the database, not the request."""
    for cause in _causes(error):
        if isinstance(cause, DBAPIError) and cause.connection_invalidated:
            return True
        state = _sqlstate(cause)
        if state is not None and (state.startswith("08") or state in _UNAVAILABLE_SQLSTATES):
            return True
        if isinstance(
            cause,
            asyncpg.ConnectionDoesNotExistError
            | asyncpg.InterfaceError
            # The protocol was left mid-operation by an earlier failure: the connection is
            # unusable, whatever the server's state.
            | asyncpg.exceptions.InternalClientError
            | asyncpg.PostgresConnectionError
            | ConnectionError
            | OSError
            | TimeoutError,
        ):
            return True
    return False


class UnitOfWork:
    """One request's or one task's database work: `session` (the ORM) and `connection()`
    (plain SQL on asyncpg) share one connection and one transaction, begun with the first
    statement that needs one and committed by `Database.run` when the work is done.

    The hot path needs neither an ORM session nor a transaction: its statements are
    complete on their own (`fetchrow_atomic`). So the unit takes a pooled connection when
    a statement first needs one, and makes its session when `session` is first used: on
    that same connection, if one was taken."""

    def __init__(self, database: "Database") -> None:
        self._database = database
        self.commits = 0  # a retry from the start is safe only while this is 0
        self._session: AsyncSession | None = None
        # The pooled connection (SQLAlchemy's proxy) until a commit gives it back, and the
        # session's view of it when the session joined it.
        self._pooled: Any = None
        self._owned = False  # taken by the unit itself, not through the session
        self._joined: AsyncConnection | None = None

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            if self._pooled is None:
                self._session = self._database.sessions()
            else:
                # Statements of their own ran (outside any transaction): the session joins
                # their connection and begins its transaction there.
                engine = self._database.engine
                self._joined = AsyncConnection(
                    engine, Connection(engine.sync_engine, connection=self._pooled)
                )
                self._owned = False  # closing the joined connection gives it back
                self._session = self._database.sessions(bind=self._joined)
        return self._session

    async def _pooled_connection(self) -> Any:
        if self._pooled is None:
            if self._session is not None:
                connection = await self._session.connection()
                self._pooled = await connection.get_raw_connection()
            else:
                self._pooled = await self._database.engine.raw_connection()
                self._owned = True
        return self._pooled

    async def connection(self) -> asyncpg.Connection:
        """The asyncpg connection, inside the unit's transaction (begun now if need be)."""
        await self.session.connection()  # the ORM's transaction is the unit's
        pooled = await self._pooled_connection()
        adapter = pooled.dbapi_connection
        if adapter._transaction is None:
            # SQLAlchemy sends BEGIN with its first statement; plain SQL must not run
            # before it, or it would commit on its own.
            await adapter._start_transaction()
        driver: asyncpg.Connection = pooled.driver_connection
        return driver

    async def fetchrow_atomic(self, sql: str, *args: object) -> asyncpg.Record | None:
        """A statement that is complete on its own (it reads one consistent snapshot, or
        makes one whole change): while the unit has no transaction open it runs as its own,
        with no BEGIN or COMMIT round trip; the hot path's way (who is calling, a balance
        order, the balance). Inside the unit's transaction once one is open."""
        pooled = await self._pooled_connection()
        driver: asyncpg.Connection = pooled.driver_connection
        row: asyncpg.Record | None = await driver.fetchrow(sql, *args)
        return row

    async def fetch_atomic(self, sql: str, *args: object) -> list[asyncpg.Record]:
        """`fetchrow_atomic`'s every row: a read complete on its own, which opens no
        transaction for what follows it."""
        pooled = await self._pooled_connection()
        driver: asyncpg.Connection = pooled.driver_connection
        rows: list[asyncpg.Record] = await driver.fetch(sql, *args)
        return rows

    async def commit(self) -> None:
        """Make what the unit did so far durable and give the connection back; what follows
        runs in a new transaction, on a connection taken afresh when it is needed (the
        session and its objects stay). Called by `Database.run`, and by `app.kit.payments`
        before it charges a card."""
        session = self._session
        if session is not None and not self._nothing_to_commit(session):
            await session.commit()
        await self._give_back()
        self.commits += 1

    async def close(self) -> None:
        """The end of the unit: a transaction still open rolled back, the connection back
        to the pool."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        await self._give_back()

    async def _give_back(self) -> None:
        pooled, owned, joined = self._pooled, self._owned, self._joined
        self._pooled = self._joined = None
        self._owned = False
        if joined is not None:
            if self._session is not None:
                # From here the session takes its connections from the engine.
                self._session.bind = self._database.engine
                self._session.sync_session.bind = self._database.engine.sync_engine
            await joined.close()
        elif owned:
            await greenlet_spawn(pooled.close)
        # Otherwise the connection is the session's own: its commit or close gave it back.

    async def discard(self, error: BaseException) -> None:
        """Roll back; a connection that broke is invalidated, so the pool never hands it out
        again (asyncpg raised straight from the driver is not seen by SQLAlchemy)."""
        session, pooled = self._session, self._pooled
        try:
            if is_disconnect(error):
                if session is not None:
                    await session.invalidate()
                if pooled is not None and pooled.is_valid:
                    await greenlet_spawn(pooled.invalidate)
            elif session is not None:
                await session.rollback()
        except Exception:
            logger.debug("rollback after %s failed", type(error).__name__, exc_info=True)
            try:
                if pooled is not None and pooled.is_valid:
                    await greenlet_spawn(pooled.invalidate)
            except Exception:
                logger.debug("invalidate failed", exc_info=True)
        try:
            await self.close()
        except Exception:
            logger.debug("closing after %s failed", type(error).__name__, exc_info=True)

    @staticmethod
    def _nothing_to_commit(session: AsyncSession) -> bool:
        """No transaction was begun on the session and it holds no change: a commit would
        only cost SQLAlchemy's bookkeeping."""
        return not session.in_transaction() and not (
            session.new or session.dirty or session.deleted
        )


class Database:
    """The engine and the one way to run work against it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._dropped_at = float("-inf")

    async def run(self, work: Callable[[UnitOfWork], Awaitable[T]], *, attempts: int = 5) -> T:
        """Run `work` in a unit of work and commit it. A serialization failure or a deadlock
        runs it again from the start (never a client's error) unless part of it has already
        committed; a lost database is `DatabaseUnavailable`."""
        for attempt in range(1, attempts + 1):
            unit = UnitOfWork(self)
            try:
                result = await work(unit)
                await unit.commit()
                await unit.close()
                return result
            except BaseException as error:
                await unit.discard(error)
                if is_retryable(error) and unit.commits == 0 and attempt < attempts:
                    await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))
                    continue
                if isinstance(error, PoolTimeout):
                    # The connections are fine, only all in use: nothing to drop.
                    raise _all_connections_busy() from error
                lost = isinstance(error, Exception) and not isinstance(error, ApiError)
                if lost and is_disconnect(error):
                    logger.warning("database unavailable: %s", type(error).__name__)
                    await self._drop_pooled_connections()
                    raise DatabaseUnavailable from error
                raise
        raise AssertionError("unreachable")

    async def _drop_pooled_connections(self) -> None:
        """After a lost connection the others in the pool are most likely dead too (the
        server restarted, or ended our sessions): close them all, so the next request gets a
        fresh one instead of another error. At most once a second, however many requests
        noticed."""
        now = time.monotonic()
        if now - self._dropped_at < 1.0:
            return
        self._dropped_at = now
        try:
            await self.engine.dispose()
        except Exception:
            logger.debug("closing the pooled connections failed", exc_info=True)

    async def dispose(self) -> None:
        await self.engine.dispose()
