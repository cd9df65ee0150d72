"""Run a coroutine under asyncio's debug mode and fail if any callback blocked the loop.

asyncio's debug mode logs "Executing <callback> took N seconds" (logger ``asyncio``,
WARNING) for every callback or task step longer than ``loop.slow_callback_duration``,
measured in wall-clock time. :func:`run_unblocked` sets that to ``SLOW_CALLBACK_S`` and
fails the run for such a callback when the time was the callback's own: running on the
CPU (``cpu``) or asleep in the kernel (``blocked``: a blocking socket call, a
``time.sleep``, a lock wait) for longer than the limit. Asleep means the thread gave up
the CPU itself: at least one voluntary context switch (``getrusage(RUSAGE_THREAD)``'s
``ru_nvcsw``) during the callback.

Why not every logged line: on a shared 2-core machine the scheduler may take the CPU
from the loop's thread for 0.1 s in the middle of a 1 ms callback. That time is spent
runnable, on a run queue, and Linux counts it per thread (``/proc/thread-self/schedstat``,
second field); it is subtracted and reported, never blamed on the client. The cyclic
garbage collector is also off during the run (debug mode keeps a traceback per future,
and a full collection of those takes ~0.1 s in whatever callback triggers it).

The voluntary switch is required because the machine can lose time no thread accounts
for. These machines are virtual; on a loaded one, a thread that only computes sees wall-clock
gaps of 20-40 ms with no CPU time charged, no run-queue wait and no context switch of
either kind (measured: a loop reading its own schedstat, next to three test runs). The
host had stopped the virtual CPU. A callback caught by such a gap sums to "asleep" although
it never slept. Such time is reported as lost by the machine, not judged. (A callback
that slept briefly *and* was caught by a gap is still judged on the sum: the two cannot
be told apart from inside the thread. Three runs of the kill test at once beside two busy
processes: the check failed 5 runs of 20 as it was, 8 of 16 with the spawn rule below
alone, 0 of 14 with both.)

One more cause is the test's own, not the client's: a test that restarts a node from
another thread (``asyncio.to_thread(cluster.start, ...)``) spawns it with
``subprocess.Popen``, and CPython 3.11 holds the GIL across ``vfork()``, until the child has
called ``exec``. On a loaded machine the child may wait tens of ms for a CPU before its
``exec``; the loop's thread sleeps on the GIL meanwhile, whatever callback it was in
(measured: 55 ms without a tick of a 1 ms ``asyncio.sleep`` loop, a ``Popen`` in a thread
beside it, two busy processes on the two cores). So the monitor times every ``Popen``
made by another thread during the run and subtracts the part of a slow callback that
overlapped one; what is left is still judged (a ``time.sleep`` in a callback stays a
failure, spawn or not).

tests/client/test_aio_units.py blocks the loop on purpose (a ``time.sleep``, a busy
loop) and expects :class:`LoopBlocked`: the check can fail.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import gc
import logging
import resource
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

# Callbacks of the client take well under a millisecond; any blocking network call,
# sleep or long decode that held the loop this long fails the test.
SLOW_CALLBACK_S = 0.05

_SCHEDSTAT = "/proc/thread-self/schedstat"


class LoopBlocked(AssertionError):
    pass


def overlap(start: float, end: float, spans: list[tuple[float, float]]) -> float:
    """Seconds of ``[start, end]`` covered by ``spans`` (intervals that do not overlap one
    another when they come from one thread; several threads' may, and then this counts
    the time more than once, at most ``end - start``)."""
    covered = sum(max(0.0, min(end, e) - max(start, s)) for s, e in spans)
    return min(covered, end - start)


def _voluntary_switches() -> int:
    """How many times this thread has given up the CPU itself (to sleep, wait or block)."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw


def _sched() -> tuple[float, float]:
    """(seconds on the CPU, seconds waiting on a run queue) of this thread."""
    try:
        with open(_SCHEDSTAT) as f:
            on_cpu, waiting, _ = f.read().split()
        return int(on_cpu) / 1e9, int(waiting) / 1e9
    except OSError:  # not Linux: count everything as the callback's
        return time.thread_time(), 0.0


