"""Several processes against one database (SPEC §13): two API processes that do not run the
worker, and `billing worker` on its own, all on one hot account."""

import asyncio
from collections import Counter
from pathlib import Path

import httpx
from fastapi import FastAPI

from tests.conftest import SignUp, eventually, unique_email
from tests.money import TIMEOUT_SUCCEEDED, add_card, balance, deposit, fund, key, ledger, settings
from tests.processes import ServiceProcess, service_environment
from tests.smtp import SmtpServer


async def test_two_api_processes_and_a_worker_give_exact_results_on_a_hot_account(
    client: httpx.AsyncClient,
    sign_up: SignUp,
    app: FastAPI,
    smtp_server: SmtpServer,
    tmp_path: Path,
) -> None:
    environment = service_environment(
        app.state.settings, smtp_server, run_worker=False, reconcile_after_seconds=2
    )
    await hot_account_across_processes(client, sign_up, environment, smtp_server, tmp_path)


async def hot_account_across_processes(
    client: httpx.AsyncClient,
    sign_up: SignUp,
    environment: dict[str, str],
    smtp_server: SmtpServer,
    tmp_path: Path,
) -> None:
    """Two API processes and a worker started with `environment`: 40 orders racing on one
    account through both APIs pay exactly what its balance covers, its low-balance notice is
    sent once, and a deposit left pending is settled by the worker process."""
    apis = [ServiceProcess.api(environment, tmp_path, f"api{n}") for n in (1, 2)]
    worker = ServiceProcess.worker(environment, tmp_path)
    await asyncio.gather(*(api.start() for api in apis), worker.start())
    try:
        hot = await sign_up()
        watcher = unique_email("watcher")
        await fund(client, hot, "392.00")  # exactly 8 orders of 49.00
        await settings(client, hot, low_balance_threshold="100.00", notification_emails=[watcher])
        # Elsewhere, a deposit whose outcome is unknown: only the worker process can settle it.
        other = await sign_up()
        await add_card(client, other, TIMEOUT_SUCCEEDED)
        pending = await deposit(client, other, "30.00")
        assert pending.status_code == 202

        body = {"product_id": "ssl_dv", "common_name": "www.example.com", "validity_years": 1}
        async with httpx.AsyncClient(timeout=30) as http:
            responses = await asyncio.gather(
                *(
                    http.post(
                        f"{apis[n % 2].url}/v1/orders",
                        headers={**hot.headers, "Idempotency-Key": key()},
                        json=body,
                    )
                    for n in range(40)
                )
            )
        assert Counter(r.status_code for r in responses) == {201: 8, 402: 32}
        assert {r.json()["code"] for r in responses if r.status_code == 402} == {
            "insufficient_funds"
        }
        assert await balance(client, hot) == "0.00"
        entries = await ledger(client, hot)
        assert sorted(e["type"] for e in entries) == ["deposit"] + ["order"] * 8
        assert sum(int(e["amount"].replace(".", "")) for e in entries) == 0

        # The API processes do not run the worker: the notice and the settlement come from
        # the worker process, once.
        async def notified() -> bool:
            return bool(smtp_server.inbox.to(watcher))

        async def settled() -> bool:
            return await deposit_status(client, other.headers, pending.json()["id"]) != "pending"

        await eventually(notified)
        await eventually(settled)
        assert await deposit_status(client, other.headers, pending.json()["id"]) == "succeeded"
        assert await balance(client, other) == "30.00"
        await asyncio.sleep(1)
        assert len(smtp_server.inbox.to(watcher)) == 1
    finally:
        await asyncio.gather(*(api.stop() for api in apis), worker.stop())


async def deposit_status(client: httpx.AsyncClient, headers: dict[str, str], id_: str) -> str:
    response = await client.get(f"/v1/finance/deposits/{id_}", headers=headers)
    status: str = response.json()["status"]
    return status
