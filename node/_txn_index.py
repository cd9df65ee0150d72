"""Transaction state of one partition (KIP-98): open transactions, the last stable offset
and the index of aborted transactions.

A transactional batch (attribute bit 4, one per entry: it is idempotent) whose producer
has no open transaction here opens one at its base offset. A transaction marker (a control
batch, bit 5, written by ``TxnMarkers.WriteTxnMarkers`` through the partition's Raft log
like any data entry, so it has an offset) closes the producer's open transaction: a commit
makes it readable, an abort adds ``(producer_id, first_offset, marker_offset)`` to the
aborted index. Both are appended in log order, so the aborted index is sorted by its last
offset.

- **Last stable offset (LSO)** = the smallest first offset of the open transactions, or the
  high watermark if none is open. read_committed fetches return nothing at or beyond it.
- **read_committed** leaves out, per batch (the first batch header of each entry decides:
  transactional batches are alone in their entry), every control batch and every
  transactional batch of a producer inside one of its aborted ranges.

Determinism (as ``_producer_state.py``): the index is a pure function of the committed log
plus the snapshot it started from. Every replica feeds it from the batch headers of applied
entries (and the one control record of a marker); ``applied_index`` makes a replay of
entries already reflected (after restoring a snapshot taken at a later applied index)
change nothing. Retention drops aborted ranges that end below the log start.

- **Coordinator epochs**: per producer id, the highest coordinator epoch of its applied
  markers (Kafka keeps it in the producer state): a marker from a coordinator with an
  older epoch (a deposed coordinator whose call arrives late) is refused
  TRANSACTION_COORDINATOR_FENCED by the leader, so it can never end a later transaction
  of the same producer epoch.

Snapshot encoding (big-endian; sorted, so equal states give equal bytes)::

    u8 version 2 | i64 applied_index | u32 open_count
    per open txn (by producer id): i64 producer_id | i16 epoch | i64 first_offset
                                   | i64 start_ms
    u32 aborted_count | per aborted txn (by last offset): i64 producer_id
                                   | i64 first_offset | i64 last_offset
    u32 coordinator_epochs_count | per producer id (sorted): i64 producer_id
                                   | i32 coordinator_epoch          (absent in version 1)
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from typing import NamedTuple

ENCODING_VERSION = 2
_VERSIONS = (1, 2)
_COORDINATOR_EPOCH = struct.Struct(">qi")
_HEAD = struct.Struct(">BqI")
_OPEN = struct.Struct(">qhqq")
_COUNT = struct.Struct(">I")
_ABORTED = struct.Struct(">qqq")


class OpenTxn(NamedTuple):
    epoch: int
    first_offset: int
    start_ms: int  # append time of its first batch here


class AbortedTxn(NamedTuple):
    producer_id: int
    first_offset: int
    last_offset: int  # the abort marker's offset


class TxnIndex:
    """See the module docstring. All methods run on the partition's event loop."""

    def __init__(self) -> None:
        self.open: dict[int, OpenTxn] = {}
        self.aborted: list[AbortedTxn] = []
        self._aborted_last: list[int] = []  # last offsets of ``aborted`` (bisect)
        self.coordinator_epochs: dict[int, int] = {}  # producer id -> highest, never lower
        self.applied_index = 0
        self._first_open: int | None = None  # cache of min first offset; None = recompute

    # ------------------------------------------------------------------ apply
    def apply_batch(self, producer_id: int, epoch: int, base_offset: int, append_ms: int,
                    index: int) -> None:
        """A committed transactional data batch at ``index``."""
        if index <= self.applied_index:
            return
        self.applied_index = index
        if producer_id not in self.open:
            self.open[producer_id] = OpenTxn(epoch, base_offset, append_ms)
            self._first_open = None

    def apply_marker(self, producer_id: int, commit: bool, offset: int, index: int,
                     coordinator_epoch: int = -1) -> None:
        """A committed commit/abort marker at ``offset`` (Raft index ``index``), written by
        a coordinator of ``coordinator_epoch`` (-1: the partition's own abort)."""
        if index <= self.applied_index:
            return
        self.applied_index = index
        if coordinator_epoch > self.coordinator_epochs.get(producer_id, -1):
            self.coordinator_epochs[producer_id] = coordinator_epoch
        txn = self.open.pop(producer_id, None)
        if txn is None:
            return  # nothing of this transaction reached this partition (or a retry)
        self._first_open = None
        if not commit:
            self.aborted.append(AbortedTxn(producer_id, txn.first_offset, offset))
            self._aborted_last.append(offset)

    def observe(self, index: int) -> None:
        """Any other applied entry (keeps ``applied_index`` in step with the log)."""
        if index > self.applied_index:
            self.applied_index = index

    def truncate_below(self, log_start: int) -> None:
        """Retention moved the log start: aborted ranges wholly below it are not needed."""
        cut = bisect_left(self._aborted_last, log_start)
        if cut:
            del self.aborted[:cut]
            del self._aborted_last[:cut]

    # ------------------------------------------------------------------ read
    def last_stable_offset(self, high_watermark: int) -> int:
        if not self.open:
            return high_watermark
        first = self._first_open
        if first is None:
            first = self._first_open = min(t.first_offset for t in self.open.values())
        return min(first, high_watermark)

    def aborted_between(self, lo: int, hi: int) -> dict[int, list[tuple[int, int]]]:
        """Aborted ranges that overlap ``[lo, hi)``, by producer id."""
        out: dict[int, list[tuple[int, int]]] = {}
        aborted = self.aborted
        for i in range(bisect_left(self._aborted_last, lo), len(aborted)):
            a = aborted[i]
            if a.first_offset < hi:
                out.setdefault(a.producer_id, []).append((a.first_offset, a.last_offset))
        return out

    # ------------------------------------------------------------------ snapshot
    def encode(self) -> bytes:
        parts = [_HEAD.pack(ENCODING_VERSION, self.applied_index, len(self.open))]
        for pid in sorted(self.open):
            t = self.open[pid]
            parts.append(_OPEN.pack(pid, t.epoch, t.first_offset, t.start_ms))
        parts.append(_COUNT.pack(len(self.aborted)))
        for a in self.aborted:
            parts.append(_ABORTED.pack(*a))
        parts.append(_COUNT.pack(len(self.coordinator_epochs)))
        for pid in sorted(self.coordinator_epochs):
            parts.append(_COORDINATOR_EPOCH.pack(pid, self.coordinator_epochs[pid]))
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes | memoryview) -> TxnIndex:
        """Inverse of ``encode``; raises ValueError on anything malformed."""
        index = cls()
        try:
            version, applied, count = _HEAD.unpack_from(data, 0)
            if version not in _VERSIONS:
                raise ValueError(f"unknown transaction index encoding v{version}")
            pos = _HEAD.size
            for _ in range(count):
                pid, epoch, first, start = _OPEN.unpack_from(data, pos)
                pos += _OPEN.size
                index.open[pid] = OpenTxn(epoch, first, start)
            (count,) = _COUNT.unpack_from(data, pos)
            pos += _COUNT.size
            for _ in range(count):
                a = AbortedTxn(*_ABORTED.unpack_from(data, pos))
                pos += _ABORTED.size
                if index._aborted_last and a.last_offset < index._aborted_last[-1]:
                    raise ValueError("aborted transactions out of order")
                index.aborted.append(a)
                index._aborted_last.append(a.last_offset)
            if version >= 2:
                (count,) = _COUNT.unpack_from(data, pos)
                pos += _COUNT.size
                for _ in range(count):
                    pid, epoch = _COORDINATOR_EPOCH.unpack_from(data, pos)
                    pos += _COORDINATOR_EPOCH.size
                    index.coordinator_epochs[pid] = epoch
        except struct.error as exc:
            raise ValueError(f"truncated transaction index: {exc}") from None
        if pos != len(data):
            raise ValueError(f"{len(data) - pos} trailing bytes after the transaction index")
        index.applied_index = applied
        return index
