"""`python -m bench` (`make bench`): one run of every measurement, the table, the docs.

In order: a fresh bench database; the service started as in production; 100 accounts and a
hot one seeded and funded; then, each from a separate load-generator process at the same
concurrency and in interleaved windows, (a) the floor, (b) POST /v1/orders and (d) GET
/v1/finance/balance over the 100 accounts, (a-hot) and (c) the same two on the hot account
(checked for lost updates around each window of (c)), and an open-loop sweep of (b) at
fractions of its maximum. Prints the table and rewrites the
generated part of docs/performance.md and docs/bench-latency.png.
"""

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import database, seed
from bench.hot import HotCheck, HotWindow, order_price_cents, read_state
from bench.plot import plot_latency
from bench.report import Report, console, markdown, write_doc
from bench.service import RunningService, running_service
from bench.stats import RunResult

ROOT = Path(__file__).resolve().parent.parent
PLOT_NAME = "bench-latency.png"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


class Runs:
    """Launches `python -m bench.load` runs against one service and one database."""

    def __init__(
        self,
        args: argparse.Namespace,
        service: RunningService,
        dsn: str,
        database_pid: int | None,
        scratch: Path,
    ) -> None:
        self.args, self.service, self.dsn, self.scratch = args, service, dsn, scratch
        self.database_pid = database_pid

    def accounts_file(self, name: str, accounts: list[seed.SeededAccount]) -> Path:
        path = self.scratch / f"{name}.json"
        path.write_text(json.dumps([account.to_json() for account in accounts]))
        return path

    def _load(
        self, name: str, target: str, accounts: Path, *offered: str, seconds: float
    ) -> RunResult:
        command = [
            sys.executable, "-m", "bench.load",
            "--name", name, "--target", target, "--accounts", str(accounts),
            "--url", self.service.url, "--dsn", self.dsn,
            "--service-pid", str(self.service.pid),
            *(["--database-pid", str(self.database_pid)] if self.database_pid else []),
            "--warmup", str(self.args.warmup), "--duration", str(seconds),
            "--disk-probe", str(ROOT / ".data" / "bench" / "disk-probe"),
            *offered,
        ]  # fmt: skip
        # Our own interpreter and module, arguments of our own making.
        done = subprocess.run(  # noqa: S603
            command, capture_output=True, text=True, check=False, cwd=ROOT
        )
        self.service.check_alive()
        if done.returncode != 0:
            raise RuntimeError(f"load run {name} failed:\n{done.stderr}")
        result = RunResult.from_json(json.loads(done.stdout.strip().splitlines()[-1]))
        errors = f", errors {result.errors} {result.error_kinds}" if result.errors else ""
        log(
            f"({name}) {target}: {result.rps:.0f} req/s, p50 {result.p50_ms:.1f} ms, "
            f"p99 {result.p99_ms:.1f} ms{errors}"
        )
        return result

    def closed(self, name: str, target: str, accounts: Path) -> RunResult:
        concurrency = ["--concurrency", str(self.args.concurrency)]
        seconds = self.args.duration / self.args.rounds
        return self._load(name, target, accounts, *concurrency, seconds=seconds)

    def interleaved(self, runs: list[tuple[str, str, Path]]) -> dict[str, RunResult]:
        """Each run's window in turn, `rounds` times, then each run's windows as one: this
        machine's speed drifts by a third from one minute to the next, and a ratio of two
        runs measured a minute apart measured the drift as much as the runs."""
        windows: dict[str, list[RunResult]] = {name: [] for name, _, _ in runs}
        for _ in range(self.args.rounds):
            for name, target, accounts in runs:
                windows[name].append(self.closed(name, target, accounts))
        return {name: RunResult.merged(found) for name, found in windows.items()}

    def open(self, name: str, accounts: Path, rate: float) -> RunResult:
        offered = ["--rate", f"{rate:.1f}", "--connections", str(self.args.open_connections)]
        return self._load(name, "orders", accounts, *offered, seconds=self.args.sweep_duration)


def machine(info: database.ServerInfo) -> dict[str, str]:
    cpu_name = platform.processor() or platform.machine()
    memory = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_name = line.split(":", 1)[1].strip()
                break
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f"{pages / 2**30:.0f} GiB RAM"
    except (OSError, ValueError):
        pass
    return {
        "cores": str(os.cpu_count()),
        "cpu": cpu_name,
        "memory": memory,
        "python": platform.python_version(),
        "postgres": " ".join(info.version.split()[:2]),
        "database": "BENCH_DATABASE_URL"
        if os.environ.get("BENCH_DATABASE_URL")
        else "embedded, .data/pg-bench",
        "postgres_settings": ", ".join(f"{k}={v}" for k, v in sorted(info.settings.items())),
    }


