"""Idempotent-producer state of one partition (KIP-98): dedup and ordering by sequence.

An idempotent producer stamps every RecordBatch v2 with ``producerId``, ``producerEpoch``
and ``baseSequence`` (the sequence of its first record; sequences count records per
partition, wrapping from 2**31 - 1 to 0). The partition leader appends a batch only if its
sequence continues the producer's last one; a retry of a batch it already has is answered
with the ORIGINAL offsets instead of being written again.

Two layers:

- the **applied** table: per producer id its epoch, the last ``BATCHES_KEPT`` (5, as Kafka)
  batches appended (first/last sequence, base/last offset, Raft index) and its last append
  time. It is a pure function of the committed log (``apply_batch``, fed by every replica
  from the batch headers of committed entries, never the records) plus the snapshot it
  started from, so every replica, a restarted node and a new leader agree;
- the **pending** overlay (leader only): batches this leader proposed in its current term
  that are not applied yet. ``check`` looks at the overlay first, so several batches of a
  producer can be in flight at once. The overlay is dropped when leadership ends; entries
  that commit anyway arrive through ``apply_batch``.

Verdicts of ``check(pid, epoch, first_seq, count)``:

1. no state for ``pid``: APPEND if ``first_seq == 0``, else UNKNOWN_PRODUCER_ID;
2. ``epoch`` below the producer's: PRODUCER_FENCED;
3. the same epoch and exactly the first/last sequence of a kept batch: DUPLICATE (of it);
4. a higher epoch: APPEND if ``first_seq == 0`` (a new epoch restarts the sequence), else
   OUT_OF_ORDER_SEQUENCE;
5. the same epoch, ``first_seq`` = last sequence + 1: APPEND; anything else
   OUT_OF_ORDER_SEQUENCE (a gap: an earlier batch is missing, or a retry so old it is no
   longer among the kept batches).

Rules that keep the applied table deterministic and bounded:

- ``apply_batch`` is a monotone merge keyed on the Raft index: an entry below the
  producer's last applied index is already reflected and skipped; at that index (an entry
  may hold up to ``BATCHES_KEPT`` batches of one producer: ``_produce_coalescer.py``), a
  batch of the same epoch is skipped if a kept batch has its index and first sequence. A
  retention snapshot holds the table as of the *applied* index (possibly past the
  snapshot index), so entries replayed after restoring it change nothing.
- Producers idle for ``PRODUCER_EXPIRY_MS`` (7 days) by **entry append time** are dropped.
  The sweep runs when an entry's append time enters a new ``SWEEP_INTERVAL_MS`` bucket,
  i.e. as a function of the log only, never of a replica's clock or apply batching.
- ``apply_batch`` never raises on content: every replica applies the same entries.
- A transaction marker (``apply_epoch``) carries the producer's current epoch as the
  coordinator knows it: a higher one (the coordinator aborted a timed-out transaction, or a
  new incarnation was initialized) fences the older epoch here too, with no batch of the
  new epoch kept yet (its first batch must then start at sequence 0).

Snapshot encoding (big-endian; producers sorted by id, so equal tables give equal bytes)::

    u8 version 2 | i64 sweep_bucket | u32 producer_count
    per producer: i64 producer_id | i16 epoch | i64 last_append_ms | u8 batch_count
                  | i64 raft_index (of the last entry that changed it; version 2 only)
        per batch (oldest first): i32 first_seq | i32 last_seq | i64 base_offset
                                  | i64 last_offset | i64 raft_index
"""

from __future__ import annotations

import struct
from collections import deque
from typing import NamedTuple

from ._errors import Code

BATCHES_KEPT = 5
SEQUENCE_MOD = 1 << 31
PRODUCER_EXPIRY_MS = 7 * 24 * 3600 * 1000
SWEEP_INTERVAL_MS = 3600 * 1000
ENCODING_VERSION = 2  # 1 (still read): no raft_index per producer, batch_count >= 1

_HEAD = struct.Struct(">BqI")
_PRODUCER = struct.Struct(">qhqB")
_PRODUCER_INDEX = struct.Struct(">q")
_BATCH = struct.Struct(">iiqqq")


class BatchMeta(NamedTuple):
    """One appended batch as the table keeps it."""

    first_seq: int
    last_seq: int
    base_offset: int
    last_offset: int
    index: int  # Raft index of its entry


class PendingBatch:
    """A batch this leader proposed and has not applied yet (index/term set once proposed)."""

    __slots__ = ("producer_id", "epoch", "first_seq", "last_seq", "base_offset",
                 "last_offset", "index", "term")

    def __init__(self, producer_id: int, epoch: int, first_seq: int, last_seq: int,
                 base_offset: int, last_offset: int) -> None:
        self.producer_id = producer_id
        self.epoch = epoch
        self.first_seq = first_seq
        self.last_seq = last_seq
        self.base_offset = base_offset
        self.last_offset = last_offset
        self.index = 0
        self.term = 0


