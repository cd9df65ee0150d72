"""PartitionReplica with transactional batches and markers over a real single-voter
RawNode (in memory): the last stable offset, the aborted index, read_committed per batch,
fencing by markers, refusals that write nothing, and the state across a snapshot and a
restart (rebuilt from the log)."""

from __future__ import annotations

import asyncio
import random

import pytest
from crc32c import crc32c

from raftka.v1.recordbatch import (
    Record,
    build_batch,
    build_control_batch,
    decode_batches,
    parse_header,
    split_batches,
)
from raftka.node._errors import BrokerError, Code
from raftka.node._host import Group
from raftka.node._partition import MARKER_LINGER_S, PartitionConfig, PartitionReplica
from raftka.node._txn_index import AbortedTxn, TxnIndex
from raftka.node._watchlist import Listing, ReplicaWatchlist
from raftka.raft import Config, ConfState, MemoryStorage, RawNode, Role, Snapshot, SnapshotMeta


def _txn(pid: int, epoch: int, seq: int, *values: bytes) -> bytes:
    return build_batch([Record(None, v) for v in values], compression="none",
                       producer_id=pid, producer_epoch=epoch, base_sequence=seq,
                       transactional=True)


def _plain(*values: bytes) -> bytes:
    return build_batch([Record(None, v) for v in values], compression="none")


def _start(storage: MemoryStorage, seed: int = 1, marker_linger_s: float = 0.0
           ) -> tuple[PartitionReplica, RawNode]:
    """A leader-to-be over ``storage``. Its markers go at the next pass unless
    ``marker_linger_s`` (the node's: MARKER_LINGER_S) says otherwise."""
    node = RawNode(Config(1, election_tick=10, heartbeat_tick=1), storage, random.Random(seed))
    replica = PartitionReplica("t", 0, 2, PartitionConfig(), lambda _gid: None,
                               clock_ms=lambda: 1_000_000)
    replica.marker_linger_s = marker_linger_s
    replica.attach(Group(2, node, storage, replica))  # type: ignore[arg-type]
    return replica, node


def _drive(replica: PartitionReplica, node: RawNode, storage: MemoryStorage) -> None:
    replica.before_ready()
    while node.has_ready():
        rd = node.ready()
        storage.save(rd.hard_state, rd.entries, rd.snapshot)
        if rd.committed_entries:
            replica.apply(rd.committed_entries)
        node.advance(rd)
        replica.on_ready(rd)


class _Cluster:
    def __init__(self, marker_linger_s: float = 0.0) -> None:
        self.storage = MemoryStorage(ConfState(frozenset({1})))
        self.replica, self.node = _start(self.storage, marker_linger_s=marker_linger_s)
        self.node.campaign()
        self.drive()
        assert self.node.role == Role.LEADER

    def drive(self) -> None:
        _drive(self.replica, self.node, self.storage)

    def produce(self, payload: bytes, acks: int = -1, transactional: bool = True):
        future = self.replica.submit(payload, acks, transactional)
        self.drive()
        assert future is not None
        return future.result()

    def refused(self, payload: bytes, acks: int = -1) -> int:
        hw = self.replica.high_watermark
        try:
            future = self.replica.submit(payload, acks)
        except BrokerError as exc:
            code = exc.code
        else:
            self.drive()
            assert future is not None and isinstance(future.exception(), BrokerError)
            code = future.exception().code
        assert self.replica.high_watermark == hw, "nothing written"
        return code

    def marker(self, pid: int, epoch: int, commit: bool) -> int:
        task = asyncio.ensure_future(self.replica.write_marker(pid, epoch, commit, 0, 5.0))
        return task

    def values(self, committed: bool, offset: int = 0) -> list[bytes]:
        r = self.replica
        data, _ = (r.read_committed if committed else r.read)(offset, 1 << 20)
        return [rec.value for rec in decode_batches(data) if rec.value is not None]


async def _marker(c: _Cluster, pid: int, epoch: int, commit: bool) -> int:
    task = c.marker(pid, epoch, commit)
    await asyncio.sleep(0)
    c.drive()
    return await task


