"""The load generator, run as its own process: `python -m bench.load --help`.

It drives one target for a warm-up then a measurement window and prints one JSON line, a
`RunResult`, on stdout. Targets: `orders` (POST /v1/orders paid from the balance, an API key
and a fresh Idempotency-Key each), `balance` (GET /v1/finance/balance) and `floor` (the same
order as one asyncpg transaction, see bench/floor.py). Each request goes to an account drawn
at random from the accounts file.

Two ways to offer load:
- closed loop (`--concurrency N`): N virtual users, each sending its next request as soon as
  the previous one is answered; measures the maximum throughput at that concurrency;
- open loop (`--rate R`): requests arrive at R per second on average, as a Poisson process,
  whatever the answers; latency is counted from the moment a request was due, not from when
  it was sent, so a server that falls behind is charged for the queue it builds.

Only requests started inside the window count; requests/s is successful requests per second
of window, and latency percentiles are over the successful ones.
"""

import argparse
import asyncio
import itertools
import json
import random
import secrets
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import uvloop

from bench import cpu, disk, floor
from bench.stats import RunResult, Samples, percentile

Call = Callable[[], Awaitable[str | None]]  # one request: None when it succeeded, else why not

ORDER_BODY = json.dumps(
    {
        "product_id": floor.PRODUCT_ID,
        "common_name": floor.COMMON_NAME,
        "validity_years": floor.VALIDITY_YEARS,
    }
).encode()
REQUEST_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Account:
    account_id: str
    api_key: str


@dataclass(frozen=True)
class Window:
    """The measurement window, in time.perf_counter() seconds."""

    start: float
    end: float

    @classmethod
    def after(cls, warmup: float, duration: float) -> "Window":
        start = time.perf_counter() + warmup
        return cls(start, start + duration)


async def _guarded(call: Call) -> str | None:
    try:
        return await call()
    except TimeoutError:
        return "timeout"
    except Exception as error:  # every failure is counted, none stops the run
        return type(error).__name__


async def closed_loop(call: Call, concurrency: int, window: Window) -> Samples:
    samples = Samples()

    async def user() -> None:
        while (started := time.perf_counter()) < window.end:
            error = await _guarded(call)
            samples.count(error)
            if started >= window.start:
                samples.record(time.perf_counter() - started, error)

    await asyncio.gather(*(user() for _ in range(concurrency)))
    return samples


async def open_loop(
    call: Call, rate: float, window: Window, rng: random.Random
) -> tuple[Samples, float]:
    """The samples, and the 99th percentile of how late the generator fired (seconds)."""
    samples = Samples()
    lateness: list[float] = []
    running: set[asyncio.Task[None]] = set()

    async def one(due: float) -> None:
        error = await _guarded(call)
        samples.count(error)
        if due >= window.start:
            samples.record(time.perf_counter() - due, error)

    due = time.perf_counter()
    while due < window.end:
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if due >= window.start:
            lateness.append(max(time.perf_counter() - due, 0.0))
        task = asyncio.create_task(one(due))
        running.add(task)
        task.add_done_callback(running.discard)
        due += rng.expovariate(rate)
    await asyncio.gather(*running)
    return samples, percentile(sorted(lateness), 0.99)


async def _cpu_probe(
    window: Window, service_pid: int | None, database_pid: int | None
) -> cpu.CpuUse | None:
    await asyncio.sleep(max(window.start - time.perf_counter(), 0))
    start = cpu.snapshot(service_pid, database_pid)
    await asyncio.sleep(max(window.end - time.perf_counter(), 0))
    return cpu.use_between(start, cpu.snapshot(service_pid, database_pid))


