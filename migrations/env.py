"""Alembic environment: migrations over asyncpg, against DATABASE_URL or the URL given by code."""

import asyncio
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

import app.models  # noqa: F401  (registers every table)
from app.kit.db import WITHOUT_PREPARED_STATEMENTS, Base, async_url

config = context.config
if config.config_file_name is not None and not config.attributes.get("database_url"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("database_url") or os.environ.get("DATABASE_URL")
    if not url:
        raise RuntimeError("DATABASE_URL is not set")
    return async_url(url)


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        # One migrator at a time, even when several processes start together.
        context.execute("SELECT pg_advisory_xact_lock(7340991)")
        context.run_migrations()


async def _run_online() -> None:
    # Without prepared statements whatever the URL (PostgreSQL, or PgBouncer in transaction
    # pooling mode: every API process migrates at start): a migration runs a few statements
    # once, and it is one transaction, under a transaction-level lock.
    engine = create_async_engine(_url(), connect_args=dict(WITHOUT_PREPARED_STATEMENTS))
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
