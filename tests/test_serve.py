"""`python -m app.serve --workers 2` as a user runs it: a supervisor and two worker processes,
each listening on a socket of its own bound to the one port with SO_REUSEPORT, so that the
kernel spreads new connections over both. The supervisor refuses a port already in use,
starts again a worker that dies or hangs (SIGSTOP) and stops them all on SIGTERM.

Real processes and real TCP connections. Which process holds which connection is read from
/proc: a process's children from /proc/<pid>/task/*/children, its sockets from
/proc/<pid>/fd, and their state and ports from /proc/net/tcp (and tcp6), matched by inode.
"""

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from tests.processes import ServiceProcess, service_environment
from tests.smtp import SmtpServer, free_port

WORKERS = 2
CONNECTIONS = 32
_ESTABLISHED, _LISTEN = "01", "0A"  # the states' codes in /proc/net/tcp


def supervisor(environment: dict[str, str], log_dir: Path, name: str) -> ServiceProcess:
    port = free_port()
    return ServiceProcess(
        [sys.executable, "-m", "app.serve", "--workers", str(WORKERS)],
        {**environment, "PORT": str(port)},
        log_dir / f"{name}.log",
        port,
    )


# /proc


def _state(pid: int) -> str | None:
    """The process's state letter (R, S, Z…), None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def alive(pid: int) -> bool:
    return _state(pid) not in (None, "Z", "X")


def children(pid: int) -> list[int]:
    """The live child processes of `pid`, of any of its threads."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return []
    for task in tasks:
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return sorted(child for child in set(found) if alive(child))


def workers(pid: int) -> list[int]:
    """The supervisor's worker processes: its spawned children other than multiprocessing's
    resource tracker."""

    def command(child: int) -> bytes:
        try:
            return Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            return b""

    return [child for child in children(pid) if b"spawn_main" in command(child)]


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
    except FileNotFoundError:
        return set()
    for descriptor in descriptors:
        try:
            target = os.readlink(descriptor)
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def _server_side(port: int) -> dict[int, str]:
    """inode -> state of the TCP sockets whose local port is `port` (the listening sockets and
    the connections they accepted; an unaccepted connection has no inode yet)."""
    sockets: dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if inode and int(local.rsplit(":", 1)[1], 16) == port:
                sockets[inode] = state
    return sockets


def connections_held(pid: int, port: int) -> int:
    """How many established connections to `port` process `pid` holds."""
    server_side = _server_side(port)
    return sum(server_side.get(inode) == _ESTABLISHED for inode in _socket_inodes(pid))


def listening_sockets(pid: int, port: int) -> set[int]:
    """The inodes of the sockets listening on `port` that process `pid` holds."""
    server_side = _server_side(port)
    return {inode for inode in _socket_inodes(pid) if server_side.get(inode) == _LISTEN}


def listens(pid: int, port: int) -> bool:
    return bool(listening_sockets(pid, port))


async def until(check: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        await asyncio.sleep(0.05)


# HTTP


async def ready_on_new_connections(url: str, requests: int) -> None:
    """`requests` GET /readyz at once, each on a TCP connection of its own; all answer 200."""
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=15) as http:
        responses = await asyncio.gather(*(http.get("/readyz") for _ in range(requests)))
    assert [r.status_code for r in responses] == [200] * requests


@asynccontextmanager
async def open_connections(url: str, count: int) -> AsyncIterator[None]:
    """`count` keep-alive connections, each having answered a GET /readyz, held open inside
    the block (well within uvicorn's 5 s keep-alive)."""
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=15))
            for _ in range(count)
        ]
        responses = await asyncio.gather(*(http.get("/readyz") for http in clients))
        assert [r.status_code for r in responses] == [200] * count
        yield


async def spread(server: ServiceProcess, pids: list[int]) -> dict[int, int]:
    """Established connections per worker while CONNECTIONS keep-alive connections are open."""
    assert server.port is not None
    async with open_connections(server.url, CONNECTIONS):
        return {pid: connections_held(pid, server.port) for pid in pids}


# The supervisor's lifetime


