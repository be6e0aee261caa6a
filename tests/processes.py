"""The service as separate operating-system processes: API servers started the way `make run`
starts them (`python -m app.serve`: uvicorn with uvloop and httptools) and `billing worker`,
all against the test database, the test sandbox gateway and the test SMTP server."""

import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.config import Settings
from tests.smtp import SmtpServer, free_port


def service_environment(settings: Settings, smtp: SmtpServer, **overrides: Any) -> dict[str, str]:
    values: dict[str, Any] = {
        "DATABASE_URL": settings.database_url,
        "GATEWAY": "sandbox",
        "SANDBOX_URL": settings.sandbox_url,
        "GATEWAY_TIMEOUT_SECONDS": settings.gateway_timeout_seconds,
        "SECRET_KEY": settings.secret_key,
        "SMTP_HOST": smtp.host,
        "SMTP_PORT": smtp.port,
        "SIGNUP_LIMIT_PER_HOUR": 10_000,
        "WORKER_POLL_SECONDS": 0.1,
        "RECONCILE_INTERVAL_SECONDS": 0.5,
        "OUTBOX_RETRY_BASE_SECONDS": 0.2,
    }
    values.update({name.upper(): value for name, value in overrides.items()})
    environment = {**os.environ, **{name: str(value) for name, value in values.items()}}
    environment.pop("WEB_CONCURRENCY", None)
    return environment


@dataclass
class ServiceProcess:
    """One process of the service, its output kept in `log` for when a test fails."""

    command: list[str]
    environment: dict[str, str]
    log: Path
    port: int | None = None
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)

    @classmethod
    def api(cls, environment: dict[str, str], log_dir: Path, name: str) -> "ServiceProcess":
        port = free_port()
        return cls(
            [sys.executable, "-m", "app.serve"],
            {**environment, "PORT": str(port)},
            log_dir / f"{name}.log",
            port,
        )

    @classmethod
    def worker(cls, environment: dict[str, str], log_dir: Path) -> "ServiceProcess":
        return cls([sys.executable, "-m", "app.cli", "worker"], environment, log_dir / "worker.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> "ServiceProcess":
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.command, env=self.environment, stdout=log, stderr=log
            )
        if self.port is not None:
            await self._wait_until_ready()
        return self

    async def _wait_until_ready(self, seconds: float = 30.0) -> None:
        deadline = time.monotonic() + seconds
        async with httpx.AsyncClient(base_url=self.url) as http:
            while True:
                assert self.process is not None
                if self.process.returncode is not None:
                    raise AssertionError(f"{self.command} exited:\n{self.log.read_text()}")
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.command} not ready:\n{self.log.read_text()}")
                await asyncio.sleep(0.1)

    async def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup, as when a machine dies."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 15)
        except TimeoutError:
            await self.kill()
