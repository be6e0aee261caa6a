"""The contract as a client meets it (SPEC §13): schemathesis, black-box, runs every check
(`--checks all`) over every operation of the served OpenAPI document against a real server,
signed in with an admin API key of a funded account with a card on file. No failure: a
response the schema does not describe, a 5xx, a schema-valid request refused, a
schema-invalid one accepted. The three rules no schema can state are excluded by name in
schemathesis.toml, with their reasons in docs/api.md."""

import os
import subprocess
import sys
from pathlib import Path

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from tests.conftest import PASSWORD, db_session, unique_email
from tests.money import card_body, key
from tests.processes import ServiceProcess, service_environment
from tests.smtp import SmtpServer

ROOT = Path(__file__).parents[2]
CONFIG = Path(__file__).with_name("schemathesis.toml")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


async def funded_admin_key(url: str) -> tuple[str, str]:
    """An admin API key of an account with a card on file and 300,000.00 on its balance,
    paying from it: enough for the orders a run makes."""
    email = unique_email("contract")
    async with httpx.AsyncClient(base_url=url) as http:
        signed_up = await http.post(
            "/v1/signup", json={"email": email, "password": PASSWORD, "name": "Contract"}
        )
        assert signed_up.status_code == 201, signed_up.text
        token = await http.post("/v1/auth/token", data={"username": email, "password": PASSWORD})
        auth = {"Authorization": f"Bearer {token.json()['access_token']}"}
        made = await http.post(
            "/v1/api-keys", headers=auth, json={"name": "contract", "role": "admin"}
        )
        assert made.status_code == 201, made.text
        card = await http.put("/v1/account/card", headers=auth, json=card_body())
        assert card.status_code == 200, card.text
        for _ in range(3):
            deposited = await http.post(
                "/v1/finance/deposits",
                headers={**auth, "Idempotency-Key": key()},
                json={"amount": "100000.00"},
            )
            assert deposited.status_code == 201, deposited.text
        settings = await http.patch(
            "/v1/finance/settings",
            headers=auth,
            json={"balance_payments_enabled": True, "default_payment_method": "balance"},
        )
        assert settings.status_code == 200, settings.text
    api_key: str = made.json()["key"]
    return api_key, signed_up.json()["account"]["id"]


async def forget_webhooks(app: FastAPI, account_id: str) -> None:
    """The run made thousands of endpoints at names that do not resolve, each with its
    queued deliveries: gone, so that no later test's worker spends its passes on them."""
    async with db_session(app) as session:
        await session.execute(
            text(
                "DELETE FROM outbox_message WHERE topic = 'webhook' AND payload->>'endpoint_id'"
                " IN (SELECT id FROM webhook_endpoint WHERE account_id = :account)"
            ),
            {"account": account_id},
        )
        await session.execute(
            text("DELETE FROM webhook_endpoint WHERE account_id = :account"),
            {"account": account_id},
        )


async def test_schemathesis_finds_nothing_over_every_operation(
    app: FastAPI, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    environment = service_environment(
        app.state.settings,
        smtp_server,
        run_worker=False,
        # A run makes far more endpoints than an account may keep; the limit has its own test.
        webhook_max_endpoints=100_000,
    )
    server = await ServiceProcess.api(environment, tmp_path, "contract").start()
    account_id = None
    try:
        api_key, account_id = await funded_admin_key(server.url)
        result = subprocess.run(  # noqa: ASYNC221 (the server runs in its own process)
            [
                str(SCHEMATHESIS),
                "--config-file",
                str(CONFIG),
                "run",
                f"{server.url}/openapi.json",
                "--header",
                f"X-API-Key: {api_key}",
                "--max-examples",
                "8",
                "--workers",
                "1",
                "--seed",
                "20261201",
                "--no-color",
            ],
            cwd=ROOT,
            env={
                **os.environ,
                "SCHEMATHESIS_HOOKS": "tests.contract.hooks",
                "CONTRACT_API_URL": server.url,
                "CONTRACT_API_KEY": api_key,
            },
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        await server.stop()
        if account_id is not None:
            await forget_webhooks(app, account_id)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-12000:]
    assert "Tested: 5" in report  # every operation of the schema (50-odd) was run
