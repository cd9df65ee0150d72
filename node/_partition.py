"""A partition replica: Kafka meanings (offsets, high watermark, log start) on a Raft group.

The Raft log *is* the partition log. A produce request becomes one Raft entry whose data is
a small header plus the request's RecordBatch v2 bytes with offsets already assigned::

    u8 magic 'R' | u8 version 1 | i64 base_offset | i64 last_offset | i64 append_time_ms
    | i64 cumulative_bytes | batches...            (big-endian; 34-byte header)

``cumulative_bytes`` counts batch bytes appended to the partition since its creation, up to
and including this entry, so retention by size is a binary search, not a scan. Entries with
no data (a new leader's empty entry, configuration entries) carry no offsets.

Offset↔index translation lives here and only here. Rules:
- The leader assigns offsets when it proposes, continuing from the last data entry in its
  log (durable or not); a new leader first re-reads its log tail. Offsets are strictly
  increasing in log order, so a committed record never appears at two offsets.
- The high watermark is ``last_offset + 1`` of the last *applied* (committed) data entry;
  it only moves forward. Fetch returns only entries up to the applied index.
- acks=all answers when the entry is applied with the term it was proposed in; acks=1 when
  the leader's own write of it is durable; a different term at that index means the write
  was lost in a leader change (retriable, not written).

Idempotent producers (``_producer_state.py`` has the rules and verdicts):
- A request whose batch carries a ``producerId`` >= 0 must hold exactly that one batch. The
  leader checks its epoch and sequence when it proposes (``before_ready``, in queue order,
  so pipelined requests of one producer are judged in arrival order) against the applied
  producer table plus its own proposed-but-unapplied batches. A duplicate is not written:
  it is answered with the original offsets (at once if applied, else when the original
  commits with the term it was proposed in).
- Every replica feeds the table from committed entries, reading only the first batch's
  header (producerId, producerEpoch, baseSequence) and the entry header's offsets.
- **A new leader accepts idempotent batches only once it has applied its log up to the
  first entry of its own term.** Entries of earlier terms that sit in its log unapplied may
  hold sequences the table does not show yet; accepting before that could write a batch
  twice. Until then the queue waits (every request in it, so none overtakes an idempotent
  one); that entry commits one round trip after the election. Everything after that entry
  was proposed by this leader and is in its pending overlay.

Snapshot data (retention compaction point)::

    u8 version 2 | i64 log_start_offset | i64 cumulative_bytes | producer table
    (version 1, still read: the same without the producer table)

The producer table is the one of the *applied* index (it may be ahead of the snapshot
index; replaying entries after the snapshot into it changes nothing, see
``ProducerStateTable.apply_batch``).
"""

from __future__ import annotations

import asyncio
import struct
import time
from array import array
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass
from typing import Callable, Mapping

from raftka.v1.recordbatch import (
    BatchHeader,
    CorruptBatchError,
    assign_offsets,
    parse_header,
    validate_records,
)
from raftka.raft import CompactedError, Entry, EntryKind, NotLeader, Ready, Role, Snapshot

from ._errors import BrokerError, Code
from ._host import Group
from ._producer_state import DUPLICATE, REJECT, PendingBatch, ProducerStateTable
from ._topic_configs import effective_configs

ENTRY_MAGIC = 0x52
_HEADER = struct.Struct(">BBqqqq")
HEADER_SIZE = _HEADER.size
_SNAP = struct.Struct(">Bqq")
SNAPSHOT_VERSION = 2
# producerId | producerEpoch | baseSequence of a batch, at byte 43 of its header
_PRODUCER_FIELDS = struct.Struct(">qhi")
_PRODUCER_FIELDS_AT = HEADER_SIZE + 43


