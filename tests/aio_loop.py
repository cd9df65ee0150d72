"""Run a coroutine under asyncio's debug mode and fail if any callback blocked the loop.

asyncio's debug mode logs "Executing <callback> took N seconds" (logger ``asyncio``,
WARNING) for every callback or task step longer than ``loop.slow_callback_duration``,
measured in wall-clock time. :func:`run_unblocked` sets that to ``SLOW_CALLBACK_S`` and
fails the run for such a callback when the time was the callback's own: running on the
CPU (``cpu``) or asleep in the kernel (``blocked``: a blocking socket call, a
``time.sleep``, a lock wait) for longer than the limit.

Why not every logged line: on a shared 2-core machine the scheduler may take the CPU
from the loop's thread for 0.1 s in the middle of a 1 ms callback. That time is spent
runnable, on a run queue, and Linux counts it per thread (``/proc/thread-self/schedstat``,
second field); it is subtracted and reported, never blamed on the client. The cyclic
garbage collector is also off during the run (debug mode keeps a traceback per future,
and a full collection of those takes ~0.1 s in whatever callback triggers it).

tests/client/test_aio_units.py blocks the loop on purpose (a ``time.sleep``, a busy
loop) and expects :class:`LoopBlocked`: the check can fail.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import gc
import logging
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
        self.last: tuple[float, float, float] = (0.0, 0.0, 0.0)
        self.blocked: list[str] = []
        self.preempted: list[str] = []
        self._original = asyncio.events.Handle._run

    def install(self) -> None:
        monitor, original = self, self._original

        def timed_run(handle: asyncio.events.Handle) -> None:
            t0 = time.perf_counter()
            cpu0, wait0 = _sched()
            try:
                original(handle)
            finally:
                wall = time.perf_counter() - t0
                if wall >= monitor.limit_s:
                    cpu1, wait1 = _sched()
                    monitor.last = (wall, cpu1 - cpu0, wait1 - wait0)

        asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]
        logging.getLogger("asyncio").addHandler(self)

    def uninstall(self) -> None:
        asyncio.events.Handle._run = self._original  # type: ignore[method-assign]
        logging.getLogger("asyncio").removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not (message.startswith("Executing") and " took " in message):
            return
        wall, cpu, waiting = self.last
        self.last = (0.0, 0.0, 0.0)
        blocked = max(wall - cpu - waiting, 0.0)
        detail = (f"{message} (on the CPU {cpu:.3f} s, asleep {blocked:.3f} s, "
                  f"waiting for a CPU {waiting:.3f} s)")
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