@dataclass
class Service:
    """The module's supervisor, started when a test needs it and it is not running (once,
    unless a test stopped it: starting one costs seconds of imports in three processes)."""

    environment: dict[str, str]
    log_dir: Path
    server: ServiceProcess | None = None
    started: int = 0
    seen: set[int] = field(default_factory=set)  # every process of it, SIGKILLed if left over

    async def running(self) -> ServiceProcess:
        """The supervisor, both its workers listening on the port."""
        if self.server is None or self.server.process is None or self.exited:
            self.started += 1
            self.server = supervisor(self.environment, self.log_dir, f"api{self.started}")
            await self.server.start()
        server, port = self.server, self.server.port
        assert port is not None
        try:
            await until(
                lambda: (
                    len(self.workers()) == WORKERS
                    and all(listens(pid, port) for pid in self.workers())
                ),
                f"{WORKERS} workers listening on {port}",
                seconds=15,
            )
        except AssertionError as error:
            raise AssertionError(f"{error}\n{log_of(server)}") from None
        return server

    @property
    def exited(self) -> bool:
        return self.server is None or (
            self.server.process is not None and self.server.process.returncode is not None
        )

    def workers(self) -> list[int]:
        if self.exited or self.server is None or self.server.process is None:
            return []
        found = workers(self.server.process.pid)
        self.seen.update(children(self.server.process.pid))
        return found

    async def close(self) -> None:
        if self.server is not None:
            if not self.exited and self.server.process is not None:
                self.seen.update(children(self.server.process.pid))
            await self.server.stop()
        for pid in self.seen:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
async def service(
    settings: Settings, smtp_server: SmtpServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Service]:
    environment = service_environment(settings, smtp_server, run_worker=False)
    running = Service(environment, tmp_path_factory.mktemp("serve"))
    try:
        yield running
    finally:
        await running.close()


def log_of(server: ServiceProcess) -> str:
    return server.log.read_text() if server.log.exists() else ""


async def run_to_exit(
    command: list[str], environment: dict[str, str], seconds: float = 15.0
) -> tuple[int, str, str, float]:
    """Run `command` until it exits: its return code, stdout, stderr and run time."""
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *command,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), seconds)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"{command} still running after {seconds} s") from None
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode(), time.monotonic() - started


# The tests


async def test_two_workers_serve_and_both_accept_connections(service: Service) -> None:
    server = await service.running()
    await ready_on_new_connections(server.url, 64)
    pids = service.workers()
    assert len(pids) == WORKERS
    assert server.process is not None
    assert server.port is not None
    # Each worker listens on a socket of its own (uvicorn's supervisor shares one), and the
    # supervisor on none.
    first, second = (listening_sockets(pid, server.port) for pid in pids)
    assert first
    assert second
    assert not first & second
    assert not listening_sockets(server.process.pid, server.port)
    held = await spread(server, pids)
    # The point of SO_REUSEPORT: uvicorn's shared socket let one worker take nearly all.
    assert sum(held.values()) == CONNECTIONS, held
    assert all(count >= 1 for count in held.values()), held


async def test_a_second_copy_on_the_same_port_is_refused(service: Service) -> None:
    server = await service.running()
    before = service.workers()
    code, stdout, stderr, seconds = await run_to_exit(server.command, server.environment)
    assert code == 1, (code, stdout, stderr)
    assert f"error: 127.0.0.1:{server.port} is already in use" in stderr, stderr
    assert "Traceback" not in stdout + stderr, stdout + stderr
    assert seconds < 10, seconds
    # The first one kept its workers, and serves.
    assert service.workers() == before
    await ready_on_new_connections(server.url, 16)


async def test_a_killed_worker_is_replaced(service: Service) -> None:
    server = await service.running()
    before = service.workers()
    victim, survivor = before
    os.kill(victim, signal.SIGKILL)
    await until(lambda: not alive(victim), f"worker {victim} dead", seconds=5)
    # Its listening socket went with it: the other worker answers meanwhile.
    await ready_on_new_connections(server.url, 16)
    await service.running()  # both listening again, within 15 s
    after = service.workers()
    assert victim not in after, (before, after)
    assert survivor in after, (before, after)
    assert f"worker {victim} exited (-9); starting another" in log_of(server)
    # The new worker serves its share.
    await ready_on_new_connections(server.url, 16)
    held = await spread(server, after)
    assert all(count >= 1 for count in held.values()), held


async def test_sigterm_stops_the_supervisor_and_every_worker(service: Service) -> None:
    server = await service.running()
    assert server.process is not None
    assert server.port is not None
    pids = service.workers()
    everything = children(server.process.pid)  # the workers and multiprocessing's resource tracker
    assert set(pids) < set(everything), (pids, everything)
    server.process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(server.process.wait(), 15)
    assert server.process.returncode == 0, log_of(server)
    # The supervisor waited for its workers.
    assert [pid for pid in pids if alive(pid)] == []
    await until(
        lambda: not any(alive(pid) for pid in everything),
        f"none of {everything} alive",
        seconds=5,
    )
    assert "Traceback" not in log_of(server), log_of(server)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", server.port)) != 0
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", server.port))  # a plain bind: nobody listens there any more


async def test_workers_of_a_killed_supervisor_stop_and_free_the_port(service: Service) -> None:
    server = await service.running()
    assert server.process is not None
    assert server.port is not None
    pids = service.workers()
    await server.kill()  # SIGKILL: the supervisor cannot pass anything on
    await until(lambda: not any(alive(pid) for pid in pids), f"workers {pids} stopped", seconds=10)
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", server.port))  # nobody kept the port


