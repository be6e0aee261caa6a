"""Low-balance notices (SPEC §10): queued with the debit that crosses the threshold and
delivered over real SMTP by the worker, with retries."""

import logging

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from app.finance.ledger import post_entry
from app.kit import outbox
from app.kit.db import UnitOfWork
from app.kit.outbox import OutboxMessage
from app.worker.runner import Worker
from tests.conftest import Member, SignUp, db_session, unique_email
from tests.money import deposit, fund, order, settings
from tests.smtp import SmtpServer
from tests.worker.conftest import drain_until, make_worker


async def watched_account(
    client: httpx.AsyncClient, sign_up: SignUp, threshold: str = "60.00"
) -> tuple[Member, list[str]]:
    """An account with 100.00 on its balance, paying from it, watched by two addresses."""
    admin = await sign_up()
    await fund(client, admin, "100.00")
    addresses = [unique_email("finance"), unique_email("ops")]
    await settings(client, admin, low_balance_threshold=threshold, notification_emails=addresses)
    return admin, addresses


async def messages_of(app: FastAPI, account_id: str) -> list[OutboxMessage]:
    async with db_session(app) as session:
        rows = await session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.payload["account_id"].astext == account_id)
            .order_by(OutboxMessage.id)
        )
        return list(rows)


async def test_one_email_per_address_when_a_debit_crosses_the_threshold(
    app: FastAPI,
    client: httpx.AsyncClient,
    sign_up: SignUp,
    worker: Worker,
    smtp_server: SmtpServer,
) -> None:
    admin, addresses = await watched_account(client, sign_up)
    account = (await client.get("/v1/account", headers=admin.headers)).json()
    inbox = smtp_server.inbox

    assert (await order(client, admin)).status_code == 201  # 100.00 -> 51.00: crosses 60.00
    await drain_until(worker, lambda: all(inbox.to(a) for a in addresses))
    for address in addresses:
        [mail] = inbox.to(address)
        assert account["name"] in mail["Subject"]
        assert "51.00" in mail["Subject"]
        assert mail["From"] == worker.settings.smtp_from
        assert "60.00" in mail.get_content()

    assert (await order(client, admin)).status_code == 201  # 51.00 -> 2.00: still below
    balance = (await client.get("/v1/finance/balance", headers=admin.headers)).json()
    assert balance["below_threshold"] is True
    await worker.deliver_due()
    assert [len(inbox.to(a)) for a in addresses] == [1, 1]
    assert [m.status for m in await messages_of(app, admin.account_id)] == ["delivered"] * 2

    # A deposit back to at-or-above the threshold re-arms the notice.
    assert (await deposit(client, admin, "98.00")).status_code == 201  # 100.00
    assert (await order(client, admin)).status_code == 201  # 100.00 -> 51.00 again
    await drain_until(worker, lambda: all(len(inbox.to(a)) == 2 for a in addresses))
    assert "51.00" in inbox.to(addresses[0])[1]["Subject"]


async def test_landing_exactly_on_the_threshold_is_not_below_it(
    client: httpx.AsyncClient, sign_up: SignUp, worker: Worker, smtp_server: SmtpServer
) -> None:
    admin, addresses = await watched_account(client, sign_up, threshold="51.00")
    assert (await order(client, admin)).status_code == 201  # 100.00 -> 51.00
    await worker.deliver_due()
    assert smtp_server.inbox.to(addresses[0]) == []
    assert (await order(client, admin, sans=[])).status_code == 201  # 51.00 -> 2.00
    await drain_until(worker, lambda: len(smtp_server.inbox.to(addresses[0])) == 1)


async def test_no_email_for_a_refused_debit_or_a_rolled_back_one(
    app: FastAPI,
    client: httpx.AsyncClient,
    sign_up: SignUp,
    worker: Worker,
    smtp_server: SmtpServer,
) -> None:
    admin, addresses = await watched_account(client, sign_up)
    # Too little money: the order is refused and nothing is debited, so nothing crosses.
    refused = await order(client, admin, product_id="ssl_ev")
    assert refused.status_code == 402

    # A debit that crosses, in a transaction that then rolls back, leaves no message.
    class Abort(Exception):
        pass

    async def cross_then_abort(unit: UnitOfWork) -> None:
        posting = await post_entry(
            unit,
            account_id=admin.account_id,
            type="adjustment",
            amount_cents=-9_000,
            description="rolled back",
        )
        assert posting is not None
        assert posting.balance_after_cents == 1_000
        assert len(await messages_of(app, admin.account_id)) == 0  # other session: not yet
        raise Abort

    with pytest.raises(Abort):
        await app.state.database.run(cross_then_abort)

    await worker.deliver_due()
    assert await messages_of(app, admin.account_id) == []
    assert all(smtp_server.inbox.to(a) == [] for a in addresses)
    balance = (await client.get("/v1/finance/balance", headers=admin.headers)).json()
    assert balance["balance"] == "100.00"


