"""Through PgBouncer in transaction pooling mode (SPEC §13): with `DATABASE_PGBOUNCER=true` the
service's many connections share a few server connections and it keeps every promise of
money and idempotency; without the setting it breaks there.

Each test starts its own PgBouncer (Debian's 1.18, which cannot carry prepared statements
between server connections) in front of the test session's PostgreSQL, with a pool of
`POOL_SIZE` server connections, and the app is built on its URL.
"""

import asyncio
import os
import pwd
import shutil
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from app.main import create_app
from tests.conftest import SignUp, client_for, make_settings
from tests.money import add_card, balance, deposit, fund, key, order
from tests.orders.test_concurrency import assert_books_balance, assert_no_server_error
from tests.problems import assert_problem
from tests.processes import service_environment
from tests.smtp import SmtpServer, free_port
from tests.worker.test_processes import hot_account_across_processes

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
POOL_SIZE = 4


@dataclass
class PgBouncer:
    url: str  # the test database, through PgBouncer
    log: Path

    @property
    def most_server_connections(self) -> int:
        """The most pooled connections PgBouncer had open to PostgreSQL at once, from its log
        (each is named `S-0x…` as it opens and closes; one opened only to send a cancel
        request is not in the pool)."""
        opened: dict[str, int] = {}  # server connection → where it opened
        lifetimes: list[tuple[int, int]] = []
        lines = self.log.read_text().splitlines()
        for n, line in enumerate(lines):
            name = next((word for word in line.split() if word.startswith("S-0x")), None)
            if name is None:
                continue
            if "new connection to server" in line:
                opened[name] = n
            elif "closing because" in line and name in opened:
                start = opened.pop(name)
                if "cancel request" not in line:
                    lifetimes.append((start, n))
        lifetimes += [(start, len(lines)) for start in opened.values()]
        return max((sum(a <= n < b for a, b in lifetimes) for n, _ in lifetimes), default=0)

    @property
    def client_logins(self) -> int:
        """Connections the service (and the tests) opened to PgBouncer."""
        return self.log.read_text().count("login attempt")


def _run_as(host: str) -> list[str]:
    """PgBouncer refuses to run as root, and CI runs as root: there it runs as the owner of the
    server's socket directory (the embedded server's, which only its owner may enter), or as
    nobody for a server on TCP. It reads its configuration before it changes user."""
    if os.geteuid() != 0:
        return []
    owner = os.stat(host).st_uid if host.startswith("/") else 0
    return ["-u", pwd.getpwuid(owner).pw_name if owner else "nobody"]


@pytest.fixture
async def pgbouncer(database_url: str, tmp_path: Path) -> AsyncIterator[PgBouncer]:
    server = make_url(database_url)
    # The embedded server is reached on a unix socket, named by `?host=` in its URL.
    host = server.host or str(server.query["host"])
    user = server.username or "postgres"
    target = f"host={host} port={server.port or 5432} dbname={server.database} user={user}"
    if server.password:
        target += f" password={server.password}"
    port = free_port()
    (tmp_path / "users.txt").write_text(f'"{user}" ""\n')
    config = tmp_path / "pgbouncer.ini"
    config.write_text(
        f"""
[databases]
{server.database} = {target}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {tmp_path / "users.txt"}
pool_mode = transaction
default_pool_size = {POOL_SIZE}
reserve_pool_size = 0
max_client_conn = 500
"""
    )
    url = server.set(host="127.0.0.1", port=port, query={}, password=None).render_as_string(
        hide_password=False
    )
    bouncer = PgBouncer(url, tmp_path / "pgbouncer.log")
    with bouncer.log.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            PGBOUNCER, *_run_as(host), str(config), stdout=log, stderr=log
        )
    try:
        await _wait_until_it_serves(bouncer, process)
        yield bouncer
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await process.wait()


async def _wait_until_it_serves(
    bouncer: PgBouncer, process: asyncio.subprocess.Process, seconds: float = 10.0
) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if process.returncode is not None:
            raise AssertionError(f"pgbouncer exited:\n{bouncer.log.read_text()}")
        try:
            connection = await asyncpg.connect(bouncer.url, statement_cache_size=0)
        except (OSError, asyncpg.PostgresError):
            if time.monotonic() > deadline:
                raise AssertionError(f"pgbouncer not serving:\n{bouncer.log.read_text()}") from None
            await asyncio.sleep(0.05)
            continue
        try:
            assert await connection.fetchval("SELECT 1") == 1
            return
        finally:
            await connection.close()


@pytest.fixture
async def app_via_pgbouncer(pgbouncer: PgBouncer, sandbox_url: str) -> AsyncIterator[FastAPI]:
    application = create_app(
        make_settings(pgbouncer.url, database_pgbouncer=True, sandbox_url=sandbox_url)
    )
    yield application
    await application.state.database.dispose()