async def test_several_workers_need_a_fixed_port(service: Service) -> None:
    command = [sys.executable, "-m", "app.serve", "--workers", str(WORKERS)]
    code, stdout, stderr, _ = await run_to_exit(command, {**service.environment, "PORT": "0"})
    assert code == 2, (code, stdout, stderr)
    assert "--workers above 1 needs a fixed PORT" in stderr, stderr
    assert "Traceback" not in stdout + stderr, stdout + stderr


@pytest.mark.parametrize("access_log", ["true", "false"])
async def test_access_log_lines_follow_the_setting(service: Service, access_log: str) -> None:
    server = ServiceProcess.api(
        {**service.environment, "ACCESS_LOG": access_log}, service.log_dir, f"log-{access_log}"
    )
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            assert (await http.get("/v1/products")).status_code == 401
    finally:
        await server.stop()
    logged = '"GET /v1/products HTTP/1.1" 401' in log_of(server)
    assert logged == (access_log == "true"), log_of(server)


async def test_workers_that_cannot_start_stop_the_service_with_the_reason(
    service: Service,
) -> None:
    port = free_port()
    environment = {**service.environment, "PORT": str(port), "SECRET_KEY": "too short"}
    command = [sys.executable, "-m", "app.serve", "--workers", str(WORKERS)]
    code, stdout, stderr, _ = await run_to_exit(command, environment, seconds=60)
    assert code == 3, (code, stdout, stderr)
    assert "SECRET_KEY must be set to at least 32 characters" in stderr, stderr
    assert "a worker failed to start; stopping" in stderr, stderr
    assert "starting another" not in stderr, stderr  # not started again and again
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


async def test_a_hung_worker_is_killed_and_replaced(service: Service) -> None:
    # A supervisor of its own, told to give up on a worker after 2 s without a heartbeat.
    hung = Service({**service.environment, "WORKER_TIMEOUT_SECONDS": "2"}, service.log_dir)
    try:
        server = await hung.running()
        # Both workers serving, so both beating: a worker listens before it has built its
        # app, and one still building it has a minute's grace, not WORKER_TIMEOUT_SECONDS.
        await ready_on_new_connections(server.url, 16)
        victim, survivor = hung.workers()
        os.kill(victim, signal.SIGSTOP)  # alive, its socket open, its event loop stopped
        await until(lambda: not alive(victim), f"hung worker {victim} killed", seconds=10)
        assert f"worker {victim} stopped answering" in log_of(server), log_of(server)
        await hung.running()  # two workers listening again
        after = hung.workers()
        assert victim not in after, after
        assert survivor in after, after
        await ready_on_new_connections(server.url, 16)
        held = await spread(server, after)
        assert all(count >= 1 for count in held.values()), held
    finally:
        await hung.close()


async def test_a_served_process_keeps_what_startup_built_out_of_the_collector(
    service: Service,
) -> None:
    # Every full collection would otherwise walk the libraries and the app (150 to 240 ms
    # per collection under load, every few seconds: docs/performance.md, step 22).
    server = ServiceProcess.api(service.environment, service.log_dir, "frozen")
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            metrics = (await http.get("/metrics")).text
    finally:
        await server.stop()
    frozen = [
        float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith("python_gc_frozen_objects ")
    ]
    assert frozen, metrics
    assert frozen[0] > 100_000, frozen


async def test_sigterm_stops_the_embedded_postgresql_it_started(tmp_path: Path) -> None:
    """With no DATABASE_URL the launcher starts PostgreSQL under DATA_DIR; stopped by SIGTERM
    (as a service manager or `kill` stops it), it stops that server too rather than leave
    it running. It starts without a warning where XDG_RUNTIME_DIR is unset (a container)."""
    unset = ("DATABASE_URL", "WEB_CONCURRENCY", "SANDBOX_URL", "GATEWAY", "SECRET_KEY")
    unset += ("XDG_RUNTIME_DIR",)  # platformdirs warns without it
    environment = {name: value for name, value in os.environ.items() if name not in unset}
    environment.update(DATA_DIR=str(tmp_path / "data"), RUN_WORKER="false")
    server = await ServiceProcess.api(environment, tmp_path, "embedded").start()
    assert server.process is not None
    postmaster = int((tmp_path / "data" / "pg" / "postmaster.pid").read_text().split()[0])
    assert alive(postmaster)
    server.process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(server.process.wait(), 30)
    await until(lambda: not alive(postmaster), "the embedded PostgreSQL stopped", seconds=15)
    assert "Traceback" not in log_of(server), log_of(server)
    assert "Warning" not in log_of(server), log_of(server)
