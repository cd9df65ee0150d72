"""Rule 13 of ``raft/core/_raft.py``: a replica re-created on a node where the group's
replica was deleted votes as the deleted one would have (tombstone: term, vote, vote
floor), and a replica with no configuration at all votes for nobody.

Each test steps one RawNode by hand with the vote requests a candidate would send; the
whole scenario (a stale node elected with an empty replica's vote) is
tests/sim/test_recreated_replica.py.
"""

from __future__ import annotations

import random

from raftka.raft import (
    ConfState,
    Config,
    Entry,
    EntryKind,
    HardState,
    LogPosition,
    MemoryStorage,
    Message,
    MsgType,
    RawNode,
    Role,
    Snapshot,
    SnapshotMeta,
    Tombstone,
)

VOTERS = ConfState(frozenset({1, 2, 3}))


_STORES: dict[int, MemoryStorage] = {}  # id(RawNode) -> its store


def _node(storage: MemoryStorage, node_id: int = 3, **cfg: bool) -> RawNode:
    node = RawNode(Config(node_id, **cfg), storage, random.Random(node_id))
    _STORES[id(node)] = storage
    return node


def _answers(node: RawNode) -> list[Message]:
    """Persist one Ready of ``node``; what it sent."""
    rd = node.ready()
    _STORES[id(node)].save(rd.hard_state, rd.entries, rd.snapshot)
    node.advance(rd)
    return rd.messages + rd.messages_after_persist


def _ask(node: RawNode, kind: MsgType, term: int, last: LogPosition, frm: int = 1) -> bool:
    """Deliver a (pre-)vote request of ``frm`` at ``term`` with log ``last``; granted?"""
    node.step(Message(kind, node.id, frm, term=term, index=last.index, log_term=last.term))
    (answer,) = [m for m in _answers(node) if m.to == frm]
    assert answer.type == (MsgType.PRE_VOTE_RESP if kind == MsgType.PRE_VOTE
                           else MsgType.VOTE_RESP)
    return not answer.reject


def _recreated(floor: LogPosition, term: int = 5, vote: int = 0,
               entries: list[Entry] | None = None) -> MemoryStorage:
    """The store of a replica re-created from a tombstone; ``entries``: what it has
    received from the leader since (the first one a configuration naming it)."""
    storage = MemoryStorage(tombstone=Tombstone(term, vote, floor))
    if entries:
        storage.save(None, entries, None)
    return storage


def _caught_up_to(index: int, term: int = 2) -> list[Entry]:
    """Entries 1..index of term ``term``, the first a configuration entry {1, 2, 3}."""
    return [Entry(term, 1, EntryKind.CONF, VOTERS.encode())] + [
        Entry(term, i) for i in range(2, index + 1)]


def test_a_replica_with_no_configuration_refuses_every_vote() -> None:
    """Created for a move, it never heard from a leader: even a candidate with a longer log
    than its (empty) one gets no pre-vote and no vote (the guard the broker turns on)."""
    node = _node(MemoryStorage(ConfState()), vote_only_with_configuration=True)
    assert node.conf_state == ConfState()
    assert not _ask(node, MsgType.PRE_VOTE, 8, LogPosition(7, 100))
    assert not _ask(node, MsgType.VOTE, 8, LogPosition(7, 100))
    assert node.term == 8 and node.tombstone().vote == 0  # it learnt the term, voted nobody


def test_with_a_configuration_the_same_empty_replica_votes() -> None:
    """The guard is the missing configuration, not the empty log: a new voter of a
    bootstrapped group grants as Raft says; and without the guard (the core's default: a
    voter may be added directly to an empty replica) so does one with no configuration."""
    node = _node(MemoryStorage(VOTERS), vote_only_with_configuration=True)
    assert _ask(node, MsgType.VOTE, 1, LogPosition(0, 0))
    assert _ask(_node(MemoryStorage(ConfState())), MsgType.VOTE, 1, LogPosition(0, 0))


def test_a_recreated_replica_starts_in_the_tombstones_term_with_its_vote() -> None:
    node = _node(_recreated(LogPosition(4, 30), term=5, vote=2,
                            entries=_caught_up_to(3)))
    assert node.term == 5
    # It voted for 2 in term 5 before its data was deleted: not for 1 in that term ...
    assert not _ask(node, MsgType.VOTE, 5, LogPosition(9, 900), frm=1)
    # ... but again for 2 (a repeated request), whose log passes the floor.
    assert _ask(node, MsgType.VOTE, 5, LogPosition(4, 30), frm=2)


def test_the_vote_floor_refuses_candidates_behind_what_the_replica_once_held() -> None:
    """It holds entries 1..3 of term 2 now, but held a log ending at (term 4, index 30)
    before: a candidate must be at least as up to date as that, as the deleted replica
    would have demanded."""
    node = _node(_recreated(LogPosition(4, 30), entries=_caught_up_to(3)))
    assert node.conf_state == VOTERS  # it is a voter in the configuration it has
    for behind in (LogPosition(2, 3), LogPosition(3, 500), LogPosition(4, 29)):
        assert not _ask(node, MsgType.PRE_VOTE, 6, behind), behind
        assert not _ask(node, MsgType.VOTE, 6, behind), behind
    assert node.tombstone().vote == 0
    assert _ask(node, MsgType.PRE_VOTE, 7, LogPosition(4, 30))
    assert _ask(node, MsgType.VOTE, 7, LogPosition(5, 1))


def test_its_own_log_still_counts_above_the_floor() -> None:
    node = _node(_recreated(LogPosition(1, 2), entries=_caught_up_to(10)))
    assert not _ask(node, MsgType.VOTE, 6, LogPosition(2, 9))  # above the floor, below us
    assert _ask(node, MsgType.VOTE, 6, LogPosition(2, 10))


def test_a_replica_below_its_floor_does_not_campaign() -> None:
    """Its vote for itself would be a vote for a log behind the floor."""
    node = _node(_recreated(LogPosition(2, 30), entries=_caught_up_to(3)))
    node.campaign()
    assert node.role == Role.FOLLOWER and not _answers(node)
    for _ in range(100):
        node.tick()
    assert node.role == Role.FOLLOWER and node.term == 5
    # Caught up past the floor (entries 4..30 from the leader of term 2), it may.
    node.step(Message(MsgType.APP, 3, 1, term=5, index=3, log_term=2,
                      entries=[Entry(2, i) for i in range(4, 31)], commit=3))
    _answers(node)
    node.campaign()
    assert node.role == Role.PRE_CANDIDATE


def test_the_tombstone_keeps_the_highest_position_and_the_hard_state() -> None:
    storage = MemoryStorage(VOTERS)
    storage.save(HardState(3, 2, 0), [Entry(3, 1), Entry(3, 2)], None)
    node = _node(storage)
    assert node.tombstone() == Tombstone(3, 2, LogPosition(3, 2))
    # Re-created from it and caught up to less: the floor stays the older, longer log.
    again = _node(_recreated(LogPosition(3, 2), term=3, vote=2,
                             entries=[Entry(1, 1)]))
    assert again.tombstone() == Tombstone(3, 2, LogPosition(3, 2))
    # A snapshot-only log counts by the snapshot's position.
    snap = MemoryStorage(VOTERS)
    snap.save(HardState(9, 0, 0), [], Snapshot(SnapshotMeta(40, 8, VOTERS)))
    assert _node(snap).tombstone().floor == LogPosition(8, 40)
