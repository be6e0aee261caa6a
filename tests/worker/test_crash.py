"""Crash safety: an API process (running the worker too) is killed with SIGKILL in the middle
of a burst of orders and deposits, then started again. Once its worker has reconciled and
drained the outbox, nothing committed is lost, nothing is counted twice and nothing is left
pending."""

import asyncio
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from tests.conftest import Member, SignUp, db_session, eventually, unique_email
from tests.money import (
    TIMEOUT_NOT_CHARGED,
    TIMEOUT_SUCCEEDED,
    VISA,
    add_card,
    fund,
    key,
    settings,
)
from tests.processes import ServiceProcess, service_environment
from tests.smtp import SmtpServer

THRESHOLD_CENTS = 150_00
ORDER_CENTS = 49_00  # ssl_dv, one year, no SANs


@dataclass
class Sent:
    kind: str  # "order" | "deposit"
    account: Member
    idempotency_key: str
    response: httpx.Response | None = None  # None: no answer before the kill


async def watched_accounts(client: httpx.AsyncClient, sign_up: SignUp) -> list[Member]:
    """Accounts with 200.00 each, paying from the balance, notified below 150.00. Two of them
    end with a card whose charges time out: one charged at the gateway, one not."""
    accounts = []
    for card in (VISA, VISA, VISA, VISA, TIMEOUT_SUCCEEDED, TIMEOUT_NOT_CHARGED):
        member = await sign_up()
        await fund(client, member, "200.00")
        await add_card(client, member, card)
        member.data["watcher"] = unique_email("watcher")
        member.data["card"] = card
        await settings(
            client,
            member,
            low_balance_threshold="150.00",
            notification_emails=[member.data["watcher"]],
        )
        accounts.append(member)
    return accounts


async def burst_until_killed(server: ServiceProcess, accounts: list[Member]) -> list[Sent]:
    """Orders and deposits, 16 at a time; the server is killed once a third have answered.
    The deposits on cards whose charges time out go first, so they are in flight then."""
    slow = [a for a in accounts if a.data["card"] != VISA]
    sent = [Sent("order", a, key()) for a in accounts for _ in range(12)]
    sent += [Sent("deposit", a, key()) for a in accounts if a not in slow for _ in range(4)]
    random.Random(7).shuffle(sent)
    sent = [Sent("deposit", a, key()) for a in slow for _ in range(4)] + sent
    answered = 0
    killed = asyncio.Event()
    gate = asyncio.Semaphore(16)

    async def send(http: httpx.AsyncClient, item: Sent) -> None:
        nonlocal answered
        async with gate:
            if killed.is_set():
                return
            path, body = (
                ("/v1/orders", {"product_id": "ssl_dv", "common_name": "crash.example.com"})
                if item.kind == "order"
                else ("/v1/finance/deposits", {"amount": "60.00"})
            )
            if item.kind == "order":
                body["validity_years"] = 1
            headers = {**item.account.headers, "Idempotency-Key": item.idempotency_key}
            try:
                item.response = await http.post(path, headers=headers, json=body)
            except httpx.TransportError:
                return
            answered += 1
            if answered == len(sent) // 3:
                killed.set()
                await server.kill()

    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        await asyncio.gather(*(send(http, item) for item in sent))
    assert killed.is_set(), "the burst ended before the kill"
    return sent


async def test_sigkill_mid_burst_loses_nothing_and_counts_nothing_twice(
    app: FastAPI,
    client: httpx.AsyncClient,
    sign_up: SignUp,
    smtp_server: SmtpServer,
    tmp_path: Path,
) -> None:
    environment = service_environment(
        app.state.settings,
        smtp_server,
        run_worker=True,
        reconcile_after_seconds=3,
        outbox_lease_seconds=2,
        webhook_timeout_seconds=1,
    )
    accounts = await watched_accounts(client, sign_up)
    ids = [a.account_id for a in accounts]
    first = await ServiceProcess.api(environment, tmp_path, "before-kill").start()
    try:
        sent = await burst_until_killed(first, accounts)
    finally:
        await first.stop()
    answered = [s for s in sent if s.response is not None]
    assert 0 < len(answered) < len(sent), "the kill did not land mid-burst"
    # Deposits whose charge was in flight at the kill: only the reconciler can settle them.
    [in_doubt] = await scalar_rows(
        app,
        "SELECT count(*) FROM deposit WHERE account_id = ANY(:ids) AND status = 'pending'",
        ids=ids,
    )
    assert in_doubt > 0

    second = await ServiceProcess.api(environment, tmp_path, "after-restart").start()
    try:

        async def settled_and_drained() -> bool:
            counts = await scalar_rows(
                app,
                """
                SELECT (SELECT count(*) FROM deposit
                        WHERE account_id = ANY(:ids) AND status = 'pending')
                     + (SELECT count(*) FROM certificate_order
                        WHERE account_id = ANY(:ids) AND status = 'pending_payment')
                     + (SELECT count(*) FROM outbox_message
                        WHERE payload->>'account_id' = ANY(:ids) AND status = 'pending')
                """,
                ids=ids,
            )
            return counts == [0]

        await eventually(settled_and_drained, seconds=60)
    finally:
        await second.stop()

    await assert_ledgers_consistent(app, ids)
    await assert_every_payment_settled_once(app, ids)
    await assert_answers_were_kept(app, answered)
    await assert_each_notice_delivered(app, accounts, smtp_server)


