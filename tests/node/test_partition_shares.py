"""Share state in a PartitionReplica over a real single-voter RawNode (in memory): share
ops are control entries of the partition log, rebuilt by a restart's replay and carried
by the snapshot (v4), never read as records."""

from __future__ import annotations

import asyncio
import random

from raftka.v1.recordbatch import Record, build_batch
from raftka.node._errors import BrokerError, Code
from raftka.raft import ConfState, MemoryStorage, Role, Snapshot, SnapshotMeta

from raftka.node._host import Group
from raftka.node._partition import PartitionConfig, PartitionReplica
from raftka.node._watchlist import Listing, ReplicaWatchlist
from raftka.raft import Config, RawNode
from tests.node.single_voter import drive as _drive
from tests.node.single_voter import start_replica as _start

LOCK = 30_000


def _records(*values: bytes) -> bytes:
    return build_batch([Record(None, v) for v in values], compression="none")


def _restart(storage: MemoryStorage) -> PartitionReplica:
    """As the broker restarts a replica: committed entries are not applied again
    (``applied`` = the stored commit index); ``attach`` replays the log."""
    node = RawNode(Config(1, election_tick=10, heartbeat_tick=1,
                          applied=storage.hard_state().commit), storage, random.Random(9))
    replica = PartitionReplica("t", 0, 2, PartitionConfig(), lambda _gid: None,
                               clock_ms=lambda: 1_000_000)
    replica.attach(Group(2, node, storage, replica))  # type: ignore[arg-type]
    return replica


async def _op(replica, node, storage, op: dict):
    task = asyncio.ensure_future(replica.share_op(op, 5.0))
    await asyncio.sleep(0)  # proposed
    _drive(replica, node, storage)
    return await task


def test_share_ops_survive_restart_and_snapshot_and_are_not_records() -> None:
    async def scenario() -> None:
        storage = MemoryStorage(ConfState(frozenset({1})))
        replica, node = _start(storage, 1)
        node.campaign()
        _drive(replica, node, storage)
        assert node.role == Role.LEADER and replica.leader_ready()
        produced = replica.submit(_records(b"a", b"b", b"c"), acks=-1)
        _drive(replica, node, storage)
        assert produced.result() == (0, 2)
        base = {"g": "g", "now": 1000, "attempts": 5, "log_start": 0}
        got = await _op(replica, node, storage, {**base, "op": "acquire", "m": "m1",
                                                 "lock_ms": LOCK, "max": 2, "cap": 100})
        assert got == [(0, 1, 1)]
        await _op(replica, node, storage, {**base, "op": "ack", "m": "m1",
                                           "acks": [[0, 0, 1, 0, ""]]})
        try:
            await _op(replica, node, storage, {**base, "op": "ack", "m": "m2",
                                               "acks": [[1, 1, 1, 0, ""]]})
            raise AssertionError("an ack of a record held by another member was applied")
        except BrokerError as exc:
            assert exc.code == Code.INVALID_RECORD_STATE
        produced = replica.submit(_records(b"d"), acks=-1)  # offsets continue past ops
        _drive(replica, node, storage)
        assert produced.result() == (3, 3)
        data, _ = replica.read(0, 1 << 20)
        assert len(data) > 0 and replica.high_watermark == 4
        state = replica.shares.encode()
        sp = replica.shares.groups["g"]
        assert (sp.start, sp.end, sp.held_by("m1")) == (1, 2, [(1, 1)])

        restarted = _restart(storage)  # the restart's replay rebuilds it
        assert restarted.applied_index == replica.applied_index
        assert restarted.shares.encode() == state

        header = replica._header_at(replica.applied_index) or replica._header_at(
            replica.applied_index - 1)
        snap = replica._snapshot_data(header)
        fresh, _ = _start(MemoryStorage(ConfState(frozenset({1}))), 3)
        fresh.restore(Snapshot(SnapshotMeta(replica.applied_index, 1,
                                            ConfState(frozenset({1}))), snap))
        assert fresh.shares.encode() == state
        assert fresh.log_start_offset == header.last_offset + 1

    asyncio.run(scenario())


def _listings(listing: Listing) -> list:
    """Every time ``listing``'s replica lists itself: wires it to a watch list that
    records its adds."""
    told: list = []

    class Recording(ReplicaWatchlist):
        def add(self, added: Listing) -> None:
            told.append(added.replica)
            super().add(added)
    listing.watchlist = Recording()
    return told


