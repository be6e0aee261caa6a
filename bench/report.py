"""The results as a table on stdout and as docs/performance.md with a latency plot.

The generator rewrites only what lies between the `<!-- bench:begin -->` and
`<!-- bench:end -->` markers of docs/performance.md: anything written by hand outside them
(the optimisations' before and after, say) is kept as it is.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.hot import HotCheck
from bench.stats import RunResult

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
P99_TARGET_MS = 50.0
# The service against the floor of its own transaction (issue 10): (b)/(a), (c)/(a-hot),
# (d)/(a).
RATIO_TARGETS = {("b", "a"): 0.5, ("c", "a-hot"): 0.6, ("d", "a"): 0.8}
# Cores used by processes other than the bench's own above which a run was disturbed.
INTERFERENCE_CORES = 0.25
# Cores the hypervisor gave to other guests during a window above which a run was disturbed:
# at the targets' edge, a twentieth of a core is a ratio's second decimal.
STEAL_CORES = 0.05
# An 8 kB fdatasync slower than this in a window: the disk stalled every commit meanwhile.
DISK_STALL_MS = P99_TARGET_MS

LABELS = {
    "a": "floor: order txn via asyncpg, {n} accounts",
    "b": "POST /v1/orders, {n} accounts",
    "a-hot": "floor: order txn via asyncpg, 1 hot account",
    "c": "POST /v1/orders, 1 hot account",
    "d": "GET /v1/finance/balance, {n} accounts",
}


@dataclass(frozen=True)
class Target:
    name: str
    wanted: str
    measured: str
    met: bool


@dataclass
class Report:
    date: str
    machine: dict[str, str]
    workers: int
    concurrency: int
    accounts: int
    warmup: float
    duration: float
    sweep_duration: float
    runs: dict[str, RunResult]  # a, b, a-hot, c, d: closed loop
    sweep: list[tuple[int, RunResult]]  # (percent of the maximum of (b), open-loop run)
    hot: HotCheck
    rounds: int = 1  # closed-loop windows per run, interleaved with the other runs'
    wall_seconds: float = 0.0
    targets: list[Target] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.targets = _targets(self)

    def ratio(self, run: str, floor: str) -> float:
        base = self.runs[floor].rps
        return self.runs[run].rps / base if base else 0.0

    def _named(self) -> list[tuple[str, RunResult]]:
        return [*self.runs.items(), *((f"{p}%", run) for p, run in self.sweep)]

    def interference(self) -> str | None:
        """A warning when something else used the machine during some runs, else None."""
        return _warning(
            "other processes used CPU during these runs (cores)",
            [
                f"({name}) {run.cpu.other:.2f}"
                for name, run in self._named()
                if run.cpu and run.cpu.other > INTERFERENCE_CORES
            ],
            "Their figures are lower than on a quiet machine.",
        )

    def steal(self) -> str | None:
        """A warning when the hypervisor took more than STEAL_CORES from this machine during
        some runs, else None."""
        return _warning(
            "the hypervisor gave this machine's cores to other guests during these runs "
            "(steal, cores)",
            [
                f"({name}) {run.cpu.steal:.2f}"
                for name, run in self._named()
                if run.cpu and run.cpu.steal > STEAL_CORES
            ],
            "Their figures are lower, and their latencies longer, than on a quiet host.",
        )

    def disk_stalls(self) -> str | None:
        """A warning when the disk took longer than DISK_STALL_MS to flush 8 kB in some
        runs (bench/disk.py), else None."""
        return _warning(
            "the disk stalled during these runs (its longest fdatasync of 8 kB)",
            [
                f"({name}) {run.disk_flush_max_ms:.0f} ms"
                for name, run in self._named()
                if run.disk_flush_max_ms is not None and run.disk_flush_max_ms > DISK_STALL_MS
            ],
            "Every commit waits for such a flush: a p99 above that is the disk's.",
        )

    def warnings(self) -> list[str]:
        """What disturbed the runs: other processes, the hypervisor, the disk."""
        return list(filter(None, [self.interference(), self.steal(), self.disk_stalls()]))


def _warning(what: str, runs: list[str], meaning: str) -> str | None:
    """`Warning: what: (run) figure, ... meaning`, or None when no run is named."""
    return f"Warning: {what}: {', '.join(runs)}. {meaning}" if runs else None


def ratio_lines(report: Report) -> list[str]:
    """`name = ratio`, one line per target ratio, as `make bench` prints them."""
    return [f"({run})/({floor}) = {report.ratio(run, floor):.2f}" for run, floor in RATIO_TARGETS]


def _targets(report: Report) -> list[Target]:
    hot = report.hot
    half = next((run for percent, run in report.sweep if percent == 50), None)
    ratios = [
        Target(
            f"({run})/({floor})",
            f">= {wanted}",
            f"{report.ratio(run, floor):.2f}",
            report.ratio(run, floor) >= wanted,
        )
        for (run, floor), wanted in RATIO_TARGETS.items()
    ]
    errors = sum(run.total_errors for run in report.runs.values())
    return [
        *ratios,
        Target(
            "errors (every run), lost updates (c)",
            "0, 0",
            f"{errors}, {hot.lost_updates:g}"
            + ("" if hot.consistent else " (ledger check failed)"),
            errors == 0 and hot.consistent,
        ),
        Target(
            "p99 of (b) at 50% of its max",
            f"<= {P99_TARGET_MS:g} ms",
            f"{half.p99_ms:.1f} ms at {half.rps:.0f} req/s" if half else "not measured",
            half is not None and half.errors == 0 and half.p99_ms <= P99_TARGET_MS,
        ),
    ]


def _disk(run: RunResult) -> str:
    return "-" if run.disk_flush_max_ms is None else f"{run.disk_flush_max_ms:.1f}"


def _cpu(run: RunResult) -> str:
    if run.cpu is None:
        return "-"
    use = run.cpu
    return f"{use.client:.2f}/{use.service:.2f}/{use.database:.2f}/{use.other:.2f}"


def _steal(run: RunResult) -> str:
    return "-" if run.cpu is None else f"{run.cpu.steal:.2f}"


def _cpu_per_request(run: RunResult) -> str:
    """Milliseconds of CPU per successful request, the bench's own processes only (load
    generator, service, PostgreSQL): what a request costs, whatever else ran meanwhile."""
    if run.cpu is None or not run.rps:
        return "-"
    own = run.cpu.client + run.cpu.service + run.cpu.database
    return f"{own / run.rps * 1000:.2f}"


def _errors(run: RunResult) -> str:
    if not run.errors:
        return "0"
    kinds = ", ".join(f"{kind}: {count}" for kind, count in run.error_kinds.items())
    return f"{run.errors} ({kinds})"


def _grid(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> str:
    """Rows under a header, as aligned plain text or as a Markdown table (numbers right)."""
    right = [all(_numeric(row[i]) for row in rows) for i in range(len(header))]
    if markdown:
        rule = ["---:" if r else "---" for r in right]
        return "\n".join("| " + " | ".join(line) + " |" for line in [header, rule, *rows])
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]

    def fmt(line: Sequence[str]) -> str:
        cells = (
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(line, widths, right, strict=True)
        )
        return "  ".join(cells).rstrip()

    return "\n".join([fmt(header), "  ".join("-" * w for w in widths), *map(fmt, rows)])


def _numeric(cell: str) -> bool:
    return cell.replace(".", "", 1).replace("%", "").isdigit() or cell == "-"


def runs_table(report: Report, markdown: bool = False) -> str:
    header = ["run", "what", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "CPU"]
    header += ["steal", "CPU ms/req", "disk ms"]
    rows = [
        [
            f"({name})",
            LABELS[name].format(n=report.accounts),
            f"{run.rps:.0f}",
            f"{run.p50_ms:.1f}",
            f"{run.p95_ms:.1f}",
            f"{run.p99_ms:.1f}",
            _errors(run),
            _cpu(run),
            _steal(run),
            _cpu_per_request(run),
            _disk(run),
        ]
        for name, run in report.runs.items()
    ]
    return _grid(header, rows, markdown)


def sweep_table(report: Report, markdown: bool = False) -> str:
    header = ["load", "offered req/s", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors"]
    header += ["CPU", "steal", "late ms", "disk ms"]
    rows = [
        [
            f"{percent}%",
            f"{run.offered_rps or 0:.0f}",
            f"{run.rps:.0f}",
            f"{run.p50_ms:.1f}",
            f"{run.p95_ms:.1f}",
            f"{run.p99_ms:.1f}",
            _errors(run),
            _cpu(run),
            _steal(run),
            f"{run.late_dispatch_ms:.1f}",
            _disk(run),
        ]
        for percent, run in report.sweep
    ]
    return _grid(header, rows, markdown)


def targets_table(report: Report, markdown: bool = False) -> str:
    rows = [[t.name, t.wanted, t.measured, "met" if t.met else "NOT met"] for t in report.targets]
    return _grid(["target", "wanted", "measured", ""], rows, markdown)


def console(report: Report) -> str:
    """The table printed at the end of `make bench`."""
    return "\n\n".join(
        [
            f"Closed loop, {report.concurrency} connections, {report.workers} uvicorn worker(s), "
            f"{report.duration:g} s each in {report.rounds} interleaved windows, each after "
            f"{report.warmup:g} s of warm-up "
            "(CPU: cores used by the load generator/service/PostgreSQL/rest of the machine; "
            "steal: cores the hypervisor gave to other guests; CPU ms/req: the first three's "
            "CPU time per successful request; disk ms: the "
            "longest fdatasync of 8 kB on this machine's disk during the run, warm-up included, "
            "probed every 20 ms)",
            runs_table(report),
            "\n".join(ratio_lines(report)),
            report.hot.summary(),
            f"Open loop (Poisson arrivals), POST /v1/orders over {report.accounts} accounts, "
            f"{report.sweep_duration:g} s per step (late: the generator's p99 lateness)",
            sweep_table(report),
            targets_table(report),
            *report.warnings(),
        ]
    )


METHOD = """\
## Method

