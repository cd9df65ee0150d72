"""The node's garbage-collector policy: thresholds, and pauses measured and logged.

A node's event loop stops while CPython's cyclic collector runs, and a collection of the
oldest generation walks every tracked object the node holds (millions with 10,000
partition replicas, unless they were alive at startup and frozen, ``_server.py``). A pause
longer than an election timeout (300 ms by default) makes the peers report this node
silent and wake the groups it leads.

With CPython's default thresholds (700, 10, 10) the young generations are collected every
700 net allocations, so an object that lives a fraction of a second (a message in flight,
a request's state) survives two of them and is promoted to the oldest generation, where it
dies by reference counting; promotions past a quarter of the oldest generation's size start
a full collection. While 10,000-partition nodes moved replicas (a decommission), that was
a full collection every ~2 s, each 0.7-1.1 s long and finding nothing to free: half of
every node's time, ticks a second late, peers reported silent, an election storm.
``THRESHOLDS`` collect the young generation every 50,000 allocations (a few ms each), so
short-lived objects die before they are examined, and the oldest generation is considered
10 times less often; cyclic garbage is still freed, a little later.

``GcWatch`` times every collection and logs the long ones, so an operator sees a pause
that the peers will have taken for a dead node.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from typing import Mapping

log = logging.getLogger("raftka.gc")

LONG_PAUSE_S = 0.2
THRESHOLDS = (50_000, 20, 10)


def tune_thresholds(environ: Mapping[str, str] = os.environ) -> tuple[int, int, int]:
    """Set ``THRESHOLDS`` (module docstring), or the three integers of the environment's
    ``RAFTKA_GC_THRESHOLDS`` ("700,10,10": CPython's own, for a comparison); the node calls
    it once, at start. Returns what it set."""
    wanted = THRESHOLDS
    raw = environ.get("RAFTKA_GC_THRESHOLDS", "")
    if raw:
        try:
            parts = tuple(int(x) for x in raw.split(","))
            if len(parts) != 3 or min(parts) < 0:
                raise ValueError
            wanted = parts  # type: ignore[assignment]
        except ValueError:
            log.warning("RAFTKA_GC_THRESHOLDS=%r is not three non-negative integers "
                        "(e.g. 700,10,10); using %s", raw, ",".join(map(str, THRESHOLDS)))
    gc.set_threshold(*wanted)
    return wanted


class GcWatch:
    """Installed with ``install()``; its counters are for the tests."""

    def __init__(self, long_pause_s: float = LONG_PAUSE_S) -> None:
        self.long_pause_s = long_pause_s
        self.collections = 0
        self.long_pauses = 0
        self._started = 0.0

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        self.collections += 1
        if took >= self.long_pause_s:
            self.long_pauses += 1
            log.warning("garbage collection of generation %d paused the node for %.0f ms "
                        "(%d unreachable objects collected); a pause beyond the election "
                        "timeout makes the peers report this node silent",
                        info.get("generation", -1), took * 1000, info.get("collected", 0))
