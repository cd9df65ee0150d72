"""The coordinator's replicated state (``__transaction_state`` replicas) and pending
transactional offsets in ``__consumer_offsets`` replicas, over a real single-voter RawNode:
decoded identically by replay and from snapshots; a commit marker makes pending offsets
committed, an abort drops them."""

from __future__ import annotations

import asyncio
import random

from raftka.node._host import Group
from raftka.node._offsets import OffsetsReplica, encode_commits, encode_pending_commits
from raftka.node._partition import PartitionConfig
from raftka.node._txn_state import TxnStateReplica, encode_state, txn_partition_for
from raftka.raft import Config, ConfState, MemoryStorage, RawNode, Role, Snapshot, SnapshotMeta


def _start(cls, storage: MemoryStorage, seed: int = 1):
    node = RawNode(Config(1, election_tick=10, heartbeat_tick=1), storage, random.Random(seed))
    replica = cls("t", 0, 2, PartitionConfig(), lambda _gid: None, clock_ms=lambda: 1_000_000)
    replica.attach(Group(2, node, storage, replica))  # type: ignore[arg-type]
    return replica, node


def _drive(replica, node, storage) -> None:
    replica.before_ready()
    while node.has_ready():
        rd = node.ready()
        storage.save(rd.hard_state, rd.entries, rd.snapshot)
        if rd.committed_entries:
            replica.apply(rd.committed_entries)
        node.advance(rd)
        replica.on_ready(rd)


def _write(replica, node, storage, payload: bytes) -> None:
    future = replica.submit(payload, -1)
    _drive(replica, node, storage)
    assert future is not None and future.result()


def _state(state: str, epoch: int = 0, parts=()) -> dict:
    return {"pid": 7, "epoch": epoch, "state": state, "timeout_ms": 60000, "start_ms": 1,
            "partitions": [list(p) for p in parts], "groups": []}


def test_transaction_states_replay_and_snapshot() -> None:
    async def scenario() -> None:
        storage = MemoryStorage(ConfState(frozenset({1})))
        r, node = _start(TxnStateReplica, storage)
        node.campaign()
        _drive(r, node, storage)
        assert node.role == Role.LEADER and r.leader_ready()
        _write(r, node, storage, encode_state("a", _state("empty"), 1))
        _write(r, node, storage, encode_state("a", _state("ongoing", parts=[("o", 1)]), 2))
        _write(r, node, storage, encode_state("b", _state("prepare_commit", 3), 3))
        _write(r, node, storage, encode_state("gone", _state("empty"), 3))
        _write(r, node, storage, encode_state("gone", None, 4))  # removed
        _write(r, node, storage, encode_state("bad", {"state": "?"}, 5))  # ignored
        assert sorted(r.transactions) == ["a", "b"]
        assert r.transactions["a"]["partitions"] == [["o", 1]]
        assert r.transactions["b"]["state"] == "prepare_commit"

        again, node2 = _start(TxnStateReplica, storage, 2)  # a restart: rebuilt from the log
        node2.campaign()
        _drive(again, node2, storage)
        assert again.transactions == r.transactions

        r.compact_after = 1
        index, data = r.retention_point()
        fresh = TxnStateReplica("t", 0, 2, PartitionConfig(), lambda _gid: None)
        fresh.restore(Snapshot(SnapshotMeta(index=index, term=1,
                                             conf_state=ConfState(frozenset({1}))), data))
        assert fresh.transactions == r.transactions

    asyncio.run(scenario())


def test_txn_partition_is_stable() -> None:
    assert txn_partition_for("orders-service", 6) == txn_partition_for("orders-service", 6)
    assert {txn_partition_for(f"id-{i}", 6) for i in range(100)} == set(range(6))


def test_pending_offsets_count_iff_the_marker_commits() -> None:
    async def scenario() -> None:
        storage = MemoryStorage(ConfState(frozenset({1})))
        r, node = _start(OffsetsReplica, storage)
        node.campaign()
        _drive(r, node, storage)
        _write(r, node, storage, encode_commits("g", [("in", 0, 3, "")], 1))
        _write(r, node, storage, encode_pending_commits("g", 7, [("in", 0, 5, "")], 2))
        _write(r, node, storage, encode_pending_commits("g", 8, [("in", 1, 9, "")], 2))
        assert r.offsets["g"][("in", 0)].offset == 3, "pending until the marker"
        assert r.has_pending("g", "in", 0) and set(r.pending) == {7, 8}

        async def marker(pid: int, commit: bool) -> None:
            task = asyncio.ensure_future(r.write_marker(pid, 0, commit, 1, 5.0))
            await asyncio.sleep(0)
            _drive(r, node, storage)
            await task

        await marker(7, True)
        await marker(8, False)
        assert r.offsets["g"][("in", 0)].offset == 5
        assert ("in", 1) not in r.offsets["g"], "the aborted commit never counts"
        assert r.pending == {}
        _write(r, node, storage, encode_pending_commits("g", 9, [("in", 2, 4, "m")], 3))
        tables = r.encode_tables()
        again, node2 = _start(OffsetsReplica, storage, 2)
        node2.campaign()
        _drive(again, node2, storage)
        assert again.encode_tables() == tables, "the same state rebuilt from the log"
        r.compact_after = 1
        index, data = r.retention_point()
        fresh = OffsetsReplica("t", 0, 2, PartitionConfig(), lambda _gid: None)
        fresh.restore(Snapshot(SnapshotMeta(index=index, term=1,
                                             conf_state=ConfState(frozenset({1}))), data))
        assert fresh.encode_tables() == tables and set(fresh.pending) == {9}

    asyncio.run(scenario())