def test_the_node_hears_of_share_state_data_and_every_role_change() -> None:
    """The node's periodic passes visit only the replicas these name: a replica tells it
    when its Raft role changes, lists itself once when it first holds share-group state
    (whether an applied operation or a snapshot brought it), and lists itself for
    retention again when it holds data entries after retention left it none."""
    async def scenario() -> None:
        storage = MemoryStorage(ConfState(frozenset({1})))
        replica, node = _start(storage, 1)
        roles: list[Role] = []
        told = _listings(replica.share_groups_listing)
        replica.on_role_change = lambda: roles.append(node.role)
        _drive(replica, node, storage)
        assert told == [] and roles == []  # a follower from the start: no change
        node.campaign()
        _drive(replica, node, storage)
        assert roles == [Role.LEADER]
        data_told = _listings(replica.data_listing)
        produced = replica.submit(_records(b"a", b"b"), acks=-1)
        _drive(replica, node, storage)
        assert produced.result() == (0, 1) and told == []
        assert data_told == [replica] and replica.holds_data  # retention visits it now
        replica.config = PartitionConfig(retention_bytes=0)
        replica.compacted(*replica.retention_point())
        assert not replica.holds_data  # retention's next visit unlists it ...
        data_replicas = replica.data_listing.watchlist
        assert list(data_replicas.visit(lambda r: r.holds_data)) == []
        assert list(data_replicas.visit()) == []
        replica.config = PartitionConfig()
        replica.submit(_records(b"b2"), acks=-1)
        _drive(replica, node, storage)
        assert data_told == [replica, replica]  # ... until its next data entry
        base = {"g": "g", "now": 1000, "attempts": 5, "log_start": 0}
        for member in ("m1", "m2"):
            await _op(replica, node, storage, {**base, "op": "acquire", "m": member,
                                               "lock_ms": LOCK, "max": 1, "cap": 100})
        assert told == [replica]  # once, not once per operation

        produced = replica.submit(_records(b"c"), acks=-1)  # the snapshot's last entry
        _drive(replica, node, storage)
        header = replica._header_at(replica.applied_index)
        fresh, _ = _start(MemoryStorage(ConfState(frozenset({1}))), 3)
        fresh_told = _listings(fresh.share_groups_listing)
        fresh.restore(Snapshot(SnapshotMeta(replica.applied_index, 1,
                                            ConfState(frozenset({1}))),
                               replica._snapshot_data(header)))
        assert fresh_told == [fresh]

    asyncio.run(scenario())


def test_a_queue_topic_retains_what_some_share_group_has_not_finished() -> None:
    """retention.share.groups: the retention point drops the entries below the smallest
    share start offset, nothing while no group has state, and only on a queue topic."""
    async def scenario() -> None:
        storage = MemoryStorage(ConfState(frozenset({1})))
        replica, node = _start(storage, 3)
        replica.config = PartitionConfig(retention_share_groups=True)
        node.campaign()
        _drive(replica, node, storage)
        for value in (b"a", b"b", b"c", b"d"):  # one entry each: offsets 0..3
            replica.submit(_records(value), acks=-1)
            _drive(replica, node, storage)
        assert replica.retention_point() is None  # no share group yet: all kept
        base = {"now": 1000, "attempts": 5, "log_start": 0}
        await _op(replica, node, storage, {**base, "g": "slow", "op": "tick"})
        for group, upto in (("fast", 3), ("slow", 1)):  # fast finishes 0-3, slow 0-1
            await _op(replica, node, storage, {**base, "g": group, "op": "acquire",
                                               "m": "m", "lock_ms": LOCK, "max": upto + 1,
                                               "cap": 100})
            await _op(replica, node, storage, {**base, "g": group, "op": "ack", "m": "m",
                                               "acks": [[0, upto, 1, 0, ""]]})
        assert replica.share_retention_offset() == 2
        index, data = replica.retention_point()
        assert replica._header_at(index).last_offset == 1  # entries of offsets 0-1 only
        replica.compacted(index, data)
        assert replica.log_start_offset == 2
        replica.config = PartitionConfig()  # not a queue: retention by time/size alone
        assert replica.retention_point() is None

    asyncio.run(scenario())