Everything runs on the one machine, as `make bench` does it: PostgreSQL, the service and the
load generator share its cores.

- **Database**: a fresh database `bench_<hex>` on the embedded PostgreSQL under
  `.data/pg-bench` (or on `BENCH_DATABASE_URL`'s server), migrated to head, dropped at the
  end.
- **Service**: `python -m app.serve --workers N` as in production (Alembic, then uvicorn with
  uvloop and httptools, one SO_REUSEPORT socket per worker), `RUN_WORKER=false` as for API
  processes beside a separate `billing worker` (the outbox poll is not part of an order),
  `ACCESS_LOG=false` as behind a load balancer that logs the requests,
  `SIGNUP_LIMIT_PER_HOUR` raised for the seeding. Its own stdout and stderr go to
  `.data/bench/service.log`.
- **Seeding**: {accounts} accounts plus one hot account through the public API (sign-up,
  token, an `admin` API key, balance payments on and the default), each funded with
  10,000,000.00 by an operator's adjustment (`adjust_balance`, the `billing adjust-balance`
  service), so that no order is refused for want of money.
- **Load generator**: `python -m bench.load`, a process of its own (asyncio on uvloop, aiohttp,
  keep-alive connections), one process per run.
  - *Closed loop* (maximum throughput): a fixed number of connections, each sending its next
    request when the previous one is answered; {duration:g} s measured per run, in {rounds}
    windows taken in turn with the other runs' ((a), (b), (d), (a), (b), (d)...; (a-hot) and
    (c) likewise), each after {warmup:g} s of warm-up. A run's windows are then counted as
    one: their requests over their seconds. The machine's speed drifts (the floor alone moved
    between 2,900 and 3,800 orders/s within minutes on the 2-core VM of these runs), and two
    runs measured in turn see the same stretches of it.
  - *Open loop* (latency against load): Poisson arrivals at 10 to 90 % of the maximum of (b),
    up to 64 connections; latency counts from the moment a request was due, not from when it
    could be sent, so a backlog is charged to the server; {sweep_duration:g} s measured per step.
  - Only requests started in the window count. Requests/s is successful requests per second;
    p50/p95/p99 are nearest-rank percentiles of the successful requests' latency seen by the
    client; an error is any other status or a failure to get an answer (10 s timeout).
