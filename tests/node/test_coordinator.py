"""Consumer-group rules (node/_coordinator.py) and assignors (node/_assignors.py)."""

from __future__ import annotations

import random

import pytest

from raftka.node._assignors import assign_range, assign_roundrobin, assign_sticky
from raftka.node._coordinator import ConsumerGroup
from raftka.node._errors import BrokerError, Code

COUNTS = {"orders": 6}


def join(group: ConsumerGroup, now: float = 0.0, topics=("orders",), **kw):
    return group.heartbeat(member_id="", member_epoch=0, topics=list(topics), now=now,
                           partition_counts=dict(COUNTS), **kw)


def beat(group: ConsumerGroup, member_id: str, epoch: int, now: float = 0.0):
    return group.heartbeat(member_id=member_id, member_epoch=epoch, topics=None, now=now,
                           partition_counts=dict(COUNTS))


def settle(group: ConsumerGroup, epochs: dict[str, int], now: float = 0.0, rounds: int = 10):
    """Every member heartbeats, acknowledging what it was sent, until nothing changes."""
    for _ in range(rounds):
        changed = False
        for m in list(epochs):
            if m not in group.members:
                del epochs[m]
                continue
            r = beat(group, m, epochs[m], now)
            if r.member_epoch != epochs[m]:
                epochs[m] = r.member_epoch
                changed = True
        if not changed and group.state == "stable":
            return
    raise AssertionError(f"group did not settle: {group}")


def owners(group: ConsumerGroup) -> dict[tuple[str, int], list[str]]:
    out: dict[tuple[str, int], list[str]] = {}
    for m in group.members.values():
        for tp in m.held:
            out.setdefault(tp, []).append(m.member_id)
    return out


def test_three_members_get_a_balanced_disjoint_assignment():
    g = ConsumerGroup("g")
    epochs = {}
    for _ in range(3):
        r = join(g)
        epochs[r.member_id] = r.member_epoch
    settle(g, epochs)
    held = [len(m.held) for m in g.members.values()]
    assert sorted(held) == [2, 2, 2]
    assert all(len(v) == 1 for v in owners(g).values())
    assert len(owners(g)) == 6


def test_a_partition_moves_only_after_its_owner_acknowledges_letting_go():
    g = ConsumerGroup("g")
    a = join(g)
    a = beat(g, a.member_id, a.member_epoch)  # A acknowledges owning all six
    assert len(g.members[a.member_id].held) == 6
    b = join(g)
    assert b.assignment == frozenset()  # everything is still held by A
    assert b.pending
    ra = beat(g, a.member_id, a.member_epoch)  # A learns it must give three up
    assert len(ra.assignment) == 3
    assert len(g.members[a.member_id].held) == 6  # not acknowledged yet
    rb = beat(g, b.member_id, b.member_epoch)
    assert rb.assignment == frozenset()
    beat(g, a.member_id, ra.member_epoch)  # A acknowledges
    rb = beat(g, b.member_id, rb.member_epoch)
    assert len(rb.assignment) == 3
    assert not (rb.assignment & g.members[a.member_id].held)


def test_a_lower_epoch_acknowledges_nothing():
    g = ConsumerGroup("g")
    a = join(g)
    a = beat(g, a.member_id, a.member_epoch)
    b = join(g)
    ra = beat(g, a.member_id, a.member_epoch)
    # A's answer was lost: it heartbeats again with its old epoch and still holds all six.
    beat(g, a.member_id, a.member_epoch)
    assert len(g.members[a.member_id].held) == 6
    assert beat(g, b.member_id, b.member_epoch).assignment == frozenset()
    assert ra.member_epoch > a.member_epoch


def test_session_timeout_frees_the_partitions_at_once():
    g = ConsumerGroup("g")
    epochs = {}
    for _ in range(2):
        r = join(g, session_timeout_ms=1000)
        epochs[r.member_id] = r.member_epoch
    settle(g, epochs)
    dead, alive = list(epochs)
    assert g.expire(0.5) == []
    beat(g, alive, epochs[alive], now=0.9)
    assert g.expire(1.2) == [dead]
    epochs.pop(dead)
    settle(g, epochs, now=1.2)
    assert len(g.members[alive].held) == 6