@asynccontextmanager
async def http_target(
    target: str, url: str, accounts: list[Account], connections: int, rng: random.Random
) -> AsyncIterator[Call]:
    keys = (f"bench-{secrets.token_hex(4)}-{n}" for n in itertools.count())
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as http:

        async def order() -> str | None:
            headers = {
                "X-API-Key": rng.choice(accounts).api_key,
                "Idempotency-Key": next(keys),
                "Content-Type": "application/json",
            }
            async with http.post("/v1/orders", data=ORDER_BODY, headers=headers) as response:
                await response.read()
                return None if response.status == 201 else f"http {response.status}"

        async def balance() -> str | None:
            headers = {"X-API-Key": rng.choice(accounts).api_key}
            async with http.get("/v1/finance/balance", headers=headers) as response:
                await response.read()
                return None if response.status == 200 else f"http {response.status}"

        yield order if target == "orders" else balance


@asynccontextmanager
async def floor_target(
    dsn: str, accounts: list[Account], connections: int, rng: random.Random
) -> AsyncIterator[Call]:
    keys = (f"floor-{secrets.token_hex(4)}-{n}" for n in itertools.count())
    async with asyncpg.create_pool(dsn, min_size=connections, max_size=connections) as pool:
        async with pool.acquire() as connection:
            product = await floor.load_product(connection)

        async def order() -> str | None:
            async with pool.acquire() as connection:
                return await floor.place_order(
                    connection, product, rng.choice(accounts).account_id, next(keys)
                )

        yield order


async def run(args: argparse.Namespace, accounts: list[Account]) -> RunResult:
    rng = random.Random(args.seed)
    connections = args.concurrency or args.connections
    if args.target == "floor":
        target = floor_target(args.dsn, accounts, connections, rng)
    else:
        target = http_target(args.target, args.url, accounts, connections, rng)
    async with target as call:
        # The disk is probed from the warm-up on: a stall then leaves the open loop a
        # backlog that the window still pays for.
        probed_from = time.perf_counter()
        window = Window.after(args.warmup, args.duration)
        probe = asyncio.create_task(_cpu_probe(window, args.service_pid, args.database_pid))
        flushes = (
            asyncio.create_task(
                asyncio.to_thread(disk.longest_flush, args.disk_probe, probed_from, window.end)
            )
            if args.disk_probe
            else None
        )
        late = 0.0
        if args.concurrency:
            samples = await closed_loop(call, args.concurrency, window)
        else:
            samples, late = await open_loop(call, args.rate, window, rng)
        cpu_use = await probe
        longest_flush = await flushes if flushes is not None else None
    return RunResult.from_samples(
        samples,
        seconds=window.end - window.start,
        cpu=cpu_use,
        name=args.name,
        target=args.target,
        mode="closed" if args.concurrency else "open",
        concurrency=args.concurrency or connections,
        offered_rps=None if args.concurrency else args.rate,
        late_dispatch_ms=round(late * 1000, 2),
        disk_flush_max_ms=None if longest_flush is None else round(longest_flush * 1000, 1),
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Drive load at the billing API or the floor.")
    parser.add_argument("--name", required=True, help="label of the run in the report")
    parser.add_argument("--target", choices=["orders", "balance", "floor"], required=True)
    parser.add_argument("--accounts", required=True, help="JSON file: [{account_id, api_key}]")
    parser.add_argument("--url", help="the service, for orders and balance")
    parser.add_argument("--dsn", help="the bench database, for the floor")
    offered = parser.add_mutually_exclusive_group(required=True)
    offered.add_argument("--concurrency", type=int, help="closed loop: this many users")
    offered.add_argument("--rate", type=float, help="open loop: requests per second")
    parser.add_argument("--connections", type=int, default=64, help="open loop: pool size")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds not measured")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--service-pid", type=int, help="for the CPU shares")
    parser.add_argument("--database-pid", type=int, help="the postmaster, for the CPU shares")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--disk-probe", type=Path, help="a file to time 8 kB fdatasyncs in (bench/disk.py)"
    )
    args = parser.parse_args(argv)
    if args.target == "floor" and not args.dsn:
        parser.error("--dsn is needed for the floor")
    if args.target != "floor" and not args.url:
        parser.error("--url is needed for the HTTP targets")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    accounts = [Account(**item) for item in json.loads(Path(args.accounts).read_text())]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(run(args, accounts))
    json.dump(result.to_json(), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
