"""The move to billing in arrears (migration 0006) on a database billed in advance until then:
nothing already invoiced is billed again, the free rest of a first month stays free, a
subscription canceled at period end keeps its end, and the migration goes down and up."""

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import anyio
import asyncpg
import pytest
from alembic import command
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from app.billing.run import create_invoices
from app.kit.clock import ManualClock
from app.kit.db import Database, async_url
from app.migrate import alembic_config
from tests.billing.conftest import DECEMBER, DECEMBER_1, JANUARY, JANUARY_1, NOVEMBER

FEBRUARY_1 = datetime(2027, 2, 1, 0, 5, tzinfo=UTC)

# As 0005's code wrote them, on a database whose worker billed November in advance on
# November 1st and December on December 1st; the migration runs on December 1st, after it.
_BEFORE = """
INSERT INTO account (id, name, email) VALUES
    ('acct_old', 'Old', 'old@example.com'), ('acct_new', 'New', 'new@example.com');
INSERT INTO subscription
    (id, account_id, plan_id, started_at, cancel_at_period_end, canceled_at, ended_at) VALUES
    -- billed in advance for November and December
    ('sub_october', 'acct_old', 'cloud_small', '2026-10-05 08:00Z', false, NULL, NULL),
    -- the rest of November free, billed in advance for December
    ('sub_november', 'acct_old', 'support', '2026-11-14 10:00Z', false, NULL, NULL),
    -- canceled at the end of November: billed for November, runs until December 1st
    ('sub_left', 'acct_old', 'cloud_large', '2026-10-05 08:00Z', true,
     '2026-11-20 12:00Z', '2026-12-01 00:00Z'),
    -- canceled in its free first month: never billed
    ('sub_tried', 'acct_old', 'cloud_large', '2026-11-14 10:00Z', true,
     '2026-11-15 09:00Z', '2026-12-01 00:00Z'),
    -- an account whose first month is free, and whose December is not billed yet
    ('sub_late', 'acct_new', 'cloud_small', '2026-12-01 06:00Z', false, NULL, NULL);
INSERT INTO invoice (id, account_id, period_start, status, total_cents, issued_at) VALUES
    ('inv_nov', 'acct_old', '2026-11-01', 'paid', 10000, '2026-11-01 00:05Z'),
    ('inv_dec', 'acct_old', '2026-12-01', 'paid', 7000, '2026-12-01 00:05Z');
"""


@pytest.fixture
async def database_at_0005(server_url: str) -> AsyncIterator[str]:
    name = f"billing_migration_{secrets.token_hex(4)}"
    server = make_url(server_url).set(drivername="postgresql")
    admin = await asyncpg.connect(server.render_as_string(hide_password=False))
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        await anyio.to_thread.run_sync(command.upgrade, alembic_config(url), "0005")
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_a_database_billed_in_advance_moves_to_arrears_without_billing_twice(
    database_at_0005: str,
) -> None:
    url = database_at_0005
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(_BEFORE)
        await anyio.to_thread.run_sync(command.upgrade, alembic_config(url), "head")
        rows = await connection.fetch(
            "SELECT id, billed_from, canceled_at, ended_at FROM subscription ORDER BY id"
        )
        moved = {row["id"]: (row["billed_from"], row["ended_at"]) for row in rows}
        day = datetime.fromisoformat
        assert moved == {
            "sub_late": (day("2027-01-01T00:00Z"), None),
            "sub_left": (day("2026-11-01T00:00Z"), day("2026-12-01T00:00Z")),
            "sub_november": (day("2026-12-01T00:00Z"), None),
            "sub_october": (day("2026-11-01T00:00Z"), None),
            "sub_tried": (day("2026-12-01T00:00Z"), day("2026-12-01T00:00Z")),
        }
        columns = await connection.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'subscription'"
        )
        assert "cancel_at_period_end" not in {row["column_name"] for row in columns}

        database = Database(create_async_engine(async_url(url)))
        try:
            # November and December were invoiced in advance: nothing more for them; the free
            # rest of first months stays free.
            clock = ManualClock(DECEMBER_1)
            assert await create_invoices(database, clock, NOVEMBER) == 0
            clock.set(JANUARY_1)
            assert await create_invoices(database, clock, DECEMBER) == 0
            # January is the first month billed in arrears: what ran in it.
            clock.set(FEBRUARY_1)
            assert await create_invoices(database, clock, JANUARY) == 2
        finally:
            await database.dispose()
        lines = await connection.fetch(
            "SELECT i.account_id, l.subscription_id, l.amount_cents FROM invoice_line l"
            " JOIN invoice i ON i.id = l.invoice_id ORDER BY i.account_id, l.position"
        )
        assert [tuple(line) for line in lines] == [
            ("acct_new", "sub_late", 2000),
            ("acct_old", "sub_october", 2000),
            ("acct_old", "sub_november", 5000),
        ]

        # Down and up again: an ended subscription reads back as canceled at period end.
        await connection.execute(
            "UPDATE subscription SET canceled_at = '2027-02-03 10:00Z',"
            " ended_at = '2027-02-03 10:00Z' WHERE id = 'sub_october'"
        )
        await anyio.to_thread.run_sync(command.downgrade, alembic_config(url), "0005")
        flags = await connection.fetch(
            "SELECT id FROM subscription WHERE cancel_at_period_end ORDER BY id"
        )
        assert [row["id"] for row in flags] == ["sub_left", "sub_october", "sub_tried"]
        await anyio.to_thread.run_sync(command.upgrade, alembic_config(url), "head")
    finally:
        await connection.close()