def test_rebalance_timeout_removes_a_member_that_keeps_a_revoked_partition():
    g = ConsumerGroup("g")
    a = join(g, rebalance_timeout_ms=2000)
    a = beat(g, a.member_id, a.member_epoch)
    b = join(g, now=1.0)
    beat(g, a.member_id, a.member_epoch, now=1.0)  # revocation sent; never acknowledged
    beat(g, a.member_id, a.member_epoch, now=2.5)  # still heartbeating with the old epoch
    assert a.member_id in g.members
    g.expire(3.1)
    assert a.member_id not in g.members
    assert len(beat(g, b.member_id, b.member_epoch, now=3.1).assignment) == 6


def test_leave_frees_partitions_for_the_others():
    g = ConsumerGroup("g")
    epochs = {}
    for _ in range(2):
        r = join(g)
        epochs[r.member_id] = r.member_epoch
    settle(g, epochs)
    leaver, stayer = list(epochs)
    assert g.heartbeat(member_id=leaver, member_epoch=-1, topics=None, now=0,
                       partition_counts=COUNTS) is None
    assert len(beat(g, stayer, epochs[stayer]).assignment) == 6


def test_commit_fencing():
    g = ConsumerGroup("g")
    a = join(g)
    a = beat(g, a.member_id, a.member_epoch)
    g.check_commit(a.member_id, a.member_epoch, [("orders", 0)])
    with pytest.raises(BrokerError) as e:
        g.check_commit("nobody", 1, [("orders", 0)])
    assert e.value.code == Code.UNKNOWN_MEMBER_ID
    with pytest.raises(BrokerError) as e:
        g.check_commit(a.member_id, a.member_epoch + 5, [("orders", 0)])
    assert e.value.code == Code.FENCED_MEMBER_EPOCH
    with pytest.raises(BrokerError) as e:
        g.check_commit(a.member_id, a.member_epoch, [("orders", 9)])
    assert e.value.code == Code.PARTITION_NOT_ASSIGNED
    with pytest.raises(BrokerError) as e:
        g.check_commit("", 0, [("orders", 0)])  # a simple consumer while members exist
    assert e.value.code == Code.UNKNOWN_MEMBER_ID
    g.expire(1e9)
    g.check_commit("", 0, [("orders", 0)])  # allowed once the group is empty


def test_bad_heartbeats_are_refused_with_clear_codes():
    g = ConsumerGroup("g")
    with pytest.raises(BrokerError) as e:
        join(g, topics=())
    assert e.value.code == Code.INVALID_REQUEST
    with pytest.raises(BrokerError) as e:
        join(g, assignor="nonsense")
    assert e.value.code == Code.INVALID_REQUEST
    with pytest.raises(BrokerError) as e:
        beat(g, "ghost", 1)
    assert e.value.code == Code.UNKNOWN_MEMBER_ID
    a = join(g)
    with pytest.raises(BrokerError) as e:
        beat(g, a.member_id, a.member_epoch + 3)
    assert e.value.code == Code.FENCED_MEMBER_EPOCH


@pytest.mark.parametrize("seed", range(30))
def test_random_membership_churn_never_gives_a_partition_to_two_members(seed):
    rng = random.Random(seed)
    g = ConsumerGroup("g")
    epochs: dict[str, int] = {}
    now = 0.0
    for _ in range(200):
        now += rng.random() * 0.3
        action = rng.random()
        if action < 0.15 or not epochs:
            r = join(g, now=now, session_timeout_ms=5000)
            epochs[r.member_id] = r.member_epoch
        elif action < 0.22:
            m = rng.choice(list(epochs))
            g.heartbeat(member_id=m, member_epoch=-1, topics=None, now=now,
                        partition_counts=COUNTS)
            epochs.pop(m)
        else:
            m = rng.choice(list(epochs))
            try:
                r = beat(g, m, epochs[m], now)
            except BrokerError as exc:  # removed after its session timeout
                assert exc.code == Code.UNKNOWN_MEMBER_ID
                assert m not in g.members
                epochs.pop(m)
                continue
            if rng.random() < 0.8:  # sometimes the answer is "lost"
                epochs[m] = r.member_epoch
        assert all(len(v) == 1 for v in owners(g).values()), seed
    settle(g, {m: e for m, e in epochs.items() if m in g.members}, now)
    if g.members:
        assert len(owners(g)) == 6
        counts = [len(m.held) for m in g.members.values()]
        assert max(counts) - min(counts) <= 1



