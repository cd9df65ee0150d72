"""Quota token buckets (node/_quota.py) with an injected clock: a principal over its rate
is held back exactly enough that what it sends, over time, fits the rate."""

from __future__ import annotations

from raftka.node._controller_commands import encode_set_quota
from raftka.node._controller_snapshot import decode_snapshot, encode_snapshot
from raftka.node._controller_state import ControllerState, QuotaLimits
from raftka.node._quota import BURST_S, QuotaLimiter
from raftka.v1 import errors_pb2


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_client_that_waits_as_told_gets_exactly_the_rate() -> None:
    clock = Clock()
    quotas = {"User:a": QuotaLimits(10_000, 0)}
    limiter = QuotaLimiter(lambda: quotas, clock)
    start, sent = clock.now, 0
    for _ in range(200):
        delay = limiter.delay_s("User:a", "produce", 1_000)
        clock.now += delay  # the node holds the request this long
        sent += 1_000
    elapsed = clock.now - start
    # the first BURST_S of the rate is free, the rest is paced at the rate
    assert abs(sent - (10_000 * elapsed + 10_000 * BURST_S)) <= 1_000
    assert limiter.delay_s("User:a", "fetch", 10**9) == 0  # no fetch limit


def test_default_quota_and_own_quota() -> None:
    clock = Clock()
    quotas = {"<default>": QuotaLimits(0, 1_000), "User:vip": QuotaLimits(0, 1_000_000)}
    limiter = QuotaLimiter(lambda: quotas, clock)
    assert limiter.delay_s("User:x", "fetch", 1_500) == 0.5  # 1 s burst, 0.5 s of debt
    assert limiter.delay_s("User:vip", "fetch", 3_000) == 0.0
    clock.now += 0.5
    assert limiter.delay_s("User:x", "fetch", 500) == 0.5
    clock.now += 0.5
    assert limiter.delay_s("User:x", "fetch", 5_000) == 1.0  # held at most DELAY_S_MAX
    clock.now += 1.0
    assert limiter.delay_s("User:x", "fetch", 1) == 1.0  # the rest of the debt stays
    quotas.clear()
    assert limiter.delay_s("User:x", "fetch", 10**9) == 0.0  # removed: no limit


def test_quota_commands_and_snapshot() -> None:
    s = ControllerState([1, 2, 3])
    assert s.apply(1, encode_set_quota("User:a", 1000, 0)).ok
    assert s.apply(2, encode_set_quota("<default>", 0, 500)).ok
    assert s.apply(3, encode_set_quota("alice", 1, 1)).code == errors_pb2.INVALID_REQUEST
    assert s.apply(4, encode_set_quota("User:a", -1, 0)).code == errors_pb2.INVALID_REQUEST
    assert dict(s.quotas) == {"User:a": (1000, 0, 0), "<default>": (0, 500, 0)}
    # without a request quota the snapshot has no requests_per_s key at all: a node of the
    # previous release, which knows only the byte rates, reads it
    assert b"requests_per_s" not in encode_snapshot(s)
    restored = decode_snapshot(encode_snapshot(s))
    assert dict(restored.quotas) == dict(s.quotas)
    assert s.apply(5, encode_set_quota("User:a", 0, 0)).ok and "User:a" not in s.quotas
    assert s.apply(6, encode_set_quota("User:r", 0, 0, 50)).ok
    assert s.quotas["User:r"] == QuotaLimits(0, 0, 50)
    assert decode_snapshot(encode_snapshot(s)).quotas["User:r"].requests_per_s == 50
    assert s.apply(7, encode_set_quota("User:r", 0, 0, -1)).code == errors_pb2.INVALID_REQUEST
    assert s.apply(8, encode_set_quota("User:r", 0, 0, 0)).ok and "User:r" not in s.quotas


def test_a_request_quota_counts_requests_not_bytes() -> None:
    clock = Clock()
    quotas = {"User:a": QuotaLimits(0, 0, 10)}
    limiter = QuotaLimiter(lambda: quotas, clock)
    assert [limiter.delay_s("User:a", "request", 1) for _ in range(10)] == [0.0] * 10  # burst
    assert limiter.delay_s("User:a", "request", 1) == 0.1
    assert limiter.delay_s("User:a", "produce", 10**9) == 0.0  # no byte limits set
    clock.now += 0.2
    assert limiter.delay_s("User:a", "request", 1) == 0.0
