"""The ``raftka.v1.Debug`` gRPC service: read-only views of this node's own replicas.

``ReplicaDigest`` answers from whatever replica of the partition this node runs (leader or
follower), never forwarding, so a test or an operator can compare replicas: after faults
heal, every replica must hold the same records at the same offsets up to the high
watermark. The digest covers the committed (applied) log only, read with the same
``PartitionReplica.read`` a Fetch uses, so it is of exactly the bytes a client would get.

Rules of a digest (see proto/raftka/v1/debug.proto):
- ranges are ``[from + k * range_offsets, from + (k + 1) * range_offsets)``, the last one
  cut at ``to``; a batch belongs to the range holding its base offset; batches based below
  ``from`` are left out. Equal requests to two replicas thus draw the same range bounds.
- per range: CRC-32C of its batches' bytes in log order, their number, the offsets they
  cover and their size. Batches are opaque here: headers are parsed (and their CRC
  checked), records never.
- the work per call is bounded: at most ``RANGES_MAX`` ranges, and once ``max_bytes`` of
  batches were digested no new range is started (``next_offset`` says where to go on).
  The event loop is yielded to between reads of ``READ_CHUNK_BYTES``.
"""

from __future__ import annotations

import asyncio

import grpc
from crc32c import crc32c

from raftka.raft import CompactedError, Role
from raftka.v1 import debug_pb2, debug_pb2_grpc
from raftka.v1.recordbatch import LOG_OVERHEAD, CorruptBatchError, parse_header

from ._broker import Broker
from ._errors import BrokerError, Code
from ._partition import PartitionReplica, entry_header
from ._services import _handler, _Service

RANGES_MAX = 10_000
RANGE_OFFSETS_MIN_DEFAULT = 1_000
MAX_BYTES_DEFAULT = 16 << 20
READ_CHUNK_BYTES = 1 << 20
# Entries after the applied index scanned for the last offset: the uncommitted tail is
# bounded by Raft's uncommitted-size limit; this only bounds a pathological log.
TAIL_SCAN_MAX = 100_000


def add_debug_service(server: grpc.aio.Server, broker: Broker) -> None:
    """Serve ``raftka.v1.Debug`` on ``server`` (the one line ``_server.py`` needs)."""
    debug_pb2_grpc.add_DebugServicer_to_server(DebugService(broker), server)


class _Range:
    __slots__ = ("start", "end", "crc", "batches", "records", "size")

    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end
        self.crc = self.batches = self.records = self.size = 0

    def pb(self) -> debug_pb2.OffsetRangeDigest:
        return debug_pb2.OffsetRangeDigest(
            start_offset=self.start, end_offset=self.end, crc32c=self.crc,
            batches=self.batches, records=self.records, bytes=self.size)


