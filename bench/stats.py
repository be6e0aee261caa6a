"""What one load run measured: throughput, latency percentiles, errors and CPU shares."""

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.cpu import CpuUse


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = min(max(math.ceil(fraction * len(sorted_values)), 1), len(sorted_values))
    return sorted_values[rank - 1]


@dataclass
class Samples:
    """The requests of a measurement window: latencies (seconds) of the successful ones and a
    count of the failed ones by kind (`http 402`, `timeout`, `ConnectionResetError`...)."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    # Every request of the run, warm-up included: what the database saw.
    total_ok: int = 0
    total_errors: int = 0

    def count(self, error: str | None) -> None:
        if error is None:
            self.total_ok += 1
        else:
            self.total_errors += 1

    def record(self, latency: float, error: str | None) -> None:
        if error is None:
            self.latencies.append(latency)
        else:
            self.errors[error] += 1


@dataclass
class RunResult:
    """One run, as the load generator reports it (JSON on its stdout)."""

    name: str
    target: str
    mode: str  # "closed": fixed concurrency, as fast as it goes; "open": fixed arrival rate
    concurrency: int
    offered_rps: float | None
    seconds: float
    ok: int
    errors: int
    error_kinds: dict[str, int]
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    cpu: CpuUse | None
    total_ok: int
    total_errors: int
    late_dispatch_ms: float = 0.0  # open loop: the generator's 99th percentile lateness
    # The disk's longest 8 kB fdatasync during the window (bench/disk.py), when probed.
    disk_flush_max_ms: float | None = None
    # The successful requests' latencies (ms, ascending), so that windows can be merged.
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    @classmethod
    def from_samples(
        cls, samples: Samples, *, seconds: float, cpu: CpuUse | None, **fields: Any
    ) -> "RunResult":
        ordered = sorted(samples.latencies)
        errors = sum(samples.errors.values())
        return cls(
            ok=len(ordered),
            errors=errors,
            error_kinds=dict(samples.errors.most_common()),
            seconds=round(seconds, 3),
            rps=round(len(ordered) / seconds, 1) if seconds > 0 else 0.0,
            p50_ms=round(percentile(ordered, 0.50) * 1000, 2),
            p95_ms=round(percentile(ordered, 0.95) * 1000, 2),
            p99_ms=round(percentile(ordered, 0.99) * 1000, 2),
            max_ms=round((ordered[-1] if ordered else 0.0) * 1000, 2),
            cpu=cpu,
            total_ok=samples.total_ok,
            total_errors=samples.total_errors,
            latencies_ms=[round(latency * 1000, 3) for latency in ordered],
            **fields,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def merged(cls, windows: list["RunResult"]) -> "RunResult":
        """Several windows of one run as one: their requests together over their seconds
        together, each window's CPU shares weighted by its length."""
        samples = Samples(
            latencies=[ms / 1000 for window in windows for ms in window.latencies_ms],
            total_ok=sum(window.total_ok for window in windows),
            total_errors=sum(window.total_errors for window in windows),
        )
        for window in windows:
            samples.errors.update(window.error_kinds)
        seconds = sum(window.seconds for window in windows)
        shares = [(window.cpu, window.seconds) for window in windows if window.cpu is not None]
        cpu = None
        if len(shares) == len(windows) and seconds > 0:
            names = ("client", "service", "database", "other", "machine", "steal")
            cpu = CpuUse(
                **{
                    name: round(sum(getattr(use, name) * span for use, span in shares) / seconds, 2)
                    for name in names
                }
            )
        first = windows[0]
        return cls.from_samples(
            samples,
            seconds=seconds,
            cpu=cpu,
            name=first.name,
            target=first.target,
            mode=first.mode,
            concurrency=first.concurrency,
            offered_rps=first.offered_rps,
            late_dispatch_ms=max(window.late_dispatch_ms for window in windows),
            disk_flush_max_ms=max(
                (w.disk_flush_max_ms for w in windows if w.disk_flush_max_ms is not None),
                default=None,
            ),
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunResult":
        cpu = data.pop("cpu")
        return cls(cpu=CpuUse(**cpu) if cpu else None, **data)
