"""At least once, even across a crash: a worker killed with SIGKILL while a receiver holds
its delivery open records nothing; once its lease runs out, another worker sends the same
attempt again, under the same webhook-id, and records it."""

from pathlib import Path

import httpx
from fastapi import FastAPI

from tests.conftest import SignUp, eventually
from tests.money import add_card, deposit
from tests.processes import ServiceProcess, service_environment
from tests.smtp import SmtpServer
from tests.webhooks.conftest import add_endpoint, path
from tests.webhooks.receiver import Answer, Receiver
from tests.webhooks.test_urls import deliveries


async def test_a_worker_killed_mid_delivery_loses_nothing(
    app: FastAPI,
    client: httpx.AsyncClient,
    sign_up: SignUp,
    receiver: Receiver,
    smtp_server: SmtpServer,
    tmp_path: Path,
) -> None:
    admin = await sign_up()
    hook = path()
    endpoint = await add_endpoint(client, admin, receiver.url(hook), ["deposit.succeeded"])
    receiver.answer(Answer(200, delay=30))  # held open until the worker is gone
    environment = service_environment(
        app.state.settings,
        smtp_server,
        webhook_allowed_hosts="127.0.0.1",
        webhook_timeout_seconds=1,
        outbox_lease_seconds=2,
    )

    first = await ServiceProcess.worker(environment, tmp_path).start()
    try:
        await add_card(client, admin)
        assert (await deposit(client, admin, "50.00")).status_code == 201

        async def held() -> bool:
            return len(receiver.to(hook)) == 1

        await eventually(held)
    finally:
        await first.kill()
    [attempt] = await deliveries(client, admin, endpoint["id"])
    assert (attempt["attempt"], attempt["status"]) == (1, "pending")

    second = await ServiceProcess.worker(environment, tmp_path).start()
    try:

        async def delivered() -> bool:
            rows = await deliveries(client, admin, endpoint["id"])
            return [(d["attempt"], d["status"]) for d in rows] == [(1, "succeeded")]

        await eventually(delivered)
    finally:
        await second.stop()
    tries = receiver.to(hook)
    assert len(tries) == 2
    assert tries[0].webhook_id == tries[1].webhook_id
    assert tries[0].body == tries[1].body