@pytest.fixture
async def client(app_via_pgbouncer: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The conftest's client, on the app behind PgBouncer: `sign_up` and the money helpers
    go through it too."""
    async with client_for(app_via_pgbouncer) as http:
        yield http


async def test_orders_and_deposits_racing_through_pgbouncer_keep_exact_books(
    client: httpx.AsyncClient, sign_up: SignUp, pgbouncer: PgBouncer, database_url: str
) -> None:
    spender, saver = await sign_up(), await sign_up()
    await fund(client, spender, "343.00")  # exactly 7 orders of 49.00
    await add_card(client, saver)
    order_keys = [key() for _ in range(20)]
    amounts = {key(): f"{10 + n}.00" for n in range(10)}  # 145.00 in all
    # Every key three times at once, as clients that retry before they hear back.
    sent = [("order", k) for k in order_keys for _ in range(3)]
    sent += [("deposit", k) for k in amounts for _ in range(3)]
    responses = await asyncio.gather(
        *(
            order(client, spender, k) if kind == "order" else deposit(client, saver, amounts[k], k)
            for kind, k in sent
        )
    )

    assert_no_server_error(responses)
    copies: dict[str, list[httpx.Response]] = {}
    for (_, k), response in zip(sent, responses, strict=True):
        if response.status_code == 409:
            assert_problem(response, 409, "idempotency_key_in_use")
        else:
            copies.setdefault(k, []).append(response)
    assert set(copies) == set(order_keys) | set(amounts), "a key got no answer"
    # Every copy of a key tells the same story: one order or deposit, or one refusal.
    for answers in copies.values():
        assert len({(r.status_code, r.json().get("id") or r.json()["code"]) for r in answers}) == 1
        ran = [r for r in answers if "idempotent-replayed" not in r.headers]
        assert ran, "only replays of an answer never sent"
        if ran[0].status_code == 201:
            assert len(ran) == 1, "a key moved money twice"
            assert all(r.json() == ran[0].json() for r in answers)
    first = {k: answers[0] for k, answers in copies.items()}

    placed = [first[k] for k in order_keys]
    assert Counter(r.status_code for r in placed) == {201: 7, 402: 13}
    paid = {r.json()["id"] for r in placed if r.status_code == 201}
    assert len(paid) == 7
    assert all(r.json()["code"] == "insufficient_funds" for r in placed if r.status_code == 402)
    assert {first[k].status_code for k in amounts} == {201}
    assert await balance(client, spender) == "0.00"
    assert await balance(client, saver) == "145.00"

    # Retried once more, every key replays its stored answer (as the storm's replays did)
    # and moves no money.
    for kind, k in dict.fromkeys(sent):
        again = await (
            order(client, spender, k) if kind == "order" else deposit(client, saver, amounts[k], k)
        )
        assert again.headers["idempotent-replayed"] == "true"
        assert again.status_code == first[k].status_code
        replays = [r for r in copies[k] if "idempotent-replayed" in r.headers]
        assert all(r.json() == again.json() for r in replays)
        if again.status_code == 201:
            assert again.json() == first[k].json()
    spent = await assert_books_balance(client, spender, database_url)
    assert {e["order_id"] for e in spent if e["type"] == "order"} == paid
    saved = await assert_books_balance(client, saver, database_url)
    assert sorted(e["amount"] for e in saved) == sorted(amounts.values())
    # The service's connections really shared PgBouncer's few server connections.
    assert pgbouncer.most_server_connections <= POOL_SIZE < pgbouncer.client_logins


async def test_two_api_processes_and_a_worker_through_pgbouncer_give_exact_results(
    client: httpx.AsyncClient,
    sign_up: SignUp,
    app_via_pgbouncer: FastAPI,
    smtp_server: SmtpServer,
    pgbouncer: PgBouncer,
    tmp_path: Path,
) -> None:
    # Each process migrates at start, through PgBouncer too.
    environment = service_environment(
        app_via_pgbouncer.state.settings,
        smtp_server,
        run_worker=False,
        reconcile_after_seconds=2,
        database_pgbouncer=True,
    )
    await hot_account_across_processes(client, sign_up, environment, smtp_server, tmp_path)
    assert pgbouncer.most_server_connections <= POOL_SIZE < pgbouncer.client_logins


async def test_without_the_setting_a_request_fails_once_its_server_connection_is_taken(
    pgbouncer: PgBouncer, sandbox_url: str, client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    """asyncpg keeps each statement prepared on the server connection it first ran on; behind
    PgBouncer the next transaction may run on another, where that statement does not exist.
    With the setting nothing is kept, and the same sequence succeeds."""
    member = await sign_up()
    for pgbouncer_setting, status in ((False, 500), (True, 200)):
        app = create_app(
            make_settings(
                pgbouncer.url, database_pgbouncer=pgbouncer_setting, sandbox_url=sandbox_url
            )
        )
        async with client_for(app) as http:
            assert (
                await http.get("/v1/finance/balance", headers=member.headers)
            ).status_code == 200
            # Another client's transaction holds the server connection that request ran on
            # (PgBouncer hands out the most recently used one first).
            other = await asyncpg.connect(pgbouncer.url, statement_cache_size=0)
            try:
                async with other.transaction():
                    await other.execute("SELECT 1")
                    again = await http.get("/v1/finance/balance", headers=member.headers)
            finally:
                await other.close()
            assert again.status_code == status, again.text
        await app.state.database.dispose()