class _Log:
    """The membership records a coordinator wrote (what the offsets partition holds)."""

    def __init__(self) -> None:
        self.members: dict[str, dict] = {}
        self.group: dict | None = None

    def write(self, g: ConsumerGroup) -> None:
        members, group = g.take_changes()
        for member_id, record in members.items():
            if record is None:
                self.members.pop(member_id, None)
            else:
                self.members[member_id] = record
        if group is not None:
            self.group = group

    def restore(self, now: float) -> ConsumerGroup:
        return ConsumerGroup.restore("g", self.group, dict(self.members), now)


def test_changes_are_taken_once_and_a_quiet_heartbeat_changes_nothing():
    g = ConsumerGroup("g")
    a = join(g)
    members, group = g.take_changes()
    assert list(members) == [a.member_id] and members[a.member_id]["epoch"] == a.member_epoch
    assert group == {"assignor": "sticky", "group_epoch": g.group_epoch,
                     "partition_counts": COUNTS}
    assert g.take_changes() == ({}, None)
    beat(g, a.member_id, a.member_epoch)  # acknowledges what it holds already
    assert g.take_changes() == ({}, None)
    g.heartbeat(member_id=a.member_id, member_epoch=-1, topics=None, now=0.0,
                partition_counts=dict(COUNTS))
    members, group = g.take_changes()
    assert members == {a.member_id: None} and group is not None


def test_a_restored_group_keeps_members_and_holdings_and_a_newcomer_gets_only_free_ones():
    log = _Log()
    g = ConsumerGroup("g")
    a = join(g, session_timeout_ms=3000)
    log.write(g)
    assert len(a.assignment) == 6
    # The coordinator moves: the next one knows A, its epoch and its six partitions.
    g = log.restore(now=100.0)
    assert set(g.members) == {a.member_id}
    assert g.members[a.member_id].held == a.assignment
    assert g.members[a.member_id].deadline == 103.0  # a fresh session
    b = join(g, now=100.1)  # joins before A's first heartbeat to the new coordinator
    log.write(g)
    assert b.assignment == frozenset() and b.pending, "B waits for A to let go"
    r = beat(g, a.member_id, a.member_epoch, now=100.2)  # A's epoch is still valid
    assert len(r.assignment) == 3 and r.member_epoch > a.member_epoch
    log.write(g)
    beat(g, a.member_id, r.member_epoch, now=100.3)  # A acknowledges dropping three
    r = beat(g, b.member_id, b.member_epoch, now=100.4)
    assert len(r.assignment) == 3 and not r.assignment & g.members[a.member_id].held


def test_a_restored_stable_group_keeps_its_epochs_and_assignment_at_the_next_heartbeats():
    """A coordinator move is not a membership change: the restored group answers the
    members' next heartbeats with the same group epoch, member epochs and partitions, and
    writes nothing (issue 19: no rebalance storm after a failover)."""
    log = _Log()
    g = ConsumerGroup("g")
    results = [join(g) for _ in range(3)]
    epochs = {r.member_id: r.member_epoch for r in results}
    settle(g, epochs)
    log.write(g)
    owned = {m: g.members[m].held for m in epochs}
    group_epoch = g.group_epoch
    g = log.restore(now=100.0)
    for member_id, epoch in epochs.items():
        r = beat(g, member_id, epoch, now=100.1)
        assert (r.member_epoch, r.assignment, r.group_epoch, r.pending) == (
            epoch, owned[member_id], group_epoch, False)
    assert g.take_changes() == ({}, None)


def test_a_group_record_without_partition_counts_still_restores():
    """Records written before the counts were recorded: the first heartbeat bumps the
    group epoch once (the counts look new) and changes no assignment."""
    log = _Log()
    g = ConsumerGroup("g")
    a = join(g)
    epochs = {a.member_id: a.member_epoch}
    settle(g, epochs)
    log.write(g)
    del log.group["partition_counts"]
    g = log.restore(now=10.0)
    r = beat(g, a.member_id, epochs[a.member_id], now=10.1)
    assert r.assignment == frozenset(("orders", p) for p in range(6))