- **Runs**:
  - (a) the floor: the order's own transaction straight through an asyncpg pool of as many
    connections as the HTTP runs use: `BEGIN`; `INSERT` the `certificate_order`; the
    conditional debit with its ledger entry, one call of the ledger's database function
    `post_ledger_entry`; `COMMIT`. No HTTP, authentication, idempotency record, catalogue
    or settings read, ORM or JSON;
  - (b) `POST /v1/orders` (`ssl_dv`, one year: 49.00 paid from the balance) with an API key
    and a fresh `Idempotency-Key`, each request on an account drawn at random among
    {accounts};
  - (a-hot), (c): the same two on the one hot account, where every transaction waits for the
    row lock of its balance. Around each window of (c) the hot account is checked: its
    balance must have moved by exactly 49.00 per 201 answered (warm-up included), its ledger
    must hold one debit per 201 and add up to the balance; a difference is a lost (or
    doubled) update;
  - (d) `GET /v1/finance/balance` with an API key, on the {accounts} accounts.
- **CPU** (column `CPU`, four shares): average cores busy during the window, from `/proc`: the
  load generator's process / the service's process tree / PostgreSQL's process tree (when it
  runs on this machine) / the rest of the machine. A last share well above zero means
  something else ran beside the bench, and that run's figures are low.