def measure(args: argparse.Namespace) -> Report:
    started = time.monotonic()
    where = "BENCH_DATABASE_URL" if os.environ.get("BENCH_DATABASE_URL") else ".data/pg-bench"
    log(f"PostgreSQL: {where}")
    server = database.server_url()
    with (
        database.bench_database(server) as dsn,
        running_service(dsn, args.workers, ROOT / ".data" / "bench" / "service.log") as service,
        tempfile.TemporaryDirectory(prefix="bench-") as scratch,
    ):
        log(
            f"service at {service.url}, {args.workers} worker(s); "
            f"seeding {args.accounts + 1} accounts"
        )
        info = asyncio.run(database.server_info(dsn))
        accounts = asyncio.run(seed.seed_accounts(service.url, args.accounts + 1))
        asyncio.run(seed.fund(dsn, [account.account_id for account in accounts]))
        runs = Runs(args, service, dsn, info.postmaster_pid, Path(scratch))
        spread = runs.accounts_file("spread", accounts[:-1])
        hot = runs.accounts_file("hot", accounts[-1:])
        hot_id = accounts[-1].account_id

        results = runs.interleaved(
            [("a", "floor", spread), ("b", "orders", spread), ("d", "balance", spread)]
        )
        # The hot account is read around each window of (c): the floor's windows in between
        # move its balance too.
        hot_runs: dict[str, list[RunResult]] = {"a-hot": [], "c": []}
        hot_windows: list[HotWindow] = []
        for _ in range(args.rounds):
            hot_runs["a-hot"].append(runs.closed("a-hot", "floor", hot))
            before = asyncio.run(read_state(dsn, hot_id))
            window = runs.closed("c", "orders", hot)
            hot_runs["c"].append(window)
            after = asyncio.run(read_state(dsn, hot_id))
            hot_windows.append(HotWindow(window.total_ok, before, after))
        results.update({name: RunResult.merged(found) for name, found in hot_runs.items()})
        hot_check = HotCheck(tuple(hot_windows), asyncio.run(order_price_cents(dsn)))
        log(hot_check.summary())
        maximum = results["b"].rps
        sweep = [(p, runs.open(f"{p}%", spread, maximum * p / 100)) for p in args.sweep]
    return Report(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        machine=machine(info),
        workers=args.workers,
        concurrency=args.concurrency,
        accounts=args.accounts,
        warmup=args.warmup,
        duration=args.duration,
        sweep_duration=args.sweep_duration,
        runs=results,
        sweep=sweep,
        hot=hot_check,
        rounds=args.rounds,
        wall_seconds=time.monotonic() - started,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmark the billing API against its floor."
    )
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers (default 2)")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop connections")
    parser.add_argument("--accounts", type=int, default=100, help="accounts of (a), (b), (d)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each window")
    parser.add_argument(
        "--duration", type=float, default=12.0, help="closed-loop seconds per run, all rounds"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="closed-loop windows per run, each run's in turn with the others' (default 3)",
    )
    parser.add_argument("--sweep-duration", type=float, default=8.0, help="open-loop window (s)")
    parser.add_argument(
        "--sweep",
        type=lambda text: [int(p) for p in text.split(",")],
        default=[10, 25, 50, 75, 90],
        help="open-loop steps, percent of the maximum of (b) (default 10,25,50,75,90)",
    )
    parser.add_argument("--open-connections", type=int, default=64, help="open-loop pool size")
    parser.add_argument("--quick", action="store_true", help="short windows: a smoke run")
    parser.add_argument("--no-docs", action="store_true", help="print only; leave docs/ alone")
    args = parser.parse_args(argv)
    if args.quick:
        args.warmup, args.duration, args.sweep_duration, args.rounds = 1.0, 3.0, 3.0, 1
    if 50 not in args.sweep:
        parser.error("--sweep must include 50 (the p99 target is taken there)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.chdir(ROOT)
    # Stopped by SIGTERM, still stop the service and drop the bench database on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = measure(args)
    print(console(report))
    if not args.no_docs:
        docs = ROOT / "docs"
        plot_latency(report, docs / PLOT_NAME)
        write_doc(docs / "performance.md", markdown(report, PLOT_NAME))
        log(f"wrote docs/performance.md and docs/{PLOT_NAME}")
    log(f"done in {report.wall_seconds:.0f} s")


if __name__ == "__main__":
    main()
