"""Quiescence of idle groups (``raft._raft`` rules 7-10), in the deterministic simulator.

With ``quiesce=True`` an idle group stops its timers: the leader sends QUIESCE instead of a
heartbeat once every replica holds its whole (committed) log, and then neither it nor its
followers tick. The simulator models the node-level liveness the host runs (a ping per node
pair per tick; a peer silent for an election timeout is reported with
``report_peer_down``). The checker verifies election safety, log matching, leader
completeness and state-machine safety after every step, as in every scenario; these tests
add what quiescence must keep: an idle group goes quiet, and every fault that used to be
noticed by a timer is still noticed, within a bound.
"""

from __future__ import annotations

import random

import pytest

from raftka.raft import (Config, ConfChange, ConfChangeKind, ConfState, Entry, MemoryStorage,
                         Message, MsgType, RawNode, Role)
from tests.sim import Cluster


@pytest.fixture
def sim(request):
    def make(nodes: int = 3, seed: int = 1, **options) -> Cluster:
        replay = f".venv/bin/python -m pytest '{request.node.nodeid}'"
        options.setdefault("quiesce", True)
        return Cluster(nodes, seed, replay=replay, **options)

    return make


def all_quiesced(c: Cluster) -> bool:
    return all(c.raw(n).quiesced for n in c.live())


def quiesce(c: Cluster) -> int:
    """Elect, write one entry, and wait until the whole group is quiet."""
    leader = c.wait_for_leader()
    c.replicate(b"first")
    c.wait_for(lambda: all_quiesced(c), 4 * c.election_timeout, "every replica quiesced")
    return leader


def raft_messages_during(c: Cluster, duration: int) -> list[Message]:
    seen: list[Message] = []
    c.on_deliver.append(seen.append)
    c.run_for(duration)
    c.on_deliver.remove(seen.append)
    return seen


def test_an_idle_group_quiesces_and_stops_sending(sim):
    c = sim()
    leader = quiesce(c)
    commit = c.raw(leader).commit_index
    assert raft_messages_during(c, 20 * c.election_timeout) == []
    # Followers learnt the commit index from QUIESCE: nothing is left to apply anywhere.
    for n in c.live():
        assert c.raw(n).commit_index == commit
        assert c.node(n).sm.applied_index == commit
    assert c.raw(leader).role == Role.LEADER and c.leader() == leader


def test_without_quiescence_an_idle_group_keeps_heartbeating(sim):
    c = sim(quiesce=False)
    c.wait_for_leader()
    c.replicate(b"first")
    c.run_for(4 * c.election_timeout)
    assert not any(c.raw(n).quiesced for n in c.live())
    assert len(raft_messages_during(c, c.election_timeout)) > 10


def test_a_proposal_wakes_a_quiesced_group_and_commits(sim):
    c = sim()
    leader = quiesce(c)
    term = c.raw(leader).term
    index = c.propose(b"wake-up")
    assert index is not None
    c.wait_for(lambda: len(c.applied_on(b"wake-up")) == 3, c.election_timeout,
               "the proposal applied on every replica")
    assert c.raw(leader).term == term and c.leader() == leader  # no election needed
    c.wait_for(lambda: all_quiesced(c), 4 * c.election_timeout, "quiet again")


def test_a_read_wakes_a_quiesced_group(sim):
    c = sim()
    quiesce(c)
    follower = next(n for n in c.live() if n != c.leader())
    context = c.read_index(follower)
    c.wait_for(lambda: bool(c.reads[context].results), c.election_timeout, "the read answered")


def test_leader_crash_while_quiesced_elects_a_new_leader_in_bounded_time(sim):
    """The followers' timers are stopped; node-level liveness notices the silent leader
    within an election timeout, then they campaign within their randomized timeout."""
    c = sim()
    old = quiesce(c)
    crashed_at = c.now
    c.crash(old)
    new = c.wait_for_leader(4 * c.election_timeout)
    assert new != old
    assert c.now - crashed_at <= 3 * c.election_timeout
    c.replicate(b"after-crash", expected=2)
    c.restart(old)
    c.wait_for(lambda: len(c.applied_on(b"after-crash")) == 3, 4 * c.election_timeout,
               "the restarted node catches up")


