"""The bench database: a fresh one per run, migrated to head, dropped at the end, on the
server named by BENCH_DATABASE_URL or else on an embedded PostgreSQL under .data/pg-bench."""

import asyncio
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from app.kit.db import start_embedded_postgres
from app.migrate import upgrade_to_head
from bench import cpu


def server_url() -> str:
    """BENCH_DATABASE_URL's server, or the embedded one (started, or joined, here)."""
    return os.environ.get("BENCH_DATABASE_URL") or start_embedded_postgres(".data", name="pg-bench")


def with_database(url: str, name: str) -> str:
    return (
        make_url(url)
        .set(drivername="postgresql", database=name)
        .render_as_string(hide_password=False)
    )


async def _admin(url: str, statement: str) -> None:
    connection = await asyncpg.connect(with_database(url, make_url(url).database or "postgres"))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextmanager
def bench_database(server: str) -> Iterator[str]:
    """A new database `bench_<hex>` on the server, migrated; its URL. Dropped on the way out."""
    name = f"bench_{secrets.token_hex(4)}"
    asyncio.run(_admin(server, f'CREATE DATABASE "{name}"'))
    try:
        url = with_database(server, name)
        upgrade_to_head(url)
        yield url
    finally:
        asyncio.run(_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass(frozen=True)
class ServerInfo:
    version: str
    settings: dict[str, str]
    postmaster_pid: int | None  # when the server runs on this machine


def _postmaster_of(backend_pid: int) -> int | None:
    """The postmaster, parent of our backend, when that backend is a process of this machine."""
    try:
        command = Path(f"/proc/{backend_pid}/cmdline").read_bytes()
    except OSError:
        return None
    return cpu.parent_of(backend_pid) if b"postgres" in command else None


async def server_info(url: str) -> ServerInfo:
    """The server's version, the settings that bound a write-heavy run, and its process."""
    connection = await asyncpg.connect(url)
    try:
        version = await connection.fetchval("SELECT version()")
        # Looked up while the backend lives: its parent is the postmaster.
        postmaster_pid = _postmaster_of(await connection.fetchval("SELECT pg_backend_pid()"))
        rows = await connection.fetch(
            "SELECT name, current_setting(name) AS value FROM unnest($1::text[]) AS name",
            ["max_connections", "shared_buffers", "synchronous_commit", "fsync", "wal_level"],
        )
    finally:
        await connection.close()
    return ServerInfo(
        version=version,
        settings={row["name"]: row["value"] for row in rows},
        postmaster_pid=postmaster_pid,
    )