def _feed_producers(producers: ProducerStateTable, data: bytes, base: int, last: int,
                    at: int, index: int) -> None:
    """One data entry's batch, as the producer table sees it: at apply, and when a restart
    replays the retained log (from its producer fields alone: records are never read)."""
    producers.observe_time(at)
    if len(data) >= _PRODUCER_FIELDS_AT + _PRODUCER_FIELDS.size:
        pid, epoch, seq = _PRODUCER_FIELDS.unpack_from(data, _PRODUCER_FIELDS_AT)
        if pid >= 0:  # idempotent: one batch per entry (checked at produce)
            producers.apply_batch(pid, epoch, seq, last - base + 1, base, last, at, index)
INDEX_CACHE_MAX = 1 << 20
REPLAY_CHUNK_BYTES = 4 << 20
PENDING_REQUESTS_MAX = 10_000


class EntryHeader:
    __slots__ = ("base_offset", "last_offset", "append_time_ms", "cumulative_bytes")

    def __init__(self, base: int, last: int, append_time_ms: int, cumulative: int) -> None:
        self.base_offset = base
        self.last_offset = last
        self.append_time_ms = append_time_ms
        self.cumulative_bytes = cumulative


def entry_header(e: Entry) -> EntryHeader | None:
    data = e.data
    if e.kind != EntryKind.NORMAL or len(data) < HEADER_SIZE or data[0] != ENTRY_MAGIC:
        return None
    _, _, base, last, at, cum = _HEADER.unpack_from(data, 0)
    return EntryHeader(base, last, at, cum)


@dataclass(frozen=True)
class PartitionConfig:
    """A partition's topic configs as the data path reads them (the defaults and the rules
    live in ``_topic_configs.py``). Replaced whole when the topic's configs change."""

    retention_ms: int = 7 * 24 * 3600 * 1000
    retention_bytes: int = -1
    max_message_bytes: int = 1 << 20
    cleanup_policy: str = "delete"  # "delete", "compact" or "compact,delete"
    delete_retention_ms: int = 86_400_000
    min_cleanable_dirty_ratio: float = 0.5
    min_compaction_lag_ms: int = 0

    @classmethod
    def from_topic_configs(cls, configs: Mapping[str, str]) -> PartitionConfig:
        """From the configs set on a topic (normalized); the rest get their defaults."""
        c = effective_configs(configs)
        return cls(
            retention_ms=int(c["retention.ms"]),
            retention_bytes=int(c["retention.bytes"]),
            max_message_bytes=int(c["max.message.bytes"]),
            cleanup_policy=c["cleanup.policy"],
            delete_retention_ms=int(c["delete.retention.ms"]),
            min_cleanable_dirty_ratio=float(c["min.cleanable.dirty.ratio"]),
            min_compaction_lag_ms=int(c["min.compaction.lag.ms"]),
        )


class _Waiter:
    __slots__ = ("index", "term", "future", "base", "last")

    def __init__(self, index: int, term: int, future: asyncio.Future, base: int, last: int):
        self.index = index
        self.term = term
        self.future = future
        self.base = base
        self.last = last


class _Pending:
    __slots__ = ("payload", "spans", "acks", "future", "producer_id", "epoch", "sequence",
                 "record_count")

    def __init__(self, payload: bytes, spans: list[tuple[int, int]], acks: int,
                 future: asyncio.Future | None, producer_id: int = -1, epoch: int = -1,
                 sequence: int = -1, record_count: int = 0) -> None:
        self.payload = payload
        self.spans = spans
        self.acks = acks
        self.future = future
        self.producer_id = producer_id  # -1: not idempotent
        self.epoch = epoch
        self.sequence = sequence
        self.record_count = record_count


def _fail(requests: list[_Pending], error: BrokerError) -> None:
    for req in requests:
        if req.future is not None and not req.future.done():
            req.future.set_exception(error)