async def test_notices_follow_the_account_email_by_default(
    client: httpx.AsyncClient, sign_up: SignUp, worker: Worker, smtp_server: SmtpServer
) -> None:
    admin = await sign_up()
    await fund(client, admin, "50.00")
    await settings(client, admin, low_balance_threshold="10.00")
    assert (await order(client, admin)).status_code == 201  # 50.00 -> 1.00
    await drain_until(worker, lambda: len(smtp_server.inbox.to(admin.email)) == 1)


async def test_a_refusing_smtp_server_is_retried_until_it_accepts(
    app: FastAPI,
    client: httpx.AsyncClient,
    sign_up: SignUp,
    worker: Worker,
    smtp_server: SmtpServer,
) -> None:
    admin, addresses = await watched_account(client, sign_up)
    smtp_server.inbox.refuse(addresses[0], times=2)  # 451: try again later
    assert (await order(client, admin)).status_code == 201
    await drain_until(worker, lambda: all(smtp_server.inbox.to(a) for a in addresses))
    assert smtp_server.inbox.refused.count(addresses[0]) == 2
    assert len(smtp_server.inbox.to(addresses[0])) == 1
    messages = {m.payload["to"]: m for m in await messages_of(app, admin.account_id)}
    assert messages[addresses[0]].status == "delivered"
    assert messages[addresses[0]].attempts == 3
    assert messages[addresses[1]].attempts == 1
    metrics = (await client.get("/metrics")).text
    assert 'outbox_messages_total{outcome="retry",topic="email"}' in metrics
    assert 'outbox_messages_total{outcome="delivered",topic="email"}' in metrics


async def test_a_message_is_dead_lettered_after_its_last_attempt_and_can_be_requeued(
    app: FastAPI,
    client: httpx.AsyncClient,
    sign_up: SignUp,
    worker: Worker,
    smtp_server: SmtpServer,
) -> None:
    admin, addresses = await watched_account(client, sign_up)
    inbox = smtp_server.inbox
    inbox.refuse(addresses[0], times=4)  # as many as the worker's attempts
    inbox.refuse(addresses[1], times=1, code=550)  # refused for good at once
    assert (await order(client, admin)).status_code == 201

    def both_dead() -> bool:
        return inbox.refused.count(addresses[0]) == 4 and addresses[1] in inbox.refused

    await drain_until(worker, both_dead)
    await worker.deliver_due()
    messages = {m.payload["to"]: m for m in await messages_of(app, admin.account_id)}
    assert messages[addresses[0]].status == "dead"
    assert messages[addresses[0]].attempts == 4
    assert "451" in (messages[addresses[0]].last_error or "")
    assert messages[addresses[1]].status == "dead"
    assert messages[addresses[1]].attempts == 1
    dead = {
        d.id
        for d in await app.state.database.run(lambda unit: outbox.dead_letters(unit, limit=1000))
    }
    assert {m.id for m in messages.values()} <= dead

    # The operator fixes the cause and requeues them: both are delivered.
    ids = [m.id for m in messages.values()]
    assert await app.state.database.run(lambda unit: outbox.requeue_dead(unit, ids)) == 2
    await drain_until(worker, lambda: all(inbox.to(a) for a in addresses))


async def test_without_smtp_the_email_is_logged_and_kept_as_logged(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.worker.email")
    log_worker = make_worker(app, smtp=None)
    admin, addresses = await watched_account(client, sign_up)
    assert (await order(client, admin)).status_code == 201

    async def statuses() -> list[str]:
        return [m.status for m in await messages_of(app, admin.account_id)]

    for _ in range(50):
        await log_worker.deliver_due()
        if await statuses() == ["logged", "logged"]:
            break
    assert await statuses() == ["logged", "logged"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert all(a in logged for a in addresses)