async def rows(app: FastAPI, sql: str, **params: Any) -> list[Any]:
    async with db_session(app) as session:
        return list((await session.execute(text(sql), params)).all())


async def scalar_rows(app: FastAPI, sql: str, **params: Any) -> list[Any]:
    return [row[0] for row in await rows(app, sql, **params)]


async def assert_ledgers_consistent(app: FastAPI, ids: list[str]) -> None:
    """Every balance equals the sum of its entries, and each entry's balance_after is the
    running sum, in an unbroken sequence."""
    entries: dict[str, list[Any]] = defaultdict(list)
    for row in await rows(
        app,
        "SELECT account_id, seq, amount_cents, balance_after_cents FROM ledger_entry"
        " WHERE account_id = ANY(:ids) ORDER BY account_id, seq",
        ids=ids,
    ):
        entries[row.account_id].append(row)
    balances = dict(
        await rows(
            app,
            "SELECT account_id, balance_cents FROM account_balance WHERE account_id = ANY(:ids)",
            ids=ids,
        )
    )
    for account_id in ids:
        running = 0
        for expected_seq, entry in enumerate(entries[account_id], start=1):
            running += entry.amount_cents
            assert entry.seq == expected_seq
            assert entry.balance_after_cents == running >= 0
        assert balances[account_id] == running


async def assert_every_payment_settled_once(app: FastAPI, ids: list[str]) -> None:
    """Paid orders and succeeded deposits match their ledger entries one to one; nothing
    else moved the balance and nothing is pending."""
    orders = await rows(
        app,
        "SELECT o.id, o.status, o.amount_cents,"
        " count(e.id) AS entries, sum(e.amount_cents) AS moved"
        " FROM certificate_order o LEFT JOIN ledger_entry e ON e.order_id = o.id"
        " WHERE o.account_id = ANY(:ids) GROUP BY o.id",
        ids=ids,
    )
    for order in orders:
        assert order.status in ("paid", "failed"), order
        if order.status == "paid":
            assert (order.entries, order.moved) == (1, -order.amount_cents), order
        else:
            assert order.entries == 0, order
    deposits = await rows(
        app,
        "SELECT d.id, d.status, d.amount_cents,"
        " count(e.id) AS entries, sum(e.amount_cents) AS moved"
        " FROM deposit d LEFT JOIN ledger_entry e ON e.deposit_id = d.id"
        " WHERE d.account_id = ANY(:ids) GROUP BY d.id",
        ids=ids,
    )
    for deposit in deposits:
        assert deposit.status in ("succeeded", "failed"), deposit
        if deposit.status == "succeeded":
            assert (deposit.entries, deposit.moved) == (1, deposit.amount_cents), deposit
        else:
            assert deposit.entries == 0, deposit
    strays = await scalar_rows(
        app,
        "SELECT count(*) FROM ledger_entry WHERE account_id = ANY(:ids)"
        " AND deposit_id IS NULL AND order_id IS NULL",
        ids=ids,
    )
    assert strays == [0]


async def assert_answers_were_kept(app: FastAPI, answered: list[Sent]) -> None:
    """What a client was told before the kill still holds afterwards."""
    for item in answered:
        assert item.response is not None
        body = item.response.json()
        if item.response.status_code == 402:
            assert body["code"] == "insufficient_funds"
            continue
        table = "certificate_order" if item.kind == "order" else "deposit"
        [status] = await scalar_rows(
            app, f"SELECT status FROM {table} WHERE id = :id", id=body["id"]
        )
        if item.response.status_code == 201:
            assert status == body["status"] == ("paid" if item.kind == "order" else "succeeded")
        else:  # 202: the outcome was unknown; it is known now
            assert item.response.status_code == 202
            assert item.account.data["card"] in (TIMEOUT_SUCCEEDED, TIMEOUT_NOT_CHARGED)
            expected = "succeeded" if item.account.data["card"] == TIMEOUT_SUCCEEDED else "failed"
            assert status == expected


async def assert_each_notice_delivered(
    app: FastAPI, accounts: list[Member], smtp_server: SmtpServer
) -> None:
    """Every debit that crossed the threshold queued exactly one notice, and each notice was
    received; a repeat after the kill could only carry the same Message-ID."""
    total = 0
    for account in accounts:
        amounts = await scalar_rows(
            app,
            "SELECT amount_cents FROM ledger_entry WHERE account_id = :id ORDER BY seq",
            id=account.account_id,
        )
        crossings, running = 0, 0
        for amount in amounts:
            before, running = running, running + amount
            crossings += amount < 0 and before >= THRESHOLD_CENTS > running
        messages = await rows(
            app,
            "SELECT id, status FROM outbox_message WHERE payload->>'account_id' = :id",
            id=account.account_id,
        )
        assert len(messages) == crossings
        assert {m.status for m in messages} <= {"delivered"}
        received = smtp_server.inbox.to(account.data["watcher"])
        domain = app.state.settings.smtp_from.rpartition("@")[2]
        assert {m["Message-ID"] for m in received} == {
            f"<outbox-{m.id}@{domain}>" for m in messages
        }
        total += crossings
    assert total > 0
