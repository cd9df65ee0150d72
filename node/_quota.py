"""Quotas: bytes per second a principal may produce to / fetch from this node, and
requests per second it may send (direction "request": every RPC, and every item of a
produce stream, takes one token; the request is held before it is handled).

One token bucket per (principal, direction) on each node (Kafka's quotas are per broker
too). A bucket holds up to ``BURST_S`` seconds of its rate; every request takes its bytes;
a bucket in debt says how long the request must wait for its debt to be paid at the quota
rate (``delay_s``), and the interceptor (``_authz.py``) holds the produce request (before
it is written) or the fetch answer that long, reporting it as ``throttle_time_ms``.
Nothing is refused: a client over its quota is slowed to it. A request is held at most
``DELAY_S_MAX`` of its direction (below the Python client's request timeouts: 5 s for
produce, 2 s for a fetch beyond its long-poll wait, so a held request is never given up
and sent again); the debt stays, so later requests keep paying it. The rate holds while a
request is smaller than that many seconds of the quota; a bigger one passes after it.

Pure except for the injected clock; buckets of principals idle for ``IDLE_S`` are dropped
(at most ``BUCKETS_MAX`` are kept).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Final

from ._controller_state import QUOTA_DEFAULT_ENTITY, QuotaLimits

BURST_S: Final = 1.0
DELAY_S_MAX: Final = {"produce": 4.0, "fetch": 1.0, "request": 1.0}
IDLE_S: Final = 60.0
BUCKETS_MAX: Final = 100_000


class QuotaLimiter:
    def __init__(self, quotas: Callable[[], Mapping[str, QuotaLimits]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._quotas = quotas
        self._clock = clock
        # (principal, direction) -> [tokens (bytes, may be negative), last refill time, rate]
        self._buckets: dict[tuple[str, str], list[float]] = {}

    def rate(self, principal: str, direction: str) -> int:
        """The principal's limit for ``direction``: bytes/s ("produce"/"fetch") or
        requests/s ("request"); 0: none."""
        quotas = self._quotas()
        if not quotas:
            return 0
        limits = quotas.get(principal) or quotas.get(QUOTA_DEFAULT_ENTITY)
        if limits is None:
            return 0
        if direction == "request":
            return limits.requests_per_s
        return limits.produce_bytes_per_s if direction == "produce" else limits.fetch_bytes_per_s

    def delay_s(self, principal: str, direction: str, size_bytes: int) -> float:
        """Take ``size_bytes`` (one, for "request") from the principal's bucket; how long
        to hold the request."""
        rate = self.rate(principal, direction)
        if rate <= 0:
            return 0.0
        now = self._clock()
        key = (principal, direction)
        bucket = self._buckets.get(key)
        if bucket is None or bucket[2] != rate:
            if len(self._buckets) >= BUCKETS_MAX:
                self._drop_idle(now)
            bucket = self._buckets[key] = [rate * BURST_S, now, float(rate)]
        tokens = min(bucket[0] + (now - bucket[1]) * rate, rate * BURST_S) - size_bytes
        bucket[0], bucket[1] = tokens, now
        return 0.0 if tokens >= 0 else min(-tokens / rate, DELAY_S_MAX[direction])

    def _drop_idle(self, now: float) -> None:
        idle = [k for k, b in self._buckets.items() if now - b[1] > IDLE_S]
        for k in idle:
            del self._buckets[k]
        if len(self._buckets) >= BUCKETS_MAX:
            self._buckets.clear()