def test_lso_aborted_index_and_read_committed() -> None:
    async def scenario() -> None:
        c = _Cluster()
        r = c.replica
        c.produce(_plain(b"p0"))                      # 0
        c.produce(_txn(7, 0, 0, b"a1", b"a2"))        # 1-2: producer 7 opens at 1
        c.produce(_txn(8, 0, 0, b"b1"))               # 3: producer 8 opens at 3
        c.produce(_plain(b"p1"))                      # 4
        assert r.high_watermark == 5 and r.last_stable_offset == 1
        assert c.values(True) == [b"p0"], "nothing at or beyond the LSO"
        assert c.values(False) == [b"p0", b"a1", b"a2", b"b1", b"p1"]
        assert await _marker(c, 7, 0, commit=False) == 5   # abort 7
        assert r.last_stable_offset == 3
        assert c.values(True) == [b"p0"]
        assert await _marker(c, 8, 0, commit=True) == 6    # commit 8
        assert r.last_stable_offset == r.high_watermark == 7
        assert c.values(True) == [b"p0", b"b1", b"p1"], "aborted and markers left out"
        assert r.txns.aborted == [AbortedTxn(7, 1, 5)]
        # read_uncommitted is unchanged: everything, markers included (as Kafka)
        data, nxt = r.read(0, 1 << 20)
        controls = [parse_header(data, s).is_control for s, _ in split_batches(data)]
        assert nxt == 7 and controls.count(True) == 2
        # a read starting inside the aborted range skips to after it
        data, nxt = r.read_committed(1, 1 << 20)
        assert nxt == 7 and [x.value for x in decode_batches(data)] == [b"b1", b"p1"]
        # the same producer's next transaction (same epoch, sequences go on)
        c.produce(_txn(7, 0, 2, b"a3"))                    # 7
        assert r.last_stable_offset == 7 and c.values(True, 7) == []
        assert await _marker(c, 7, 0, commit=True) == 8
        assert c.values(True, 7) == [b"a3"]

    asyncio.run(scenario())


def test_markers_fence_older_epochs_and_refusals_write_nothing() -> None:
    async def scenario() -> None:
        c = _Cluster()
        r = c.replica
        c.produce(_txn(7, 0, 0, b"a"))
        # the coordinator aborts with a bumped epoch (a timeout, a new incarnation)
        await _marker(c, 7, 1, commit=False)
        assert c.refused(_txn(7, 0, 1, b"late")) == Code.PRODUCER_FENCED
        assert c.refused(_txn(7, 1, 5, b"gap")) == Code.OUT_OF_ORDER_SEQUENCE
        c.produce(_txn(7, 1, 0, b"new"))               # the new epoch starts at 0
        with pytest.raises(BrokerError) as info:
            await _marker(c, 7, 0, commit=True)         # an older epoch's marker
        assert info.value.code == Code.INVALID_PRODUCER_EPOCH
        # a non-transactional batch of a producer inside a transaction
        idem = build_batch([Record(None, b"x")], compression="none", producer_id=7,
                           producer_epoch=1, base_sequence=1)
        assert c.refused(idem) == Code.INVALID_TXN_STATE
        # clients never send markers
        assert c.refused(build_control_batch(9, 0, True, 0, 1)) == Code.INVALID_REQUEST
        # transactional without a producer id: the bit set by hand on a plain batch
        raw = bytearray(_plain(b"z"))
        raw[22] |= 0x10
        raw[17:21] = crc32c(bytes(raw[21:])).to_bytes(4, "big")
        assert parse_header(bytes(raw)).is_transactional
        assert c.refused(bytes(raw)) == Code.INVALID_REQUEST
        assert c.refused(_txn(9, 0, 0, b"q"), acks=0) == Code.INVALID_REQUEST
        with pytest.raises(BrokerError) as info:
            r.submit(_txn(9, 0, 0, b"q"), -1, transactional=False)  # the Kafka listener
        assert info.value.code == Code.INVALID_REQUEST
        assert c.values(True) == [], "the open transaction still hides everything after it"
        await _marker(c, 7, 1, commit=True)
        assert c.values(True) == [b"new"]

    asyncio.run(scenario())


