"""No secret is ever stored, logged or echoed: card numbers, the CVC, passwords, API keys.

A whole card flow runs through HTTP against an app of its own and a sandbox gateway of its
own, with every logger of the process (the app, SQLAlchemy, httpx, and the gateway's
uvicorn down to its TRACE level) captured. Afterwards every column of every table of the
database is read back as text and searched, as are the logs and every error body.
"""

import logging
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from app.gateway.sandbox_server import SandboxServer
from app.main import create_app
from tests.conftest import client_for, make_settings, unique_email

VISA = "4242424242424242"
DECLINED = "4000000000000002"
CHARGES_DECLINED = "4000000000000341"
AMEX = "378282246310005"
BAD_LUHN = "4242424242424241"
CARD_NUMBERS = (VISA, DECLINED, CHARGES_DECLINED, AMEX, BAD_LUHN)
CVC = "919"  # distinctive: the whole-database scan must not meet it as an ordinary number
AMEX_CVC = "7319"
# A CVC is a string. In logs and response bodies it would show quoted ('919', "919") or
# after its name (cvc=919, "cvc": "919"); an integer that happens to have the same digits
# (a row id in a SQL log line, an amount) is neither. In the text columns of the account's
# rows it would be a value of its own, between JSON or CSV delimiters (|919|, ,919,).
_BEFORE = r"""(?:^|(?<=[\s"',:;=(\[{|]))"""
_AFTER = r"""(?=$|[\s"',;)\]}|])"""
CVC_IN_TEXT = [
    re.compile(rf"""(?<![\w.])["']{cvc}["']|cvc\W{{0,4}}{cvc}(?!\d)""", re.IGNORECASE)
    for cvc in (CVC, AMEX_CVC)
]
CVC_AS_VALUE = [re.compile(_BEFORE + cvc + _AFTER) for cvc in (CVC, AMEX_CVC)]
SECRET_COLUMN = re.compile(r"cvc|cvv|card_?number|\bpan\b|password$|secret$", re.IGNORECASE)
PROBLEM = "application/problem+json"


def card_body(card_number: str, cvc: str = CVC, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "number": card_number,
        "exp_month": 12,
        "exp_year": 2031,
        "cvc": cvc,
        "holder_name": "Ada Lovelace",
    }
    body.update(overrides)
    return body


def key() -> str:
    return f"nosecret-{secrets.token_hex(8)}"


@pytest.fixture
async def own_app(database_url: str, caplog: pytest.LogCaptureFixture) -> AsyncIterator[FastAPI]:
    """An app and a sandbox gateway of this test's own, created once every logger is at its
    lowest level, so that the gateway's uvicorn logs each ASGI message it handles. Loggers
    that were given a level of their own (Alembic's logging config quiets SQLAlchemy's) are
    turned all the way up too; caplog puts every level back afterwards."""
    caplog.set_level(1)
    assert logging.root.manager.disable == logging.NOTSET
    disabled = []
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger):
            if logger.level != logging.NOTSET:
                caplog.set_level(1, logger=name)
            if logger.disabled:
                disabled.append(logger)
                logger.disabled = False
    sandbox = SandboxServer(timeout_sleep_seconds=1.0)
    url = sandbox.start()
    app = create_app(make_settings(database_url, sandbox_url=url))
    try:
        yield app
    finally:
        await app.state.gateway.aclose()
        await app.state.database.dispose()
        sandbox.stop()
        for logger in disabled:
            logger.disabled = True


TEXT_TYPES = {"character varying", "text", "bytea", "ARRAY", "json", "jsonb", "character"}


@dataclass
class Dump:
    everything: str  # every column of every row of every table
    account_text: str  # the text columns of the account's rows, and of tables of no account
    columns: list[str]


