"""A partition replica: Kafka meanings (offsets, high watermark, log start) on a Raft group.

The Raft log *is* the partition log. The produce requests a leader proposes in one pass
become Raft entries (consecutive requests share one: ``_produce_coalescer.py`` has the
rules) whose data is a small header plus the requests' RecordBatch v2 bytes with offsets
already assigned::

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
- Every replica feeds the table from committed entries, reading only batch headers
  (producerId, producerEpoch, baseSequence, baseOffset, lastOffsetDelta) of every batch
  of the entry (one entry may hold several requests' idempotent batches).
- **A new leader accepts idempotent batches only once it has applied its log up to the
  first entry of its own term.** Entries of earlier terms that sit in its log unapplied may
  hold sequences the table does not show yet; accepting before that could write a batch
  twice. Until then the queue waits (every request in it, so none overtakes an idempotent
  one); that entry commits one round trip after the election. Everything after that entry
  was proposed by this leader and is in its pending overlay.

Transactions (``_txn_index.py``): a transactional batch is an idempotent batch with the
transactional attribute bit; a marker is a control batch the leader builds
(``write_marker``) and appends as a data entry. Every replica feeds ``txns`` from the first
batch header of each applied entry (open transactions, aborted index); ``read_committed``
stops at the last stable offset and leaves out markers and aborted batches, per entry.
A leader whose partition could not join a producer's transaction (``_txn_join.py`` rule
3) refuses that producer's transactional batches up to that epoch for the rest of its
term (``refuse_transactional``) before its abort marker, so none lands after it.

Snapshot data (retention compaction point)::

    u8 version 5 | i64 log_start_offset | i64 cumulative_bytes
    | i64 compaction_below_offset | i64 tombstones_below_offset | i64 compaction_horizon_ms
    | u32 len | share table (``_share_state.ShareTable``, JSON)
    | u32 len | transaction index (``_txn_index.TxnIndex``) | producer table
    (version 4, still read: without the transaction index; version 3: without the share
    table either; version 2: without the two compaction fields; version 1: without the
    producer table either)

Log compaction (``cleanup.policy`` compact): the leader proposes control entries and every
replica rewrites the entries below the compaction point in place, in the background; the
rules and why replicas stay identical are in ``_compaction.py``. The compaction point
(``compaction_below_offset``, ``compaction_horizon_ms``) is part of the replicated state:
every replica moves it at the same log position (the componentwise maximum), and the
snapshot carries it so that a replica rebuilt from a snapshot knows it.

Share groups (``_share_state.py``): share operations are control entries (``b"S"``) of
this log; every replica applies them at their log position into ``shares``. The share
table in a snapshot, like the producer table, is the one of the applied index; it records
the index of the last share entry it includes, and later replays skip entries up to it.

The producer table is the one of the *applied* index (it may be ahead of the snapshot
index; replaying entries after the snapshot into it changes nothing, see
``ProducerStateTable.apply_batch``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
import time
import zlib
from array import array
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass
from typing import Callable, Mapping

from raftka.v1.recordbatch import (
    CONTROL_COMMIT,
    BatchHeader,
    CorruptBatchError,
    assign_offsets,
    build_control_batch,
    control_type,
    parse_header,
    raw_records,
    validate_records,
)
from raftka.raft import CompactedError, Entry, EntryKind, NotLeader, Ready, Role, Snapshot

from . import _compaction
from ._compaction import CONTROL_MAGIC, CompactionCommand, compact_entry, decode_control
from ._delayed import (
    IN_FLIGHT_MAX,
    RELEASE_BYTES_MAX,
    RELEASE_KEYS_MAX,
    RELEASE_MAGIC,
    SCHEDULED_HEADER_SIZE,
    SCHEDULED_MAGIC,
    DelayedState,
    Key,
    ScheduleIndex,
    encode_release_tag,
    encode_scheduled,
    scheduled_deliver_at,
)
from ._errors import BrokerError, Code
from ._host import Group
from ._produce_coalescer import ENTRY_FORMAT, EntryPacker
from ._producer_state import DUPLICATE, REJECT, PendingBatch, ProducerStateTable
from ._share_state import ENTRY_MAGIC as SHARE_MAGIC
from ._share_state import ShareOpError, ShareTable, decode_op, encode_op
from ._topic_configs import effective_configs
from ._txn_index import TxnIndex
from ._watchlist import Listing

ENTRY_MAGIC = 0x52
_HEADER = struct.Struct(">BBqqqq")
HEADER_SIZE = _HEADER.size
_SNAP = struct.Struct(">Bqq")
SNAPSHOT_VERSION = 2  # the __consumer_offsets replicas' snapshots (no compaction fields)
_SNAP_COMPACTION = struct.Struct(">qqq")  # version 3: compaction point after _SNAP
PARTITION_SNAPSHOT_VERSION = 5
_SHARE_LEN = struct.Struct(">I")  # version 4: u32 len | share table (JSON) before producers
_TXN_LEN = struct.Struct(">I")  # version 5: u32 len | transaction index after the shares
log = logging.getLogger("raftka.partition")
# producerId | producerEpoch | baseSequence of a batch, at byte 43 of its header
_PRODUCER_FIELDS = struct.Struct(">qhi")
_PRODUCER_FIELDS_AT = HEADER_SIZE + 43
_ATTRIBUTES = struct.Struct(">h")  # a batch's attributes, at byte 21 of its header
_ATTRIBUTES_AT = HEADER_SIZE + 21
_TRANSACTIONAL_BIT = 0x10
_SCHEDULED_TIMES = struct.Struct(">q")  # a scheduled entry's append time, at byte 10
_LAST_DELTA = struct.Struct(">i")  # a batch's lastOffsetDelta, at byte 23 of its header
_CONTROL_BIT = 0x20
_BATCH_POSITION = struct.Struct(">qi")  # a batch's baseOffset and batchLength (+12: its size)
_BATCH_HEADER_SIZE = 61


def _feed_producers(producers: ProducerStateTable, txns: TxnIndex, data: bytes, base: int,
                    last: int, at: int, index: int) -> None:
    """One data entry's batches, as the producer table and the transaction index see them:
    at apply, and when a restart replays the retained log (from batch header fields alone;
    records are never read, except the one record of a transaction marker). A marker or a
    transactional batch is alone in its entry; other entries may hold several requests'
    batches (``_produce_coalescer.py``), idempotent ones among them."""
    producers.observe_time(at)
    if len(data) < _PRODUCER_FIELDS_AT + _PRODUCER_FIELDS.size:
        return
    pid, epoch, seq = _PRODUCER_FIELDS.unpack_from(data, _PRODUCER_FIELDS_AT)
    if pid >= 0:
        (attributes,) = _ATTRIBUTES.unpack_from(data, _ATTRIBUTES_AT)
        if attributes & _CONTROL_BIT:  # a marker (only WriteTxnMarkers writes them)
            producers.apply_epoch(pid, epoch, at, index)
            commit, coordinator_epoch = _marker_fields(data)
            txns.apply_marker(pid, commit, base, index, coordinator_epoch)
            return
        if attributes & _TRANSACTIONAL_BIT:
            producers.apply_batch(pid, epoch, seq, last - base + 1, base, last, at, index)
            txns.apply_batch(pid, epoch, base, at, index)
            return
    pos, end = HEADER_SIZE, len(data)
    while pos + _BATCH_HEADER_SIZE <= end:
        batch_base, batch_length = _BATCH_POSITION.unpack_from(data, pos)
        pid, epoch, seq = _PRODUCER_FIELDS.unpack_from(data, pos + 43)
        if pid >= 0:
            (last_delta,) = _LAST_DELTA.unpack_from(data, pos + 23)
            producers.apply_batch(pid, epoch, seq, last_delta + 1, batch_base,
                                  batch_base + last_delta, at, index)
        pos += 12 + batch_length


def _feed_scheduled(producers: ProducerStateTable, data: bytes, index: int) -> None:
    """A scheduled entry (``_delayed.py``) of an idempotent producer takes its batch's
    sequences at its own log position, with offsets -1 (a retry is answered -1, -1); its
    release later is a data entry that does not feed the table again."""
    at = SCHEDULED_HEADER_SIZE + 43
    if len(data) < at + _PRODUCER_FIELDS.size:
        return
    pid, epoch, seq = _PRODUCER_FIELDS.unpack_from(data, at)
    if pid < 0:
        return
    append_ms = _SCHEDULED_TIMES.unpack_from(data, 10)[0]
    (last_delta,) = _LAST_DELTA.unpack_from(data, SCHEDULED_HEADER_SIZE + 23)
    producers.observe_time(append_ms)
    producers.apply_batch(pid, epoch, seq, last_delta + 1, -1, -1, append_ms, index)


def _marker_commits(data: bytes) -> bool:
    """Whether the marker in this entry commits (its control record's key). The leader
    built it (clients cannot send control batches), so it decodes; anything else would
    count as an abort, which hides data rather than showing an unfinished transaction."""
    return _marker_fields(data)[0]


def _marker_fields(data: bytes) -> tuple[bool, int]:
    """(commits, coordinator epoch) of the marker in this entry (see _marker_commits; the
    epoch is the control record value's int32 after its int16 version, -1 if unreadable)."""
    try:
        records = raw_records(data, HEADER_SIZE, verify=False)
    except CorruptBatchError:
        return False, -1
    if not records:
        return False, -1
    value = records[0].value
    epoch = (int.from_bytes(bytes(value[2:6]), "big", signed=True)
             if value is not None and len(value) >= 6 else -1)
    return control_type(records[0].key) == CONTROL_COMMIT, epoch
INDEX_CACHE_MAX = 1 << 20
REPLAY_CHUNK_BYTES = 4 << 20
# Compaction reads entries this many bytes at a time, and yields to the event loop whenever
# it has worked COMPACTION_SLICE_S since it last did (checked after each entry; an entry of
# max.message.bytes, 1 MiB, decodes in ~5-10 ms). Compressed entries decode to far more
# than their size, so the time slice, not the read size, bounds the stall.
COMPACTION_CHUNK_BYTES = 256 << 10
COMPACTION_SLICE_S = 0.002
PENDING_REQUESTS_MAX = 10_000
# A transaction marker waits this long for a request to share its Raft write with (the
# next transaction's batches usually come right behind it, and must follow it): one write
# and sync for both instead of two. Passes of the partition made for anything else (an
# apply, a follower's ack) leave it waiting. Delays read_committed visibility by as much
# at most. Not when requests wait already (they may be batches held for this very marker).
# 12 ms: our producer's next batch comes 7-9 ms after its commit returns (linger_ms=5);
# with 5 ms, and any pass taking the marker, it went alone in 37% of the partition's
# passes under the transactions benchmark, with 12 ms and only requests taking it, 8%.
MARKER_LINGER_S = 0.012
RELEASE_RETRY_S = 0.05  # a release proposal that was dropped is tried again after this
# Releases of one partition are at least this far apart (ms): at 10,000 due records/s with
# a distinct time per ms, one release per ms would cost a Raft round and sync each; 5 ms
# batches them ~5x for at most 5 ms of extra lateness.
RELEASE_INTERVAL_MS = 5
SCAN_CHUNK_BYTES = 64 << 10  # _next_data_entry's read size (at least one entry per read)


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
    retention_share_groups: bool = False  # a queue topic: finished records are deleted
    max_delivery_delay_ms: int = 7 * 24 * 3600 * 1000

    # cached: the background passes read them for every partition every second
    @functools.cached_property
    def compact(self) -> bool:
        return "compact" in self.cleanup_policy.split(",")

    @functools.cached_property
    def delete(self) -> bool:
        """Retention by time and size applies (Kafka: 'compact' alone keeps everything)."""
        return "delete" in self.cleanup_policy.split(",")

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
            retention_share_groups=c["retention.share.groups"] == "true",
            max_delivery_delay_ms=int(c["max.delivery.delay.ms"]),
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
                 "record_count", "transactional", "marker", "deliver_at_ms")

    def __init__(self, payload: bytes, spans: list[tuple[int, int]], acks: int,
                 future: asyncio.Future | None, producer_id: int = -1, epoch: int = -1,
                 sequence: int = -1, record_count: int = 0, transactional: bool = False,
                 marker: bool = False, deliver_at_ms: int = 0) -> None:
        self.deliver_at_ms = deliver_at_ms  # > 0: a scheduled entry (_delayed.py)
        self.transactional = transactional
        self.marker = marker  # a transaction marker (write_marker), not a client's batch
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

    # how long a transaction marker waits for a request to share its write with
    marker_linger_s = MARKER_LINGER_S

    def __init__(self, topic: str, partition: int, group_id: int, config: PartitionConfig,
                 mark_dirty: Callable[[int], None], clock_ms: Callable[[], int] | None = None,
                 schedule_index: ScheduleIndex | None = None):
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
        # (log's first index, raft index, header) of the first committed data entry at or
        # after that first index: immutable until the log start moves (_first_data_entry)
        self._first_data: tuple[int, int, EntryHeader] | None = None
        self._alloc_term = 0  # term in which _next_offset/_cumulative are valid (leader)
        self._next_offset = 0
        self._cumulative = 0
        self._acks_all: deque[_Waiter] = deque()
        self._acks_leader: deque[_Waiter] = deque()
        self._pending: list[_Pending] = []  # produce requests not yet proposed
        self.producers = ProducerStateTable()
        # -- transactions (_txn_index.py): replicated; and the leader's markers proposed
        # but not applied yet: producer id -> (epoch, raft index), so a batch of an
        # epoch such a marker fences is refused before the marker applies
        self.txns = TxnIndex()
        self._marker_epochs: dict[int, tuple[int, int]] = {}
        self._expiring: set[int] = set()  # producer ids whose expired txn we are aborting
        # _txn_join.py rule 3 (leader memory): producer id -> (epoch, error, term): in that
        # term, its transactional batches up to that epoch are refused, never written
        self._txn_refused: dict[int, tuple[int, BrokerError, int]] = {}
        # first index of the current leader term; idempotent batches wait until it applies
        self._term_start_index = 0
        # duplicates of proposed-but-unapplied batches, answered when the original applies
        self._dup_waiters: list[tuple[PendingBatch, asyncio.Future]] = []
        self._hw_changed = asyncio.Event()
        # -- share groups (_share_state.py): replicated state, and the leader's waiters for
        # the outcome of its share operations: raft index -> (term, future)
        self.shares = ShareTable()
        self._share_waiters: dict[int, tuple[int, asyncio.Future]] = {}
        self.share_changed = asyncio.Event()
        # -- delayed delivery (_delayed.py): the pending scheduled entries (derived from
        # the log, rebuilt at attach) and the leader's wake-up at the next due time
        self.delayed = DelayedState(schedule_index)
        self._release_timer: asyncio.TimerHandle | None = None
        self._marker_timer: asyncio.TimerHandle | None = None  # marker_linger_s
        self._release_timer_at = 0  # time (ms) the armed timer wakes at
        self._last_release_ms = 0  # when this leader last proposed releases
        # For metrics only (``_metrics.py``), kept where the data path already has the
        # numbers: the offset after the last record in this replica's durable log
        # (committed or not; from the entries each Ready made durable), and the cumulative
        # batch bytes up to the last applied data entry (minus ``_snapshot_cumulative``:
        # the bytes this replica stores).
        self.log_end_offset = 0
        self._applied_cumulative = 0
        # Called with (records, bytes) of every produce request accepted here (the
        # node's produce counters); per request, never per record.
        self.on_accepted: Callable[[int, int], None] | None = None
        # The node's periodic passes visit only the replicas these name (a walk over
        # every replica, several times a second, was most of an idle node's CPU at
        # thousands of partitions): ``on_role_change`` is called when this replica's Raft
        # role changes; the listings are its places on the node's watch lists
        # (``_watchlist.py``), noted when it holds share-group state (never dropped),
        # applied data entries (what retention may drop) and an open transaction.
        self.on_role_change: Callable[[], None] | None = None
        self.share_groups_listing: Listing[PartitionReplica] = Listing(self)
        self.data_listing: Listing[PartitionReplica] = Listing(self)
        self.transactions_listing: Listing[PartitionReplica] = Listing(self)
        self._role = Role.FOLLOWER
        # node id -> the log entry format of its last hello (the broker's, kept by the
        # Raft transport): whether every replica reads entries that hold several
        # requests' idempotent batches (_produce_coalescer.py rule 5)
        self.peer_entry_formats: Mapping[int, int] = {}
        # -- log compaction (see _compaction.py). Replicated state, moved by applied
        # control entries (and restored from snapshots); both never decrease:
        self.compaction_below_offset = 0
        """Records below this offset are compacted (or will be by the background pass)."""
        self.tombstones_below_offset = 0
        self.compaction_horizon_ms = 0
        """Tombstones below ``tombstones_below_offset`` appended before this time (ms)
        are removed (``_compaction.py`` rule 2)."""
        self._compaction_entry_index = 0  # raft index of the last applied control entry
        # Local progress: the point up to which this replica's own entries are compacted
        # (the background pass finished); 0 after a restart, so the first pass reads all.
        self._compacted_through = 0
        self._compaction_proposed_index = 0  # leader: our control entry not yet applied
        self._compaction_running = False
        self._clean_bytes = 0  # batch bytes below the local compaction point, after it
        self._clean_cumulative = 0  # cumulative_bytes at the local compaction point
        # -- progress counters for metrics (monotonic on this replica since it started)
        self.compaction_runs = 0
        """Background compaction passes this replica completed."""
        self.compacted_records_removed = 0
        """Records removed by those passes."""
        self.compacted_bytes_removed = 0
        """Batch bytes removed by those passes (stored size before minus after)."""
        self.compaction_last_run_ms = 0
        """Wall-clock time (ms) at which the last pass finished; 0 if none ran yet."""
        self.compaction_last_duration_s = 0.0
        """How long the last pass took, in seconds (it yields to the event loop between
        steps, so this is elapsed time, not CPU time)."""

    # ------------------------------------------------------------------ wiring
    def attach(self, group: Group) -> None:
        """Called once the Raft group exists; recovers the high watermark from the log."""
        self.group = group
        node = group.node
        self.applied_index = node.applied_index
        _, header = self._next_data_entry_backwards(node.applied_index, node.first_index)
        if header is not None:
            self._advance_hw(header.last_offset + 1)
            self._applied_cumulative = header.cumulative_bytes
        _, tail = self._next_data_entry_backwards(node.last_index, node.applied_index + 1)
        self.log_end_offset = max(self.high_watermark,
                                  tail.last_offset + 1 if tail is not None else 0)
        self.delayed.reset()
        self._replay_producers(node)

    def _replay_producers(self, node) -> None:
        """Feed the producer table from the entries between the snapshot and the applied
        index: the host does not re-apply them after a restart, and the snapshot's table
        only covers what retention compacted. Reads batch headers only; replaying an entry
        the table already reflects changes nothing (``apply_batch`` is keyed on the index).
        Costs one pass over the retained log at startup (see node/README.md)."""
        producers, txns = self.producers, self.txns
        index, last = node.first_index, node.applied_index
        hw = self.log_start_offset
        # the offset index, as applying these entries would have built it: retention and
        # fetches look there first, and a partition no longer written to after a restart
        # must still age out (retention visits only the replicas whose index holds some)
        offsets, raft_indexes = self._index_offsets, self._index_raft
        indexed_through = raft_indexes[-1] if raft_indexes else 0
        while index <= last:
            entries = node.log_entries(index, last + 1, REPLAY_CHUNK_BYTES)
            if not entries:
                break
            for e in entries:
                data = e.data
                if e.kind != EntryKind.NORMAL or not data:
                    continue
                if len(data) >= HEADER_SIZE and data[0] == ENTRY_MAGIC:
                    _, _, base, lst, at, _ = _HEADER.unpack_from(data, 0)
                    if e.index > indexed_through:
                        offsets.append(base)
                        raft_indexes.append(e.index)
                    if not self.delayed.apply_data(e.index, e.term):  # not a release
                        _feed_producers(producers, txns, data, base, lst, at, e.index)
                    hw = lst + 1
                elif data[0] == SCHEDULED_MAGIC:
                    self.delayed.apply_scheduled(e.index, data)
                    _feed_scheduled(producers, data, e.index)
                elif data[0] == RELEASE_MAGIC:
                    self.delayed.apply_tag(e.index, e.term, data)
                elif data[0] == SHARE_MAGIC:
                    self._apply_share(e, hw)
                elif data[0] == CONTROL_MAGIC:
                    # the host does not re-apply committed entries at a restart: take the
                    # compaction point from them (the background pass redoes it)
                    command = decode_control(data)
                    if command is not None:
                        self._apply_compaction(command)
                        self._compaction_entry_index = e.index
            index = entries[-1].index + 1
            self._bound_index()
        if raft_indexes:
            self.data_listing.note()

    def _header_at(self, index: int) -> EntryHeader | None:
        assert self.group is not None
        try:
            entries = self.group.node.log_entries(index, index + 1)
        except CompactedError:
            return None
        return entry_header(entries[0]) if entries else None

    # ------------------------------------------------------------------ StateMachine
    def restore(self, snapshot: Snapshot) -> None:
        self._first_data = None
        version, log_start, cumulative = _SNAP.unpack_from(snapshot.data, 0)
        if version == 1:
            self.producers = ProducerStateTable()
        elif version == 2:
            self.producers = ProducerStateTable.decode(memoryview(snapshot.data)[_SNAP.size:])
        elif version in (3, 4, PARTITION_SNAPSHOT_VERSION):
            below, tombstones_below, horizon = _SNAP_COMPACTION.unpack_from(snapshot.data,
                                                                            _SNAP.size)
            self._apply_compaction(CompactionCommand(below, tombstones_below, horizon, 0))
            self._compaction_entry_index = max(self._compaction_entry_index,
                                               snapshot.meta.index)
            pos = _SNAP.size + _SNAP_COMPACTION.size
            if version >= 4:
                (n,) = _SHARE_LEN.unpack_from(snapshot.data, pos)
                pos += _SHARE_LEN.size
                shares = ShareTable.decode(bytes(snapshot.data[pos:pos + n]))
                if shares.applied_index >= self.shares.applied_index:
                    self.shares = shares
                    self._note_share_groups()
                pos += n
            if version >= 5:
                (n,) = _TXN_LEN.unpack_from(snapshot.data, pos)
                pos += _TXN_LEN.size
                txns = TxnIndex.decode(memoryview(snapshot.data)[pos:pos + n])
                if txns.applied_index >= self.txns.applied_index:
                    self.txns = txns
                    if txns.open:
                        self.transactions_listing.note()
                pos += n
            self.producers = ProducerStateTable.decode(memoryview(snapshot.data)[pos:])
        else:
            raise ValueError(f"partition {self.topic}/{self.partition}: unknown snapshot v{version}")
        self.log_start_offset = max(self.log_start_offset, log_start)
        self.txns.truncate_below(self.log_start_offset)
        self._snapshot_cumulative = cumulative
        self._applied_cumulative = max(self._applied_cumulative, cumulative)
        self._advance_hw(log_start)
        self.log_end_offset = max(self.log_end_offset, log_start)
        self.applied_index = max(self.applied_index, snapshot.meta.index)
        self._drop_index_below(snapshot.meta.index + 1)
        self.delayed.drop_through(snapshot.meta.index)

    def apply(self, entries: list[Entry]) -> None:
        offsets, raft_indexes = self._index_offsets, self._index_raft
        hw = self.high_watermark
        cumulative = self._applied_cumulative
        magic = ENTRY_MAGIC
        producers, txns = self.producers, self.txns
        for e in entries:
            data = e.data
            if e.kind == EntryKind.NORMAL and len(data) >= HEADER_SIZE and data[0] == magic:
                _, _, base, last, at, cumulative = _HEADER.unpack_from(data, 0)
                offsets.append(base)
                raft_indexes.append(e.index)
                hw = last + 1
                if not self.delayed.apply_data(e.index, e.term):  # not a release
                    _feed_producers(producers, txns, data, base, last, at, e.index)
            elif e.kind == EntryKind.NORMAL and data[:1] == b"D":
                self.delayed.apply_scheduled(e.index, data)
                _feed_scheduled(producers, data, e.index)
            elif e.kind == EntryKind.NORMAL and data[:1] == b"E":
                self.delayed.apply_tag(e.index, e.term, data)
            elif e.kind == EntryKind.NORMAL and data[:1] == b"S":
                self._apply_share(e, hw)
            elif e.kind == EntryKind.NORMAL and data[:1] == b"C":
                command = decode_control(data)
                if command is not None:
                    self._apply_compaction(command)
                    self._compaction_entry_index = e.index
                    if e.index == self._compaction_proposed_index:
                        self._compaction_proposed_index = 0
        self.applied_index = entries[-1].index
        self._applied_cumulative = cumulative
        if producers.pending_count:
            producers.applied_through(self.applied_index)
        if self._marker_epochs:
            applied = self.applied_index
            for pid in [p for p, (_, i) in self._marker_epochs.items() if 0 < i <= applied]:
                del self._marker_epochs[pid]
        if self._dup_waiters:
            self._resolve_duplicates(entries)
        if self._pending and self._term_start_index and self.applied_index >= self._term_start_index:
            self._mark_dirty(self.group_id)  # a queue held for the producer state may go
        self._bound_index()
        if raft_indexes:
            self.data_listing.note()
        if txns.open:
            self.transactions_listing.note()
        self._advance_hw(hw)
        self._resolve(self._acks_all, entries)
        if self._share_waiters:
            self._fail_lost_share_ops(entries)
        if self.delayed.changed or (self.delayed.pending_count
                                    and self._release_timer is None):
            self.delayed.changed = False
            self._arm_release_timer()

    def on_ready(self, rd: Ready) -> None:
        if rd.role != self._role:
            self._role = rd.role
            if self.on_role_change is not None:
                self.on_role_change()
        if rd.role != Role.LEADER and self._alloc_term:
            self._alloc_term = 0
            self.producers.clear_pending()
            self._marker_epochs.clear()
            self._txn_refused.clear()
        if rd.role != Role.LEADER and self._release_timer is not None:
            self._cancel_release_timer()
        if rd.entries:
            if self._acks_leader:
                self._resolve(self._acks_leader, rd.entries)
            self._note_log_end(rd.entries)

    def _note_log_end(self, entries: list[Entry]) -> None:
        """``log_end_offset`` after ``entries`` became durable here (a truncated tail is
        replaced by the entries that overwrite it, so the last data entry decides)."""
        magic = ENTRY_MAGIC
        for e in reversed(entries):
            data = e.data
            if e.kind == EntryKind.NORMAL and len(data) >= HEADER_SIZE and data[0] == magic:
                self.log_end_offset = max(_HEADER.unpack_from(data, 0)[3] + 1,
                                          self.high_watermark)
                return

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
    async def produce(self, payload: bytes, acks: int, timeout_s: float,
                      deliver_at_ms: int = 0) -> tuple[int, int]:
        """Append ``payload`` (RecordBatch v2 bytes, validated here); returns (base, last)
        offset, or (-1, -1) with acks=0 or a delivery time in the future (``deliver_at_ms``:
        stored as a scheduled entry, ``_delayed.py``). Raises BrokerError.

        Requests are not proposed one by one: they queue here and the host's ready loop
        proposes everything queued as one batch of entries per pass (``before_ready``), so
        concurrent producers share one replication round and one sync."""
        future = self.submit(payload, acks, deliver_at_ms=deliver_at_ms)
        if future is None:
            return -1, -1
        return await self.wait_acked(future, acks, timeout_s)

    def submit(self, payload: bytes, acks: int, transactional: bool = True,
               deliver_at_ms: int = 0) -> asyncio.Future | None:
        """Validate and queue ``payload``; the future of its (base, last) offsets (None with
        acks=0; (-1, -1) for a delivery time ``deliver_at_ms`` in the future). Synchronous,
        so a caller that submits in arrival order gets the requests proposed (and
        sequence-checked) in that order. ``transactional=False`` refuses transactional
        batches (a door that does not serve transactions). Raises BrokerError."""
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
        if deliver_at_ms:
            deliver_at_ms = self._check_delivery_time(deliver_at_ms)
        spans, headers = self._validated_batches(payload, transactional)
        header = headers[0]
        pid = max(h.producer_id for h in headers)
        if deliver_at_ms and header.is_transactional:
            raise BrokerError(Code.INVALID_REQUEST, "delayed batches cannot be transactional "
                              f"(producer id {pid}): a delayed batch gets its offsets when it "
                              "is due, after the transaction ended; send it outside the "
                              "transaction")
        if header.is_transactional and acks == 0:
            raise BrokerError(Code.INVALID_REQUEST, "transactional batches need acks=all "
                              "(or 1): the producer must know they were written before it "
                              "commits")
        if pid >= 0:
            if len(spans) != 1:
                raise BrokerError(Code.INVALID_REQUEST, "an idempotent produce request must "
                                  "hold exactly one record batch (sequences are per batch)")
            if header.producer_epoch < 0 or header.base_sequence < 0 or not header.record_count:
                raise BrokerError(Code.INVALID_REQUEST, f"idempotent batch of producer id "
                                  f"{pid} has epoch {header.producer_epoch}, base sequence "
                                  f"{header.base_sequence} and {header.record_count} records; "
                                  "epoch and sequence must be >= 0 and the batch not empty")
        if self.on_accepted is not None:
            records = 0
            for h in headers:
                records += h.record_count
            self.on_accepted(records, len(payload))
        future = asyncio.get_running_loop().create_future() if acks != 0 else None
        self._pending.append(_Pending(payload, spans, acks, future, pid, header.producer_epoch,
                                      header.base_sequence, header.record_count,
                                      header.is_transactional, deliver_at_ms=deliver_at_ms))
        self._mark_dirty(self.group_id)
        return future

    def _check_delivery_time(self, deliver_at_ms: int) -> int:
        """The delivery time to schedule (0: now, an ordinary write); refuses a negative
        time and one beyond the topic's ``max.delivery.delay.ms`` by the leader's clock."""
        if deliver_at_ms < 0:
            raise BrokerError(Code.INVALID_REQUEST, f"deliver_at_ms {deliver_at_ms} is "
                              "negative; give a time in ms since the Unix epoch (a delay "
                              "cannot be negative), or 0 to deliver at once")
        now = self._clock_ms()
        limit = self.config.max_delivery_delay_ms
        if deliver_at_ms - now > limit:
            raise BrokerError(Code.INVALID_REQUEST, f"deliver_at_ms {deliver_at_ms} is "
                              f"{deliver_at_ms - now} ms ahead of the broker's clock, beyond "
                              f"max.delivery.delay.ms ({limit}) of topic {self.topic}; "
                              "deliver sooner or raise the topic's max.delivery.delay.ms")
        return deliver_at_ms if deliver_at_ms > now else 0

    def _validated_batches(self, payload: bytes, transactional: bool = True
                           ) -> tuple[list[tuple[int, int]], list[BatchHeader]]:
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
                if header.is_control:
                    raise BrokerError(Code.INVALID_REQUEST, "control batches (transaction "
                                      "markers) are written by the transaction coordinator "
                                      "(TxnMarkers.WriteTxnMarkers), never produced")
                if header.is_transactional:
                    self._check_transactional(header, transactional)
                if not header.record_count:
                    raise BrokerError(Code.INVALID_REQUEST, f"the record batch at byte {pos} "
                                      "holds no records; send at least one record")
                validate_records(payload, pos, header)
                if self.config.compact:
                    self._check_keys(payload, pos)
            except CorruptBatchError as exc:
                raise BrokerError(Code.CORRUPT_BATCH, f"{self.topic}/{self.partition} "
                                  f"refused the produce request: {exc}") from None
            end = pos + header.size
            spans.append((pos, end))
            headers.append(header)
            pos = end
        return spans, headers

    def _check_transactional(self, header: BatchHeader, allowed: bool) -> None:
        if not allowed:
            raise BrokerError(Code.INVALID_REQUEST, "transactional batches are not "
                              "supported on this listener; use the gRPC API")
        if header.producer_id < 0 or header.producer_epoch < 0:
            raise BrokerError(Code.INVALID_REQUEST, "a transactional batch needs a producer "
                              "id and epoch (InitProducerId); this one has producer id "
                              f"{header.producer_id} epoch {header.producer_epoch}")
        if self.config.compact:
            raise BrokerError(Code.INVALID_REQUEST, f"topic {self.topic} is compacted "
                              "(cleanup.policy=compact): transactional batches are not "
                              "supported on compacted topics yet")

    def _check_keys(self, payload: bytes, pos: int) -> None:
        """A compacted topic refuses records without a key (Kafka does too: compaction
        keeps the last record *of each key*). Decodes the batch a second time and looks
        at every record in Python: a cost only compacted topics pay."""
        for r in raw_records(payload, pos, verify=False):
            if r.key is None:
                raise BrokerError(
                    Code.INVALID_REQUEST, f"record at offset delta {r.offset} of the batch "
                    f"at byte {pos} has no key; topic {self.topic} is compacted "
                    "(cleanup.policy=compact) and compaction keeps the last record of each "
                    "key, so every record needs one")

    async def wait_acked(self, future: asyncio.Future, acks: int,
                         timeout_s: float) -> tuple[int, int]:
        """The request's offsets once acknowledged per ``acks``; BrokerError NO_QUORUM
        after ``timeout_s``. Awaits the future itself, so the answer resumes the caller in
        the loop iteration after the apply (``wait_for(shield(...))`` took three). A
        failed or cancelled future (the timer, or the caller cancelled) is never proposed
        if still queued and is skipped if proposed."""
        timer = asyncio.get_running_loop().call_later(timeout_s, _expire, future, acks,
                                                      timeout_s)
        try:
            return await future
        finally:
            timer.cancel()

    def before_ready(self) -> None:
        """Propose every queued produce request as one batch of entries (the replicate
        batcher). Offsets are assigned here, in proposal order. Due delayed records are
        released first (``_propose_releases``)."""
        if self.delayed.pending_count:
            try:
                self._propose_releases()
            except Exception:  # noqa: BLE001 - a bug here must not stop the ready loop
                log.exception("%s/%d: releasing delayed records failed; retrying",
                              self.topic, self.partition)
                self._cancel_release_timer()
                self._release_timer = asyncio.get_running_loop().call_later(
                    RELEASE_RETRY_S * 20, self._release_due)
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        group = self.group
        node = group.node if group is not None and not group.closed else None
        if self._marker_timer is not None:
            if node is not None and node.role == Role.LEADER and all(
                    r.marker for r in pending):
                # a pass made for something else (an apply, an ack) proposes nothing of its
                # own: lingering markers wait on for a request to share a write with
                self._pending = pending
                return
            self._marker_timer.cancel()  # the markers go in this pass (or fail)
            self._marker_timer = None
        if node is None:
            _fail(pending, BrokerError(Code.UNKNOWN_PARTITION,
                                       f"{self.topic}/{self.partition} is not hosted here"))
            return
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
        if len(pending) > 1 and any(r.marker for r in pending):
            # markers first: a batch of a producer's next epoch may wait for one (below)
            pending.sort(key=lambda r: not r.marker)
        packer = EntryPacker(_HEADER, ENTRY_MAGIC, self._next_offset, self._cumulative,
                             self._clock_ms(), self.config.max_message_bytes,
                             self.coalesce_idempotent())
        placed: list[tuple[_Pending, int, int, int]] = []  # request, entry number, offsets
        accepted: list[PendingBatch] = []
        duplicates: list[tuple[PendingBatch, asyncio.Future]] = []
        producers = self.producers
        held: list[_Pending] = []  # wait for a marker (_awaits_marker), in their order
        held_pids: set[int] = set()
        markers: dict[int, int] = {}  # producer id: epoch of its marker placed this pass
        for req in pending:
            if req.future is not None and req.future.done():
                continue  # the producer gave up before we proposed: never written
            if req.marker:
                current = producers.current_epoch(req.producer_id)
                if current is not None and req.epoch < current:
                    _fail([req], BrokerError(Code.INVALID_PRODUCER_EPOCH, (
                        f"marker for producer id {req.producer_id} epoch {req.epoch}: the "
                        f"partition has seen epoch {current}; not written")))
                    continue
                markers[req.producer_id] = req.epoch
            elif req.producer_id >= 0:
                if req.producer_id in held_pids or (req.transactional
                                                    and self._awaits_marker(req, markers)):
                    held.append(req)
                    held_pids.add(req.producer_id)
                    continue
                error = self._txn_refusal(req, markers.get(req.producer_id))
                if error is not None:
                    _fail([req], error)
                    continue
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
            if req.deliver_at_ms:  # a scheduled entry: no offsets until it is released
                number = packer.add_entry(encode_scheduled(req.deliver_at_ms, packer.now_ms,
                                                           req.payload))
                placed.append((req, number, -1, -1))
                if req.producer_id >= 0:  # its sequences are taken now (duplicates: -1, -1)
                    accepted.append(producers.add_pending(req.producer_id, req.epoch,
                                                          req.sequence, req.record_count,
                                                          -1, -1))
                continue
            number, base, last = packer.add(req.payload, req.spans, req.producer_id,
                                            alone=req.marker or req.transactional)
            placed.append((req, number, base, last))
            if req.producer_id >= 0 and not req.marker:
                accepted.append(producers.add_pending(req.producer_id, req.epoch, req.sequence,
                                                      req.record_count, base, last))
        if held:  # re-examined at the next pass (every apply makes one while any wait)
            self._pending = held + self._pending
        datas = packer.finish()
        if datas:
            try:
                first_index, _ = node.propose_batch(datas)
            except Exception as exc:  # NotLeader / ProposalDropped: nothing was written
                producers.drop_pending(accepted)
                error = _proposal_error(exc, node.leader_id)
                _fail([p for p, _, _, _ in placed], error)
                for _, future in duplicates:
                    if not future.done():
                        future.set_exception(error)
                return
            self._next_offset, self._cumulative = packer.next_offset, packer.cumulative
            term = node.term
            batches = iter(accepted)
            for req, number, base, last in placed:
                index = first_index + number
                if req.marker:
                    self._marker_epochs[req.producer_id] = (req.epoch, index)
                elif req.producer_id >= 0:
                    batch = next(batches)
                    batch.index, batch.term = index, term
                if req.future is None:
                    continue
                waiter = _Waiter(index, term, req.future, base, last)
                (self._acks_all if req.acks < 0 else self._acks_leader).append(waiter)
        # a duplicate of a batch still in flight is answered when the original applies
        # (acks=1 included: its own durable write is long past)
        self._dup_waiters.extend(duplicates)

    def _awaits_marker(self, req: _Pending, placed: dict[int, int]) -> bool:
        """A transactional batch of a newer epoch than the producer's transaction open
        here waits until that transaction's marker is proposed ahead of it: the coordinator
        begins the next transaction before the previous one's markers are written
        (``_txn_service.py`` rule 7), and the marker must end the previous one, not this."""
        open_txn = self.txns.open.get(req.producer_id)
        if open_txn is None or open_txn.epoch >= req.epoch:
            return False
        marker = placed.get(req.producer_id)
        if marker is None:
            proposed = self._marker_epochs.get(req.producer_id)
            marker = proposed[0] if proposed is not None else None
        return marker is None or marker < open_txn.epoch

    def coalesce_idempotent(self) -> bool:
        """Rule 5 of ``_produce_coalescer.py``: every other replica of this partition (voter
        or learner) said in its last hello that it reads entries holding several
        requests' idempotent batches."""
        node = self._require_group().node
        me, formats = node.id, self.peer_entry_formats
        conf = node.conf_state
        for replica in (*conf.voters, *conf.learners):
            if replica != me and formats.get(replica, 0) < ENTRY_FORMAT:
                return False
        return True

    def _txn_refusal(self, req: _Pending, placed_marker: int | None = None
                     ) -> BrokerError | None:
        """Transaction rules for an idempotent batch at proposal time (the leader's view:
        applied state plus its own proposed markers, and ``placed_marker``: the epoch of
        the producer's marker placed ahead of it in this pass), or None to go on."""
        pid = req.producer_id
        refused = self._txn_refused.get(pid)
        if refused is not None and req.transactional and req.epoch <= refused[0] \
                and refused[2] == self._alloc_term:
            return refused[1]
        # a batch that waited for a marker (_awaits_marker) is placed in the marker's pass,
        # before the marker is among the proposed ones: a fencing marker of a later epoch
        # (a timeout's abort) must fence it too, or it opens a transaction nobody ends
        marker = self._marker_epochs.get(pid)
        if placed_marker is not None and (marker is None or placed_marker > marker[0]):
            marker = (placed_marker, 0)
        if marker is not None and req.epoch < marker[0]:
            return BrokerError(Code.PRODUCER_FENCED, (
                f"producer id {pid} epoch {req.epoch} is fenced: a transaction marker of "
                f"epoch {marker[0]} was written; a newer producer instance took over"))
        if not req.transactional and pid in self.txns.open:
            return BrokerError(Code.INVALID_TXN_STATE, (
                f"producer id {pid} has an open transaction on {self.topic}/"
                f"{self.partition}: its batches must be transactional until it ends"))
        return None

    def refuse_transactional(self, producer_id: int, epoch: int, error: BrokerError) -> None:
        """Leader only (``_txn_join.py`` rule 3): from now on in this term, refuse the
        producer's transactional batches up to ``epoch`` with ``error`` before they are
        written (the ones already proposed stay ahead of the abort marker that follows)."""
        term = self._require_group().node.term
        known = self._txn_refused.get(producer_id)
        if known is None or known[2] != term or known[0] < epoch:
            self._txn_refused[producer_id] = (epoch, error, term)

    def expired_transactions(self, max_timeout_ms: int) -> list[tuple[int, int]]:
        """Leader only: (producer id, epoch) of the transactions open here for longer than
        ``max_timeout_ms`` since their first batch (by its append time, our own clock: the
        leader appended it or applied it), that no abort of ours is writing already."""
        group = self.group
        if (not self.txns.open or group is None or group.closed
                or group.node.role != Role.LEADER):
            return []
        cutoff = self._clock_ms() - max_timeout_ms
        return [(pid, t.epoch) for pid, t in sorted(self.txns.open.items())
                if t.start_ms < cutoff and pid not in self._marker_epochs
                and pid not in self._expiring]

    async def abort_expired(self, producer_id: int, epoch: int, timeout_s: float) -> int:
        """Abort one expired transaction (``expired_transactions``) with the epoch it
        began with; its offset. The producer is not fenced: a late batch of its would open
        a new transaction, which expires in turn."""
        self._expiring.add(producer_id)
        try:
            current = self.producers.current_epoch(producer_id)
            return await self.write_marker(producer_id, max(epoch, current or 0), False, -1,
                                           timeout_s)
        finally:
            self._expiring.discard(producer_id)

    async def write_marker(self, producer_id: int, epoch: int, commit: bool,
                           coordinator_epoch: int, timeout_s: float) -> int:
        """Leader only: append a commit/abort marker for the producer's transaction (Kafka's
        control batch) through the Raft log; its offset once committed. Raises
        BrokerError (INVALID_PRODUCER_EPOCH for an epoch older than the producer's)."""
        group = self._require_group()
        node = group.node
        if node.role != Role.LEADER:
            raise _not_leader(node.leader_id)
        if producer_id < 0 or not 0 <= epoch <= 32767:
            raise BrokerError(Code.INVALID_REQUEST, f"a marker needs a producer id >= 0 and "
                              f"an epoch in 0..32767, got {producer_id}/{epoch}")
        known = self.txns.coordinator_epochs.get(producer_id, -1)
        if 0 <= coordinator_epoch < known:  # -1: our own abort (expired_transactions)
            raise BrokerError(Code.TRANSACTION_COORDINATOR_FENCED, (
                f"marker for producer id {producer_id} from coordinator epoch "
                f"{coordinator_epoch}: this partition has applied a marker of coordinator "
                f"epoch {known}; a newer coordinator took over; not written"))
        if len(self._pending) >= PENDING_REQUESTS_MAX:
            raise BrokerError(Code.LEADER_NOT_AVAILABLE, "too many produce requests are "
                              "waiting for this partition; retry with backoff", retriable=True)
        payload = build_control_batch(producer_id, epoch, commit, coordinator_epoch,
                                      self._clock_ms())
        future = asyncio.get_running_loop().create_future()
        waiting = bool(self._pending)  # e.g. the next transaction's batches, held for it
        self._pending.append(_Pending(payload, [(0, len(payload))], -1, future, producer_id,
                                      epoch, -1, 1, transactional=True, marker=True))
        if waiting or self.marker_linger_s <= 0:
            self._mark_dirty(self.group_id)
        elif self._marker_timer is None:
            self._marker_timer = asyncio.get_running_loop().call_later(
                self.marker_linger_s, self._marker_due)
        base, _ = await self.wait_acked(future, -1, timeout_s)
        return base

    def _marker_due(self) -> None:
        self._marker_timer = None
        self._mark_dirty(self.group_id)

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
        self._marker_epochs.clear()
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
            try:  # not wait_for: its extra task costs the woken fetch two loop iterations
                async with asyncio.timeout(remaining):
                    await self._hw_changed.wait()
            except TimeoutError:
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

    @property
    def last_stable_offset(self) -> int:
        """The first offset of the oldest open transaction, else the high watermark."""
        return self.txns.last_stable_offset(self.high_watermark)

    async def wait_for_stable(self, offset: int, timeout_s: float) -> None:
        """Return when the last stable offset passes ``offset`` or after ``timeout_s``
        (it moves only when an entry applies, i.e. with the high watermark)."""
        deadline = time.monotonic() + timeout_s
        while self.last_stable_offset <= offset:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:  # not wait_for: its extra task costs the woken fetch two loop iterations
                async with asyncio.timeout(remaining):
                    await self._hw_changed.wait()
            except TimeoutError:
                return

    def read_committed(self, offset: int, max_bytes: int) -> tuple[bytes, int]:
        """``read`` for isolation read_committed: only below the last stable offset, and
        without control batches or batches of aborted transactions. Decided per entry from
        its first batch header (a transactional batch is alone in its entry); what is left
        out is skipped (the next offset jumps over it). Records are never decoded."""
        lso = self.last_stable_offset
        if offset >= lso and self.log_start_offset <= offset <= self.high_watermark:
            return b"", offset
        group = self._require_group()
        if offset < self.log_start_offset or offset > self.high_watermark:
            raise BrokerError(
                Code.OFFSET_OUT_OF_RANGE,
                f"offset {offset} is outside [{self.log_start_offset}, {self.high_watermark}] "
                f"of {self.topic}/{self.partition}; seek to the log start or the end",
            )
        try:
            index = self._find_index(offset)
            entries = group.node.log_entries(index, self.applied_index + 1, max_bytes)
        except CompactedError:
            raise BrokerError(
                Code.OFFSET_OUT_OF_RANGE,
                f"offset {offset} of {self.topic}/{self.partition} was just removed by "
                f"retention; the log now starts at {self.log_start_offset}",
            ) from None
        aborted = self.txns.aborted_between(offset, lso) if self.txns.aborted else {}
        parts = []
        next_offset = offset
        minimum = _PRODUCER_FIELDS_AT + _PRODUCER_FIELDS.size
        for e in entries:
            header = entry_header(e)
            if header is None:
                continue
            if header.base_offset >= lso:
                break
            next_offset = header.last_offset + 1
            data = e.data
            if len(data) >= minimum:
                (attributes,) = _ATTRIBUTES.unpack_from(data, _ATTRIBUTES_AT)
                if attributes & _CONTROL_BIT:
                    continue
                if attributes & _TRANSACTIONAL_BIT and aborted:
                    ranges = aborted.get(_PRODUCER_FIELDS.unpack_from(data,
                                                                      _PRODUCER_FIELDS_AT)[0])
                    base = header.base_offset
                    if ranges and any(first <= base <= last for first, last in ranges):
                        continue
            parts.append(memoryview(data)[HEADER_SIZE:])
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

    def offset_after_index(self, index: int) -> int:
        """A lower bound of the offset after the records in raft entries up to ``index``
        (a move's progress: what a replica whose log matches up to ``index`` holds)."""
        if index >= self.applied_index:
            return self.high_watermark
        raft_indexes = self._index_raft
        if not raft_indexes or index < raft_indexes[0]:
            return self.log_start_offset  # older than the in-memory index
        position = bisect_right(raft_indexes, index)
        if position < len(raft_indexes):
            return self._index_offsets[position]
        return self.high_watermark

    def stored_bytes(self) -> int:
        """Record-batch bytes of the committed log this replica keeps (after retention)."""
        return max(self._applied_cumulative - self._snapshot_cumulative, 0)

    def append_time_ms_at(self, offset: int) -> int | None:
        """When the leader appended the record at ``offset`` (committed, within the log;
        its entry's append time), or None if it is not in this replica's committed log.
        One entry read (the in-memory offset index finds it); for metrics."""
        if self.group is None or self.group.closed:
            return None
        if offset < self.log_start_offset or offset >= self.high_watermark:
            return None
        try:
            header = self._header_at(self._find_index(offset))
        except (CompactedError, BrokerError):
            return None
        return header.append_time_ms if header is not None else None

    def append_time_ms_after(self, index: int, scan_max: int = 4) -> int | None:
        """Append time of the first data entry at Raft index >= ``index`` (within
        ``scan_max`` entries of the log, durable or not), or None. For the replication lag
        of a follower whose match index is ``index - 1``."""
        group = self.group
        if group is None or group.closed:
            return None
        node = group.node
        hi = min(node.last_index, index + scan_max - 1)
        for i in range(max(index, node.first_index), hi + 1):
            header = self._header_at(i)
            if header is not None:
                return header.append_time_ms
        return None

    def _next_data_entry(self, index: int, hi: int) -> tuple[int, EntryHeader | None]:
        """The first data entry in ``[index, hi]``. Reads the log in chunks (not an entry
        per read): runs of small control entries between data entries (share groups
        write one per acquisition and acknowledgement) cost one read, not one each."""
        node = self._require_group().node
        i = index
        while i <= hi:
            try:
                entries = node.log_entries(i, hi + 1, SCAN_CHUNK_BYTES)
            except CompactedError:
                i = max(i + 1, node.first_index)
                continue
            if not entries:
                break
            for e in entries:
                header = entry_header(e)
                if header is not None:
                    return e.index, header
            i = entries[-1].index + 1
        return hi, None

    def _bound_index(self) -> None:
        """Past ``INDEX_CACHE_MAX`` entries the offset index drops its oldest half (reads
        below it fall back to the log)."""
        if len(self._index_offsets) > INDEX_CACHE_MAX:
            del self._index_offsets[: INDEX_CACHE_MAX // 2]
            del self._index_raft[: INDEX_CACHE_MAX // 2]

    def _drop_index_below(self, index: int) -> None:
        raft_indexes = self._index_raft
        cut = bisect_right(raft_indexes, index - 1)
        if cut:
            del raft_indexes[:cut]
            del self._index_offsets[:cut]

    # ------------------------------------------------------------------ retention
    @property
    def holds_data(self) -> bool:
        """Whether applied data entries are above the snapshot (retention has something to
        look at; ``retention_point`` is None otherwise)."""
        return bool(self._index_raft)

    def retention_point(self) -> tuple[int, bytes] | None:
        """The highest applied index whose entries retention drops (entries are removed
        whole, up to and including it), with the snapshot data for that point, or None."""
        if not self._index_raft:
            # no applied data entry above the snapshot (the index holds every one, less
            # the oldest half when it overflows): nothing to drop, and no need to read the
            # log nor the storage's first index (every idle partition every maintenance
            # pass: a third of an idle node's CPU at 2,000 partitions)
            return None
        node = self._require_group().node
        first, last = node.first_index, self.applied_index
        if last < first:
            return None
        cut = 0
        cfg = self.config
        finished = self.share_retention_offset() if cfg.retention_share_groups else None
        if finished is not None:  # a queue topic: what every share group finished goes
            cut = self._last_index_where(first, last, lambda h: h.last_offset < finished)
        # cleanup.policy=compact alone: only compaction (and a queue's share groups)
        if cfg.delete and cfg.retention_ms >= 0:
            cutoff = self._clock_ms() - cfg.retention_ms
            cut = max(cut, self._last_index_where(first, last, lambda h: h.append_time_ms < cutoff))
        if cfg.delete and cfg.retention_bytes >= 0:
            # the applied tail's count, kept by apply(): reading the tail entry instead cost
            # a log read on the event loop every pass of every partition with a byte limit
            limit = self._applied_cumulative - cfg.retention_bytes
            cut = max(cut, self._last_index_where(
                first, last, lambda h: h.cumulative_bytes <= limit))
        oldest = self.delayed.index.oldest_index() if self.delayed.pending_count else None
        if oldest is not None:
            cut = min(cut, oldest - 1)  # never drop a pending scheduled entry (_delayed.py 4)
        if cut < first:
            return None
        index, header = self._next_data_entry_backwards(cut, first)
        if header is None:
            return None
        return index, self._snapshot_data(header)

    def share_retention_offset(self) -> int | None:
        """Queue topics (``retention.share.groups``): every offset below this is finished
        by every share group with state on this partition (the minimum of their share
        start offsets, replicated state of the applied index, so each replica computes it
        alike); None while no share group has any (the records are kept)."""
        if not self.shares.groups:
            return None
        return min(sp.start for sp in self.shares.groups.values())

    def _snapshot_data(self, header: EntryHeader) -> bytes:
        shares = self.shares.encode()
        txns = self.txns.encode()
        return (_SNAP.pack(PARTITION_SNAPSHOT_VERSION, header.last_offset + 1,
                           header.cumulative_bytes)
                + _SNAP_COMPACTION.pack(self.compaction_below_offset,
                                        self.tombstones_below_offset,
                                        self.compaction_horizon_ms)
                + _SHARE_LEN.pack(len(shares)) + shares
                + _TXN_LEN.pack(len(txns)) + txns
                + self.producers.encode())

    # ------------------------------------------------------------------ delayed delivery
    def _propose_releases(self) -> None:
        """Leader: propose the release of every due scheduled entry not yet proposed this
        term (``_delayed.py`` rules 2-3): per up to ``RELEASE_KEYS_MAX`` of them, a release
        tag and, right after it, one data entry with their batches (offsets assigned now,
        in key order). The batches are copied as stored; never decoded."""
        group = self.group
        if group is None or group.closed:
            return
        node = group.node
        if node.role != Role.LEADER:
            return
        if self._alloc_term != node.term:
            self._reload_allocation()
        delayed = self.delayed
        delayed.new_term(node.term)
        start = self._term_start_index
        if self.applied_index < start or (not start and not self.leader_ready()):
            return  # apply() arms the timer again once our term's first entry applied
        now_ms = self._clock_ms()
        keys = delayed.due(now_ms, min(IN_FLIGHT_MAX - len(delayed.in_flight),
                                       RELEASE_KEYS_MAX * 4))
        if not keys:
            self._arm_release_timer()
            return
        next_offset, cumulative = self._next_offset, self._cumulative
        datas: list[bytes] = []
        proposed: list[Key] = []
        chunk_keys: list[Key] = []
        chunk: list[bytes] = []
        chunk_bytes = 0

        def flush() -> None:
            nonlocal next_offset, cumulative, chunk_bytes
            payload = b"".join(chunk)
            spans = []
            pos = 0
            while pos < len(payload):
                end = pos + parse_header(payload, pos).size
                spans.append((pos, end))
                pos = end
            buf = bytearray(HEADER_SIZE + len(payload))
            buf[HEADER_SIZE:] = payload
            view = memoryview(buf)[HEADER_SIZE:]
            nxt = assign_offsets(view, next_offset, spans)
            view.release()
            cumulative += len(payload)
            _HEADER.pack_into(buf, 0, ENTRY_MAGIC, 1, next_offset, nxt - 1, now_ms, cumulative)
            datas.append(encode_release_tag(chunk_keys))
            datas.append(bytes(buf))
            proposed.extend(chunk_keys)
            next_offset = nxt
            chunk_keys.clear()
            chunk.clear()
            chunk_bytes = 0

        for key in keys:
            try:
                entries = node.log_entries(key[1], key[1] + 1)
            except CompactedError:
                entries = []
            data = entries[0].data if entries else b""
            if scheduled_deliver_at(data) != key[0]:
                # cannot happen (retention keeps pending entries); never retried this term
                log.error("%s/%d: scheduled entry %d (due %d) is not in the log; not released",
                          self.topic, self.partition, key[1], key[0])
                delayed.in_flight.add(key)
                continue
            batches = memoryview(data)[SCHEDULED_HEADER_SIZE:]
            if chunk and (len(chunk_keys) >= RELEASE_KEYS_MAX
                          or chunk_bytes + len(batches) > RELEASE_BYTES_MAX):
                flush()
            chunk_keys.append(key)
            chunk.append(batches)
            chunk_bytes += len(batches)
        if chunk:
            flush()
        if datas:
            try:
                node.propose_batch(datas)
            except Exception as exc:  # NotLeader / ProposalDropped: nothing was written
                log.debug("%s/%d: release not proposed: %r", self.topic, self.partition, exc)
                self._cancel_release_timer()  # try again shortly (a transfer may be on)
                self._release_timer_at = now_ms
                self._release_timer = asyncio.get_running_loop().call_later(
                    RELEASE_RETRY_S, self._release_due)
                return
            self._next_offset, self._cumulative = next_offset, cumulative
            delayed.in_flight.update(proposed)
            self._last_release_ms = now_ms
        self._arm_release_timer()

    def _arm_release_timer(self) -> None:
        """Leader: wake the ready loop for this group when the next pending key not yet
        proposed is due (at once if it is); earlier timers win. Not a poll: one timer."""
        group = self.group
        if group is None or group.closed or group.node.role != Role.LEADER:
            self._cancel_release_timer()
            return
        self.delayed.new_term(group.node.term)
        due = self.delayed.next_due_ms()
        if due is None:
            self._cancel_release_timer()
            return
        due = max(due, self._last_release_ms + RELEASE_INTERVAL_MS)
        if self._release_timer is not None:
            if self._release_timer_at <= due:
                return
            self._release_timer.cancel()
        delay_s = max(0.0, (due - self._clock_ms()) / 1000)
        self._release_timer_at = due
        self._release_timer = asyncio.get_running_loop().call_later(delay_s,
                                                                    self._release_due)

    def _release_due(self) -> None:
        self._release_timer = None
        self._mark_dirty(self.group_id)

    def _cancel_release_timer(self) -> None:
        if self._release_timer is not None:
            self._release_timer.cancel()
            self._release_timer = None

    @property
    def delayed_pending(self) -> int:
        """Scheduled entries (produce requests) not released yet on this replica."""
        return self.delayed.pending_count

    # ------------------------------------------------------------------ share groups
    def _note_share_groups(self) -> None:
        """List this replica for the node's share maintenance once it holds share-group
        state (a table's groups are never dropped)."""
        if self.shares.groups:
            self.share_groups_listing.note()

    def _apply_share(self, e: Entry, hw: int) -> None:
        """One share control entry (``_share_state.py``), at its log position: ``hw`` is
        the high watermark there. The leader's waiter gets the outcome."""
        op = decode_op(e.data)
        waiter = self._share_waiters.pop(e.index, None)
        if op is None:
            outcome: object = ShareOpError("INVALID_REQUEST", "malformed share operation")
        else:
            try:
                outcome = self.shares.apply(e.index, op, hw)
            except ShareOpError as exc:
                outcome = exc
            except (KeyError, TypeError, ValueError) as exc:
                outcome = ShareOpError("INVALID_REQUEST", f"malformed share operation: {exc}")
        self.share_changed.set()
        self.share_changed = asyncio.Event()
        self._note_share_groups()
        if waiter is None or waiter[1].done():
            return
        term, future = waiter
        if e.term != term:
            future.set_exception(BrokerError(Code.NOT_LEADER, "the share operation was lost "
                                             "in a leader change; retry", retriable=True))
        elif isinstance(outcome, ShareOpError):
            future.set_exception(BrokerError(getattr(Code, outcome.code), outcome.message))
        else:
            future.set_result(outcome)

    def _fail_lost_share_ops(self, entries: list[Entry]) -> None:
        """Waiters whose index was applied by something else (a non-share entry of a
        new leader) lost their operation."""
        last = entries[-1].index
        for index in [i for i in self._share_waiters if i <= last]:
            _, future = self._share_waiters.pop(index)
            if not future.done():
                future.set_exception(BrokerError(Code.NOT_LEADER, "the share operation was "
                                                 "lost in a leader change; retry",
                                                 retriable=True))

    async def share_op(self, op: dict, timeout_s: float):
        """Leader only: replicate one share operation; its outcome once applied (raises
        BrokerError: refused, not leader, lost, timed out)."""
        group = self._require_group()
        node = group.node
        if node.role != Role.LEADER:
            raise _not_leader(node.leader_id)
        try:
            index = node.propose(encode_op(op))
        except Exception as exc:  # NotLeader / ProposalDropped: nothing was written
            raise _proposal_error(exc, node.leader_id) from None
        future = asyncio.get_running_loop().create_future()
        self._share_waiters[index] = (node.term, future)
        self._mark_dirty(self.group_id)
        try:
            return await asyncio.wait_for(future, timeout_s)
        except asyncio.TimeoutError:
            raise BrokerError(Code.NO_QUORUM, f"{self.topic}/{self.partition}: the share "
                              "operation was not committed in time; retry",
                              retriable=True) from None
        finally:
            self._share_waiters.pop(index, None)

    def leader_ready(self) -> bool:
        """Leader that applied an entry of its own term: its replicated state (share groups,
        open transactions; the internal topics' offsets and transaction states) includes
        everything an earlier leader answered."""
        group = self.group
        if group is None or group.closed or group.node.role != Role.LEADER:
            return False
        node = group.node
        try:  # the applied index may be the snapshot's (compacted right after applying)
            return node.term_at(node.applied_index) == node.term
        except CompactedError:
            return False

    def _last_index_where(self, lo: int, hi: int, pred: Callable[[EntryHeader], bool]) -> int:
        """Largest data-entry index in [lo, hi] whose header satisfies ``pred`` (a predicate
        true on a prefix of the log), or 0. ``lo`` is the log's first index (every caller's),
        ``hi`` at most the applied index.

        The first data entry decides most calls: retention and the compaction point ask
        every maintenance pass (2 s) of every partition holding data, and while nothing is
        old enough its header already fails ``pred``. Kept in memory, it spares the ~log2(n)
        entry reads of the bisection, on the event loop: at 1-5M records a partition those
        reads stalled the loop for tens of ms every pass (p99 at 1,000/s 6 -> 20-40 ms)."""
        first = self._first_data_entry(lo, hi)
        if first is None or not pred(first[1]):
            return 0
        found = first[0]
        lo = found + 1
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

    def _first_data_entry(self, lo: int, hi: int) -> tuple[int, EntryHeader] | None:
        """The first data entry in ``[lo, hi]`` (``lo`` the log's first index, ``hi`` at
        most the applied index), remembered per ``lo``: a committed entry never changes,
        and entries from ``lo`` on are only dropped by moving the log start, which changes
        ``lo``."""
        cached = self._first_data
        if cached is not None and cached[0] == lo:
            return (cached[1], cached[2]) if cached[1] <= hi else None
        index, header = self._next_data_entry(lo, hi)
        if header is None:
            return None  # not remembered: a data entry may be applied below hi later
        self._first_data = (lo, index, header)
        return index, header

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
        self.txns.truncate_below(self.log_start_offset)

    # ------------------------------------------------------------------ log compaction
    def _apply_compaction(self, command: CompactionCommand) -> None:
        """Move the replicated compaction point (componentwise maximum: see
        ``_compaction.py`` for why that keeps replicas identical)."""
        self.compaction_below_offset = max(self.compaction_below_offset, command.below_offset)
        self.tombstones_below_offset = max(self.tombstones_below_offset,
                                           command.tombstones_below_offset)
        self.compaction_horizon_ms = max(self.compaction_horizon_ms,
                                         command.tombstone_horizon_ms)

    @property
    def compaction_pending(self) -> bool:
        """True while this replica's entries are not compacted up to the replicated point."""
        return self._compacted_through < self.compaction_below_offset

    @property
    def dirty_ratio(self) -> float:
        """Kafka's cleanable ratio: bytes appended since the local compaction point over
        bytes stored (clean bytes after compaction + dirty bytes); 0.0 for a topic that
        is not compacted or holds nothing. Computed from entry headers (their
        cumulative byte counts) and the last pass's result; ``clean`` is 0 until this
        replica has run a pass since it started, so the ratio then reads 1.0."""
        if not self.config.compact or self.group is None or self.group.closed:
            return 0.0
        if not self._index_raft:  # no applied data entry above the snapshot
            return 0.0
        # the applied tail's count, kept by apply() (every metrics scrape and compaction
        # check asks; reading the tail entry was a log read on the event loop each time)
        dirty = self._applied_cumulative - max(self._clean_cumulative,
                                               self._snapshot_cumulative)
        total = dirty + self._clean_bytes
        return max(0.0, min(1.0, dirty / total)) if total > 0 else 0.0

    def maybe_propose_compaction(self) -> bool:
        """Leader only: propose a compaction control entry if one is due: the topic is
        compacted, no earlier one of ours is in flight, the producer state of earlier
        terms is applied (so our view of the compaction point is the log's), the dirty
        ratio reached ``min.cleanable.dirty.ratio``, and committed records older than
        ``min.compaction.lag.ms`` exist past the current point. Returns True if it did."""
        cfg = self.config
        group = self.group
        if not cfg.compact or group is None or group.closed:
            return False
        node = group.node
        if node.role != Role.LEADER:
            self._compaction_proposed_index = 0
            return False
        if self._compaction_proposed_index:
            if self.applied_index < self._compaction_proposed_index:
                return False  # still in flight
            self._compaction_proposed_index = 0  # applied, or lost in a leader change
        if self._alloc_term != node.term:
            return False  # the term's first proposal sets up the allocation; wait for it
        if not self._term_start_index or self.applied_index < self._term_start_index:
            return False
        if self.compaction_pending:
            return False  # our own pass has not caught up with the last point yet
        if self.dirty_ratio < cfg.min_cleanable_dirty_ratio:
            # first: it reads nothing, and the point below bisects the log (every entry is
            # old enough with the default lag 0), once a second per compacted partition
            return False
        now = self._clock_ms()
        # the point: after the last committed entry appended at least the lag ago
        lo, hi = max(node.first_index, 1), self.applied_index
        cutoff = now - cfg.min_compaction_lag_ms
        index = self._last_index_where(lo, hi, lambda h: h.append_time_ms <= cutoff)
        if not index:
            return False
        header = self._header_at(index)
        if header is None or header.last_offset + 1 <= self.compaction_below_offset:
            return False
        tombstones_below, horizon = self.tombstones_below_offset, self.compaction_horizon_ms
        if node.min_match_index() >= self._compaction_entry_index:
            # every replica holds the previous control entry (and so every entry below
            # its point) and our pass of it finished: tombstones below it may go
            # (_compaction.py explains why both are needed)
            tombstones_below = self.compaction_below_offset
            horizon = max(horizon, now - cfg.delete_retention_ms)
        command = CompactionCommand(header.last_offset + 1, tombstones_below, horizon, now)
        try:
            self._compaction_proposed_index = node.propose(command.encode())
        except Exception:  # NotLeader / ProposalDropped: try again next time
            return False
        self._mark_dirty(self.group_id)
        return True

    async def run_compaction(self) -> bool:
        """The background pass: compact this replica's entries below the replicated point,
        in time slices of ``COMPACTION_SLICE_S`` between which it yields to the event
        loop; the rewrites of each ``COMPACTION_CHUNK_BYTES`` read are written by a
        worker thread. Returns True if it reached the point (False:
        nothing to do, the group went away, or part of the log is not stored here yet:
        the next call continues). Never runs twice at once for one replica."""
        if self._compaction_running or not self.compaction_pending:
            return False
        self._compaction_running = True
        started = time.monotonic()
        try:
            below = self.compaction_below_offset
            done = await self._compact_below(below, self.tombstones_below_offset,
                                             self.compaction_horizon_ms)
        finally:
            self._compaction_running = False
        if done:
            self._compacted_through = below
            self.compaction_runs += 1
            self.compaction_last_run_ms = self._clock_ms()
            self.compaction_last_duration_s = time.monotonic() - started
        return done

    def _entries_below(self, below: int):
        """Chunks of (entry, header) of the applied data entries holding offsets below
        ``below``, from the first stored entry; stops early if the group closes."""
        index = None
        while True:
            group = self.group
            if group is None or group.closed:
                return
            node = group.node
            if index is None or index < node.first_index:
                index = node.first_index  # retention moved the log start meanwhile
            hi = self.applied_index
            if index > hi:
                return
            try:
                entries = node.log_entries(index, hi + 1, COMPACTION_CHUNK_BYTES)
            except CompactedError:
                index = None
                continue
            if not entries:
                return
            chunk = []
            for e in entries:
                header = entry_header(e)
                if header is None:
                    continue
                if header.base_offset >= below:
                    if chunk:
                        yield chunk
                    return
                chunk.append((e, header))
            if chunk:
                yield chunk
            index = entries[-1].index + 1

    async def _compact_below(self, below: int, tombstones_below: int, horizon: int) -> bool:
        # pass 1: the last offset of every key written since our last completed pass
        # (below that, at most one record per key remains: see _compaction.py)
        latest: dict[bytes, int] = {}
        since = self._compacted_through
        clock = time.perf_counter
        slice_end = clock() + COMPACTION_SLICE_S
        for chunk in self._entries_below(below):
            for e, header in chunk:
                if header.last_offset >= since:
                    _compaction.index_keys(e.data, HEADER_SIZE, below, latest)
                if clock() >= slice_end:
                    await asyncio.sleep(0)
                    slice_end = clock() + COMPACTION_SLICE_S
        # pass 2: rewrite every entry below the point that changes
        removed_records = removed_bytes = clean_bytes = 0
        clean_cumulative = 0
        complete = True
        for chunk in self._entries_below(below):
            rewrites = []
            for e, header in chunk:
                result = compact_entry(e.data, HEADER_SIZE, header.append_time_ms, below,
                                       tombstones_below, horizon, latest)
                size = len(e.data) - HEADER_SIZE
                if result.data is not None:
                    rewrites.append((e.index, e.term, zlib.crc32(e.data), result.data))
                    removed_records += result.records_removed
                    removed_bytes += len(e.data) - len(result.data)
                    size = len(result.data) - HEADER_SIZE
                clean_bytes += size
                clean_cumulative = header.cumulative_bytes
                if clock() >= slice_end:
                    await asyncio.sleep(0)
                    slice_end = clock() + COMPACTION_SLICE_S
            if rewrites:
                group = self.group
                if group is None or group.closed:
                    return False
                _, beyond = await asyncio.to_thread(
                    group.storage.rewrite_entries, rewrites)
                if beyond:
                    complete = False
                slice_end = clock() + COMPACTION_SLICE_S
        group = self.group
        if group is None or group.closed or not complete:
            return False
        self.compacted_records_removed += removed_records
        self.compacted_bytes_removed += removed_bytes
        self._clean_bytes, self._clean_cumulative = clean_bytes, clean_cumulative
        return True

    # ------------------------------------------------------------------ misc
    def _require_group(self) -> Group:
        if self.group is None or self.group.closed:
            raise BrokerError(Code.UNKNOWN_PARTITION,
                              f"{self.topic}/{self.partition} is not hosted here any more")
        return self.group

    def fail_waiters(self, error: BrokerError) -> None:
        self._cancel_release_timer()
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


def _expire(future: asyncio.Future, acks: int, timeout_s: float) -> None:
    if not future.done():
        future.set_exception(BrokerError(
            Code.NO_QUORUM,
            f"not {'committed by a majority' if acks < 0 else 'persisted'} within "
            f"{timeout_s:.1f}s (a replica may be down or partitioned); the write may "
            "still be committed later, retry with idempotence to avoid a duplicate",
            retriable=True,
        ))


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


def replay_applied_log(group, name: str, decode) -> None:
    """Feed ``decode`` every entry of ``group``'s log from its first index up to its applied
    index, in chunks: how a replica whose state lives in its own log entries (offsets,
    transaction states) rebuilds it when it starts. ``name`` is for the error only."""
    node = group.node
    index, last = node.first_index, node.applied_index
    while index <= last:
        try:
            entries = node.log_entries(index, last + 1, REPLAY_CHUNK_BYTES)
        except CompactedError:
            raise RuntimeError(f"{name}: entries below the applied index were compacted; "
                               "its state cannot be rebuilt") from None
        if not entries:
            break
        decode(entries)
        index = entries[-1].index + 1
