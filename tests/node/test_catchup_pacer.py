"""The catch-up pacer (node/_catchup_pacer.py): appends and snapshots to learners share the
rate and wait for it in order instead of being dropped; voters and other messages never
wait; a learner's heartbeat answers are held back while its appends wait; a waiting message
to a node no longer a learner goes at once; the queue is bounded; the default pace applies
when no throttle is set."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from raftka.raft import ConfState, Entry, Message, MsgType
from raftka.node import _catchup_pacer
from raftka.node._catchup_pacer import DEFAULT_BYTES_PER_S, CatchUpPacer
from raftka.node._reassignment import ReassignmentDriver

GROUP = 7


class Rig:
    """A pacer over a fake clock, scheduler and transport; node 4 is a learner of GROUP."""

    def __init__(self, rate: float = 1000.0) -> None:
        self.now = 100.0
        self.rate = rate
        self.learners = {(GROUP, 4), (GROUP, 5)}
        self.sent: list[tuple[int, Message]] = []
        self.scheduled: list[float] = []
        self.pacer = CatchUpPacer(
            send_now=lambda g, m: self.sent.append((g, m)),
            is_learner=lambda g, n: (g, n) in self.learners,
            rate=lambda: self.rate, clock=lambda: self.now,
            schedule=lambda delay, fn: self.scheduled.append(delay))

    def send(self, group: int, m: Message) -> None:
        """What the transport does: the pacer first, else at once."""
        if not self.pacer.hold(group, m):
            self.sent.append((group, m))

    def wait(self, seconds: float) -> None:
        """Time passes and the scheduled pump runs."""
        self.now += seconds
        assert self.scheduled, "nothing was scheduled"
        self.scheduled.clear()
        self.pacer.pump()


def append(to: int, size: int, index: int = 1) -> Message:
    return Message(MsgType.APP, to, 1, entries=[Entry(1, index, 0, b"x" * size)])


def sizes(rig: Rig) -> list[int]:
    return [len(m.entries[0].data) for _, m in rig.sent if m.entries]


def test_learner_appends_wait_for_the_rate_in_order_and_are_never_dropped() -> None:
    rig = Rig(1000)
    rig.now += 1.0  # a second's worth accumulates
    rig.send(GROUP, append(4, 600, 1))
    rig.send(GROUP, append(4, 600, 2))  # 400 left: waits
    rig.send(GROUP, append(4, 300, 3))  # would fit, but must not overtake index 2
    rig.send(GROUP, append(2, 10_000))  # a voter: at once
    rig.send(GROUP, Message(MsgType.HEARTBEAT, 4, 1))  # not catch-up traffic
    rig.send(8, append(4, 10_000))  # a group where node 4 is no learner
    assert sizes(rig) == [600, 10_000, 10_000]
    assert rig.pacer.delayed == 2 and rig.pacer.queued == 2
    assert rig.scheduled  # a pump is due
    rig.wait(0.1)  # 500 tokens: not yet 600
    assert sizes(rig) == [600, 10_000, 10_000]
    rig.wait(0.15)  # 650
    assert sizes(rig) == [600, 10_000, 10_000, 600]
    rig.wait(0.3)
    to_learner = [m for g, m in rig.sent if g == GROUP and m.to == 4 and m.entries]
    assert [m.entries[0].index for m in to_learner] == [1, 2, 3]
    assert rig.pacer.queued == 0 and not rig.scheduled
    assert rig.pacer.delayed == 2 and rig.pacer.delayed_bytes == 900
    assert rig.pacer.overflowed == 0


def test_a_message_larger_than_a_second_goes_once_the_bucket_holds_it() -> None:
    rig = Rig(1000)
    rig.now += 1.0
    rig.send(GROUP, append(4, 2500))
    assert rig.sent == [] and rig.scheduled == [pytest.approx(1.5)]
    rig.wait(1.4)
    assert rig.sent == []
    rig.wait(0.2)
    assert sizes(rig) == [2500]


def test_destinations_take_turns() -> None:
    rig = Rig(1000)
    for i in range(3):
        rig.send(GROUP, append(4, 500, i))
        rig.send(GROUP, append(5, 500, i))
    rig.wait(1.0)  # 1000 tokens: one for each
    assert [m.to for _, m in rig.sent] == [4, 5]


def test_heartbeat_answers_of_a_learner_wait_while_its_appends_wait() -> None:
    rig = Rig(1000)
    rig.send(GROUP, append(4, 800))
    answer = Message(MsgType.HEARTBEAT_RESP, 1, 4)
    assert rig.pacer.holding
    assert not rig.pacer.admit(GROUP, answer, 4)
    assert rig.pacer.admit(8, answer, 4)  # another group
    assert rig.pacer.admit(GROUP, Message(MsgType.HEARTBEAT_RESP, 1, 2), 2)  # a voter
    assert rig.pacer.admit(GROUP, Message(MsgType.APP_RESP, 1, 4), 4)
    rig.wait(1.0)
    assert sizes(rig) == [800]
    assert not rig.pacer.holding and rig.pacer.admit(GROUP, answer, 4)
    assert rig.pacer.admit_held == 1


def test_a_waiting_message_to_a_promoted_learner_goes_at_once() -> None:
    rig = Rig(1000)
    rig.send(GROUP, append(4, 900))
    rig.send(GROUP, append(4, 900))
    rig.learners.discard((GROUP, 4))  # promoted to voter
    rig.wait(0.0)
    assert sizes(rig) == [900, 900]


def test_the_queue_is_bounded(monkeypatch) -> None:
    monkeypatch.setattr(_catchup_pacer, "QUEUE_MESSAGES_MAX", 3)
    rig = Rig(1000)
    for i in range(5):
        rig.send(GROUP, append(4, 900, i))
    assert rig.pacer.queued == 3 and rig.pacer.overflowed == 2 and rig.sent == []


def test_the_default_pace_applies_without_a_throttle_and_only_partitions_are_paced() -> None:
    def rate(throttle: int) -> float:
        group = SimpleNamespace(node=SimpleNamespace(conf_state=ConfState(
            frozenset({1, 2, 3}), frozenset({4}))))
        broker = SimpleNamespace(
            controller=SimpleNamespace(group_id=1, state=SimpleNamespace(
                reassign_throttle_bytes_per_s=throttle)),
            host=SimpleNamespace(groups={GROUP: group, 1: group}))
        d = ReassignmentDriver(broker)  # type: ignore[arg-type]
        assert d._is_learner(GROUP, 4) and not d._is_learner(GROUP, 2)
        assert not d._is_learner(1, 4)  # the controller's learners follow, never paced
        return d.catchup_rate()
    assert rate(0) == DEFAULT_BYTES_PER_S
    assert rate(1 << 20) == 1 << 20


def test_a_lower_throttle_does_not_inherit_what_the_default_pace_saved() -> None:
    rig = Rig(DEFAULT_BYTES_PER_S)
    rig.now += 1.0
    rig.send(GROUP, append(4, 10))  # the pace is seen
    rig.now += 10.0  # a second's worth of the default accumulates
    rig.rate = 1000  # the operator sets a throttle
    rig.send(GROUP, append(4, 2000))
    assert sizes(rig) == [10]  # waits: at most 1000 tokens were kept
    rig.wait(1.0)
    assert sizes(rig) == [10, 2000]