def test_a_restored_unacknowledged_revocation_gets_a_fresh_rebalance_timeout():
    log = _Log()
    g = ConsumerGroup("g")
    a = join(g, rebalance_timeout_ms=2000)
    join(g)
    r = beat(g, a.member_id, a.member_epoch)  # A is told to let three go; not yet done
    assert len(r.assignment) == 3
    log.write(g)
    g = log.restore(now=50.0)
    assert len(g.members[a.member_id].held) == 6
    assert g.members[a.member_id].revoke_deadline == 52.0
    assert g.expire(51.0) == [] and g.expire(52.5) == [a.member_id]


@pytest.mark.parametrize("seed", range(30))
def test_churn_with_coordinator_moves_never_gives_a_partition_to_two_members(seed):
    """Like the churn above, but the coordinator moves at random moments: the next one is
    rebuilt from what was written before each answer. What each member was told it owns
    is always within what the coordinator thinks it holds, so no partition is with two
    members, also across a move."""
    rng = random.Random(seed)
    log = _Log()
    g = ConsumerGroup("g")
    told: dict[str, tuple[int, frozenset]] = {}  # member -> (epoch, owned) it last heard
    now = 0.0
    for _ in range(200):
        now += rng.random() * 0.3
        action = rng.random()
        if action < 0.05:
            g = log.restore(now)  # a new coordinator; what was not written is gone
            told = {m: t for m, t in told.items() if m in g.members}
        elif action < 0.2 or not told:
            r = join(g, now=now, session_timeout_ms=5000)
            log.write(g)
            told[r.member_id] = (r.member_epoch, r.assignment)
        elif action < 0.26:
            m = rng.choice(list(told))
            g.heartbeat(member_id=m, member_epoch=-1, topics=None, now=now,
                        partition_counts=COUNTS)
            log.write(g)
            told.pop(m)
        else:
            m = rng.choice(list(told))
            try:
                r = beat(g, m, told[m][0], now)
            except BrokerError as exc:
                assert exc.code == Code.UNKNOWN_MEMBER_ID  # timed out: gone everywhere
                told.pop(m)
                continue
            finally:
                log.write(g)  # (written before the answer leaves)
            if rng.random() < 0.8:  # sometimes the answer is lost
                told[m] = (r.member_epoch, r.assignment)
        assert all(len(v) == 1 for v in owners(g).values()), seed
        for m, (_, owned) in told.items():
            if m in g.members:
                assert owned <= g.members[m].held, (seed, m)
    settle(g, {m: e for m, (e, _) in told.items() if m in g.members}, now)
    if g.members:
        assert len(owners(g)) == 6

MEMBERS = {m: frozenset({"a", "b"}) for m in ("m1", "m2", "m3")}
PARTS = {"a": 4, "b": 3}


def _check_complete(out):
    flat = [tp for tps in out.values() for tp in tps]
    assert len(flat) == len(set(flat)) == 7


def test_range_gives_contiguous_ranges_per_topic():
    out = assign_range(MEMBERS, PARTS)
    _check_complete(out)
    assert out["m1"] == {("a", 0), ("a", 1), ("b", 0)}


def test_roundrobin_deals_in_turn():
    out = assign_roundrobin(MEMBERS, PARTS)
    _check_complete(out)
    assert sorted(len(v) for v in out.values()) == [2, 2, 3]


def test_sticky_moves_as_few_partitions_as_possible():
    before = assign_sticky(MEMBERS, PARTS)
    _check_complete(before)
    members = dict(MEMBERS, m4=frozenset({"a", "b"}))
    after = assign_sticky(members, PARTS, before)
    _check_complete(after)
    moved = sum(1 for m in MEMBERS for tp in before[m] if tp not in after[m])
    assert moved == 1  # the newcomer's one partition (7 over 4 members: 2,2,2,1)
    gone = {m: t for m, t in MEMBERS.items() if m != "m2"}
    after_leave = assign_sticky(gone, PARTS, before)
    _check_complete(after_leave)
    assert all(before[m] <= after_leave[m] for m in gone)


def test_sticky_respects_subscriptions():
    members = {"x": frozenset({"a"}), "y": frozenset({"b"})}
    out = assign_sticky(members, PARTS)
    assert all(t == "a" for t, _ in out["x"]) and len(out["x"]) == 4
    assert all(t == "b" for t, _ in out["y"]) and len(out["y"]) == 3