class ProducerEntry:
    __slots__ = ("epoch", "batches", "last_append_ms", "index")

    def __init__(self, epoch: int, last_append_ms: int, index: int = 0) -> None:
        self.epoch = epoch
        # the last BATCHES_KEPT batches of this epoch, oldest first; empty only after a
        # marker moved the producer to a new epoch (``apply_epoch``)
        self.batches: deque[BatchMeta] = deque(maxlen=BATCHES_KEPT)
        self.last_append_ms = last_append_ms
        self.index = index  # Raft index of the last entry that changed this producer


# Verdict kinds
APPEND = 0
DUPLICATE = 1
REJECT = 2


class Verdict(NamedTuple):
    kind: int
    duplicate_of: BatchMeta | PendingBatch | None = None
    code: int = 0
    message: str = ""


_APPEND = Verdict(APPEND)


def last_sequence(first_seq: int, record_count: int) -> int:
    return (first_seq + record_count - 1) % SEQUENCE_MOD


class ProducerStateTable:
    """See the module docstring. All methods run on the event loop of the partition."""

    def __init__(self) -> None:
        self.producers: dict[int, ProducerEntry] = {}
        self.sweep_bucket = 0  # SWEEP_INTERVAL_MS bucket of the newest entry seen; never decreases
        self._pending: dict[int, deque[PendingBatch]] = {}
        self._pending_order: deque[PendingBatch] = deque()  # by proposal order = index order

    # ------------------------------------------------------------------ applied table
    def apply_batch(self, producer_id: int, epoch: int, first_seq: int, record_count: int,
                    base_offset: int, last_offset: int, append_ms: int, index: int) -> None:
        """A committed entry at ``index`` holds this idempotent batch."""
        entry = self.producers.get(producer_id)
        meta = BatchMeta(first_seq, last_sequence(first_seq, record_count), base_offset,
                         last_offset, index)
        if entry is None:
            entry = self.producers[producer_id] = ProducerEntry(epoch, append_ms)
        elif index < entry.index or epoch < entry.epoch:
            return  # already reflected (replay after a snapshot) / fenced: not ours to judge
        elif index == entry.index and epoch == entry.epoch and any(
                b.index == index and b.first_seq == first_seq for b in entry.batches):
            return  # this batch of a coalesced entry is already reflected
        elif epoch > entry.epoch:
            entry.epoch = epoch
            entry.batches.clear()
        entry.batches.append(meta)
        entry.index = index
        entry.last_append_ms = max(entry.last_append_ms, append_ms)

    def apply_epoch(self, producer_id: int, epoch: int, append_ms: int, index: int) -> None:
        """A committed transaction marker at ``index`` carries ``epoch`` for this producer:
        an older epoch is fenced from here on (see the module docstring)."""
        entry = self.producers.get(producer_id)
        if entry is None:
            self.producers[producer_id] = ProducerEntry(epoch, append_ms, index)
            return
        if index <= entry.index:
            return
        entry.index = index
        if epoch > entry.epoch:
            entry.epoch = epoch
            entry.batches.clear()
        entry.last_append_ms = max(entry.last_append_ms, append_ms)

    def current_epoch(self, producer_id: int) -> int | None:
        """The producer's epoch as the leader sees it (proposed batches included)."""
        pending = self._pending.get(producer_id)
        if pending:
            return pending[-1].epoch
        entry = self.producers.get(producer_id)
        return entry.epoch if entry is not None else None

    def observe_time(self, append_ms: int) -> None:
        """Every applied data entry's append time, in log order: expires idle producers
        when the time enters a new sweep bucket."""
        bucket = append_ms // SWEEP_INTERVAL_MS
        if bucket <= self.sweep_bucket:
            return
        self.sweep_bucket = bucket
        cutoff = append_ms - PRODUCER_EXPIRY_MS
        expired = [pid for pid, e in self.producers.items() if e.last_append_ms < cutoff]
        for pid in expired:
            del self.producers[pid]

    # ------------------------------------------------------------------ leader view
    def check(self, producer_id: int, epoch: int, first_seq: int, record_count: int) -> Verdict:
        last_seq = last_sequence(first_seq, record_count)
        pending = self._pending.get(producer_id)
        entry = self.producers.get(producer_id)
        if pending:
            current_epoch = pending[-1].epoch
        elif entry is not None:
            current_epoch = entry.epoch
        else:
            if first_seq == 0:
                return _APPEND
            return Verdict(REJECT, code=Code.UNKNOWN_PRODUCER_ID, message=(
                f"this partition holds no state for producer id {producer_id} (it expired "
                f"after {PRODUCER_EXPIRY_MS // 86_400_000} idle days, or its earlier batches "
                f"never arrived), so sequence {first_seq} cannot be checked; the producer "
                "must start a new epoch at sequence 0"))
        if epoch < current_epoch:
            return Verdict(REJECT, code=Code.PRODUCER_FENCED, message=(
                f"producer id {producer_id} epoch {epoch} is fenced: this partition has seen "
                f"epoch {current_epoch}; a newer producer instance took over, close this one"))
        if pending:
            for p in pending:
                if p.epoch == epoch and p.first_seq == first_seq and p.last_seq == last_seq:
                    return Verdict(DUPLICATE, p)
        if entry is not None and entry.epoch == epoch:
            for b in entry.batches:
                if b.first_seq == first_seq and b.last_seq == last_seq:
                    return Verdict(DUPLICATE, b)
        if epoch > current_epoch:
            if first_seq == 0:
                return _APPEND
            return Verdict(REJECT, code=Code.OUT_OF_ORDER_SEQUENCE, message=(
                f"producer id {producer_id}: new epoch {epoch} must start at sequence 0, "
                f"got {first_seq}"))
        if not pending and not entry.batches:  # type: ignore[union-attr]
            # the epoch a marker moved this producer to: it starts at sequence 0
            if first_seq == 0:
                return _APPEND
            return Verdict(REJECT, code=Code.OUT_OF_ORDER_SEQUENCE, message=(
                f"producer id {producer_id}: epoch {epoch} must start at sequence 0, "
                f"got {first_seq}"))
        last = pending[-1].last_seq if pending else entry.batches[-1].last_seq  # type: ignore[union-attr]
        expected = (last + 1) % SEQUENCE_MOD
        if first_seq == expected:
            return _APPEND
        return Verdict(REJECT, code=Code.OUT_OF_ORDER_SEQUENCE, message=(
            f"producer id {producer_id} epoch {epoch}: expected sequence {expected}, got "
            f"{first_seq} (an earlier batch is missing or is being retried; or this retry is "
            f"older than the last {BATCHES_KEPT} batches)"))

    def add_pending(self, producer_id: int, epoch: int, first_seq: int, record_count: int,
                    base_offset: int, last_offset: int) -> PendingBatch:
        """The leader accepted (is about to propose) this batch; later checks see it."""
        p = PendingBatch(producer_id, epoch, first_seq, last_sequence(first_seq, record_count),
                         base_offset, last_offset)
        self._pending.setdefault(producer_id, deque()).append(p)
        self._pending_order.append(p)
        return p

    def drop_pending(self, batches: list[PendingBatch]) -> None:
        """The proposal of these (the newest pending batches) failed: forget them."""
        for p in reversed(batches):
            q = self._pending.get(p.producer_id)
            if q and q[-1] is p:
                q.pop()
                if not q:
                    del self._pending[p.producer_id]
            if self._pending_order and self._pending_order[-1] is p:
                self._pending_order.pop()

    def applied_through(self, index: int) -> None:
        """Entries up to ``index`` are applied: their pending batches are in the table now."""
        order = self._pending_order
        while order and 0 < order[0].index <= index:
            p = order.popleft()
            q = self._pending.get(p.producer_id)
            if q and q[0] is p:
                q.popleft()
                if not q:
                    del self._pending[p.producer_id]

    def clear_pending(self) -> None:
        """Leadership ended (or a new term began): the overlay is no longer ours."""
        self._pending.clear()
        self._pending_order.clear()

    @property
    def pending_count(self) -> int:
        return len(self._pending_order)

    # ------------------------------------------------------------------ snapshot
    def encode(self) -> bytes:
        parts = [_HEAD.pack(ENCODING_VERSION, self.sweep_bucket, len(self.producers))]
        for pid in sorted(self.producers):
            e = self.producers[pid]
            parts.append(_PRODUCER.pack(pid, e.epoch, e.last_append_ms, len(e.batches)))
            parts.append(_PRODUCER_INDEX.pack(e.index))
            for b in e.batches:
                parts.append(_BATCH.pack(b.first_seq, b.last_seq, b.base_offset,
                                         b.last_offset, b.index))
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes | memoryview) -> ProducerStateTable:
        """Inverse of ``encode``; raises ValueError on anything malformed."""
        table = cls()
        try:
            version, bucket, count = _HEAD.unpack_from(data, 0)
            if version not in (1, ENCODING_VERSION):
                raise ValueError(f"unknown producer state encoding v{version}")
            pos = _HEAD.size
            for _ in range(count):
                pid, epoch, last_ms, nbatches = _PRODUCER.unpack_from(data, pos)
                pos += _PRODUCER.size
                index = 0
                if version >= 2:
                    (index,) = _PRODUCER_INDEX.unpack_from(data, pos)
                    pos += _PRODUCER_INDEX.size
                least = 1 if version == 1 else 0
                if nbatches < least or nbatches > BATCHES_KEPT or pid in table.producers:
                    raise ValueError(f"producer {pid}: bad batch count {nbatches} or repeated")
                e = ProducerEntry(epoch, last_ms, index)
                for _ in range(nbatches):
                    e.batches.append(BatchMeta(*_BATCH.unpack_from(data, pos)))
                    pos += _BATCH.size
                if version == 1:
                    e.index = e.batches[-1].index
                table.producers[pid] = e
        except struct.error as exc:
            raise ValueError(f"truncated producer state: {exc}") from None
        if pos != len(data):
            raise ValueError(f"{len(data) - pos} trailing bytes after the producer state")
        table.sweep_bucket = bucket
        return table
