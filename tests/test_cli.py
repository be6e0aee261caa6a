"""The operator CLI, run as operators run it: `python -m app.cli` in its own process, against
the test database, checked through the public API."""

import os
import sys

import anyio
import httpx
from fastapi import FastAPI

from app.config import Settings
from app.kit import outbox
from tests.conftest import PASSWORD, SignUp, login, unique_email
from tests.money import TIMEOUT_SUCCEEDED, add_card, balance, deposit, ledger
from tests.money import settings as finance_settings
from tests.smtp import SmtpServer
from tests.worker.conftest import drain_until, make_worker


async def billing(
    app_settings: Settings, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    environment = {
        **os.environ,
        "DATABASE_URL": app_settings.database_url or "",
        "GATEWAY": "sandbox",
        "SANDBOX_URL": app_settings.sandbox_url or "",
        "GATEWAY_TIMEOUT_SECONDS": str(app_settings.gateway_timeout_seconds),
        **(env or {}),
    }
    environment = {name: value for name, value in environment.items() if value}
    result = await anyio.run_process(
        [sys.executable, "-m", "app.cli", *args], env=environment, check=False
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def test_create_account_makes_an_account_its_admin_can_use(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    email = unique_email("operator-made")
    code, out, err = await billing(
        settings, "create-account", "--email", email, "--name", "Grace", "--company", "Navy",
        env={"BILLING_ADMIN_PASSWORD": PASSWORD},
    )  # fmt: skip
    assert code == 0, err
    token = await login(client, email)
    me = (await client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})).json()
    assert me["role"] == "admin"
    assert me["account"]["id"] in out
    assert me["account"]["company_name"] == "Navy"

    code, _, err = await billing(
        settings, "create-account", "--email", unique_email(), "--name", "G",
        env={"BILLING_ADMIN_PASSWORD": "password"},
    )  # fmt: skip
    assert code == 1
    assert "password" in err.lower()

    # A password on the command line is refused: ps and the shell's history would show it.
    code, _, err = await billing(
        settings, "create-account", "--email", unique_email(), "--name", "G",
        "--password", PASSWORD,
    )  # fmt: skip
    assert code == 2
    assert "--password" in err


async def test_adjust_balance_posts_an_adjustment_entry_and_never_overdraws(
    settings: Settings, client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    code, out, err = await billing(
        settings, "adjust-balance", admin.account_id, "--amount", "25.00",
        "--reason", "goodwill credit, ticket 4711",
    )  # fmt: skip
    assert code == 0, err
    assert "balance now 25.00 USD" in out
    code, _, err = await billing(
        settings, "adjust-balance", admin.account_id, "--amount=-30.00", "--reason", "too much"
    )
    assert code == 1
    assert "insufficient_funds" in err
    code, out, _ = await billing(
        settings, "adjust-balance", admin.account_id, "--amount=-5.50", "--reason", "fee"
    )
    assert code == 0
    assert await balance(client, admin) == "19.50"
    entries = await ledger(client, admin)
    assert [(e["type"], e["amount"], e["balance_after"]) for e in entries] == [
        ("adjustment", "-5.50", "19.50"),
        ("adjustment", "25.00", "25.00"),
    ]
    assert "goodwill credit, ticket 4711" in entries[1]["description"]

    for bad in (["acct_missing", "--amount", "1.00"], [admin.account_id, "--amount", "1.001"]):
        code, _, err = await billing(settings, "adjust-balance", *bad, "--reason", "x")
        assert code == 1
        assert err.startswith("error:")


async def test_pending_lists_and_reconcile_settles_an_unknown_deposit(
    settings: Settings, client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    await add_card(client, admin, TIMEOUT_SUCCEEDED)
    pending = await deposit(client, admin, "40.00")
    assert pending.status_code == 202
    deposit_id = pending.json()["id"]

    code, out, _ = await billing(settings, "pending")
    assert code == 0
    assert deposit_id in out

    code, _, err = await billing(
        settings, "reconcile", "--older-than", "0", env={"SANDBOX_URL": ""}
    )
    assert code == 2
    assert "SANDBOX_URL" in err

    code, out, err = await billing(settings, "reconcile", "--older-than", "0")
    assert code == 0, err
    assert "settled" in out
    settled = await client.get(f"/v1/finance/deposits/{deposit_id}", headers=admin.headers)
    assert settled.json()["status"] == "succeeded"
    assert await balance(client, admin) == "40.00"
    code, out, _ = await billing(settings, "pending")
    assert deposit_id not in out


async def test_dead_letters_are_listed_and_requeued(
    app: FastAPI,
    settings: Settings,
    client: httpx.AsyncClient,
    sign_up: SignUp,
    smtp_server: SmtpServer,
) -> None:
    admin = await sign_up()
    watcher = unique_email("watcher")
    code, _, err = await billing(
        settings, "adjust-balance", admin.account_id, "--amount", "20.00", "--reason", "seed"
    )
    assert code == 0, err
    await finance_settings(
        client, admin, low_balance_threshold="10.00", notification_emails=[watcher]
    )
    smtp_server.inbox.refuse(watcher, times=1, code=550)
    # An adjustment that crosses the threshold is a debit like any other: it notifies.
    code, _, err = await billing(
        settings, "adjust-balance", admin.account_id, "--amount=-15.00", "--reason", "fee"
    )
    assert code == 0, err
    worker = make_worker(app, smtp_server)
    await drain_until(worker, lambda: watcher in smtp_server.inbox.refused)
    await worker.deliver_due()
    [dead] = [
        d
        for d in await app.state.database.run(lambda unit: outbox.dead_letters(unit, 1000))
        if d.payload["to"] == watcher
    ]

    code, out, _ = await billing(settings, "dead-letters", "--limit", "1000")
    assert code == 0
    assert f"{dead.id}  email  {watcher}" in out
    code, out, _ = await billing(settings, "requeue-dead-letters", str(dead.id))
    assert out.strip() == "requeued 1"
    await drain_until(worker, lambda: len(smtp_server.inbox.to(watcher)) == 1)
