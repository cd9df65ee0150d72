"""The reassignment throttle (node/_reassignment.py): only appends and snapshots to learners
are counted; a message goes only once the bucket holds its bytes; no limit when 0."""

from __future__ import annotations

from types import SimpleNamespace

from raftka.raft import ConfState, Entry, Message, MsgType
from raftka.node import _reassignment
from raftka.node._reassignment import ReassignmentDriver


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


def driver(rate: int, clock: FakeClock, monkeypatch) -> ReassignmentDriver:
    monkeypatch.setattr(_reassignment, "time", clock)
    group = SimpleNamespace(node=SimpleNamespace(conf_state=ConfState(
        frozenset({1, 2, 3}), frozenset({4}))))
    broker = SimpleNamespace(
        controller=SimpleNamespace(state=SimpleNamespace(reassign_throttle_bytes_per_s=rate)),
        host=SimpleNamespace(groups={7: group}))
    return ReassignmentDriver(broker)  # type: ignore[arg-type]


def append(to: int, size: int) -> Message:
    return Message(MsgType.APP, to, 1, entries=[Entry(1, 1, 0, b"x" * size)])


def test_learner_appends_share_the_rate_and_voters_are_never_throttled(monkeypatch) -> None:
    clock = FakeClock()
    d = driver(1000, clock, monkeypatch)
    clock.now += 1.0  # a second's worth accumulates
    assert d.allow(7, append(4, 600))
    assert not d.allow(7, append(4, 600))  # 400 left
    assert d.allow(7, append(2, 10_000))  # a voter
    assert d.allow(7, Message(MsgType.HEARTBEAT, 4, 1))  # not catch-up traffic
    assert d.allow(8, append(4, 10_000))  # a group this node does not run
    clock.now += 0.2
    assert d.allow(7, append(4, 600))
    assert d.throttled_messages == 1


def test_a_message_larger_than_a_second_goes_once_the_bucket_holds_it(monkeypatch) -> None:
    clock = FakeClock()
    d = driver(1000, clock, monkeypatch)
    clock.now += 1.0
    assert not d.allow(7, append(4, 2500))
    clock.now += 1.6
    assert d.allow(7, append(4, 2500))


def test_no_limit_when_zero(monkeypatch) -> None:
    d = driver(0, FakeClock(), monkeypatch)
    assert all(d.allow(7, append(4, 1 << 20)) for _ in range(100))