async def dump_database(database_url: str, account_id: str) -> Dump:
    """Every column of every table of the public schema as text, one line per row (bytea
    decoded, so that a stored JSON body reads as JSON)."""
    db = await asyncpg.connect(database_url)
    try:
        columns = await db.fetch(
            """
            SELECT c.table_name, c.column_name, c.data_type
            FROM information_schema.columns c
            JOIN information_schema.tables t USING (table_schema, table_name)
            WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
            ORDER BY c.table_name, c.ordinal_position
            """
        )
        tables: dict[str, list[asyncpg.Record]] = {}
        for column in columns:
            tables.setdefault(column["table_name"], []).append(column)
        everything: list[str] = []
        account_text: list[str] = []
        for table, table_columns in tables.items():
            names = [c["column_name"] for c in table_columns]
            expressions = [
                f"encode({quote(c['column_name'])}, 'escape')"
                if c["data_type"] == "bytea"
                else f"{quote(c['column_name'])}::text"
                for c in table_columns
            ]
            for row in await db.fetch(f"SELECT {', '.join(expressions)} FROM {quote(table)}"):
                values = [str(value) for value in row.values()]
                everything.append(f"{table}: " + "|".join(values))
                owner = row[names.index("account_id")] if "account_id" in names else None
                if table == "account":
                    owner = row[names.index("id")]
                if owner in (None, account_id):
                    text = [
                        v
                        for v, c in zip(values, table_columns, strict=True)
                        if c["data_type"] in TEXT_TYPES
                    ]
                    account_text.append(f"{table}: |" + "|".join(text) + "|")
        return Dump(
            "\n".join(everything),
            "\n".join(account_text),
            [f"{c['table_name']}.{c['column_name']}" for c in columns],
        )
    finally:
        await db.close()


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def leaks(
    text: str, secrets_: dict[str, str], cvc: list[re.Pattern[str]] = CVC_IN_TEXT
) -> list[str]:
    found = [name for name, value in secrets_.items() if value in text]
    return found + [f"CVC {p.pattern}" for p in cvc if p.search(text)]


async def test_card_numbers_cvc_and_passwords_are_never_stored_logged_or_echoed(
    own_app: FastAPI, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    password = f"Quartz-Lantern-{secrets.token_hex(6)}"
    other_password = f"Basalt-Orchard-{secrets.token_hex(6)}"
    email = unique_email("nosecret")
    problems: list[httpx.Response] = []
    seen: list[httpx.Response] = []

    async with client_for(own_app) as client:

        async def call(method: str, path: str, expect: int, **kwargs: Any) -> httpx.Response:
            response = await client.request(method, path, **kwargs)
            assert response.status_code == expect, (method, path, response.text)
            seen.append(response)
            if response.status_code >= 400:
                assert response.headers["content-type"].split(";")[0] == PROBLEM
                problems.append(response)
            return response

        signed_up = await call(
            "POST",
            "/v1/signup",
            201,
            json={"email": email, "password": password, "name": "Ada", "company_name": "Acme"},
        )
        account_id = signed_up.json()["account"]["id"]
        token = (
            await call(
                "POST", "/v1/auth/token", 200, data={"username": email, "password": password}
            )
        ).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}

        # The card on file: a good one, one the gateway declines (the good one stays), numbers
        # the API refuses itself, and input errors that carry a valid number beside them.
        saved = await call("PUT", "/v1/account/card", 200, headers=auth, json=card_body(VISA))
        assert (saved.json()["brand"], saved.json()["last4"]) == ("visa", "4242")
        declined = await call(
            "PUT", "/v1/account/card", 402, headers=auth, json=card_body(DECLINED)
        )
        assert declined.json()["code"] == "card_declined"
        on_file = await call("GET", "/v1/account/card", 200, headers=auth)
        assert on_file.json()["last4"] == "4242"
        bad = await call("PUT", "/v1/account/card", 422, headers=auth, json=card_body(BAD_LUHN))
        assert bad.json()["code"] == "invalid_card_number"
        for wrong in (
            {"exp_month": 13},
            {"cvc": "12a"},
            {"number": VISA + " " * 30 + "0"},
            {"holder_name": ""},
            {"surprise": VISA},
        ):
            response = await call(
                "PUT", "/v1/account/card", 422, headers=auth, json=card_body(VISA, **wrong)
            )
            assert response.json()["code"] == "validation_error"
        expired = await call(
            "PUT", "/v1/account/card", 422, headers=auth, json=card_body(VISA, exp_year=2001)
        )
        assert expired.json()["code"] == "card_expired"

        # Money through the card: a deposit, an order, its cancel and refund.
        dep = await call(
            "POST",
            "/v1/finance/deposits",
            201,
            headers={**auth, "Idempotency-Key": key()},
            json={"amount": "100.00"},
        )
        assert dep.json()["status"] == "succeeded"
        order_key = key()
        order_body = {
            "product_id": "ssl_dv",
            "common_name": "www.example.com",
            "validity_years": 1,
            "payment_method": "card",
        }
        order = await call(
            "POST",
            "/v1/orders",
            201,
            headers={**auth, "Idempotency-Key": order_key},
            json=order_body,
        )
        assert order.json()["status"] == "paid"
        await call(
            "POST",
            "/v1/orders",
            201,
            headers={**auth, "Idempotency-Key": order_key},
            json=order_body,
        )
        canceled = await call(
            "POST",
            f"/v1/orders/{order.json()['id']}/cancel",
            200,
            headers={**auth, "Idempotency-Key": key()},
        )
        assert canceled.json()["status"] == "canceled"

        # A card whose charges are declined: a failed deposit and a failed card order.
        await call("PUT", "/v1/account/card", 200, headers=auth, json=card_body(CHARGES_DECLINED))
        await call(
            "POST",
            "/v1/finance/deposits",
            402,
            headers={**auth, "Idempotency-Key": key()},
            json={"amount": "50.00"},
        )
        await call(
            "POST",
            "/v1/orders",
            402,
            headers={**auth, "Idempotency-Key": key()},
            json={**order_body, "common_name": "shop.example.com"},
        )
        amex = await call(
            "PUT", "/v1/account/card", 200, headers=auth, json=card_body(AMEX, AMEX_CVC)
        )
        assert (amex.json()["brand"], amex.json()["last4"]) == ("amex", "0005")

        # A second user (with a password) and an API key (its secret is shown once), both
        # created with an Idempotency-Key, as a careful client sends on every POST.
        await call(
            "POST",
            "/v1/users",
            201,
            headers={**auth, "Idempotency-Key": key()},
            json={
                "email": unique_email("second"),
                "name": "Bob",
                "role": "finance",
                "password": other_password,
            },
        )
    secrets_ = {
        **{f"card number {number}": number for number in CARD_NUMBERS},
        "password": password,
        "second user's password": other_password,
    }

    # Every error body is problem+json and carries no card number and no CVC.
    assert len(problems) == 10
    for response in problems:
        assert not leaks(response.text, {k: v for k, v in secrets_.items() if "card" in k}), (
            response.request.url,
            response.text,
        )
    for response in seen:
        assert not leaks(response.text, secrets_), response.text

    dump = await assert_stored_and_logged_nowhere(secrets_, database_url, caplog, account_id)
    # What is kept of the card: the gateway's token, brand, last 4, expiry and holder.
    card_rows = [line for line in dump.account_text.splitlines() if line.startswith("card: ")]
    assert len(card_rows) == 1, card_rows
    assert card_rows[0].startswith(f"card: |{account_id}|card_")
    assert "|amex|0005|" in card_rows[0]
    assert "Ada Lovelace" in card_rows[0]
    # The gateway's side was heard too: its ASGI messages for each tokenisation.
    assert any("/v1/tokens" in r.getMessage() for r in caplog.records if r.name == "uvicorn.asgi")


