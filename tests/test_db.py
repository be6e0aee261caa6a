"""Transactions that PostgreSQL aborts for a serialization failure or a deadlock are run
again from the start (never a client's 5xx); any other error is not."""

from collections.abc import Callable

import asyncpg
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.db import in_raw_transaction, in_transaction


def raise_sql(sqlstate: str) -> str:
    return f"DO $$ BEGIN RAISE EXCEPTION 'forced' USING ERRCODE = '{sqlstate}'; END $$"


def flaky(fail_with: str, times: int) -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def statement() -> str:
        calls.append(1)
        return raise_sql(fail_with) if len(calls) <= times else "SELECT 1"

    return calls, statement


@pytest.mark.parametrize("sqlstate", ["40001", "40P01"])
async def test_an_orm_transaction_is_retried_after_a_serialization_failure_or_deadlock(
    app: FastAPI, sqlstate: str
) -> None:
    calls, statement = flaky(sqlstate, times=2)
    async with app.state.session_factory() as session:

        async def work() -> int:
            return int(await session.scalar(text(statement())) or 0) + 41

        assert await in_transaction(session, work) == 42
    assert len(calls) == 3


@pytest.mark.parametrize("sqlstate", ["40001", "40P01"])
async def test_a_raw_transaction_is_retried_after_a_serialization_failure_or_deadlock(
    app: FastAPI, sqlstate: str
) -> None:
    calls, statement = flaky(sqlstate, times=2)

    async def work(conn: asyncpg.Connection) -> int:
        return int(await conn.fetchval(statement()) or 0) + 41

    assert await in_raw_transaction(app.state.engine, work) == 42
    assert len(calls) == 3


async def test_other_errors_are_not_retried(app: FastAPI) -> None:
    calls, statement = flaky("23505", times=1)  # unique violation

    async def raw(conn: asyncpg.Connection) -> object:
        return await conn.fetchval(statement())

    with pytest.raises(asyncpg.UniqueViolationError):
        await in_raw_transaction(app.state.engine, raw)
    assert len(calls) == 1

    calls, statement = flaky("23505", times=1)
    async with app.state.session_factory() as session:

        async def orm() -> object:
            return await session.scalar(text(statement()))

        with pytest.raises(DBAPIError):
            await in_transaction(session, orm)
    assert len(calls) == 1


async def test_a_failure_that_persists_is_raised_after_the_last_attempt(app: FastAPI) -> None:
    calls, statement = flaky("40001", times=10)

    async def work(conn: asyncpg.Connection) -> object:
        return await conn.fetchval(statement())

    with pytest.raises(asyncpg.SerializationError):
        await in_raw_transaction(app.state.engine, work, attempts=3)
    assert len(calls) == 3
