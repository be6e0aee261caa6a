"""Gateway fixtures: the sandbox gateway served over real HTTP on a free local port."""

from collections.abc import AsyncIterator

import pytest

from app.gateway.sandbox import SandboxGateway
from tests.conftest import GATEWAY_TIMEOUT, SANDBOX_TIMEOUT_SLEEP

# The session's sandbox (tests/conftest.py) sleeps longer than the adapter waits.
CLIENT_TIMEOUT_SECONDS = GATEWAY_TIMEOUT
SERVER_SLEEP_SECONDS = SANDBOX_TIMEOUT_SLEEP


@pytest.fixture
async def sandbox(sandbox_url: str) -> AsyncIterator[SandboxGateway]:
    gateway = SandboxGateway(sandbox_url, timeout_seconds=CLIENT_TIMEOUT_SECONDS)
    yield gateway
    await gateway.aclose()