async def assert_stored_and_logged_nowhere(
    secrets_: dict[str, str],
    database_url: str,
    caplog: pytest.LogCaptureFixture,
    account_id: str,
) -> Dump:
    dump = await dump_database(database_url, account_id)
    assert account_id in dump.account_text  # the dump does see this account's rows
    assert not [c for c in dump.columns if SECRET_COLUMN.search(c.split(".")[1])], dump.columns
    # Secrets that are long and unique are searched for in every row of the database; a
    # short CVC in the text of this account's rows (an amount of 1.23 elsewhere is no CVC).
    found = leaks(dump.everything, secrets_, cvc=[]) + leaks(dump.account_text, {}, CVC_AS_VALUE)
    assert not found, (
        found,
        [line for line in dump.everything.splitlines() if leaks(line, secrets_, cvc=[])],
        [line for line in dump.account_text.splitlines() if leaks(line, {}, CVC_AS_VALUE)],
    )

    # The logs were captured (the app's SQL, the gateway's ASGI messages) and leak nothing.
    loggers = {record.name for record in caplog.records}
    assert "sqlalchemy.engine.Engine" in loggers, sorted(loggers)
    log_text = caplog.text + "\n".join(
        f"{r.getMessage()} {r.exc_text or ''} {r.stack_info or ''}" for r in caplog.records
    )
    found = leaks(log_text, secrets_)
    assert not found, (found, [line for line in log_text.splitlines() if leaks(line, secrets_)])
    return dump


