"""Where the CPU went during a measurement window, read from /proc (Linux only).

Four shares, in cores (1.0 = one core busy for the whole window): the load generator (the
calling process), the service (the `app.serve` process and its descendants: uvicorn's
workers), PostgreSQL (the postmaster and its descendants: backends, WAL writer...) and the
rest of the machine, which is idle unless something else ran beside the bench. Beside them,
the steal: the time the hypervisor gave this virtual machine's cores to another guest while
it had work to run (the `steal` column of /proc/stat), which no process of the machine sees
and which leaves a run slower and its latencies longer than on a quiet host.

A process tree's time counts the live processes' own time and the time of the children they
reaped (cutime, cstime), so that a backend that exits within the window is not lost.
"""

import os
import time
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class CpuSnapshot:
    wall: float
    machine: float
    steal: float
    service: float
    database: float
    client: float


@dataclass(frozen=True)
class CpuUse:
    """Average cores busy over a window, by whom."""

    client: float
    service: float
    database: float
    other: float
    machine: float
    steal: float = 0.0  # cores taken by the hypervisor; not in `machine`


def available() -> bool:
    return (_PROC / "stat").exists()


def _machine_seconds() -> tuple[float, float]:
    """Seconds the machine's cores were busy, and seconds stolen from them, since boot."""
    fields = (_PROC / "stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(value) for value in fields[:8]]  # user nice system idle iowait irq softirq steal
    busy = sum(ticks) - ticks[3] - ticks[4] - ticks[7]
    return busy / _TICKS, ticks[7] / _TICKS


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:  # gone meanwhile
        return None
    # The command name may hold spaces and parentheses: the fields start after the last ")".
    return text[text.rindex(")") + 2 :].split()


def _tree_cpu_seconds(root: int) -> float:
    """User and system time of `root` and all its live descendants."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None:
            continue
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)  # field 4 of stat: ppid
        # utime, stime, cutime, cstime (fields 14 to 17 of stat)
        times[pid] = sum(int(value) for value in fields[11:15]) / _TICKS
    total, pending = 0.0, [root]
    while pending:
        pid = pending.pop()
        total += times.get(pid, 0.0)
        pending.extend(children.get(pid, []))
    return total


def parent_of(pid: int) -> int | None:
    """The parent process of `pid` (for a PostgreSQL backend: the postmaster), if visible."""
    fields = _stat_fields(pid) if available() else None
    return int(fields[1]) if fields else None


def snapshot(service_pid: int | None, database_pid: int | None) -> CpuSnapshot | None:
    if not available():
        return None
    machine, steal = _machine_seconds()
    return CpuSnapshot(
        wall=time.monotonic(),
        machine=machine,
        steal=steal,
        service=_tree_cpu_seconds(service_pid) if service_pid else 0.0,
        database=_tree_cpu_seconds(database_pid) if database_pid else 0.0,
        client=time.process_time(),
    )


def use_between(start: CpuSnapshot | None, end: CpuSnapshot | None) -> CpuUse | None:
    if start is None or end is None or end.wall <= start.wall:
        return None
    wall = end.wall - start.wall
    client = (end.client - start.client) / wall
    service = (end.service - start.service) / wall
    database = (end.database - start.database) / wall
    machine = (end.machine - start.machine) / wall
    return CpuUse(
        client=round(client, 2),
        service=round(service, 2),
        database=round(database, 2),
        other=round(max(machine - client - service - database, 0.0), 2),
        machine=round(machine, 2),
        steal=round((end.steal - start.steal) / wall, 2),
    )
