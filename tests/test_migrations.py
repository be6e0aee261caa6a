"""The models and the migrations describe one schema: on the migrated database Alembic's
autogenerate finds nothing to change, and the CHECK constraint of every state column admits
exactly the values of its enum (a new state needs a migration)."""

import re

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import CheckConstraint, Connection
from sqlalchemy.ext.asyncio import create_async_engine

import app.models  # noqa: F401  (registers every table)
from app.billing.schemas import PLAN_IDS
from app.kit.db import Base, async_url
from app.kit.states import StateColumn
from app.orders.schemas import PRODUCT_IDS, WILDCARD_PRODUCT_IDS

_QUOTED = re.compile(r"'([^']*)'::(?:character varying|text)")


def _autogenerate(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_autogenerate_finds_nothing_to_migrate(database_url: str) -> None:
    engine = create_async_engine(async_url(database_url))
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(_autogenerate) == []
    finally:
        await engine.dispose()


async def test_each_state_column_admits_exactly_its_enum(database_url: str) -> None:
    expected: dict[str, set[str]] = {}
    for table in Base.metadata.tables.values():
        states = {c.name: c.type.states for c in table.columns if isinstance(c.type, StateColumn)}
        for constraint in table.constraints:
            if isinstance(constraint, CheckConstraint) and constraint.name in {
                f"ck_{table.name}_{column}" for column in states
            }:
                column = str(constraint.name).removeprefix(f"ck_{table.name}_")
                expected[str(constraint.name)] = {state.value for state in states[column]}
    assert "ck_certificate_order_status" in expected
    engine = create_async_engine(async_url(database_url))
    try:
        async with engine.connect() as connection:
            rows = await connection.exec_driver_sql(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE contype = 'c'"
            )
            found = {name: set(_QUOTED.findall(text)) for name, text in rows}
    finally:
        await engine.dispose()
    assert {name: found.get(name) for name in expected} == expected


async def test_the_schemas_catalogue_is_the_seeded_one(database_url: str) -> None:
    """The OpenAPI enums of product and plan ids (and which products take wildcard names) are
    what the migrations seeded."""
    engine = create_async_engine(async_url(database_url))
    try:
        async with engine.connect() as connection:
            products = (
                await connection.exec_driver_sql("SELECT id, wildcard FROM product ORDER BY id")
            ).all()
            plans = (await connection.exec_driver_sql("SELECT id FROM plan ORDER BY id")).all()
    finally:
        await engine.dispose()
    assert [p.id for p in products] == sorted(PRODUCT_IDS)
    assert [p.id for p in products if p.wildcard] == sorted(WILDCARD_PRODUCT_IDS)
    assert [p.id for p in plans] == sorted(PLAN_IDS)
