"""The unit of work: a transaction PostgreSQL aborts for a serialization failure or a
deadlock is run again from the start (never a client's 5xx), whether the ORM or plain SQL
hit it; any other error is not; work that committed part of itself is never run again."""

from collections.abc import Callable

import asyncpg
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.kit.db import UnitOfWork


def raise_sql(sqlstate: str) -> str:
    return f"DO $$ BEGIN RAISE EXCEPTION 'forced' USING ERRCODE = '{sqlstate}'; END $$"


def flaky(fail_with: str, times: int) -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def statement() -> str:
        calls.append(1)
        return raise_sql(fail_with) if len(calls) <= times else "SELECT 1"

    return calls, statement


@pytest.mark.parametrize("sqlstate", ["40001", "40P01"])
async def test_orm_work_is_retried_after_a_serialization_failure_or_deadlock(
    app: FastAPI, sqlstate: str
) -> None:
    calls, statement = flaky(sqlstate, times=2)

    async def work(unit: UnitOfWork) -> int:
        return int(await unit.session.scalar(text(statement())) or 0) + 41

    assert await app.state.database.run(work) == 42
    assert len(calls) == 3


@pytest.mark.parametrize("sqlstate", ["40001", "40P01"])
async def test_plain_sql_work_is_retried_after_a_serialization_failure_or_deadlock(
    app: FastAPI, sqlstate: str
) -> None:
    calls, statement = flaky(sqlstate, times=2)

    async def work(unit: UnitOfWork) -> int:
        conn = await unit.connection()
        return int(await conn.fetchval(statement()) or 0) + 41

    assert await app.state.database.run(work) == 42
    assert len(calls) == 3


async def test_other_errors_are_not_retried(app: FastAPI) -> None:
    calls, statement = flaky("23505", times=1)  # unique violation

    async def raw(unit: UnitOfWork) -> object:
        return await (await unit.connection()).fetchval(statement())

    with pytest.raises(asyncpg.UniqueViolationError):
        await app.state.database.run(raw)
    assert len(calls) == 1

    calls, statement = flaky("23505", times=1)

    async def orm(unit: UnitOfWork) -> object:
        return await unit.session.scalar(text(statement()))

    with pytest.raises(DBAPIError):
        await app.state.database.run(orm)
    assert len(calls) == 1


async def test_a_failure_that_persists_is_raised_after_the_last_attempt(app: FastAPI) -> None:
    calls, statement = flaky("40001", times=10)

    async def work(unit: UnitOfWork) -> object:
        return await (await unit.connection()).fetchval(statement())

    with pytest.raises(asyncpg.SerializationError):
        await app.state.database.run(work, attempts=3)
    assert len(calls) == 3


async def test_work_that_committed_part_of_itself_is_not_run_again(app: FastAPI) -> None:
    calls, statement = flaky("40001", times=10)

    async def work(unit: UnitOfWork) -> object:
        await unit.commit()  # as a payment does before it charges a card
        return await (await unit.connection()).fetchval(statement())

    with pytest.raises(asyncpg.SerializationError):
        await app.state.database.run(work)
    assert len(calls) == 1


async def test_orm_and_plain_sql_share_one_transaction(app: FastAPI) -> None:
    class Abort(Exception):
        pass

    async def work(unit: UnitOfWork) -> None:
        conn = await unit.connection()
        orm_pid = await unit.session.scalar(text("SELECT txid_current()"))
        assert await conn.fetchval("SELECT txid_current()") == orm_pid
        raise Abort

    with pytest.raises(Abort):
        await app.state.database.run(work)


async def test_a_database_error_does_not_carry_its_bound_parameters(app: FastAPI) -> None:
    # SQLAlchemy prints the parameters of a failed statement in its message unless told not
    # to (hide_parameters); a parameter may be an email, a token's subject or a digest, and
    # messages reach logs.
    async def work(unit: UnitOfWork) -> object:
        return await unit.session.scalar(
            text("SELECT CAST(:value AS bigint) / 0"), {"value": 4242424242}
        )

    with pytest.raises(DBAPIError) as raised:
        await app.state.database.run(work)
    assert "division by zero" in str(raised.value)
    assert "4242424242" not in str(raised.value)
