"""Automatic top-up (SPEC §14) through HTTP: a debit that crosses the threshold makes one
automatic deposit, charged by the worker like any deposit; never more than one pending, never
past the monthly limit; a declined or removed card suspends it (one email) until the
settings are saved again."""

import asyncio
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.worker.runner import Worker
from tests.conftest import AddUser, Member, SignUp, unique_email
from tests.money import (
    CHARGES_DECLINED,
    TIMEOUT_NOT_CHARGED,
    TIMEOUT_SUCCEEDED,
    add_card,
    balance,
    deposit,
    fund,
    ledger,
    order,
    settings,
)
from tests.problems import assert_problem, error_fields
from tests.smtp import SmtpServer
from tests.worker.conftest import drain_until, make_worker

ORDER = "49.00"  # ssl_dv, one year


@pytest.fixture
def worker(app: FastAPI, smtp_server: SmtpServer) -> Worker:
    return make_worker(app, smtp_server, reconcile_after_seconds=1.0)


async def deposits(client: httpx.AsyncClient, member: Member) -> list[dict[str, Any]]:
    response = await client.get("/v1/finance/deposits?limit=100", headers=member.headers)
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["data"]
    return rows


async def automatic(client: httpx.AsyncClient, member: Member) -> list[dict[str, Any]]:
    return [d for d in await deposits(client, member) if d["source"] == "auto_top_up"]


async def rule(
    client: httpx.AsyncClient,
    member: Member,
    threshold: str = "100.00",
    amount: str = "200.00",
    monthly_limit: str = "1000.00",
) -> dict[str, Any]:
    body = await settings(
        client,
        member,
        auto_top_up={"threshold": threshold, "amount": amount, "monthly_limit": monthly_limit},
    )
    top_up: dict[str, Any] = body["auto_top_up"]
    return top_up


async def drain(worker: Worker, rounds: int = 5) -> None:
    """Delivery passes until the outbox has nothing due (other tests' messages included),
    then `rounds` more."""
    async with asyncio.timeout(60):
        while await worker.deliver_due() == worker.settings.outbox_batch_size:
            pass
    for _ in range(rounds):
        await worker.deliver_due()
        await asyncio.sleep(0.02)


async def test_one_crossing_makes_one_top_up_charged_by_the_worker(
    client: httpx.AsyncClient, sign_up: SignUp, worker: Worker
) -> None:
    admin = await sign_up()
    await fund(client, admin, "120.00")
    assert await rule(client, admin) == {
        "threshold": "100.00",
        "amount": "200.00",
        "monthly_limit": "1000.00",
        "currency": "USD",
        "status": "active",
        "suspended_reason": None,
    }
    assert (await order(client, admin)).status_code == 201  # 120.00 -> 71.00: crosses
    [pending] = await automatic(client, admin)
    assert (pending["status"], pending["amount"]) == ("pending", "200.00")
    assert (await order(client, admin)).status_code == 201  # 71.00 -> 22.00: no crossing
    assert len(await automatic(client, admin)) == 1

    await drain(worker)
    [made] = await automatic(client, admin)
    assert (made["status"], made["balance_after"]) == ("succeeded", "222.00")
    assert await balance(client, admin) == "222.00"
    [entry, *_] = await ledger(client, admin)
    assert (entry["type"], entry["amount"], entry["deposit_id"]) == (
        "deposit",
        "200.00",
        made["id"],
    )
    assert entry["description"].startswith("Automatic top-up by card")
    # Like any deposit: its event (with the deposit as the API shows it) and its receipt.
    events = await client.get("/v1/events?type=deposit.succeeded", headers=admin.headers)
    newest, funding = (e["data"]["object"] for e in events.json()["data"])
    assert (newest, funding["source"]) == (made, "api")
    receipt = await client.get(f"/v1/finance/deposits/{made['id']}.pdf", headers=admin.headers)
    assert receipt.status_code == 200
    assert receipt.headers["content-type"] == "application/pdf"


