"""How long this machine's disk took to make a small write durable during a run.

Every order commits only once PostgreSQL's WAL is flushed (fdatasync), so a disk that stalls
for 200 ms stalls every order in flight for as long, whatever the service does: an open-loop
step with one such stall has its p99 set by the disk. The probe writes 8 kB and fdatasyncs
it every 20 ms in a file beside the embedded PostgreSQL's data (`.data`), on a thread of the
load generator, from the warm-up to the end of the window (a stall in the warm-up leaves the
open loop a backlog that the window pays for), and reports the longest wait: a p99 that misses
its target in a run where the disk stalled for longer says so in the report. About 50
flushes a second beside the hundreds PostgreSQL makes.
"""

import os
import time
from pathlib import Path

PROBE_INTERVAL_SECONDS = 0.02
_BLOCK = b"\0" * 8192
_BLOCKS = 128  # the offsets written in turn: a 1 MiB file


def longest_flush(path: Path, start: float, end: float) -> float:
    """The longest fdatasync of an 8 kB write between `start` and `end` (time.perf_counter()
    seconds), in seconds; blocking, for a thread."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    longest = 0.0
    try:
        time.sleep(max(start - time.perf_counter(), 0))
        count = 0
        while time.perf_counter() < end:
            os.pwrite(descriptor, _BLOCK, (count % _BLOCKS) * len(_BLOCK))
            began = time.perf_counter()
            os.fdatasync(descriptor)
            longest = max(longest, time.perf_counter() - began)
            count += 1
            time.sleep(PROBE_INTERVAL_SECONDS)
    finally:
        os.close(descriptor)
        path.unlink(missing_ok=True)
    return longest
