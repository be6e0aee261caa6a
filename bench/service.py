"""The service as production runs it: `python -m app.serve` (Alembic, then uvicorn with uvloop
and httptools) in its own process, with N uvicorn workers.

The outbox worker is off in these processes (RUN_WORKER=false), as beside a separate
`billing worker`: its polling every 0.5 s is not part of an order's cost, and nothing it
would deliver is produced by the bench (no low-balance threshold is set). The in-process
sandbox gateway starts but is not called: every order is paid from the balance.
"""

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass(frozen=True)
class RunningService:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_alive(self) -> None:
        """Fail loudly rather than measure a service that is gone."""
        if self.process.poll() is not None:
            raise RuntimeError(
                f"the service exited ({self.process.returncode}) during the run; see {self.log}"
            )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _environment(database_url: str, port: int) -> dict[str, str]:
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PORT": str(port),
        "SECRET_KEY": secrets.token_urlsafe(48),
        "RUN_WORKER": "false",
        # As behind a load balancer that logs every request: no access log line per request.
        "ACCESS_LOG": "false",
        "ENVIRONMENT": "development",  # the sandbox gateway, started by the launcher
        "SIGNUP_LIMIT_PER_HOUR": "100000",
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("WEB_CONCURRENCY", "SANDBOX_URL", "GATEWAY"):
        environment.pop(name, None)
    return environment


def _wait_until_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited ({process.returncode}); see {log}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the service was not ready within 60 s; see {log}")


@contextmanager
def running_service(database_url: str, workers: int, log: Path) -> Iterator[RunningService]:
    """Start the service, wait for /readyz, yield it; SIGTERM (then SIGKILL) on the way out."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "app.serve", "--workers", str(workers), "--host", "127.0.0.1"]
    with log.open("wb") as output:
        # A session of its own: a signal to the terminal's process group reaches the bench,
        # which stops the service below.
        process = subprocess.Popen(  # noqa: S603 (our interpreter, our arguments)
            command,
            env=_environment(database_url, port),
            stdout=output,
            stderr=output,
            start_new_session=True,
        )
    try:
        _wait_until_ready(process, url, log)
        yield RunningService(url=url, process=process, log=log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