def test_leader_restart_while_quiesced_is_not_stuck_behind_the_frozen_lease(sim):
    """A leader that restarts before liveness notices finds followers whose timers are
    frozen inside the lease; its own vote request breaks the lease (rule 10)."""
    c = sim()
    old = quiesce(c)
    c.crash(old)
    c.restart(old)
    c.wait_for_leader(4 * c.election_timeout)
    c.replicate(b"after-restart")


def test_follower_restart_while_quiesced(sim):
    c = sim()
    leader = quiesce(c)
    follower = next(n for n in c.live() if n != leader)
    c.crash(follower)
    c.run_for(2 * c.election_timeout)  # the leader keeps a quorum: it stays leader
    assert c.leader() == leader
    c.restart(follower)
    c.replicate(b"after-follower-restart")
    c.wait_for(lambda: all_quiesced(c), 6 * c.election_timeout, "quiet again")
    assert c.leader() == leader


def test_a_quiesced_leader_stays_quiet_while_its_live_voters_are_a_quorum(sim):
    """Rule 9: one follower of three silent leaves the leader a quorum, so it has nothing to
    do and stays quiesced (on a loaded node, a false alarm used to wake every group led
    there); a second silent follower leaves it none: it wakes and steps down."""
    c = sim(nodes=3)
    leader = quiesce(c)
    first, second = [n for n in c.live() if n != leader]
    c.crash(first)
    c.run_for(4 * c.election_timeout)
    assert c.leader() == leader and c.raw(leader).quiesced
    c.crash(second)
    c.wait_for(lambda: c.raw(leader).role != Role.LEADER, 4 * c.election_timeout,
               "with no live quorum the leader wakes and steps down")


def test_leader_partitioned_away_while_quiesced(sim):
    """The majority notices through node-level liveness and elects; the quiesced old
    leader, woken by liveness too, steps down by check-quorum; after the heal it follows."""
    c = sim()
    old = quiesce(c)
    others = [n for n in c.live() if n != old]
    c.partition([old], others)
    new = c.wait_for(lambda: any(c.raw(n).role == Role.LEADER for n in others),
                     4 * c.election_timeout, "a leader in the majority") or next(
        n for n in others if c.raw(n).role == Role.LEADER)
    c.wait_for(lambda: c.raw(old).role != Role.LEADER, 3 * c.election_timeout,
               "the isolated old leader steps down")
    c.replicate(b"in-majority", expected=2)
    c.heal()
    c.wait_for(lambda: len(c.applied_on(b"in-majority")) == 3, 4 * c.election_timeout,
               "the old leader catches up")
    assert c.raw(old).role == Role.FOLLOWER
    assert new in others


def test_follower_partitioned_away_while_quiesced_does_not_disrupt(sim):
    """A cut-off follower campaigns (liveness reported its leader down), but pre-vote and
    the lease of the others keep the leader; after the heal the group goes quiet again."""
    c = sim()
    leader = quiesce(c)
    term = c.raw(leader).term
    lone = next(n for n in c.live() if n != leader)
    c.partition([lone], [n for n in c.live() if n != lone])
    c.run_for(6 * c.election_timeout)
    assert c.leader() == leader and c.raw(leader).term == term
    c.heal()
    c.replicate(b"after-heal")
    c.wait_for(lambda: all_quiesced(c), 6 * c.election_timeout, "quiet again")
    assert c.leader() == leader


@pytest.mark.parametrize("seed", range(20))
def test_quiesce_under_loss_and_duplication(sim, seed):
    """QUIESCE messages lost or duplicated: a follower that missed it campaigns, wakes
    the leader and gets a heartbeat; nothing is elected needlessly often and writes go on."""
    c = sim(seed=seed, loss=0.1, duplication=0.1)
    c.wait_for_leader()
    for i in range(5):
        c.replicate(b"w%d" % i)
        c.run_for(3 * c.election_timeout)
    c.crash(c.leader())
    c.replicate(b"after-crash", expected=2)