@pytest.mark.parametrize("with_idempotency_key", [False, True])
async def test_an_api_key_secret_is_shown_once_and_never_stored_or_logged(
    own_app: FastAPI,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
    with_idempotency_key: bool,
) -> None:
    """SPEC §2: only a hash of an API key is stored. §8 invites an Idempotency-Key on every
    authenticated POST, so a careful client sends one here too: whatever the idempotency
    layer keeps to answer a retry must not be the secret."""
    email = unique_email("keys")
    async with client_for(own_app) as client:
        signed_up = await client.post(
            "/v1/signup",
            json={"email": email, "password": "Granite-Meadow-Falcon-9", "name": "Ada"},
        )
        assert signed_up.status_code == 201, signed_up.text
        account_id = signed_up.json()["account"]["id"]
        login = await client.post(
            "/v1/auth/token", data={"username": email, "password": "Granite-Meadow-Falcon-9"}
        )
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
        headers = {**auth, "Idempotency-Key": key()} if with_idempotency_key else auth
        body = {"name": "vault", "role": "user", "integration": "azure_key_vault"}
        created = await client.post("/v1/api-keys", headers=headers, json=body)
        assert created.status_code == 201, created.text
        assert created.headers.get("idempotent-replayed") is None
        api_key = created.json()["key"]
        assert len(api_key) >= 20
        if with_idempotency_key:
            # A retry is answered from what was kept: the same key object, never the secret
            # again (it is shown once), and no second key.
            replay = await client.post("/v1/api-keys", headers=headers, json=body)
            assert replay.status_code == 201, replay.text
            assert replay.headers["idempotent-replayed"] == "true"
            assert replay.json()["id"] == created.json()["id"]
            assert api_key not in replay.text
        me = await client.get("/v1/me", headers={"X-API-Key": api_key})
        assert me.status_code == 200
        assert me.json()["account"]["id"] == account_id
        listed = await client.get("/v1/api-keys", headers=auth)
        assert listed.status_code == 200
        assert [k["id"] for k in listed.json()["data"]] == [created.json()["id"]]
        assert api_key not in listed.text
        assert api_key not in me.text

    await assert_stored_and_logged_nowhere({"API key": api_key}, database_url, caplog, account_id)


async def test_a_webhook_secret_is_shown_once_and_never_stored_or_logged(
    own_app: FastAPI, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """SPEC §8 and §12: the endpoint's secret (at creation and at each rotation) is shown
    once; a replay carries null; neither the database nor the logs hold it."""
    email = unique_email("hooks")
    async with client_for(own_app) as client:
        signed_up = await client.post(
            "/v1/signup",
            json={"email": email, "password": "Granite-Meadow-Falcon-9", "name": "Ada"},
        )
        account_id = signed_up.json()["account"]["id"]
        login = await client.post(
            "/v1/auth/token", data={"username": email, "password": "Granite-Meadow-Falcon-9"}
        )
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
        headers = {**auth, "Idempotency-Key": key()}
        body = {"url": "https://hooks.partner.invalid/events", "events": ["order.paid"]}
        created = await client.post("/v1/webhook-endpoints", headers=headers, json=body)
        assert created.status_code == 201, created.text
        secret = created.json()["secret"]
        replay = await client.post("/v1/webhook-endpoints", headers=headers, json=body)
        assert replay.headers["idempotent-replayed"] == "true"
        assert (replay.json()["id"], replay.json()["secret"]) == (created.json()["id"], None)

        rotate = f"/v1/webhook-endpoints/{created.json()['id']}/rotate-secret"
        rotate_headers = {**auth, "Idempotency-Key": key()}
        rotated = await client.post(rotate, headers=rotate_headers)
        assert rotated.status_code == 200, rotated.text
        new_secret = rotated.json()["secret"]
        again = await client.post(rotate, headers=rotate_headers)
        assert again.json()["secret"] is None
        listed = await client.get("/v1/webhook-endpoints", headers=auth)
        assert secret not in listed.text
        assert new_secret not in listed.text

    secrets_ = {"webhook secret": secret, "rotated webhook secret": new_secret}
    for name, value in list(secrets_.items()):  # the key as receivers hold it, and its base64
        secrets_[f"{name} (base64)"] = value.removeprefix("whsec_")
    await assert_stored_and_logged_nowhere(secrets_, database_url, caplog, account_id)
