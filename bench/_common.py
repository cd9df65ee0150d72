"""Helpers shared by both systems' drivers: settings, pacing, percentiles, process
CPU/memory from /proc, progress bars, free ports."""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:  # imported where a bar is made: the paced, percentile helpers need no tqdm
    from tqdm import tqdm

from tests.harness import free_ports  # noqa: F401 - shared with the test clusters

PAYLOAD_100 = (b'{"order": 123456, "sku": "ABC-123", "qty": 2, "price": 1999, "note": "bench"}'
               .ljust(100, b" "))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Settings:
    """How long and how big each workload is. ``quick`` is a smoke run of a few seconds
    per workload; the default is the full run recorded in BENCHMARKS.md."""

    produce_s: float = 8.0
    latency_s: float = 10.0
    e2e_s: float = 10.0
    backlog_records: int = 1_000_000
    consume_cap_s: float = 20.0  # a slow client stops early; its rate is still exact
    failover_trials: int = 10
    scale_partitions: int = 1000
    scale_idle_s: float = 10.0

    limit_scale: float = 1.0  # multiplies every workload's time bound (--limit-scale)

    @classmethod
    def quick(cls, **overrides: float) -> Settings:
        return cls(**{**dict(produce_s=2.0, latency_s=2.0, e2e_s=2.0, backlog_records=100_000,
                             consume_cap_s=5.0, failover_trials=2, scale_partitions=60,
                             scale_idle_s=3.0), **overrides})

    def limit_s(self, kind: str) -> float:
        """The time bound of one workload step (bench/run.py fails and cleans up a step that
        runs past it): its nominal length plus 60 s of slack for setup (a cluster, a
        stream, leaders) and a loaded machine, times ``limit_scale``."""
        nominal = {
            "produce": self.produce_s,
            "latency": self.latency_s + 15,  # Raftka's raw-RPC run may lag up to 15 s
            "fill": self.backlog_records / 4000,  # >= 4,000 records/s
            "consume": max(self.consume_cap_s, self.backlog_records / 10000),
            "e2e": self.e2e_s + 10,  # deliveries still due are awaited up to 10 s
            "failover": self.failover_trials * 45,
            "scale": 150 + 0.4 * self.scale_partitions + 5 + self.scale_idle_s,
        }[kind]
        return round((nominal + 60) * self.limit_scale)


class WorkloadTimeout(TimeoutError):
    """A workload ran past the time bound it was given (bench/run.py)."""


class Bounded:
    """A system whose workloads stop themselves at ``deadline`` (a time.monotonic() value
    bench/run.py sets around each step; None outside one)."""

    deadline: float | None = None

    def left_s(self, default: float = 3600.0) -> float:
        """Seconds left before the current workload's deadline."""
        if self.deadline is None:
            return default
        return max(0.5, self.deadline - time.monotonic())

    def check_deadline(self, what: str) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise WorkloadTimeout(f"{what} still running at its time bound")


def value_of(size: int, i: int = 0) -> bytes:
    """A JSON-like record value of exactly ``size`` bytes (the same bytes for both
    systems)."""
    base = PAYLOAD_100 if size <= 100 else PAYLOAD_100 + b"x" * (size - 100)
    return base[:size]


def stored_records(buf: bytes) -> tuple[int, int]:
    """The records in a buffer of stored RecordBatches, counted from the batch headers
    (nothing decoded), and the offset after its last batch (-1: no batch): the raw Fetch
    rows of both doors read the log this way."""
    from raftka.v1.recordbatch import parse_header, split_batches  # noqa: PLC0415

    count, end = 0, -1
    for begin, _end in split_batches(buf):
        header = parse_header(buf, begin)
        count += header.record_count
        end = header.base_offset + header.last_offset_delta + 1
    return count, end


def percentiles_ms(samples_s: list[float]) -> dict[str, float]:
    """p50/p99/p999/max/mean in milliseconds of latencies given in seconds (nearest rank)."""
    if not samples_s:
        return {"count": 0}
    xs = sorted(samples_s)
    n = len(xs)

    def at(q: float) -> float:
        return round(xs[min(n - 1, max(0, math.ceil(q * n) - 1))] * 1000, 3)

    return {"count": n, "p50_ms": at(0.50), "p99_ms": at(0.99), "p999_ms": at(0.999),
            "max_ms": round(xs[-1] * 1000, 3), "mean_ms": round(sum(xs) / n * 1000, 3)}


def pace(rate: float, duration_s: float, send: Callable[[int, float], None],
         tick_s: float = 0.0) -> tuple[int, float]:
    """Call ``send(n, first_due)`` so that by each moment t the calls cover rate*t items,
    for ``duration_s``; ``n`` is how many items are due (1 when on time, more when the caller
    fell behind: it should send them together), ``first_due`` the perf_counter time the
    first of them was due (latency is measured from there, so falling behind counts).
    ``tick_s`` > 0 sends what is due at most once per tick: what a high-rate sender in
    Python does (it cannot make 300,000 calls a second). Returns (items, elapsed seconds)."""
    start = time.perf_counter()
    total = int(rate * duration_s)
    done = 0
    while done < total:
        now = time.perf_counter()
        due = min(total, int((now - start) * rate) + 1)
        if due > done:
            send(due - done, start + done / rate)
            done = due
            if tick_s:
                time.sleep(max(0.0, now + tick_s - time.perf_counter()))
        else:
            time.sleep(max(0.0, start + done / rate - now))
    return done, time.perf_counter() - start


# ---------------------------------------------------------------- /proc sampling

def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def proc_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE_SIZE


def idle_usage(pids: list[int], seconds: float, bar: tqdm | None = None) -> dict[str, float]:
    """CPU (percent of one core, summed over the processes) and RSS over ``seconds``."""
    cpu0 = sum(proc_cpu_seconds(p) for p in pids)
    t0 = time.perf_counter()
    while (left := seconds - (time.perf_counter() - t0)) > 0:
        time.sleep(min(0.25, left))
        if bar is not None:
            bar.n = round(min(seconds, time.perf_counter() - t0), 1)
            bar.refresh()
    elapsed = time.perf_counter() - t0
    cpu = sum(proc_cpu_seconds(p) for p in pids) - cpu0
    rss = sum(proc_rss_bytes(p) for p in pids)
    return {"cpu_percent": round(cpu / elapsed * 100, 1), "rss_mib": round(rss / 2**20, 1),
            "seconds": round(elapsed, 1)}


# ---------------------------------------------------------------- progress

def bar(desc: str, total: float | None, unit: str = "msg") -> tqdm:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc.ljust(34), unit=unit, unit_scale=True, leave=True,
                dynamic_ncols=True, mininterval=0.2)


class Ticker:
    """Moves a progress bar from a counter read every 0.2 s on a helper thread (the
    measured code only bumps an int)."""

    def __init__(self, progress: tqdm, read: Callable[[], float]) -> None:
        self._bar = progress
        self._read = read
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._bar.n = self._read()
            self._bar.refresh()

    def __enter__(self) -> Ticker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._bar.n = self._read()
        self._bar.refresh()
        self._bar.close()


def chunks(n: int, size: int) -> Iterator[int]:
    while n > 0:
        yield min(n, size)
        n -= size
