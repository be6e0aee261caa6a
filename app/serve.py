"""`make run`: resolve the database (embedded when DATABASE_URL is unset), migrate, serve.

With `--workers N` (N > 1) each worker process listens on a socket of its own, all bound to
the one port with SO_REUSEPORT, and the kernel spreads new connections over them. uvicorn's
own supervisor shares one listening socket instead: whichever worker wakes first drains the
accept queue, so a burst of keep-alive connections lands on one process while the other
idles (seen in `make bench`: 28 of 32 connections on one of two workers). The supervisor
starts again a worker that dies, and kills (then starts again) one whose event loop has not
written its heartbeat for WORKER_TIMEOUT_SECONDS.
"""

import argparse
import asyncio
import logging
import multiprocessing
import os
import secrets
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from pydantic import ValidationError
from uvicorn.config import STARTUP_FAILURE

from app.config import Settings, get_settings
from app.kit.db import start_embedded_postgres
from app.logs import configure_logging
from app.migrate import upgrade_to_head


def use_embedded_database_if_unset() -> Settings:
    """With no DATABASE_URL, start (or join) the embedded PostgreSQL and point DATABASE_URL at
    it; every process of one checkout (API, worker, CLI) then shares the same server."""
    settings = get_settings()
    if not settings.database_url:
        data_dir = Path(settings.data_dir)
        os.environ["DATABASE_URL"] = start_embedded_postgres(str(data_dir))
        # An embedded database is a developer's machine (the sandbox gateway is then fine).
        os.environ.setdefault("ENVIRONMENT", "development")
        print(f"Embedded PostgreSQL under {data_dir.resolve()}", file=sys.stderr)
        get_settings.cache_clear()
    return get_settings()


def prepare_environment() -> None:
    """Fill in what a developer's machine lacks, through the environment, so that every
    process started from here (uvicorn workers included) sees the same values."""
    settings = use_embedded_database_if_unset()
    data_dir = Path(settings.data_dir)
    if settings.gateway == "sandbox" and not settings.sandbox_url:
        from app.gateway.sandbox_server import SandboxServer

        # Lives in a daemon thread of this process, the parent of every uvicorn worker.
        os.environ["SANDBOX_URL"] = SandboxServer().start()
        print(f"Sandbox payment gateway at {os.environ['SANDBOX_URL']}")
    if not settings.secret_key:
        # A development secret, kept so that tokens survive a restart. Set SECRET_KEY in production.
        data_dir.mkdir(parents=True, exist_ok=True)
        key_file = data_dir / "secret_key"
        if not key_file.exists():
            key_file.write_text(secrets.token_urlsafe(48))
            key_file.chmod(0o600)
        os.environ["SECRET_KEY"] = key_file.read_text().strip()
    get_settings.cache_clear()


_UVICORN: dict[str, Any] = {
    "loop": "uvloop",
    "http": "httptools",
    "proxy_headers": True,
    "log_config": None,
}
_STARTUP_FAILURE = STARTUP_FAILURE  # how uvicorn exits when the app could not start
_BACKLOG = 2048  # uvicorn's default
_BEAT_SECONDS = 0.5  # how often a worker's event loop writes its heartbeat
_STARTUP_SECONDS = 60.0  # how long a new worker may take to its first heartbeat