class PartitionReplica:
    """State machine of one partition replica; all methods run on the event loop."""

    def __init__(self, topic: str, partition: int, group_id: int, config: PartitionConfig,
                 mark_dirty: Callable[[int], None], clock_ms: Callable[[], int] | None = None):
        self.topic = topic
        self.partition = partition
        self.group_id = group_id
        self.config = config
        self._mark_dirty = mark_dirty
        self._clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self.group: Group | None = None
        # high_watermark: offset after the last committed record; never decreases.
        self.high_watermark = 0
        self.log_start_offset = 0
        self._snapshot_cumulative = 0
        self.applied_index = 0
        self._index_offsets = array("q")  # base offsets of applied data entries, ascending
        self._index_raft = array("q")  # their raft indexes
        self._alloc_term = 0  # term in which _next_offset/_cumulative are valid (leader)
        self._next_offset = 0
        self._cumulative = 0
        self._acks_all: deque[_Waiter] = deque()
        self._acks_leader: deque[_Waiter] = deque()
        self._pending: list[_Pending] = []  # produce requests not yet proposed
        self.producers = ProducerStateTable()
        # first index of the current leader term; idempotent batches wait until it applies
        self._term_start_index = 0
        # duplicates of proposed-but-unapplied batches, answered when the original applies
        self._dup_waiters: list[tuple[PendingBatch, asyncio.Future]] = []
        self._hw_changed = asyncio.Event()

    # ------------------------------------------------------------------ wiring
    def attach(self, group: Group) -> None:
        """Called once the Raft group exists; recovers the high watermark from the log."""
        self.group = group
        node = group.node
        self.applied_index = node.applied_index
        _, header = self._next_data_entry_backwards(node.applied_index, node.first_index)
        if header is not None:
            self._advance_hw(header.last_offset + 1)
        self._replay_producers(node)

    def _replay_producers(self, node) -> None:
        """Feed the producer table from the entries between the snapshot and the applied
        index: the host does not re-apply them after a restart, and the snapshot's table
        only covers what retention compacted. Reads batch headers only; replaying an entry
        the table already reflects changes nothing (``apply_batch`` is keyed on the index).
        Costs one pass over the retained log at startup (see node/README.md)."""
        producers = self.producers
        index, last = node.first_index, node.applied_index
        while index <= last:
            entries = node.log_entries(index, last + 1, REPLAY_CHUNK_BYTES)
            if not entries:
                break
            for e in entries:
                data = e.data
                if (e.kind == EntryKind.NORMAL and len(data) >= HEADER_SIZE
                        and data[0] == ENTRY_MAGIC):
                    _, _, base, lst, at, _ = _HEADER.unpack_from(data, 0)
                    _feed_producers(producers, data, base, lst, at, e.index)
            index = entries[-1].index + 1

    def _header_at(self, index: int) -> EntryHeader | None:
        assert self.group is not None
        try:
            entries = self.group.node.log_entries(index, index + 1)
        except CompactedError:
            return None
        return entry_header(entries[0]) if entries else None

    # ------------------------------------------------------------------ StateMachine
    def restore(self, snapshot: Snapshot) -> None:
        version, log_start, cumulative = _SNAP.unpack_from(snapshot.data, 0)
        if version == 1:
            self.producers = ProducerStateTable()
        elif version == 2:
            self.producers = ProducerStateTable.decode(memoryview(snapshot.data)[_SNAP.size:])
        else:
            raise ValueError(f"partition {self.topic}/{self.partition}: unknown snapshot v{version}")
        self.log_start_offset = max(self.log_start_offset, log_start)
        self._snapshot_cumulative = cumulative
        self._advance_hw(log_start)
        self.applied_index = max(self.applied_index, snapshot.meta.index)
        self._drop_index_below(snapshot.meta.index + 1)

    def apply(self, entries: list[Entry]) -> None:
        offsets, raft_indexes = self._index_offsets, self._index_raft
        hw = self.high_watermark
        magic = ENTRY_MAGIC
        producers = self.producers
        for e in entries:
            data = e.data
            if e.kind == EntryKind.NORMAL and len(data) >= HEADER_SIZE and data[0] == magic:
                _, _, base, last, at, _ = _HEADER.unpack_from(data, 0)
                offsets.append(base)
                raft_indexes.append(e.index)
                hw = last + 1
                _feed_producers(producers, data, base, last, at, e.index)
        self.applied_index = entries[-1].index
        if producers.pending_count:
            producers.applied_through(self.applied_index)
        if self._dup_waiters:
            self._resolve_duplicates(entries)
        if self._pending and self._term_start_index and self.applied_index >= self._term_start_index:
            self._mark_dirty(self.group_id)  # a queue held for the producer state may go
        if len(offsets) > INDEX_CACHE_MAX:
            del offsets[: INDEX_CACHE_MAX // 2]
            del raft_indexes[: INDEX_CACHE_MAX // 2]
        self._advance_hw(hw)
        self._resolve(self._acks_all, entries)

    def on_ready(self, rd: Ready) -> None:
        if rd.role != Role.LEADER and self._alloc_term:
            self._alloc_term = 0
            self.producers.clear_pending()
        if rd.entries and self._acks_leader:
            self._resolve(self._acks_leader, rd.entries)

    def _resolve(self, waiters: deque[_Waiter], entries: list[Entry]) -> None:
        first, last = entries[0].index, entries[-1].index
        while waiters and waiters[0].index <= last:
            w = waiters.popleft()
            if w.future.done():
                continue
            if w.index < first:
                continue  # already settled by an earlier batch; cannot happen in order
            if entries[w.index - first].term == w.term:
                w.future.set_result((w.base, w.last))
            else:
                w.future.set_exception(BrokerError(
                    Code.NOT_LEADER,
                    "the write was lost in a leader change and not committed; retry it",
                    retriable=True,
                ))

    def _resolve_duplicates(self, entries: list[Entry]) -> None:
        """Answer duplicates whose original is now applied: its offsets if it committed
        with the term it was proposed in, else retriable (the original was lost, so the
        retry itself must be written: the producer sends it again)."""
        first, last = entries[0].index, entries[-1].index
        keep = []
        for original, future in self._dup_waiters:
            if future.done():
                continue
            if original.index > last or original.index == 0:
                keep.append((original, future))
            elif original.index >= first and entries[original.index - first].term == original.term:
                future.set_result((original.base_offset, original.last_offset))
            else:
                future.set_exception(BrokerError(
                    Code.NOT_LEADER, "the original of this retried batch was lost in a leader "
                    "change; send it again", retriable=True))
        self._dup_waiters = keep

    def _advance_hw(self, hw: int) -> None:
        if hw > self.high_watermark:
            self.high_watermark = hw
            self._hw_changed.set()
            self._hw_changed = asyncio.Event()

    # ------------------------------------------------------------------ produce
    async def produce(self, payload: bytes, acks: int, timeout_s: float) -> tuple[int, int]:
        """Append ``payload`` (RecordBatch v2 bytes, validated here); returns (base, last)
        offset, or (-1, -1) with acks=0. Raises BrokerError.

        Requests are not proposed one by one: they queue here and the host's ready loop
        proposes everything queued as one batch of entries per pass (``before_ready``), so
        concurrent producers share one replication round and one sync."""
        future = self.submit(payload, acks)
        if future is None:
            return -1, -1
        return await self.wait_acked(future, acks, timeout_s)

    def submit(self, payload: bytes, acks: int) -> asyncio.Future | None:
        """Validate and queue ``payload``; the future of its (base, last) offsets (None with
        acks=0). Synchronous, so a caller that submits in arrival order gets the requests
        proposed (and sequence-checked) in that order. Raises BrokerError."""
        group = self._require_group()
        node = group.node
        if node.role != Role.LEADER:
            raise _not_leader(node.leader_id)
        if len(payload) > self.config.max_message_bytes:
            raise BrokerError(
                Code.REQUEST_TOO_LARGE,
                f"{len(payload)} bytes of record batches exceed max.message.bytes "
                f"({self.config.max_message_bytes}) of topic {self.topic}; send smaller batches",
            )
        if not payload:
            raise BrokerError(Code.INVALID_REQUEST, "the produce request holds no record batch")
        if len(self._pending) >= PENDING_REQUESTS_MAX:
            raise BrokerError(Code.LEADER_NOT_AVAILABLE, "too many produce requests are "
                              "waiting for this partition; retry with backoff", retriable=True)
        spans, headers = self._validated_batches(payload)
        header = headers[0]
        pid = max(h.producer_id for h in headers)
        if pid >= 0:
            if len(spans) != 1:
                raise BrokerError(Code.INVALID_REQUEST, "an idempotent produce request must "
                                  "hold exactly one record batch (sequences are per batch)")
            if header.producer_epoch < 0 or header.base_sequence < 0 or not header.record_count:
                raise BrokerError(Code.INVALID_REQUEST, f"idempotent batch of producer id "
                                  f"{pid} has epoch {header.producer_epoch}, base sequence "
                                  f"{header.base_sequence} and {header.record_count} records; "
                                  "epoch and sequence must be >= 0 and the batch not empty")
        future = asyncio.get_running_loop().create_future() if acks != 0 else None
        self._pending.append(_Pending(payload, spans, acks, future, pid, header.producer_epoch,
                                      header.base_sequence, header.record_count))
        self._mark_dirty(self.group_id)
        return future

    def _validated_batches(self, payload: bytes) -> tuple[list[tuple[int, int]],
                                                            list[BatchHeader]]:
        """(start, end) and header of every batch in ``payload``, each checked whole:
        header, CRC and records (``validate_records``: they decode as a reader will decode
        them). Kafka's broker checks records too; without it, a batch whose CRC is right
        but whose records are not would be stored and fail every reader that decodes it.
        The records check runs in aiokafka's compiled reader, ~0.1 µs a record (~5% of a
        core at 600k records/s); nothing per record in Python. Raises BrokerError."""
        spans: list[tuple[int, int]] = []
        headers: list[BatchHeader] = []
        pos, size = 0, len(payload)
        while pos < size:
            try:
                header = parse_header(payload, pos)
                if header.is_transactional or header.is_control:
                    raise BrokerError(Code.INVALID_REQUEST, "transactional and control "
                                      "batches are not supported; produce plain or "
                                      "idempotent batches")
                if not header.record_count:
                    raise BrokerError(Code.INVALID_REQUEST, f"the record batch at byte {pos} "
                                      "holds no records; send at least one record")
                validate_records(payload, pos, header)
            except CorruptBatchError as exc:
                raise BrokerError(Code.CORRUPT_BATCH, f"{self.topic}/{self.partition} "
                                  f"refused the produce request: {exc}") from None
            end = pos + header.size
            spans.append((pos, end))
            headers.append(header)
            pos = end
        return spans, headers

    async def wait_acked(self, future: asyncio.Future, acks: int,
                         timeout_s: float) -> tuple[int, int]:
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except asyncio.TimeoutError:
            future.cancel()  # if still queued it is never proposed; if proposed, skipped
            raise BrokerError(
                Code.NO_QUORUM,
                f"not {'committed by a majority' if acks < 0 else 'persisted'} within "
                f"{timeout_s:.1f}s (a replica may be down or partitioned); the write may "
                "still be committed later, retry with idempotence to avoid a duplicate",
                retriable=True,
            ) from None

    def before_ready(self) -> None:
        """Propose every queued produce request as one batch of entries (the replicate
        batcher). Offsets are assigned here, in proposal order."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        group = self.group
        if group is None or group.closed:
            _fail(pending, BrokerError(Code.UNKNOWN_PARTITION,
                                       f"{self.topic}/{self.partition} is not hosted here"))
            return
        node = group.node
        if node.role != Role.LEADER:
            _fail(pending, _not_leader(node.leader_id))
            return
        if self._alloc_term != node.term:
            self._reload_allocation()
        if self.applied_index < self._term_start_index and any(
                r.producer_id >= 0 for r in pending):
            # New leader, producer state not complete yet: hold the queue, in order;
            # apply() wakes us once the term's first entry is applied. Requests still time
            # out (their futures), and fail NOT_LEADER if leadership ends meanwhile.
            self._pending = pending + self._pending
            return
        next_offset, cumulative = self._next_offset, self._cumulative
        now_ms = self._clock_ms()
        datas: list[bytes] = []
        placed: list[tuple[_Pending, int, int]] = []
        accepted: list[PendingBatch] = []
        duplicates: list[tuple[PendingBatch, asyncio.Future]] = []
        producers = self.producers
        for req in pending:
            if req.future is not None and req.future.done():
                continue  # the producer gave up before we proposed: never written
            if req.producer_id >= 0:
                verdict = producers.check(req.producer_id, req.epoch, req.sequence,
                                          req.record_count)
                if verdict.kind == REJECT:
                    _fail([req], BrokerError(verdict.code, verdict.message))
                    continue
                if verdict.kind == DUPLICATE:
                    original = verdict.duplicate_of
                    if isinstance(original, PendingBatch):
                        if req.future is not None:
                            duplicates.append((original, req.future))
                    elif req.future is not None:
                        req.future.set_result((original.base_offset, original.last_offset))
                    continue
            buf = bytearray(HEADER_SIZE + len(req.payload))
            buf[HEADER_SIZE:] = req.payload
            view = memoryview(buf)[HEADER_SIZE:]
            nxt = assign_offsets(view, next_offset, req.spans)
            view.release()
            cumulative += len(req.payload)
            _HEADER.pack_into(buf, 0, ENTRY_MAGIC, 1, next_offset, nxt - 1, now_ms, cumulative)
            datas.append(bytes(buf))
            placed.append((req, next_offset, nxt - 1))
            if req.producer_id >= 0:
                accepted.append(producers.add_pending(req.producer_id, req.epoch, req.sequence,
                                                      req.record_count, next_offset, nxt - 1))
            next_offset = nxt
        if datas:
            try:
                first_index, _ = node.propose_batch(datas)
            except Exception as exc:  # NotLeader / ProposalDropped: nothing was written
                producers.drop_pending(accepted)
                error = _proposal_error(exc, node.leader_id)
                _fail([p for p, _, _ in placed], error)
                for _, future in duplicates:
                    if not future.done():
                        future.set_exception(error)
                return
            self._next_offset, self._cumulative = next_offset, cumulative
            term = node.term
            batches = iter(accepted)
            for i, (req, base, last) in enumerate(placed):
                if req.producer_id >= 0:
                    batch = next(batches)
                    batch.index, batch.term = first_index + i, term
                if req.future is None:
                    continue
                waiter = _Waiter(first_index + i, term, req.future, base, last)
                (self._acks_all if req.acks < 0 else self._acks_leader).append(waiter)
        # a duplicate of a batch still in flight is answered when the original applies
        # (acks=1 included: its own durable write is long past)
        self._dup_waiters.extend(duplicates)

    def _reload_allocation(self) -> None:
        """New leadership: continue offsets after the last data entry in our log."""
        node = self._require_group().node
        next_offset, cumulative = self.log_start_offset, self._snapshot_cumulative
        _, header = self._next_data_entry_backwards(node.last_index, node.first_index)
        if header is not None:
            next_offset, cumulative = header.last_offset + 1, header.cumulative_bytes
        if next_offset < self.high_watermark:
            raise RuntimeError(
                f"partition {self.topic}/{self.partition}: log tail offset {next_offset} is "
                f"below the high watermark {self.high_watermark}"
            )
        self._next_offset, self._cumulative = next_offset, cumulative
        self._alloc_term = node.term
        self.producers.clear_pending()
        self._term_start_index = self._first_index_of_term(node.term)

    def _first_index_of_term(self, term: int) -> int:
        """Smallest log index whose entry has ``term`` (terms never decrease along the
        log; a leader always holds its own empty entry). 0 if compacted away, i.e.
        applied long ago."""
        node = self._require_group().node
        lo, hi = node.first_index, node.last_index
        found = 0
        while lo <= hi:
            mid = (lo + hi) // 2
            try:
                mid_term = node.term_at(mid)
            except CompactedError:
                lo = mid + 1
                continue
            if mid_term >= term:
                found = mid if mid_term == term else found
                hi = mid - 1
            else:
                lo = mid + 1
        return found

    # ------------------------------------------------------------------ fetch
    async def wait_for_data(self, offset: int, timeout_s: float) -> None:
        """Return when the high watermark passes ``offset`` or after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.high_watermark <= offset:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self._hw_changed.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def read(self, offset: int, max_bytes: int) -> tuple[bytes, int]:
        """Committed batches from the one holding ``offset``: (bytes, next offset)."""
        group = self._require_group()
        if offset < self.log_start_offset or offset > self.high_watermark:
            raise BrokerError(
                Code.OFFSET_OUT_OF_RANGE,
                f"offset {offset} is outside [{self.log_start_offset}, {self.high_watermark}] "
                f"of {self.topic}/{self.partition}; seek to the log start or the end",
            )
        if offset == self.high_watermark:
            return b"", offset
        try:
            index = self._find_index(offset)
            entries = group.node.log_entries(index, self.applied_index + 1, max_bytes)
        except CompactedError:
            raise BrokerError(
                Code.OFFSET_OUT_OF_RANGE,
                f"offset {offset} of {self.topic}/{self.partition} was just removed by "
                f"retention; the log now starts at {self.log_start_offset}",
            ) from None
        parts = []
        next_offset = offset
        for e in entries:
            header = entry_header(e)
            if header is None:
                continue
            parts.append(memoryview(e.data)[HEADER_SIZE:])
            next_offset = header.last_offset + 1
        return b"".join(parts), next_offset

    def _find_index(self, offset: int) -> int:
        """Raft index of the data entry holding ``offset`` (committed, >= log start)."""
        offsets = self._index_offsets
        if offsets and offset >= offsets[0]:
            return self._index_raft[bisect_right(offsets, offset) - 1]
        node = self._require_group().node
        lo = node.first_index
        hi = self._index_raft[0] - 1 if self._index_raft else self.applied_index
        # Older than the in-memory index: binary search of the entry headers on disk.
        return self._last_index_where(lo, hi, lambda h: h.base_offset <= offset) or lo

    def offset_for_time(self, timestamp_ms: int) -> int:
        """ListOffsets: -2 the log start, -1 the high watermark, else the first committed
        offset whose entry was appended at or after ``timestamp_ms`` (the high watermark if
        none). A binary search on entry headers (append times rise along the log, the same
        assumption retention by time makes); records are never decoded."""
        if timestamp_ms == -2:
            return self.log_start_offset
        if timestamp_ms == -1:
            return self.high_watermark
        if timestamp_ms < 0:
            raise BrokerError(Code.INVALID_REQUEST, f"timestamp_ms {timestamp_ms} is not a "
                              "time: use -2 (earliest), -1 (latest) or a time in ms")
        node = self._require_group().node
        lo, hi = node.first_index, self.applied_index
        before = self._last_index_where(lo, hi, lambda h: h.append_time_ms < timestamp_ms)
        _, header = self._next_data_entry(before + 1 if before else lo, hi)
        if header is None:
            return self.high_watermark
        return max(header.base_offset, self.log_start_offset)

    def _next_data_entry(self, index: int, hi: int) -> tuple[int, EntryHeader | None]:
        for i in range(index, hi + 1):
            header = self._header_at(i)
            if header is not None:
                return i, header
        return hi, None

    def _drop_index_below(self, index: int) -> None:
        raft_indexes = self._index_raft
        cut = bisect_right(raft_indexes, index - 1)
        if cut:
            del raft_indexes[:cut]
            del self._index_offsets[:cut]

    # ------------------------------------------------------------------ retention
    def retention_point(self) -> tuple[int, bytes] | None:
        """The highest applied index whose entries retention drops (entries are removed
        whole, up to and including it), with the snapshot data for that point, or None."""
        group = self._require_group()
        node = group.node
        first, last = node.first_index, self.applied_index
        if last < first:
            return None
        cut = 0
        cfg = self.config
        if cfg.retention_ms >= 0:
            cutoff = self._clock_ms() - cfg.retention_ms
            cut = max(cut, self._last_index_where(first, last, lambda h: h.append_time_ms < cutoff))
        if cfg.retention_bytes >= 0:
            _, tail = self._next_data_entry_backwards(last, first)
            if tail is not None:
                limit = tail.cumulative_bytes - cfg.retention_bytes
                cut = max(cut, self._last_index_where(
                    first, last, lambda h: h.cumulative_bytes <= limit))
        if cut < first:
            return None
        index, header = self._next_data_entry_backwards(cut, first)
        if header is None:
            return None
        return index, (_SNAP.pack(SNAPSHOT_VERSION, header.last_offset + 1,
                                  header.cumulative_bytes) + self.producers.encode())

    def _last_index_where(self, lo: int, hi: int, pred: Callable[[EntryHeader], bool]) -> int:
        """Largest data-entry index in [lo, hi] whose header satisfies ``pred`` (a predicate
        true on a prefix of the log), or 0."""
        found = 0
        while lo <= hi:
            mid = (lo + hi) // 2
            probe, header = self._next_data_entry(mid, hi)
            if header is None:
                hi = mid - 1
            elif pred(header):
                found = probe
                lo = probe + 1
            else:
                hi = mid - 1
        return found

    def _next_data_entry_backwards(self, index: int, lo: int) -> tuple[int, EntryHeader | None]:
        for i in range(index, lo - 1, -1):
            header = self._header_at(i)
            if header is not None:
                return i, header
        return lo, None

    def compacted(self, index: int, snapshot_data: bytes) -> None:
        """The store dropped entries <= ``index``; move the log start accordingly."""
        _, log_start, cumulative = _SNAP.unpack_from(snapshot_data, 0)
        self.log_start_offset = max(self.log_start_offset, log_start)
        self._snapshot_cumulative = cumulative
        self._drop_index_below(index + 1)

    # ------------------------------------------------------------------ misc
    def _require_group(self) -> Group:
        if self.group is None or self.group.closed:
            raise BrokerError(Code.UNKNOWN_PARTITION,
                              f"{self.topic}/{self.partition} is not hosted here any more")
        return self.group

    def fail_waiters(self, error: BrokerError) -> None:
        pending, self._pending = self._pending, []
        _fail(pending, error)
        duplicates, self._dup_waiters = self._dup_waiters, []
        for _, future in duplicates:
            if not future.done():
                future.set_exception(error)
        for waiters in (self._acks_all, self._acks_leader):
            while waiters:
                w = waiters.popleft()
                if not w.future.done():
                    w.future.set_exception(error)


def _not_leader(leader_id: int) -> BrokerError:
    return BrokerError(
        Code.NOT_LEADER,
        f"this node is not the partition leader; the leader is node {leader_id}"
        if leader_id else "this node is not the partition leader and no leader is known yet; "
        "retry after refreshing metadata",
        retriable=True, leader_id=leader_id,
    )


def _proposal_error(exc: Exception, leader_id: int) -> BrokerError:
    if isinstance(exc, NotLeader):
        return _not_leader(exc.leader_id)
    return BrokerError(Code.LEADER_NOT_AVAILABLE, f"write refused: {exc}", retriable=True,
                       leader_id=leader_id)
