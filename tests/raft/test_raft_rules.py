"""Rules of the core that a whole-cluster simulation would only hit by luck.

Each test drives RawNodes by hand with an explicit message pump, so every interleaving
is spelled out.
"""

from __future__ import annotations

import random

import pytest

from raftka.raft import (
    ConfChange,
    ConfChangeKind,
    ConfChangeRejected,
    Config,
    ConfState,
    MemoryStorage,
    Message,
    MsgType,
    NotLeader,
    ProposalDropped,
    RawNode,
    Role,
)


class Hand:
    """A few RawNodes whose messages are held until the test delivers them."""

    def __init__(self, size: int = 3, **cfg: object) -> None:
        conf = ConfState(frozenset(range(1, size + 1)))
        self.storage = {i: MemoryStorage(conf) for i in conf.voters}
        self.cfg = cfg
        self.nodes = {i: self._node(i) for i in conf.voters}
        self.inbox: list[Message] = []
        self.applied: dict[int, list[bytes]] = {i: [] for i in conf.voters}

    def _node(self, i: int) -> RawNode:
        return RawNode(Config(i, **self.cfg), self.storage[i], random.Random(i))  # type: ignore[arg-type]

    def process(self, i: int) -> list[Message]:
        """Run one Ready of node i through persist/apply; returns what it sent."""
        node = self.nodes[i]
        if not node.has_ready():
            return []
        rd = node.ready()
        self.storage[i].save(rd.hard_state, rd.entries, rd.snapshot)
        self.applied[i].extend(e.data for e in rd.committed_entries if e.data)
        node.advance(rd)
        sent = rd.messages + rd.messages_after_persist
        self.inbox.extend(sent)
        return sent

    def settle(self, drop: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        for _ in range(1000):
            for i in self.nodes:
                self.process(i)
            if not self.inbox:
                return
            batch, self.inbox = self.inbox, []
            for m in batch:
                if m.to not in drop and m.frm not in drop:
                    self.nodes[m.to].step(m)
        raise RuntimeError("cluster did not settle")

    def elect(self, i: int) -> RawNode:
        self.nodes[i].campaign()
        self.settle()
        assert self.nodes[i].role == Role.LEADER
        return self.nodes[i]


def test_follower_acknowledges_appends_only_after_persisting() -> None:
    """Durability: an APP_RESP promises the entries are on disk, so it waits for save."""
    hand = Hand()
    leader = hand.elect(1)
    leader.propose(b"a")
    rd = leader.ready()
    assert {m.type for m in rd.messages} == {MsgType.APP}  # leader sends before its own write
    hand.storage[1].save(rd.hard_state, rd.entries, rd.snapshot)
    leader.advance(rd)
    for m in rd.messages:
        hand.nodes[m.to].step(m)
    frd = hand.nodes[2].ready()
    assert frd.messages == []
    assert [m.type for m in frd.messages_after_persist] == [MsgType.APP_RESP]
    assert frd.entries and frd.entries[-1].data == b"a"


def test_candidate_sends_vote_requests_after_persisting_its_vote() -> None:
    hand = Hand(pre_vote=False)
    hand.nodes[1].campaign()
    rd = hand.nodes[1].ready()
    assert rd.hard_state is not None and rd.hard_state.vote == 1 and rd.hard_state.term == 1
    assert rd.messages == []
    assert {m.type for m in rd.messages_after_persist} == {MsgType.VOTE}


def test_leader_commits_only_its_durable_entries_with_a_quorum() -> None:
    """Thesis §10.2.1: the leader may replicate before its own write; commit counts the
    leader only once its write is durable."""
    hand = Hand()
    leader = hand.elect(1)
    commit_before = leader.commit_index
    index = leader.propose(b"a")
    rd = leader.ready()  # not yet persisted by the leader
    for m in rd.messages:
        hand.nodes[m.to].step(m)
    hand.process(2)
    for m in hand.inbox:
        if m.to == 1:
            leader.step(m)
    hand.inbox.clear()
    # Follower 2 holds it durably, but the leader's own write is not done: 1 of 3.
    assert leader.commit_index == commit_before
    hand.storage[1].save(rd.hard_state, rd.entries, rd.snapshot)
    leader.advance(rd)
    assert leader.commit_index == index


def test_prevote_does_not_raise_the_term_of_an_isolated_node() -> None:
    """Thesis §9.6: a partitioned node cannot inflate its term and disrupt the leader."""
    hand = Hand()
    hand.elect(1)
    term = hand.nodes[3].term
    for _ in range(100):
        hand.nodes[3].tick()
        hand.settle(drop={3})
    assert hand.nodes[3].term == term
    hand.settle()
    assert hand.nodes[1].role == Role.LEADER and hand.nodes[1].term == term


def test_vote_requests_are_ignored_while_a_leader_is_live() -> None:
    """Check-quorum lease: a node that heard from its leader recently ignores elections."""
    hand = Hand(pre_vote=False)
    hand.elect(1)
    term = hand.nodes[2].term
    req = Message(MsgType.VOTE, 2, 3, term=term + 5, index=100, log_term=term + 4)
    hand.nodes[2].step(req)
    assert hand.nodes[2].term == term and hand.nodes[2].leader_id == 1


def test_stale_leader_steps_down_on_higher_term_answer() -> None:
    hand = Hand()
    hand.elect(1)
    old = hand.nodes[1]
    hand.nodes[2].step(Message(MsgType.TIMEOUT_NOW, 2, 1, term=old.term))
    hand.settle(drop={1})
    assert hand.nodes[2].role == Role.LEADER
    hand.nodes[2].tick()  # a heartbeat of the new term reaches 1
    hand.settle()
    assert old.role == Role.FOLLOWER and old.leader_id == 2


@pytest.mark.parametrize("pre_vote, check_quorum", [(False, False), (True, True)])
def test_stale_candidate_learns_the_term_from_the_rejection(pre_vote, check_quorum) -> None:
    """Rule 11 (paper figure 2): a VOTE from an older term is rejected with our term, so
    the candidate steps down to it instead of campaigning unheard (soak seed 437)."""
    hand = Hand(pre_vote=pre_vote, check_quorum=check_quorum)
    hand.elect(1)
    term = hand.nodes[1].term
    hand.nodes[3].step(Message(MsgType.VOTE, 3, 2, term=term - 1, index=100, log_term=term - 1))
    sent = hand.process(3)
    assert [(m.type, m.to, m.term, m.reject) for m in sent] == [
        (MsgType.VOTE_RESP, 2, term, True)]
    assert hand.nodes[3].term == term and hand.nodes[3].leader_id == 1  # nothing changed


def test_stale_leader_is_answered_without_check_quorum_or_prevote() -> None:
    """Rule 11: even with neither, a heartbeat from an older term is answered with our
    term, so a stale leader whose follower's term a removed server raised steps down."""
    hand = Hand(pre_vote=False, check_quorum=False)
    old = hand.elect(1)
    stale_term = old.term
    hand.nodes[3].step(Message(MsgType.VOTE, 3, 4, term=stale_term + 3, index=0, log_term=0))
    hand.settle(drop={4})  # a removed node 4 raised node 3's term (and lost the election)
    assert hand.nodes[3].term == stale_term + 3
    old.tick()  # a heartbeat of the stale term reaches 3, which answers with its term
    hand.settle()
    assert old.role == Role.FOLLOWER and old.term == stale_term + 3


def test_check_quorum_leader_steps_down_when_isolated() -> None:
    hand = Hand()
    leader = hand.elect(1)
    for _ in range(2 * 10 + 1):
        leader.tick()
        hand.settle(drop={1})
    assert leader.role == Role.FOLLOWER


def test_proposal_on_follower_names_the_leader() -> None:
    hand = Hand()
    hand.elect(2)
    with pytest.raises(NotLeader) as err:
        hand.nodes[1].propose(b"x")
    assert err.value.leader_id == 2


def test_uncommitted_bytes_are_bounded() -> None:
    hand = Hand(max_uncommitted_size=1000)
    leader = hand.elect(1)
    leader.propose(b"x" * 600)
    with pytest.raises(ProposalDropped, match="not yet committed"):
        leader.propose(b"x" * 600)
    hand.settle()
    leader.propose(b"x" * 600)  # committed entries free the budget


def test_conf_change_waits_for_the_previous_one_to_commit() -> None:
    """Thesis §4.1: one single-server change at a time."""
    hand = Hand()
    leader = hand.elect(1)
    leader.propose_conf_change(ConfChange(ConfChangeKind.ADD_LEARNER, 4))
    assert 4 in leader.conf_state.learners  # in force on append
    with pytest.raises(ConfChangeRejected, match="not committed"):
        leader.propose_conf_change(ConfChange(ConfChangeKind.ADD_VOTER, 5))


def test_new_leader_must_commit_in_its_term_before_changing_membership() -> None:
    """The single-server change bug (raft-dev, 2015): a fresh leader first commits an
    entry of its own term."""
    hand = Hand()
    hand.nodes[1].campaign()
    for _ in range(6):  # just far enough to win, not to commit the empty entry
        for i in hand.nodes:
            hand.process(i)
        batch, hand.inbox = hand.inbox, []
        for m in batch:
            if m.type not in (MsgType.APP, MsgType.APP_RESP):
                hand.nodes[m.to].step(m)
        if hand.nodes[1].role == Role.LEADER:
            break
    assert hand.nodes[1].role == Role.LEADER
    with pytest.raises(ConfChangeRejected, match="not committed an entry of its term"):
        hand.nodes[1].propose_conf_change(ConfChange(ConfChangeKind.ADD_VOTER, 4))


@pytest.mark.parametrize(
    "change",
    [
        ConfChange(ConfChangeKind.ADD_VOTER, 2),
        ConfChange(ConfChangeKind.REMOVE_NODE, 9),
        ConfChange(ConfChangeKind.ADD_VOTER, 0),
    ],
)
def test_nonsense_conf_changes_are_rejected(change: ConfChange) -> None:
    hand = Hand()
    leader = hand.elect(1)
    with pytest.raises(ConfChangeRejected):
        leader.propose_conf_change(change)


def test_removing_the_last_voter_is_rejected() -> None:
    hand = Hand(size=1)
    leader = hand.elect(1)
    with pytest.raises(ConfChangeRejected, match="at least one voter"):
        leader.propose_conf_change(ConfChange(ConfChangeKind.REMOVE_NODE, 1))


def test_ready_must_be_advanced_before_the_next() -> None:
    hand = Hand()
    hand.nodes[1].campaign()
    hand.nodes[1].ready()
    with pytest.raises(RuntimeError, match="advance"):
        hand.nodes[1].ready()


def test_restart_keeps_term_vote_and_log() -> None:
    hand = Hand()
    leader = hand.elect(1)
    leader.propose(b"a")
    hand.settle()
    before = (hand.nodes[2].term, hand.nodes[2].commit_index, hand.nodes[2].last_index)
    hand.nodes[2] = RawNode(Config(2), hand.storage[2], random.Random(7))
    after = (hand.nodes[2].term, hand.nodes[2].commit_index, hand.nodes[2].last_index)
    assert after == before


def test_read_index_waits_for_a_quorum_heartbeat() -> None:
    hand = Hand()
    leader = hand.elect(1)
    leader.propose(b"a")
    hand.settle()
    leader.read_index(b"r1")
    rd = leader.ready()
    assert rd.read_states == []
    assert {m.type for m in rd.messages} == {MsgType.HEARTBEAT}
    hand.storage[1].save(rd.hard_state, rd.entries, rd.snapshot)
    leader.advance(rd)
    hand.inbox.extend(rd.messages)
    states = []
    for _ in range(5):
        batch, hand.inbox = hand.inbox, []
        for m in batch:
            hand.nodes[m.to].step(m)
        for i in hand.nodes:
            node = hand.nodes[i]
            if node.has_ready():
                r = node.ready()
                states += r.read_states if i == 1 else []
                hand.storage[i].save(r.hard_state, r.entries, r.snapshot)
                node.advance(r)
                hand.inbox.extend(r.messages + r.messages_after_persist)
    assert [(s.index, s.context) for s in states] == [(leader.commit_index, b"r1")]


def test_follower_read_index_is_forwarded_to_the_leader() -> None:
    hand = Hand()
    hand.elect(1)
    hand.nodes[3].read_index(b"f1")
    got = []
    for _ in range(10):
        for i in hand.nodes:
            node = hand.nodes[i]
            if node.has_ready():
                r = node.ready()
                if i == 3:
                    got += r.read_states
                hand.storage[i].save(r.hard_state, r.entries, r.snapshot)
                node.advance(r)
                hand.inbox.extend(r.messages + r.messages_after_persist)
        batch, hand.inbox = hand.inbox, []
        for m in batch:
            hand.nodes[m.to].step(m)
    assert [s.context for s in got] == [b"f1"] and got[0].index == hand.nodes[1].commit_index


def test_transfer_refuses_proposals_until_done() -> None:
    hand = Hand()
    leader = hand.elect(1)
    leader.transfer_leader(3)
    with pytest.raises(ProposalDropped, match="transferred"):
        leader.propose(b"x")
    hand.settle()
    assert hand.nodes[3].role == Role.LEADER and leader.role == Role.FOLLOWER


def _wipe(hand: Hand, i: int) -> None:
    """Node i's store is lost and recreated empty (the operator moved a damaged one aside)."""
    hand.storage[i] = MemoryStorage(ConfState(frozenset(hand.nodes)))
    hand.nodes[i] = hand._node(i)
    hand.applied[i] = []


def _ticks(hand: Hand, i: int, count: int) -> None:
    for _ in range(count):
        hand.nodes[i].tick()
        hand.settle()


@pytest.mark.parametrize("quiesce", [False, True], ids=["heartbeat", "quiesce"])
def test_a_follower_whose_store_was_lost_is_caught_up_again(quiesce: bool) -> None:
    """Rule 12 of ``_raft``: a follower that lost its store answers the leader's HEARTBEAT
    (or QUIESCE), whose commit is beyond its empty log, with a rejection naming its last
    index; the leader lowers its match and replicates everything again. Before the rule the
    follower dropped the heartbeat (commit beyond its last index) and the leader, trusting
    its old match, never sent it anything (a recovered jepsen-like node never caught up)."""
    hand = Hand(quiesce=quiesce)
    leader = hand.elect(1)
    for value in (b"a", b"b", b"c"):
        leader.propose(value)
    hand.settle()
    _ticks(hand, 1, 2)
    assert hand.applied[3] == [b"a", b"b", b"c"]
    assert leader.quiesced is quiesce

    _wipe(hand, 3)
    assert hand.nodes[3].last_index == 0
    # The recreated follower hears nothing from a quiesced leader: its own election timer
    # runs out, and its pre-vote wakes the leader (rule 9), which heartbeats again.
    _ticks(hand, 3, 2 * 10)
    _ticks(hand, 1, 2)
    follower = hand.nodes[3]
    assert leader.role == Role.LEADER and follower.leader_id == 1
    assert follower.term == leader.term
    assert follower.last_index == leader.last_index
    assert follower.commit_index == leader.commit_index
    assert hand.applied[3] == [b"a", b"b", b"c"]


def test_a_follower_that_lost_a_suffix_above_the_commit_is_caught_up_again() -> None:
    """Rule 12, appends: a follower whose write-ahead log lost acknowledged entries above
    the commit (cut short; RocksDB reads it as a torn tail) takes every heartbeat (their
    commit is within its log) and rejects the leader's appends at its old match. The
    leader took those rejections for stale ones (at or below match) and probed at match
    forever: with the follower needed for a quorum the group never committed again."""
    hand = Hand(size=5)
    leader = hand.elect(1)
    leader.propose(b"a")
    hand.settle()
    committed = leader.commit_index
    for value in (b"c", b"d"):  # acknowledged by node 3 only: not committed
        leader.propose(value)
    hand.settle(drop={2, 4, 5})
    assert leader.commit_index == committed and hand.nodes[3].last_index == committed + 2
    storage = hand.storage[3]  # node 3's log is cut back to the commit, and it restarts
    storage._entries = storage._entries[: committed - storage.first_index() + 2]
    assert storage.last_index() == committed
    hand.nodes[3] = hand._node(3)
    leader.propose(b"e")
    for _ in range(3):  # heartbeats too: their commit is within node 3's log
        hand.settle(drop={2, 4, 5})
        leader.tick()
    assert hand.nodes[3].last_index == leader.last_index
    assert hand.nodes[3].leader_commit == committed
    for _ in range(3):
        hand.settle(drop={4, 5})
        leader.tick()
    assert leader.commit_index == leader.last_index, "nodes 1, 2 and 3 are a quorum again"
    assert hand.applied[3][-3:] == [b"c", b"d", b"e"]


def test_a_heartbeat_beyond_a_followers_log_is_rejected_not_committed() -> None:
    hand = Hand()
    hand.elect(1)
    _wipe(hand, 2)
    node = hand.nodes[2]
    node.step(Message(MsgType.HEARTBEAT, 2, 1, term=hand.nodes[1].term, commit=5))
    rd = node.ready()
    (answer,) = rd.messages + rd.messages_after_persist
    assert answer.type == MsgType.HEARTBEAT_RESP and answer.reject and answer.reject_hint == 0
    assert node.commit_index == 0


def test_a_follower_remembers_the_commit_its_leader_sent_beyond_its_log() -> None:
    """Rule 14: the commit a heartbeat names is kept as ``leader_commit`` even when the
    follower's log cannot take it, so its host can tell that it has not applied everything
    committed (a node whose store was recreated empty once answered for the cluster's
    metadata with none of it applied yet)."""
    hand = Hand()
    hand.elect(1)
    _wipe(hand, 2)
    node = hand.nodes[2]
    assert node.leader_commit == 0
    node.step(Message(MsgType.HEARTBEAT, 2, 1, term=hand.nodes[1].term, commit=5))
    assert (node.commit_index, node.leader_commit) == (0, 5)
    node.step(Message(MsgType.HEARTBEAT, 2, 1, term=hand.nodes[1].term, commit=3))
    assert node.leader_commit == 5  # never lowered


def test_leader_commit_follows_the_commit_once_the_follower_is_caught_up() -> None:
    hand = Hand()
    leader = hand.elect(1)
    for value in (b"a", b"b"):
        leader.propose(value)
    hand.settle()
    _ticks(hand, 1, 2)
    follower = hand.nodes[2]
    assert follower.leader_commit == follower.commit_index == leader.commit_index


def test_a_learner_gets_the_smaller_inflight_window_until_it_is_promoted() -> None:
    """A replica being moved in catches up through max_inflight_learner_msgs messages at
    a time (so its catch-up cannot crowd out the voters' appends); promoted, it gets the
    voters' window."""
    hand = Hand(max_inflight_msgs=8, max_inflight_learner_msgs=2, max_size_per_msg=1)
    leader = hand.elect(1)
    for i in range(20):
        leader.propose(b"%d" % i)
    hand.settle()
    hand.storage[4] = MemoryStorage(ConfState())
    hand.nodes[4] = hand._node(4)
    hand.applied[4] = []
    leader.propose_conf_change(ConfChange(ConfChangeKind.ADD_LEARNER, 4))
    progress = leader._raft.progress
    assert progress[4].inflights.capacity == 2
    assert progress[2].inflights.capacity == 8
    # the learner catches up two APPs at a time
    sent_to_learner = 0
    for _ in range(200):
        for i in hand.nodes:
            hand.process(i)
        if not hand.inbox:
            break
        batch, hand.inbox = hand.inbox, []
        in_flight = sum(1 for m in batch if m.to == 4 and m.type == MsgType.APP)
        assert in_flight <= 2
        sent_to_learner += in_flight
        for m in batch:
            hand.nodes[m.to].step(m)
    assert sent_to_learner >= 10  # one entry per message: it did catch up through the window
    assert hand.applied[4] == hand.applied[1]
    leader.propose_conf_change(ConfChange(ConfChangeKind.ADD_VOTER, 4))
    assert progress[4].inflights.capacity == 8
