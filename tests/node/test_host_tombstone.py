"""A replica moved off a node leaves a tombstone that survives the node's restart and is
taken up by the replica re-created there (rule 13 of ``raft/core/_raft.py``;
``RaftHost.remove_group(..., tombstone=True)``, ``RaftHost.add_group``); the tombstones of
a deleted topic go (``Broker._drop_stale_tombstones``).

In process: one RaftHost over its RocksDB, driven by hand (no peers, no ticker); a restart
is a new RocksLogDB and RaftHost on the same directory.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from raftka.node._broker import Broker
from raftka.node._controller_commands import encode_delete_topic
from raftka.node._controller_state import ControllerState
from raftka.node._host import RaftHost, RaftTiming
from raftka.raft import (ConfState, Entry, EntryKind, HardState, LogPosition, Message, MsgType,
                         Role, Tombstone)
from raftka.raft.rocksdb import RocksLogDB
from tests.node.test_controller import Log

GROUP = 9
VOTERS = ConfState(frozenset({1, 2, 3}))


class _NullMachine:
    def restore(self, snapshot) -> None: ...
    def before_ready(self) -> None: ...
    def apply(self, entries) -> None: ...
    def on_ready(self, rd) -> None: ...


def _host(path) -> tuple[RaftHost, RocksLogDB]:
    db = RocksLogDB(path / "raft")
    host = RaftHost(1, db, {1: "127.0.0.1:1", 2: "127.0.0.1:2", 3: "127.0.0.1:3"},
                    RaftTiming(tick_s=0.05, election_tick=6, heartbeat_tick=2), seed=7)
    return host, db


def _replica_that_held_a_log(path) -> None:
    """Node 1's replica of GROUP: a log up to (term 3, index 6), voted for 2 in term 3;
    then moved off the node."""
    host, db = _host(path)
    db.group(GROUP).bootstrap(VOTERS)
    entries = [Entry(3, 1, EntryKind.CONF, VOTERS.encode())] + [Entry(3, i) for i in range(2, 7)]
    db.group(GROUP).save(HardState(3, 2, 4), entries, None)
    host.add_group(GROUP, _NullMachine(), VOTERS)
    host.remove_group(GROUP, drop_data=True, tombstone=True)
    db.close()


def test_a_tombstone_survives_a_restart_and_the_recreated_replica_starts_from_it(tmp_path):
    async def run() -> None:
        _replica_that_held_a_log(tmp_path)
        host, db = _host(tmp_path)  # the node restarted
        try:
            assert db.group(GROUP).last_index() == 0  # the data is gone
            # Moved back onto the node (a move's target starts outside any configuration).
            group = host.add_group(GROUP, _NullMachine(), ConfState())
            node = group.node
            assert not group.bootstrapped
            assert (node.term, node.last_index, node.conf_state) == (3, 0, ConfState())
            assert node.tombstone().vote == 2 and node.tombstone().floor == LogPosition(3, 6)
            # The leader (2) sends it the start of the log: it has a configuration now.
            host.deliver_many([(GROUP, Message(
                MsgType.APP, 1, 2, term=3, index=0, log_term=0, commit=0,
                entries=[Entry(3, 1, EntryKind.CONF, VOTERS.encode()), Entry(3, 2)]))], 2)
            assert node.conf_state == VOTERS and node.last_index == 2
            for _ in range(30):  # the leader goes silent: its lease runs out
                node.tick()
            assert node.role == Role.FOLLOWER  # below its floor it does not campaign
            # It grants no vote to a candidate whose log is behind the floor (5 < 6) though
            # ahead of its own log; a candidate level with the floor gets it.
            host.deliver_many([(GROUP, Message(MsgType.VOTE, 1, 3, term=4, index=5,
                                               log_term=3))], 3)
            assert node.tombstone().vote == 0 and node.term == 4
            host.deliver_many([(GROUP, Message(MsgType.VOTE, 1, 3, term=5, index=6,
                                               log_term=3))], 3)
            assert node.tombstone().vote == 3
        finally:
            db.close()

    asyncio.run(run())


def test_a_replica_with_a_tombstone_is_not_bootstrapped(tmp_path):
    """Named in a partition's replicas with only a tombstone here, the replica still
    starts without a configuration: it learns it from the leader."""
    async def run() -> None:
        _replica_that_held_a_log(tmp_path)
        host, db = _host(tmp_path)
        try:
            group = host.add_group(GROUP, _NullMachine(), VOTERS)
            assert group.node.conf_state == ConfState() and not group.bootstrapped
            assert db.group(GROUP).snapshot().meta.conf_state == ConfState()
        finally:
            db.close()

    asyncio.run(run())


def test_a_deleted_topics_replica_leaves_nothing(tmp_path):
    async def run() -> None:
        host, db = _host(tmp_path)
        try:
            host.add_group(GROUP, _NullMachine(), VOTERS)
            host.remove_group(GROUP, drop_data=True)
            assert GROUP not in db.group_ids()
            group = host.add_group(GROUP, _NullMachine(), VOTERS)  # a brand-new group
            assert group.bootstrapped and group.node.conf_state == VOTERS
        finally:
            db.close()

    asyncio.run(run())


class _BrokerStub:
    """What ``Broker._drop_stale_tombstones`` uses of a broker."""

    def __init__(self, db: RocksLogDB, state: ControllerState) -> None:
        self.db = db
        self.controller = SimpleNamespace(state=state)
        self.host = SimpleNamespace(groups={})
        self._tombstone_sweep_due = True
        self.caught_up = False

    def metadata_caught_up(self) -> bool:
        return self.caught_up


def test_the_tombstones_of_a_deleted_topic_go_once_the_metadata_has_caught_up(tmp_path):
    log = Log(ControllerState([1, 2, 3]))
    assert log.create("kept", partitions=1).ok and log.create("gone", partitions=1).ok
    kept, gone = (log.state.topic(t).partitions[0].group_id for t in ("kept", "gone"))
    assert log.apply(encode_delete_topic("gone")).ok
    db = RocksLogDB(tmp_path / "raft")
    try:
        left = Tombstone(2, 1, LogPosition(2, 10))
        for group_id in (kept, gone):
            db.drop_group(group_id, left)
        db.group(1).save(HardState(5, 1, 0), [], None)  # the controller group's own state
        broker = _BrokerStub(db, log.state)
        asyncio.run(Broker._drop_stale_tombstones(broker))
        assert db.group_ids() == [1, kept, gone]  # a state being replayed proves nothing
        broker.caught_up = True
        asyncio.run(Broker._drop_stale_tombstones(broker))
        assert db.group_ids() == [1, kept] and db.group(kept).vote_floor() == left.floor
        assert not broker._tombstone_sweep_due  # until the next topic deletion
    finally:
        db.close()