def test_next_epoch_batch_waits_for_the_previous_transactions_marker() -> None:
    """The coordinator begins a producer's next transaction (its next epoch) before the
    previous one's markers are written: a batch of the next epoch is held until the
    previous transaction's marker is proposed ahead of it, and a marker of the previous
    epoch that comes after it is refused (it would end the wrong transaction)."""
    async def scenario() -> None:
        c = _Cluster()
        r = c.replica
        c.produce(_txn(7, 0, 0, b"n"))                    # 0: transaction N, epoch 0
        early = r.submit(_txn(7, 1, 0, b"n+1"), -1)       # N+1 before N's marker
        c.drive()
        c.drive()
        assert early is not None and not early.done(), "held for N's marker"
        assert r.high_watermark == 1
        marker = c.marker(7, 0, commit=True)              # queued after the held batch
        await asyncio.sleep(0)
        c.drive()
        assert await marker == 1, "the marker goes first"
        assert early.result() == (2, 2)
        assert c.values(True) == [b"n"], "N committed, N+1 still open"
        with pytest.raises(BrokerError) as info:
            await _marker(c, 7, 0, commit=False)          # N's marker again: stale
        assert info.value.code == Code.INVALID_PRODUCER_EPOCH
        assert await _marker(c, 7, 1, commit=False) == 3
        assert c.values(True) == [b"n"] and r.last_stable_offset == r.high_watermark
        # no open transaction: a newer epoch's batch goes at once
        assert c.produce(_txn(7, 2, 0, b"n+2")) == (4, 4)

    asyncio.run(scenario())


def test_a_lingering_marker_waits_out_other_passes_and_shares_the_next_batchs_write(
) -> None:
    """A marker with nothing queued lingers for the next transaction's batch so that both
    take one Raft write: a pass made for something else (an apply, a follower's ack)
    proposes nothing, and the next request's pass proposes both, the marker first. Before,
    any pass took the marker alone, and most markers of a loaded partition went so (the
    benchmark's transactions x4: a marker alone in 37% of its partition's passes)."""
    async def scenario() -> None:
        c = _Cluster(marker_linger_s=MARKER_LINGER_S)
        r = c.replica
        c.produce(_txn(7, 0, 0, b"n"))                    # 0: transaction N, epoch 0
        marker = c.marker(7, 0, commit=True)
        await asyncio.sleep(0)
        last = c.node.last_index
        for _ in range(3):
            c.drive()                                     # passes for other reasons
        assert c.node.last_index == last and not marker.done(), "still lingering"
        writes: list[int] = []
        original = c.node.propose_batch

        def counted(datas):
            writes.append(len(datas))
            return original(datas)
        c.node.propose_batch = counted                    # type: ignore[method-assign]
        nxt = r.submit(_txn(7, 1, 0, b"n+1"), -1)
        c.drive()
        assert writes == [2], "the marker and the batch in one proposal"
        assert await marker == 1 and nxt is not None and nxt.result() == (2, 2)
        assert c.values(True) == [b"n"]
        alone = c.marker(7, 1, commit=True)               # nothing comes after it
        await asyncio.sleep(0)
        c.drive()
        assert not alone.done()
        await asyncio.sleep(MARKER_LINGER_S * 1.5)        # its timer is set before ours
        c.drive()
        assert await alone == 3 and writes == [2, 1], "alone once the linger ended"
        assert c.values(True) == [b"n", b"n+1"]

    asyncio.run(scenario())


