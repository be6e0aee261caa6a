"""A worker wired to the test database, the sandbox gateway and the test SMTP server, driven
one pass at a time so that tests decide when delivery happens."""

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI

from app.worker.runner import Worker
from tests.conftest import make_settings
from tests.smtp import SmtpServer


def make_worker(app: FastAPI, smtp: SmtpServer | None, **overrides: Any) -> Worker:
    settings = app.state.settings
    values: dict[str, Any] = {
        "sandbox_url": settings.sandbox_url,
        "outbox_retry_base_seconds": 0.05,
        "outbox_max_attempts": 4,
    }
    if smtp is not None:
        values.update(smtp_host=smtp.host, smtp_port=smtp.port)
    values.update(overrides)
    worker_settings = make_settings(settings.database_url, **values)
    return Worker(worker_settings, app.state.database, app.state.gateway)


@pytest.fixture
def worker(app: FastAPI, smtp_server: SmtpServer) -> Worker:
    return make_worker(app, smtp_server)


async def drain_until(worker: Worker, done: Callable[[], bool], seconds: float = 10.0) -> None:
    """Run delivery passes until `done()` holds; fail after `seconds`."""
    async with asyncio.timeout(seconds):
        while not done():
            await worker.deliver_due()
            await asyncio.sleep(0.02)