async def test_the_monthly_limit_is_never_passed_and_the_low_balance_notice_still_goes_out(
    app: FastAPI,
    client: httpx.AsyncClient,
    sign_up: SignUp,
    worker: Worker,
    smtp_server: SmtpServer,
) -> None:
    admin = await sign_up()
    await fund(client, admin, "120.00")
    watcher = unique_email("watcher")
    await settings(client, admin, low_balance_threshold="100.00", notification_emails=[watcher])
    await rule(client, admin, amount="50.00", monthly_limit="120.00")  # room for two

    for crossing in range(4):
        assert (await order(client, admin)).status_code == 201, crossing  # crosses 100.00
        await drain(worker)
        while Decimal(await balance(client, admin)) < Decimal("100.00"):
            assert (await deposit(client, admin, "49.00")).status_code == 201  # back above
    made = await automatic(client, admin)
    assert [(d["status"], d["amount"]) for d in made] == [("succeeded", "50.00")] * 2
    # Every crossing still sent its low-balance notice, the last two with no top-up.
    await drain_until(worker, lambda: len(smtp_server.inbox.to(watcher)) == 4)


async def test_a_declined_top_up_suspends_the_rule_emails_once_and_a_save_reactivates_it(
    client: httpx.AsyncClient,
    sign_up: SignUp,
    worker: Worker,
    smtp_server: SmtpServer,
) -> None:
    admin = await sign_up()
    await fund(client, admin, "200.00")
    watcher = unique_email("watcher")
    await settings(client, admin, notification_emails=[watcher])
    await rule(client, admin, threshold="180.00")
    await add_card(client, admin, CHARGES_DECLINED)

    assert (await order(client, admin)).status_code == 201  # 200.00 -> 151.00: crosses
    await drain(worker)
    [declined] = await automatic(client, admin)
    assert (declined["status"], declined["failure_code"]) == ("failed", "card_declined")
    shown = (await client.get("/v1/finance/settings", headers=admin.headers)).json()
    assert (shown["auto_top_up"]["status"], shown["auto_top_up"]["suspended_reason"]) == (
        "suspended",
        "card_declined",
    )
    await drain_until(worker, lambda: len(smtp_server.inbox.to(watcher)) == 1)
    [mail] = smtp_server.inbox.to(watcher)
    assert "Automatic top-up suspended" in mail["Subject"]
    assert "declined" in mail.get_content()

    # Suspended: crossings charge nothing, and no retry happens meanwhile.
    assert (await deposit(client, admin, "100.00")).status_code == 402  # the card declines
    await add_card(client, admin)  # a good card again: still suspended until saved
    assert (await deposit(client, admin, "100.00")).status_code == 201  # 251.00
    assert (await order(client, admin)).status_code == 201  # 202.00
    assert (await order(client, admin)).status_code == 201  # 153.00: crosses 180.00
    await drain(worker)
    assert len(await automatic(client, admin)) == 1
    assert len(smtp_server.inbox.to(watcher)) == 1

    # Saved again: active, and the next crossing tops up.
    assert (await rule(client, admin, threshold="180.00"))["status"] == "active"
    assert (await deposit(client, admin, "50.00")).status_code == 201  # 203.00
    assert (await order(client, admin)).status_code == 201  # 154.00: crosses
    await drain(worker)
    assert [d["status"] for d in await automatic(client, admin)] == ["succeeded", "failed"]


async def test_removing_the_card_suspends_the_rule(
    client: httpx.AsyncClient, sign_up: SignUp, worker: Worker, smtp_server: SmtpServer
) -> None:
    admin = await sign_up()
    await fund(client, admin, "120.00")
    await rule(client, admin)
    removed = await client.delete("/v1/account/card", headers=admin.headers)
    assert removed.status_code == 204, removed.text
    shown = (await client.get("/v1/finance/settings", headers=admin.headers)).json()
    assert shown["auto_top_up"]["suspended_reason"] == "no_card_on_file"
    assert (await order(client, admin)).status_code == 201  # crosses: nothing to charge
    await drain(worker)
    assert await automatic(client, admin) == []
    await drain_until(worker, lambda: len(smtp_server.inbox.to(admin.email)) == 1)
    assert "no card on file" in smtp_server.inbox.to(admin.email)[0].get_content()


