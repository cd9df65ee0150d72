"""A produced batch is checked whole before it is queued (issue 12): header, CRC and
records. A batch whose CRC is right but whose records do not decode is refused with
CORRUPT_BATCH and never reaches the log; nothing a client sends becomes INTERNAL."""

from __future__ import annotations

import asyncio
import random
import struct

import pytest
from crc32c import crc32c

from raftka.v1.recordbatch import HEADER_SIZE, build_batch, decode_batches
from raftka.node._errors import BrokerError, Code
from raftka.node._host import Group
from raftka.node._partition import PartitionConfig, PartitionReplica
from raftka.raft import Config, ConfState, MemoryStorage, RawNode, Role


def _leader() -> tuple[PartitionReplica, RawNode, MemoryStorage]:
    storage = MemoryStorage(ConfState(frozenset({1})))
    node = RawNode(Config(1, election_tick=10, heartbeat_tick=1), storage, random.Random(1))
    replica = PartitionReplica("t", 0, 2, PartitionConfig(), lambda _gid: None,
                               clock_ms=lambda: 1_000_000)
    replica.attach(Group(2, node, storage, replica))  # type: ignore[arg-type]
    node.campaign()
    _drive(replica, node, storage)
    assert node.role == Role.LEADER
    return replica, node, storage


def _drive(replica: PartitionReplica, node: RawNode, storage: MemoryStorage) -> None:
    replica.before_ready()
    while node.has_ready():
        rd = node.ready()
        storage.save(rd.hard_state, rd.entries, rd.snapshot)
        if rd.committed_entries:
            replica.apply(rd.committed_entries)
        node.advance(rd)
        replica.on_ready(rd)


def _recrc(batch: bytearray) -> bytes:
    struct.pack_into(">I", batch, 17, crc32c(bytes(batch[21:])))
    return bytes(batch)


GOOD = build_batch([(None, b"v%d" % i) for i in range(5)], "lz4")


def _undecodable() -> bytes:
    bad = bytearray(build_batch([(None, b"x" * 20)] * 2, "none"))
    bad[HEADER_SIZE] = 0x7E  # the first record claims 63 bytes
    return _recrc(bad)


def _refusal(payload: bytes) -> BrokerError:
    async def scenario() -> BrokerError:
        replica, node, storage = _leader()
        with pytest.raises(BrokerError) as caught:
            replica.submit(payload, acks=-1)
        _drive(replica, node, storage)
        assert replica.high_watermark == 0, "nothing refused reaches the log"
        return caught.value
    return asyncio.run(scenario())


def test_records_that_do_not_decode_under_a_sound_crc_are_refused() -> None:
    err = _refusal(_undecodable())
    assert err.code == Code.CORRUPT_BATCH
    assert "t/0 refused the produce request" in err.message
    assert "CRC is right but its records do not decode" in err.message


def test_a_bad_batch_after_a_good_one_refuses_the_whole_request() -> None:
    err = _refusal(GOOD + _undecodable())
    assert err.code == Code.CORRUPT_BATCH and f"at byte {len(GOOD)}" in err.message


def test_a_batch_without_records_is_refused() -> None:
    err = _refusal(build_batch([], "none"))
    assert err.code == Code.INVALID_REQUEST and "holds no records" in err.message


def test_a_crc_mismatch_is_still_refused_as_before() -> None:
    bad = bytearray(GOOD)
    bad[-1] ^= 1
    assert _refusal(bytes(bad)).code == Code.CORRUPT_BATCH


def test_valid_batches_are_written_and_read_back() -> None:
    async def scenario() -> None:
        replica, node, storage = _leader()
        future = replica.submit(GOOD + GOOD, acks=-1)
        _drive(replica, node, storage)
        assert future is not None and future.result() == (0, 9)
        data, next_offset = replica.read(0, 1 << 20)
        assert next_offset == 10
        assert [r.offset for r in decode_batches(data)] == list(range(10))
    asyncio.run(scenario())


def test_plain_records_the_batch_format_cannot_hold_are_invalid_requests() -> None:
    """The `records` path builds the batch on the node: a timestamp span no batch can
    encode is the client's INVALID_REQUEST, not the node's INTERNAL error."""
    from raftka.v1 import broker_pb2
    from raftka.node._services import _batch_from_records

    records = broker_pb2.RecordList(records=[
        broker_pb2.Record(value=b"a", timestamp_ms=-(2**63)),
        broker_pb2.Record(value=b"b", timestamp_ms=2**63 - 1)]).records
    with pytest.raises(BrokerError) as caught:
        _batch_from_records(records)
    assert caught.value.code == Code.INVALID_REQUEST and "timestamps" in caught.value.message