class DebugService(_Service, debug_pb2_grpc.DebugServicer):
    @_handler
    async def ReplicaDigest(self, request, context):  # noqa: N802
        replica = self._local_replica(request.topic, request.partition)
        node = replica.group.node
        response = debug_pb2.ReplicaDigestResponse(
            node_id=self.broker.node_id, leader=node.role == Role.LEADER, term=node.term,
            leader_id=node.leader_id, log_start_offset=replica.log_start_offset,
            high_watermark=replica.high_watermark, last_offset=_last_offset(replica),
            applied_index=node.applied_index, last_index=node.last_index)
        if request.positions_only:
            response.next_offset = response.high_watermark
            return response
        start, end, step, max_bytes = self._span(replica, request)
        ranges, next_offset = await _digest(replica, start, end, step, max_bytes)
        response.ranges.extend(r.pb() for r in ranges)
        response.next_offset = next_offset
        return response

    def _local_replica(self, topic: str, partition: int) -> PartitionReplica:
        broker = self.broker
        replica = broker.partitions.get((topic, partition))
        if replica is not None and replica.group is not None and not replica.group.closed:
            return replica
        meta = broker.controller.state.topic(topic)
        if meta is None:
            raise BrokerError(Code.UNKNOWN_TOPIC, f"node {broker.node_id} knows no topic "
                              f"{topic!r} (its metadata may lag the controller's by a moment)")
        if not 0 <= partition < len(meta.partitions):
            raise BrokerError(Code.UNKNOWN_PARTITION, f"topic {topic!r} has partitions "
                              f"0..{len(meta.partitions) - 1}, not {partition}")
        replicas = list(meta.partitions[partition].replicas)
        raise BrokerError(Code.UNKNOWN_PARTITION, f"node {broker.node_id} runs no replica of "
                          f"{topic}/{partition} (its replicas are on nodes {replicas}); ask "
                          "one of those")

    @staticmethod
    def _span(replica: PartitionReplica, request) -> tuple[int, int, int, int]:
        """(from, to, offsets per range, max bytes) of a request, checked against this
        replica's log start and high watermark."""
        log_start, hw = replica.log_start_offset, replica.high_watermark
        start = request.from_offset or log_start
        if not log_start <= start <= hw:
            raise BrokerError(Code.OFFSET_OUT_OF_RANGE, f"from_offset {start} is outside "
                              f"[{log_start}, {hw}] of {replica.topic}/{replica.partition} on "
                              "this replica (log start, high watermark)")
        end = hw if request.to_offset <= 0 else min(request.to_offset, hw)
        if end < start:
            raise BrokerError(Code.INVALID_REQUEST, f"to_offset {request.to_offset} is below "
                              f"from_offset {start}")
        step = request.range_offsets
        if step < 0:
            raise BrokerError(Code.INVALID_REQUEST, f"range_offsets must be positive, got "
                              f"{step}")
        if step == 0:
            step = max(RANGE_OFFSETS_MIN_DEFAULT, -(-(end - start) // RANGES_MAX))
        if request.max_bytes < 0:
            raise BrokerError(Code.INVALID_REQUEST, f"max_bytes must not be negative, got "
                              f"{request.max_bytes}")
        return start, end, step, request.max_bytes or MAX_BYTES_DEFAULT


async def _digest(replica: PartitionReplica, start: int, end: int, step: int,
                  max_bytes: int) -> tuple[list[_Range], int]:
    """The ranges from ``start`` (see the module rules) and where the answer ends."""
    ranges: list[_Range] = []
    current: _Range | None = None
    digested = 0

    def reach(offset: int) -> bool:
        """Make ``current`` the range holding ``offset``, opening the ranges on the way
        (empty ones too: a batch before them covered their offsets); False once the
        budget says to stop before a new range."""
        nonlocal current
        while current is None or offset >= current.end:
            if current is not None and (digested >= max_bytes or len(ranges) >= RANGES_MAX):
                return False
            bound = start if current is None else current.end
            current = _Range(bound, min(bound + step, end))
            ranges.append(current)
        return True

    offset = start  # where the next read starts
    while offset < end:
        data, next_read = replica.read(offset, READ_CHUNK_BYTES)
        if not data:
            break
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            try:
                header = parse_header(view, pos)
            except CorruptBatchError as exc:
                raise BrokerError(Code.CORRUPT_BATCH, f"this replica of {replica.topic}/"
                                  f"{replica.partition} holds a damaged batch in the entry "
                                  f"read from offset {offset}: {exc}") from None
            size = LOG_OVERHEAD + header.batch_length
            base = header.base_offset
            if base >= end:
                next_read = end
                break
            if base >= start:
                if not reach(base):
                    return ranges, current.end
                current.crc = crc32c(view[pos:pos + size], current.crc)
                current.batches += 1
                current.records += header.last_offset - base + 1
                current.size += size
                digested += size
            pos += size
        offset = next_read
        await asyncio.sleep(0)  # heartbeats and produce requests go between chunks
    if end > start and not reach(end - 1):
        return ranges, current.end
    return ranges, end


def _last_offset(replica: PartitionReplica) -> int:
    """The last offset in this replica's log, committed or not (-1: none since the log
    start): the newest data entry after the applied index, else the high watermark - 1."""
    node = replica.group.node
    low = max(node.applied_index + 1, node.first_index)
    index = node.last_index
    while index >= low and node.last_index - index < TAIL_SCAN_MAX:
        try:
            entries = node.log_entries(index, index + 1)
        except CompactedError:
            break
        header = entry_header(entries[0]) if entries else None
        if header is not None:
            return header.last_offset
        index -= 1
    return replica.high_watermark - 1