@pytest.mark.parametrize(
    ("card", "status", "credited"),
    [(TIMEOUT_SUCCEEDED, "succeeded", "271.00"), (TIMEOUT_NOT_CHARGED, "failed", "71.00")],
)
async def test_a_top_up_whose_charge_times_out_is_reconciled_once(
    client: httpx.AsyncClient,
    sign_up: SignUp,
    worker: Worker,
    card: str,
    status: str,
    credited: str,
) -> None:
    admin = await sign_up()
    await fund(client, admin, "120.00")
    await rule(client, admin)
    await add_card(client, admin, card)
    assert (await order(client, admin)).status_code == 201  # 71.00: crosses
    await drain(worker)
    [pending] = await automatic(client, admin)
    assert pending["status"] == "pending"
    assert await balance(client, admin) == "71.00"

    await asyncio.sleep(1.1)  # past RECONCILE_AFTER_SECONDS (1 s here)
    for _ in range(3):  # settled once, whoever asks again
        await worker.reconcile()
        await drain(worker)
    [settled] = await automatic(client, admin)
    assert settled["status"] == status
    assert await balance(client, admin) == credited
    entries = [e for e in await ledger(client, admin) if e["deposit_id"] == settled["id"]]
    assert len(entries) == (1 if status == "succeeded" else 0)
    shown = (await client.get("/v1/finance/settings", headers=admin.headers)).json()
    assert shown["auto_top_up"]["status"] == "active"  # a charge never made is no decline


async def test_the_rule_needs_a_card_card_payments_and_amounts_in_range(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    body = {"threshold": "100.00", "amount": "200.00", "monthly_limit": "1000.00"}
    no_card = await client.patch(
        "/v1/finance/settings", headers=admin.headers, json={"auto_top_up": body}
    )
    assert_problem(no_card, 409, "no_card_on_file")
    await fund(client, admin, "50.00")
    for bad, field in (
        ({**body, "amount": "5.00"}, "body.auto_top_up.amount"),  # below the deposit minimum
        ({**body, "monthly_limit": "199.99"}, "body.auto_top_up.monthly_limit"),
        ({**body, "threshold": "-1"}, "body.auto_top_up.threshold"),
        ({"threshold": "100.00", "amount": "200.00"}, "body.auto_top_up.monthly_limit"),
    ):
        response = await client.patch(
            "/v1/finance/settings", headers=admin.headers, json={"auto_top_up": bad}
        )
        problem = assert_problem(response, 422, "validation_error")
        assert error_fields(problem) == {field}, bad
    off = await client.patch(
        "/v1/finance/settings",
        headers=admin.headers,
        json={"card_payments_enabled": False, "auto_top_up": body},
    )
    assert_problem(off, 422, "payment_method_disabled")
    assert (await rule(client, admin))["status"] == "active"
    disabling = await client.patch(
        "/v1/finance/settings", headers=admin.headers, json={"card_payments_enabled": False}
    )
    assert_problem(disabling, 422, "payment_method_disabled")
    both = await settings(client, admin, card_payments_enabled=False, auto_top_up=None)
    assert both["auto_top_up"] is None


async def test_only_admins_and_finance_set_it_and_never_a_key_vault_key(
    client: httpx.AsyncClient, sign_up: SignUp, add_user: AddUser
) -> None:
    admin = await sign_up()
    await fund(client, admin, "50.00")
    body = {"auto_top_up": {"threshold": "10.00", "amount": "20.00", "monthly_limit": "20.00"}}
    finance, user = await add_user(admin, "finance"), await add_user(admin, "user")
    ok = await client.patch("/v1/finance/settings", headers=finance.headers, json=body)
    assert ok.status_code == 200, ok.text
    refused = await client.patch("/v1/finance/settings", headers=user.headers, json=body)
    assert_problem(refused, 403, "forbidden")
    made = await client.post(
        "/v1/api-keys",
        headers=admin.headers,
        json={"name": "kv", "role": "finance", "integration": "azure_key_vault"},
    )
    vault = {"X-API-Key": made.json()["key"]}
    key_vault = await client.patch("/v1/finance/settings", headers=vault, json=body)
    assert_problem(key_vault, 403, "payment_method_not_allowed")