def _listening_socket(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    sock.listen(_BACKLOG)
    sock.set_inheritable(True)
    return sock


def _port_is_free(host: str, port: int) -> bool:
    """No other server listens there. SO_REUSEPORT would let a second copy of the service
    join the first one's port without a word; a plain bind fails if anyone listens."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError:
            return False
    return True


def _exit_with_the_supervisor(supervisor: int) -> None:
    """A supervisor killed outright (SIGKILL) cannot stop its workers: each then stops
    itself, as on SIGTERM, rather than keep the port."""

    def watch() -> None:
        while os.getppid() == supervisor:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


def _worker(host: str, port: int, supervisor: int, heartbeat: Any) -> None:
    """One worker process: its own listening socket, one uvicorn server, and a heartbeat
    that its event loop writes while it runs (the supervisor replaces a worker whose
    heartbeat stops)."""
    import uvicorn

    configure_logging()
    _exit_with_the_supervisor(supervisor)
    try:
        sock = _listening_socket(host, port)
    except OSError as error:
        print(f"error: cannot listen on {host}:{port}: {error}", file=sys.stderr)
        raise SystemExit(_STARTUP_FAILURE) from None
    from app.main import create_app

    try:
        app = create_app()
    except Exception:
        # A setting the app refuses: every worker would fail alike, so nothing restarts.
        logging.getLogger(__name__).exception("the app could not start")
        raise SystemExit(_STARTUP_FAILURE) from None
    config = uvicorn.Config(app, access_log=get_settings().access_log, **_UVICORN)
    server = uvicorn.Server(config)

    async def serve() -> None:
        async def beat() -> None:
            while True:
                heartbeat.value = time.monotonic()
                await asyncio.sleep(_BEAT_SECONDS)

        beating = asyncio.create_task(beat())
        try:
            await server.serve(sockets=[sock])
        finally:
            beating.cancel()

    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(serve())


def _kill_if_hung(
    process: multiprocessing.process.BaseProcess, heartbeat: Any, since: float, hung_after: float
) -> None:
    """SIGKILL a worker whose event loop has not run for `hung_after` seconds (a stuck
    process keeps its listening socket, and the kernel keeps handing it connections that
    nobody answers); the supervisor then starts another, as for any worker that died.
    Building the app may take longer than a beat: a worker has `_STARTUP_SECONDS` for its
    first one."""
    last = heartbeat.value
    silent = time.monotonic() - (last if last else since)
    if silent > (hung_after if last else max(hung_after, _STARTUP_SECONDS)):
        print(
            f"worker {process.pid} stopped answering ({silent:.0f} s without a heartbeat); "
            "killing it",
            file=sys.stderr,
        )
        assert process.pid is not None
        os.kill(process.pid, signal.SIGKILL)


def _supervise(host: str, port: int, workers: int, hung_after: float) -> None:
    """Start the workers, start again any that dies or hangs, stop them all on SIGINT or
    SIGTERM."""
    if not _port_is_free(host, port):
        print(f"error: {host}:{port} is already in use", file=sys.stderr)
        raise SystemExit(1)
    spawn = multiprocessing.get_context("spawn")
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    def start() -> tuple[multiprocessing.process.BaseProcess, Any, float]:
        heartbeat = spawn.Value("d", 0.0, lock=False)  # the worker's last beat, monotonic
        process = spawn.Process(
            target=_worker, args=(host, port, os.getpid(), heartbeat), daemon=False
        )
        process.start()
        return process, heartbeat, time.monotonic()

    running = [start() for _ in range(workers)]
    restarts: list[float] = []
    print(f"Serving on http://{host}:{port} with {workers} workers", file=sys.stderr)
    while not stopping.wait(0.5):
        for index, (process, heartbeat, since) in enumerate(running):
            if process.is_alive():
                _kill_if_hung(process, heartbeat, since, hung_after)
                continue
            if process.exitcode == _STARTUP_FAILURE:
                print("error: a worker failed to start; stopping", file=sys.stderr)
                stopping.set()
                break
            print(
                f"worker {process.pid} exited ({process.exitcode}); starting another",
                file=sys.stderr,
            )
            # A worker that keeps dying is started again at most every few seconds.
            restarts = [moment for moment in restarts if time.monotonic() - moment < 60]
            if len(restarts) >= workers:
                stopping.wait(min(30.0, 2.0 ** (len(restarts) - workers)))
            restarts.append(time.monotonic())
            running[index] = start()
    processes = [process for process, _, _ in running]
    for process in processes:
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
    for process in processes:
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
            process.join()
    if any(process.exitcode == _STARTUP_FAILURE for process in processes):
        raise SystemExit(_STARTUP_FAILURE)


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the billing API")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "1")))
    args = parser.parse_args()
    configure_logging()
    try:
        prepare_environment()
    except ValidationError as error:
        for problem in error.errors():
            print(f"error: {problem['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        raise SystemExit(2) from None
    settings = get_settings()
    assert settings.database_url is not None
    upgrade_to_head(settings.database_url)
    if args.workers > 1:
        if settings.port == 0:
            parser.error("--workers above 1 needs a fixed PORT (the workers share it)")
        _supervise(args.host, settings.port, args.workers, settings.worker_timeout_seconds)
    else:
        # uvicorn stops gracefully on SIGTERM, then raises the signal again with the handler
        # it found: the default one would end the process without its exit handlers, and
        # an embedded PostgreSQL started above would keep running. This one exits.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=args.host,
            port=settings.port,
            access_log=settings.access_log,
            **_UVICORN,
        )


if __name__ == "__main__":
    main()
