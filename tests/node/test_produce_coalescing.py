"""Produce request coalescing (node/_produce_coalescer.py): the packing rules on their own,
and a PartitionReplica over a real single-voter RawNode (in memory) packing one pass's
requests into one entry while answering each request on its own."""

from __future__ import annotations

import asyncio

from raftka.v1.recordbatch import Record, build_batch, parse_header, split_batches
from raftka.node._errors import BrokerError, Code
from raftka.node._partition import (
    _HEADER, ENTRY_MAGIC, HEADER_SIZE, PartitionReplica, entry_header,
)
from raftka.node._produce_coalescer import (
    BATCHES_PER_PRODUCER_MAX, ENTRY_FORMAT, EntryPacker,
)
from raftka.node._producer_state import ProducerStateTable
from raftka.raft import ConfState, Entry, EntryKind, MemoryStorage, RawNode, Role

from tests.node.single_voter import drive, start_replica

PID = 42


def _plain(*values: bytes) -> bytes:
    return build_batch([Record(None, v) for v in values], compression="none")


def _idem(seq: int, *values: bytes, pid: int = PID, epoch: int = 0) -> bytes:
    return build_batch([Record(None, v) for v in values], compression="none",
                       producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def _spans(payload: bytes) -> list[tuple[int, int]]:
    return split_batches(payload)


def _packer(max_bytes: int = 1 << 20, mixed_ok: bool = True, next_offset: int = 10,
            cumulative: int = 1000) -> EntryPacker:
    return EntryPacker(_HEADER, ENTRY_MAGIC, next_offset, cumulative, 5_000, max_bytes,
                       mixed_ok)


def _entry_batches(data: bytes) -> list[tuple[int, int]]:
    """(base offset, last offset) of every batch of a packed entry."""
    out, pos = [], HEADER_SIZE
    while pos < len(data):
        h = parse_header(data, pos)
        out.append((h.base_offset, h.last_offset))
        pos += h.size
    return out


def _header(data: bytes):
    return entry_header(Entry(1, 1, EntryKind.NORMAL, data))


# ------------------------------------------------------------------------------ packing
def test_consecutive_requests_share_one_entry_with_contiguous_offsets() -> None:
    packer = _packer()
    a, b = _plain(b"a", b"b"), _plain(b"c") + _plain(b"d", b"e", b"f")
    c = _idem(0, b"g")
    assert packer.add(a, _spans(a)) == (0, 10, 11)
    assert packer.add(b, _spans(b)) == (0, 12, 15)
    assert packer.add(c, _spans(c), PID) == (0, 16, 16)
    [entry] = packer.finish()
    header = _header(entry)
    assert (header.base_offset, header.last_offset) == (10, 16)
    assert header.cumulative_bytes == 1000 + len(a) + len(b) + len(c)
    assert header.append_time_ms == 5_000
    assert _entry_batches(entry) == [(10, 11), (12, 12), (13, 15), (16, 16)]
    assert packer.next_offset == 17 and packer.cumulative == header.cumulative_bytes


def test_an_entry_stays_within_max_bytes_and_never_splits_a_request() -> None:
    one = _plain(b"x" * 100)
    packer = _packer(max_bytes=2 * len(one) + 10)
    numbers = [packer.add(one, _spans(one))[0] for _ in range(5)]
    assert numbers == [0, 0, 1, 1, 2]
    entries = packer.finish()
    assert [len(e) - HEADER_SIZE for e in entries] == [2 * len(one), 2 * len(one), len(one)]
    # cumulative bytes count up entry by entry
    assert [_header(e).cumulative_bytes for e in entries] == [
        1000 + 2 * len(one), 1000 + 4 * len(one), 1000 + 5 * len(one)]


def test_transactional_batches_markers_and_scheduled_entries_stay_alone() -> None:
    packer = _packer()
    plain = _plain(b"p")
    txn = _idem(0, b"t")
    assert packer.add(plain, _spans(plain))[0] == 0
    assert packer.add(txn, _spans(txn), PID, alone=True)[0] == 1
    assert packer.add(plain, _spans(plain))[0] == 2  # not into the transactional one
    assert packer.add_entry(b"D-scheduled") == 3
    assert packer.add(plain, _spans(plain))[0] == 4
    entries = packer.finish()
    assert len(entries) == 5 and entries[3] == b"D-scheduled"
    assert _entry_batches(entries[1]) == [(11, 11)]


def test_at_most_five_batches_of_one_producer_per_entry() -> None:
    packer = _packer()
    numbers = []
    for seq in range(BATCHES_PER_PRODUCER_MAX + 2):
        batch = _idem(seq, b"v")
        numbers.append(packer.add(batch, _spans(batch), PID)[0])
    other = _idem(0, b"w", pid=7)
    numbers.append(packer.add(other, _spans(other), 7)[0])
    assert numbers == [0] * BATCHES_PER_PRODUCER_MAX + [1, 1, 1]


def test_without_every_replica_reading_them_idempotent_batches_are_never_packed_behind_another(
        ) -> None:
    packer = _packer(mixed_ok=False)
    plain, idem, idem2 = _plain(b"p"), _idem(0, b"i"), _idem(1, b"j")
    assert packer.add(plain, _spans(plain))[0] == 0
    assert packer.add(plain, _spans(plain))[0] == 0  # plain batches: always read whole
    assert packer.add(idem, _spans(idem), PID)[0] == 1
    assert packer.add(idem2, _spans(idem2), PID)[0] == 2
    assert packer.add(plain, _spans(plain))[0] == 3


# ------------------------------------------------------------------------------ the replica
def _leader(seed: int = 1) -> tuple[PartitionReplica, RawNode, MemoryStorage]:
    storage = MemoryStorage(ConfState(frozenset({1})))
    replica, node = start_replica(storage, seed)
    node.campaign()
    drive(replica, node, storage)
    assert node.role == Role.LEADER
    return replica, node, storage


def test_one_pass_is_one_entry_and_each_request_gets_its_own_answer() -> None:
    async def scenario() -> None:
        replica, node, storage = _leader()
        before = node.last_index
        idem = [replica.submit(_idem(i, b"%d" % i), acks=-1) for i in range(3)]
        plain = replica.submit(_plain(b"x", b"y"), acks=-1)
        dup = replica.submit(_idem(1, b"1"), acks=-1)  # a retry of a batch in this pass
        gap = replica.submit(_idem(7, b"7"), acks=-1)  # out of order
        fenced = replica.submit(_idem(0, b"z", epoch=0, pid=99), acks=-1)
        later = replica.submit(_idem(3, b"3"), acks=-1)
        drive(replica, node, storage)
        assert node.last_index == before + 1, "every accepted request in one entry"
        assert [f.result() for f in idem] == [(0, 0), (1, 1), (2, 2)]
        assert plain.result() == (3, 4)
        assert fenced.result() == (5, 5)
        assert later.result() == (6, 6)
        assert dup.result() == (1, 1), "the duplicate gets the original's offsets"
        assert isinstance(gap.exception(), BrokerError)
        assert gap.exception().code == Code.OUT_OF_ORDER_SEQUENCE
        assert replica.high_watermark == 7
        data, nxt = replica.read(0, 1 << 20)
        assert nxt == 7 and len(split_batches(data)) == 6

    asyncio.run(scenario())


def test_acks_1_is_answered_when_durable_and_acks_all_when_committed() -> None:
    async def scenario() -> None:
        replica, node, storage = _leader()
        leader_ack = replica.submit(_plain(b"a"), acks=1)
        all_ack = replica.submit(_plain(b"b"), acks=-1)
        held: list = []
        drive(replica, node, storage, held)
        assert leader_ack.done() and leader_ack.result() == (0, 0)
        assert not all_ack.done(), "not applied yet"
        replica.apply(held)
        assert all_ack.result() == (1, 1)

    asyncio.run(scenario())


def test_a_restarted_replica_knows_every_batch_of_a_coalesced_entry() -> None:
    """What a follower or a restarted node rebuilds from the log: a retry of any batch of
    the entry, not only the first, is a duplicate answered with the original offsets."""
    async def scenario() -> None:
        replica, node, storage = _leader()
        futures = [replica.submit(_idem(i, b"%d" % i), acks=-1) for i in range(4)]
        drive(replica, node, storage)
        assert [f.result() for f in futures] == [(i, i) for i in range(4)]

        again, node = start_replica(storage, 2)
        node.campaign()
        drive(again, node, storage)
        assert node.role == Role.LEADER
        retry = again.submit(_idem(2, b"2"), acks=-1)
        nxt = again.submit(_idem(4, b"4"), acks=-1)
        drive(again, node, storage)
        assert retry.result() == (2, 2)
        assert nxt.result() == (4, 4)
        assert again.high_watermark == 5

    asyncio.run(scenario())


def test_replaying_a_coalesced_entry_changes_nothing() -> None:
    """A retention snapshot holds the table as of the applied index; entries replayed
    after it (the same index) must not add their batches twice."""
    table = ProducerStateTable()
    for seq, base in ((0, 0), (1, 1), (2, 2)):
        table.apply_batch(PID, 0, seq, 1, base, base, 1_000, index=7)
    table.apply_batch(PID, 1, 0, 1, 3, 3, 1_000, index=7)  # a new epoch in the same entry
    encoded = table.encode()
    for seq, base in ((0, 0), (1, 1), (2, 2)):
        table.apply_batch(PID, 0, seq, 1, base, base, 1_000, index=7)
    table.apply_batch(PID, 1, 0, 1, 3, 3, 1_000, index=7)
    assert table.encode() == encoded
    assert [b.first_seq for b in table.producers[PID].batches] == [0]
    assert table.producers[PID].epoch == 1


def test_idempotent_batches_are_packed_together_only_once_every_replica_reads_them() -> None:
    storage = MemoryStorage(ConfState(frozenset({1, 2, 3})))
    replica, _node = start_replica(storage, 4)
    assert not replica.coalesce_idempotent(), "no hello from 2 and 3 yet"
    replica.peer_entry_formats = {2: ENTRY_FORMAT, 3: 0}  # 3: a node from before the field
    assert not replica.coalesce_idempotent()
    replica.peer_entry_formats = {2: ENTRY_FORMAT, 3: ENTRY_FORMAT}
    assert replica.coalesce_idempotent()
