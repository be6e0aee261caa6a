"""Fixtures: one freshly migrated PostgreSQL database per test run (the embedded server, or
TEST_DATABASE_URL's server), the app served in process over httpx's ASGITransport, and
accounts built through the public API.

Tests isolate themselves by data: every test signs up its own accounts and calls from its
own client address, so they can run in any order against the one database.
"""

import asyncio
import itertools
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.gateway.sandbox_server import SandboxServer
from app.kit.db import start_embedded_postgres
from app.main import create_app
from app.migrate import upgrade_to_head

pytest_plugins = ["tests.smtp"]

PASSWORD = "Correct-Horse-Battery-7"
_addresses = itertools.count(1)


@pytest.fixture(scope="session")
def server_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    return url or start_embedded_postgres(".data", name="pg-test")


@pytest.fixture(scope="session")
async def database_url(server_url: str) -> AsyncIterator[str]:
    name = f"billing_test_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(
        make_url(server_url).set(drivername="postgresql").render_as_string(hide_password=False)
    )
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = (
        make_url(server_url)
        .set(drivername="postgresql", database=name)
        .render_as_string(hide_password=False)
    )
    await anyio.to_thread.run_sync(upgrade_to_head, url)
    yield url
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


# The sandbox sleeps this long on the "times out" test cards; the adapter gives up sooner.
SANDBOX_TIMEOUT_SLEEP = 1.5
GATEWAY_TIMEOUT = 0.5


@pytest.fixture(scope="session")
def sandbox_url() -> Iterator[str]:
    server = SandboxServer(timeout_sleep_seconds=SANDBOX_TIMEOUT_SLEEP)
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def settings(database_url: str, sandbox_url: str) -> Settings:
    return make_settings(database_url, sandbox_url=sandbox_url)


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "gateway": "sandbox",
        "sandbox_url": "http://127.0.0.1:9",  # overridden by the fixtures that need a gateway
        "gateway_timeout_seconds": GATEWAY_TIMEOUT,
        "secret_key": "test-secret-" + "k" * 40,
        "run_worker": False,
        "signup_limit_per_hour": 20,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    yield application
    await application.state.database.dispose()


def new_client_address() -> str:
    n = next(_addresses)
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def client_for(app: FastAPI, address: str | None = None) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(
        app=app, client=(address or new_client_address(), 40000), raise_app_exceptions=False
    )
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as http:
        yield http


@dataclass
class Member:
    """A user of an account, with the headers that authenticate as them."""

    email: str
    user_id: str
    account_id: str
    token: str
    role: str = "admin"
    password: str = PASSWORD
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def unique_email(tag: str = "user") -> str:
    return f"{tag}-{secrets.token_hex(6)}@example.com"


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> str:
    response = await client.post("/v1/auth/token", data={"username": email, "password": password})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


SignUp = Callable[..., Awaitable[Member]]


@pytest.fixture
def sign_up(client: httpx.AsyncClient) -> SignUp:
    async def make(name: str = "Ada Admin", company_name: str | None = "Acme Ltd") -> Member:
        email = unique_email("admin")
        response = await client.post(
            "/v1/signup",
            json={"email": email, "password": PASSWORD, "name": name, "company_name": company_name},
        )
        assert response.status_code == 201, response.text
        body = response.json()
        return Member(
            email=email,
            user_id=body["user"]["id"],
            account_id=body["account"]["id"],
            token=await login(client, email),
            data=body,
        )

    return make


AddUser = Callable[[Member, str], Awaitable[Member]]


@pytest.fixture
def add_user(client: httpx.AsyncClient) -> AddUser:
    async def make(admin: Member, role: str) -> Member:
        email = unique_email(role)
        response = await client.post(
            "/v1/users",
            headers=admin.headers,
            json={"email": email, "name": f"A {role}", "role": role, "password": PASSWORD},
        )
        assert response.status_code == 201, response.text
        return Member(
            email=email,
            user_id=response.json()["id"],
            account_id=admin.account_id,
            token=await login(client, email),
            role=role,
        )

    return make


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def db_session(app: FastAPI) -> AsyncIterator[AsyncSession]:
    """A session of its own on the app's database, committed at the end: for tests that read
    or write rows behind the API's back."""
    async with (
        AsyncSession(app.state.database.engine, expire_on_commit=False) as session,
        session.begin(),
    ):
        yield session


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 20.0) -> None:
    """Wait until `check()` holds, for what another process or a worker does in its own time;
    fail after `seconds`."""
    async with asyncio.timeout(seconds):
        while True:
            if await check():
                return
            await asyncio.sleep(0.1)