- **Steal** (column `steal`): average cores that the hypervisor gave to other guests while
  this virtual machine had work to run (`/proc/stat`). No process of the machine sees it; a
  run with steal above zero ran on less than its cores, and its figures are low.

Reproduce: `make bench` (`make bench WORKERS=1`, `make bench BENCH_ARGS=--quick` for a
shorter run, `BENCH_DATABASE_URL=postgresql://... make bench` for another server;
`.venv/bin/python -m bench --help` for every knob).
"""

TEMPLATE = """\
# Performance

How fast the billing API places an order paid from the balance, against the floor of its own
database transaction; measured by `make bench` (`bench/`).

{block}

## Optimisations: before and after

_Written by hand: `make bench` rewrites only what lies between the bench markers above._
"""


def markdown(report: Report, plot_name: str) -> str:
    """The generated section of docs/performance.md."""
    machine = report.machine
    pg = machine.get("postgres_settings", "")
    return "\n\n".join(
        [
            f"_Generated by `make bench` on {report.date} in {report.wall_seconds:.0f} s; "
            "everything between the bench markers is rewritten by the next run._",
            "## Last run",
            f"- Machine: {machine['cores']} cores ({machine['cpu']}), {machine['memory']}; "
            f"Python {machine['python']}.\n"
            f"- Database: {machine['postgres']} ({machine['database']}); {pg}.\n"
            f"- Service: `python -m app.serve --workers {report.workers}` (uvicorn, uvloop, "
            "httptools), `RUN_WORKER=false`, `ACCESS_LOG=false`.\n"
            f"- Load: {report.concurrency} connections (closed loop), {report.accounts} accounts "
            "and one hot account, load generator in its own process.",
            "### Maximum throughput (closed loop)",
            "CPU: cores used by the load generator / the service / PostgreSQL / the rest of the "
            "machine (anything else that ran meanwhile). steal: cores the hypervisor gave to "
            "other guests meanwhile. CPU ms/req: the CPU time of the first "
            "three per successful request, what one request costs whatever else ran. disk ms: "
            "the longest fdatasync of 8 kB on this machine's disk in the run (warm-up "
            "included), probed every 20 ms (bench/disk.py): every commit waits for its WAL's "
            "flush.",
            runs_table(report, markdown=True),
            "Ratios: " + ", ".join(f"**{line}**" for line in ratio_lines(report)) + ". "
            f"{_sentence(report.hot.summary())}.",
            "### Targets",
            targets_table(report, markdown=True),
            *report.warnings(),
            "### Latency against offered load (open loop, (b))",
            "`late ms`: the 99th percentile of how late the load generator sent a request "
            "against its schedule (already included in the latency); `disk ms`: as above.",
            sweep_table(report, markdown=True),
            f"![Latency of POST /v1/orders against offered load]({plot_name})",
            METHOD.format(
                accounts=report.accounts,
                warmup=report.warmup,
                duration=report.duration,
                rounds=report.rounds,
                sweep_duration=report.sweep_duration,
            ).rstrip(),
        ]
    )


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def write_doc(path: Path, section: str) -> None:
    """Put `section` between the markers of `path`, keeping the rest of the file."""
    block = f"{BEGIN}\n\n{section}\n\n{END}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(TEMPLATE.format(block=block))
        return
    text = path.read_text()
    if BEGIN in text and END in text.split(BEGIN, 1)[1]:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        path.write_text(head + block + tail)
    else:
        path.write_text(text.rstrip() + "\n\n" + block + "\n")