def test_core_rules_without_a_simulator():
    """Rule 8: a follower only quiesces on a QUIESCE whose last entry its log holds, and
    answers otherwise (which wakes the leader); rule 9: report_peer_down of its leader
    wakes it with the lease over."""
    storage = MemoryStorage(ConfState(frozenset({1, 2, 3})))
    node = RawNode(Config(2, election_tick=10, quiesce=True), storage, random.Random(0))
    node.step(Message(MsgType.QUIESCE, 2, 1, term=1, index=5, log_term=1, commit=5))
    assert not node.quiesced  # its log ends at 0: it does not hold entry 5
    rd = node.ready()
    assert [m.type for m in rd.messages_after_persist] == [MsgType.HEARTBEAT_RESP]
    node.advance(rd)
    node.step(Message(MsgType.QUIESCE, 2, 1, term=1, index=0, log_term=0, commit=0))
    assert node.quiesced and node.leader_id == 1
    for _ in range(100):
        node.tick()
    assert node.role == Role.FOLLOWER and node.quiesced
    node.report_peer_down(3)  # not its leader
    assert node.quiesced
    node.report_peer_down(1)
    assert not node.quiesced
    for _ in range(20):  # randomized timeout in [10, 20): campaigns within 10 more ticks
        node.tick()
    assert node.role in (Role.PRE_CANDIDATE, Role.CANDIDATE)


def test_a_quiesce_overtaken_by_later_appends_is_not_obeyed():
    """Rule 8: a QUIESCE that names an entry below the follower's last one left the leader
    before those appends, so the leader is no longer quiet (it may even have stepped down
    at the same term, after committing its own removal): the follower stays awake and
    campaigns when nobody leads (soak seed 2693: the only voter quiesced that way, behind
    a leader that had demoted itself, and no leader was ever elected again)."""
    storage = MemoryStorage(ConfState(frozenset({1, 2, 3})))
    node = RawNode(Config(2, election_tick=10, quiesce=True), storage, random.Random(0))
    entries = [Entry(1, 1), Entry(1, 2), Entry(1, 3)]
    node.step(Message(MsgType.APP, 2, 1, term=1, index=0, log_term=0, entries=entries, commit=3))
    rd = node.ready()
    storage.save(rd.hard_state, rd.entries, rd.snapshot)
    node.advance(rd)
    node.step(Message(MsgType.QUIESCE, 2, 1, term=1, index=2, log_term=1, commit=2))
    assert not node.quiesced
    rd = node.ready()
    assert [m.type for m in rd.messages_after_persist] == [MsgType.HEARTBEAT_RESP]
    node.advance(rd)
    for _ in range(20):  # the leader went silent: campaigns within its randomized timeout
        node.tick()
    assert node.role in (Role.PRE_CANDIDATE, Role.CANDIDATE)
    # The QUIESCE for its last entry is obeyed.
    node.step(Message(MsgType.APP, 2, 1, term=node.term, index=3, log_term=1, commit=3))
    node.step(Message(MsgType.QUIESCE, 2, 1, term=node.term, index=3, log_term=1, commit=3))
    assert node.quiesced


def test_a_restarted_learner_of_a_quiesced_group_learns_its_leader(sim):
    """Rule 9, ``report_peer_up``: a learner never campaigns, so a restarted one heard
    nothing until the group's next write while its leader stayed quiesced (a node that is
    a learner of the controller group stayed without the cluster metadata on an idle
    cluster). The leader's node hears from the learner's node again and wakes the group;
    its heartbeats tell the learner who leads, and the group goes quiet again."""
    from tests.raft.test_scenarios import _conf_change

    c = sim(nodes=3)
    leader = quiesce(c)
    c.add_node(4)
    _conf_change(c, ConfChange(ConfChangeKind.ADD_LEARNER, 4), 20 * c.election_timeout)
    c.wait_for(lambda: all_quiesced(c), 8 * c.election_timeout, "quiet with the learner")
    c.crash(4)
    c.run_for(4 * c.election_timeout)  # reported down; the voters are a quorum: still quiet
    assert c.raw(leader).quiesced
    c.restart(4)
    c.wait_for(lambda: c.raw(4).leader_id == leader, 4 * c.election_timeout,
               "the restarted learner to learn its leader")
    c.wait_for(lambda: all_quiesced(c), 8 * c.election_timeout, "quiet again")