class _Monitor(logging.Handler):
    """Times every handle (wall, CPU, run-queue wait) and judges asyncio's warnings."""

    def __init__(self, limit_s: float) -> None:
        super().__init__(logging.WARNING)
        self.limit_s = limit_s
        self.last: tuple[float, float, float, float, int] = (0.0, 0.0, 0.0, 0.0, 0)
        # Popen calls of other threads: finished (start, end), and started, by thread
        self.spawns: list[tuple[float, float]] = []
        self.spawning: dict[int, float] = {}
        self.blocked: list[str] = []
        self.preempted: list[str] = []
        self._original = asyncio.events.Handle._run
        self._original_popen_init = subprocess.Popen.__init__

    def install(self) -> None:
        monitor, original = self, self._original

        def timed_run(handle: asyncio.events.Handle) -> None:
            t0 = time.perf_counter()
            cpu0, wait0 = _sched()
            slept0 = _voluntary_switches()
            try:
                original(handle)
            finally:
                wall = time.perf_counter() - t0
                if wall >= monitor.limit_s:
                    cpu1, wait1 = _sched()
                    end = t0 + wall
                    spans = monitor.spawns + [(s, end) for s in monitor.spawning.values()]
                    monitor.last = (wall, cpu1 - cpu0, wait1 - wait0,
                                    overlap(t0, end, spans), _voluntary_switches() - slept0)

        loop_thread, original_init = threading.get_ident(), self._original_popen_init

        def timed_init(popen: subprocess.Popen, *args: Any, **kwargs: Any) -> None:
            thread = threading.get_ident()
            if thread == loop_thread:  # a spawn on the loop's thread blocks it: judged
                original_init(popen, *args, **kwargs)
                return
            start = monitor.spawning[thread] = time.perf_counter()
            try:
                original_init(popen, *args, **kwargs)
            finally:
                del monitor.spawning[thread]
                monitor.spawns.append((start, time.perf_counter()))

        asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]
        subprocess.Popen.__init__ = timed_init  # type: ignore[method-assign]
        logging.getLogger("asyncio").addHandler(self)

    def uninstall(self) -> None:
        asyncio.events.Handle._run = self._original  # type: ignore[method-assign]
        subprocess.Popen.__init__ = self._original_popen_init  # type: ignore[method-assign]
        logging.getLogger("asyncio").removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not (message.startswith("Executing") and " took " in message):
            return
        wall, cpu, waiting, spawning, sleeps = self.last
        self.last = (0.0, 0.0, 0.0, 0.0, 0)
        unaccounted = max(wall - cpu - waiting - spawning, 0.0)
        blocked = unaccounted if sleeps else 0.0
        detail = (f"{message} (on the CPU {cpu:.3f} s, asleep {blocked:.3f} s in {sleeps} "
                  f"sleeps, waiting for a CPU {waiting:.3f} s, while another thread "
                  f"spawned a process {spawning:.3f} s, lost by the machine "
                  f"{unaccounted - blocked:.3f} s)")
        if cpu >= self.limit_s or blocked >= self.limit_s:
            self.blocked.append(detail)
        else:
            self.preempted.append(detail)


def run_unblocked(main: Callable[[], Awaitable[T]],
                  slow_callback_s: float = SLOW_CALLBACK_S) -> T:
    """``asyncio.run(main())`` in debug mode; raises :class:`LoopBlocked` listing every
    callback that held the loop longer than ``slow_callback_s`` by itself."""
    monitor = _Monitor(slow_callback_s)

    async def wrapped() -> Any:
        asyncio.get_running_loop().slow_callback_duration = slow_callback_s
        return await main()

    gc_was_enabled = gc.isenabled()
    gc.disable()
    monitor.install()
    try:
        result = asyncio.run(wrapped(), debug=True)
    finally:
        monitor.uninstall()
        if gc_was_enabled:
            gc.enable()
        gc.collect()
    if monitor.preempted:
        logging.getLogger(__name__).info(
            "callbacks slowed by the scheduler, not by themselves:\n%s",
            "\n".join(monitor.preempted))
    if monitor.blocked:
        raise LoopBlocked("the event loop was blocked:\n" + "\n".join(monitor.blocked))
    return result