def test_a_held_batch_is_fenced_by_a_fencing_marker_placed_in_its_pass() -> None:
    """A batch of the next epoch held for the open transaction's marker, when the marker
    that comes is a fencing abort of a later epoch (the coordinator aborted a timed-out
    transaction): the batch is refused, not written after the marker, where it would open
    a transaction no marker ever ends (found by a 30-minute jepsen-like txn run: the LSO
    of a partition stuck behind it)."""
    async def scenario() -> None:
        c = _Cluster()
        r = c.replica
        c.produce(_txn(7, 4, 0, b"e4"))                   # 0: epoch 4, open
        late = r.submit(_txn(7, 11, 0, b"e11"), -1)       # held for epoch 4's marker
        c.drive()
        assert late is not None and not late.done()
        assert await _marker(c, 7, 12, commit=False) == 1, "the timeout's fencing abort"
        c.drive()
        assert isinstance(late.exception(), BrokerError)
        assert late.exception().code == Code.PRODUCER_FENCED
        assert r.high_watermark == 2 and r.last_stable_offset == r.high_watermark
        assert c.values(True) == []

    asyncio.run(scenario())


def test_state_survives_a_snapshot_and_a_restart() -> None:
    async def scenario() -> None:
        c = _Cluster()
        c.produce(_txn(1, 0, 0, b"x"))
        c.produce(_txn(2, 0, 0, b"y"))
        await _marker(c, 1, 0, commit=False)
        c.produce(_txn(3, 0, 0, b"z"))                 # stays open
        before = c.replica.txns.encode()
        assert c.replica.last_stable_offset == 1

        # restart on the same log: rebuilt by the replay of the retained entries
        again, node = _start(c.storage, 2)
        node.campaign()
        _drive(again, node, c.storage)  # the host applies what the node had not applied
        assert again.txns.encode()[9:] == before[9:], "same open and aborted transactions"
        assert again.last_stable_offset == 1

        # a snapshot (what retention stores: the state of the applied index, the log
        # starting after its entry) restores the same state, and replaying the entries
        # after it that the state already covers changes nothing
        index, header = c.replica._next_data_entry(1, c.replica.applied_index)
        assert header is not None and header.base_offset == 0
        snap = c.replica._snapshot_data(header)
        fresh = PartitionReplica("t", 0, 2, PartitionConfig(), lambda _gid: None)
        fresh.restore(Snapshot(SnapshotMeta(index=index, term=1,
                                             conf_state=ConfState(frozenset({1}))), snap))
        assert fresh.log_start_offset == 1
        assert fresh.txns.encode() == before
        fresh.apply(c.storage.entries(index + 1, c.node.last_index + 1))
        assert fresh.txns.encode() == before
        assert fresh.producers.encode() == c.replica.producers.encode()
        # retention past the abort marker drops its range, not the open transactions
        fresh.compacted(index, c.replica._snapshot_data(c.replica._header_at(
            c.replica._find_index(3))))
        assert fresh.txns.aborted == [] and set(fresh.txns.open) == {2, 3}

    asyncio.run(scenario())


def test_txn_index_encoding_and_retention() -> None:
    t = TxnIndex()
    t.apply_batch(5, 0, 10, 1, index=3)
    t.apply_batch(6, 2, 12, 2, index=4)
    t.apply_marker(5, False, 20, index=5)
    t.apply_batch(5, 0, 21, 3, index=6)
    t.apply_marker(5, False, 30, index=7)
    t.apply_marker(6, True, 31, index=8)
    t.apply_marker(6, True, 32, index=8)  # a replay: already reflected
    assert t.last_stable_offset(40) == 40 and not t.open
    assert t.aborted == [AbortedTxn(5, 10, 20), AbortedTxn(5, 21, 30)]
    assert t.aborted_between(25, 40) == {5: [(21, 30)]}
    assert t.aborted_between(0, 11) == {5: [(10, 20)]}
    t2 = TxnIndex.decode(t.encode())
    assert t2.encode() == t.encode() and t2.applied_index == 8
    t2.truncate_below(21)
    assert t2.aborted == [AbortedTxn(5, 21, 30)]
    with pytest.raises(ValueError):
        TxnIndex.decode(t.encode()[:-3])


