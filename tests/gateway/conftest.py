"""Gateway fixtures: the sandbox gateway served over real HTTP on a free local port."""

from collections.abc import AsyncIterator, Iterator

import pytest

from app.gateway.sandbox import SandboxGateway
from app.gateway.sandbox_server import SandboxServer

# The adapter gives up long before the sandbox answers its timeout cards.
CLIENT_TIMEOUT_SECONDS = 0.3
SERVER_SLEEP_SECONDS = 1.5


@pytest.fixture(scope="session")
def sandbox_url() -> Iterator[str]:
    server = SandboxServer(timeout_sleep_seconds=SERVER_SLEEP_SECONDS)
    yield server.start()
    server.stop()


@pytest.fixture
async def sandbox(sandbox_url: str) -> AsyncIterator[SandboxGateway]:
    gateway = SandboxGateway(sandbox_url, timeout_seconds=CLIENT_TIMEOUT_SECONDS)
    yield gateway
    await gateway.aclose()
