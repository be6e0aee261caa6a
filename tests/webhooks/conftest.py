"""Webhook tests: the app allows 127.0.0.1 as a webhook host (WEBHOOK_ALLOWED_HOSTS, as for
local development), a real receiver listens there, and a worker delivers on a short retry
schedule, one pass at a time."""

import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from app.webhooks.delivery import WebhookSender
from app.worker.runner import Worker
from tests.conftest import Member, make_settings
from tests.webhooks.receiver import Receiver

ALL_EVENTS = [
    "deposit.succeeded",
    "deposit.failed",
    "order.paid",
    "order.canceled",
    "balance.low",
    "invoice.paid",
    "invoice.payment_failed",
]
SCHEDULE = [0.2, 0.2, 0.2]


@pytest.fixture(scope="session")
def webhook_settings(settings: Settings) -> Settings:
    return make_settings(
        settings.database_url,
        sandbox_url=settings.sandbox_url,
        webhook_allowed_hosts=["127.0.0.1"],
        webhook_retry_schedule=SCHEDULE,
    )


@pytest.fixture(scope="session")
async def app(webhook_settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(webhook_settings)
    yield application
    await application.state.database.dispose()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def make_webhook_worker(
    app: FastAPI, sender: WebhookSender | None = None, **overrides: Any
) -> Worker:
    values: dict[str, Any] = {
        "sandbox_url": app.state.settings.sandbox_url,
        "webhook_allowed_hosts": ["127.0.0.1"],
        "webhook_retry_schedule": SCHEDULE,
        **overrides,
    }
    settings = make_settings(app.state.settings.database_url, **values)
    database = app.state.database
    return Worker(
        settings, database, app.state.gateway, webhooks=sender or WebhookSender(settings, database)
    )


@pytest.fixture
async def webhook_worker(app: FastAPI) -> AsyncIterator[Worker]:
    worker = make_webhook_worker(app)
    yield worker
    await worker.webhooks.aclose()


async def add_endpoint(
    client: httpx.AsyncClient,
    admin: Member,
    url: str,
    events: list[str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    response = await client.post(
        "/v1/webhook-endpoints",
        headers=admin.headers,
        json={"url": url, "events": events or ALL_EVENTS, **fields},
    )
    assert response.status_code == 201, response.text
    endpoint: dict[str, Any] = response.json()
    return endpoint


def path() -> str:
    """A path of its own on the receiver, for one endpoint."""
    return f"/hooks/{secrets.token_hex(4)}"