def test_a_transaction_open_too_long_is_aborted_by_the_leader() -> None:
    async def scenario() -> None:
        now = [1_000_000]
        storage = MemoryStorage(ConfState(frozenset({1})))
        node = RawNode(Config(1, election_tick=10, heartbeat_tick=1), storage,
                       random.Random(1))
        r = PartitionReplica("t", 0, 2, PartitionConfig(), lambda _gid: None,
                             clock_ms=lambda: now[0])
        r.marker_linger_s = 0.0
        r.attach(Group(2, node, storage, r))  # type: ignore[arg-type]
        node.campaign()
        _drive(r, node, storage)
        r.submit(_txn(7, 3, 0, b"forgotten"), -1)
        _drive(r, node, storage)
        assert r.expired_transactions(60_000) == []
        now[0] += 60_001
        assert r.expired_transactions(60_000) == [(7, 3)]
        task = asyncio.ensure_future(r.abort_expired(7, 3, 5.0))
        await asyncio.sleep(0)
        assert r.expired_transactions(60_000) == [], "one abort at a time"
        _drive(r, node, storage)
        assert await task == 1
        assert r.last_stable_offset == r.high_watermark == 2
        assert r.txns.aborted == [AbortedTxn(7, 0, 1)]
        assert r.expired_transactions(60_000) == []

    asyncio.run(scenario())


def test_a_deposed_coordinators_marker_is_refused() -> None:
    """A marker from an older coordinator epoch than one the partition applied for the
    producer (a deposed coordinator's late call) is refused and writes nothing; the
    epoch survives the snapshot encoding; the partition's own abort (-1) is not checked."""
    async def scenario() -> None:
        c = _Cluster()
        r = c.replica
        c.produce(_txn(7, 0, 0, b"a"))
        task = asyncio.ensure_future(r.write_marker(7, 0, True, 5, 5.0))
        await asyncio.sleep(0)
        c.drive()
        await task
        assert r.txns.coordinator_epochs == {7: 5}
        c.produce(_txn(7, 0, 1, b"b"))  # the next transaction, same producer epoch
        hw = r.high_watermark
        with pytest.raises(BrokerError) as info:
            await r.write_marker(7, 0, True, 4, 5.0)  # the old coordinator, late
        assert info.value.code == Code.TRANSACTION_COORDINATOR_FENCED
        assert r.high_watermark == hw and c.values(True) == [b"a"], "nothing written"
        assert TxnIndex.decode(r.txns.encode()).coordinator_epochs == {7: 5}
        task = asyncio.ensure_future(r.write_marker(7, 0, False, -1, 5.0))
        await asyncio.sleep(0)
        c.drive()
        await task
        assert c.values(True) == [b"a"] and r.txns.coordinator_epochs == {7: 5}

    asyncio.run(scenario())


def test_the_node_hears_when_a_replica_holds_an_open_transaction() -> None:
    """Transaction expiry and the settle pass visit only the replicas that list themselves
    as holding an open transaction (``transactions_listing``); once a
    visit finds none open it unlists the replica, until the next one opens."""
    told: list = []

    class Recording(ReplicaWatchlist):
        def add(self, listing: Listing) -> None:
            told.append(listing.replica)
            super().add(listing)

    async def scenario() -> None:
        c = _Cluster()
        txn_replicas = Recording()
        c.replica.transactions_listing.watchlist = txn_replicas
        c.produce(_plain(b"p0"))
        assert told == []  # no transaction: nothing to visit
        c.produce(_txn(7, 0, 0, b"a1"))
        c.produce(_txn(7, 0, 1, b"a2"))
        assert told == [c.replica]  # once, not once per batch
        await _marker(c, 7, 0, True)
        assert not c.replica.txns.open
        assert list(txn_replicas.visit(lambda r: bool(r.txns.open))) == []
        assert list(txn_replicas.visit()) == []  # unlisted ...
        c.produce(_txn(7, 1, 0, b"b1"))
        assert told == [c.replica, c.replica]  # ... until the next one opens
        assert list(txn_replicas.visit(lambda r: bool(r.txns.open))) == [c.replica]

    asyncio.run(scenario())
