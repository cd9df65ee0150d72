"""Log compaction (``cleanup.policy=compact``): the record-level rules and the control entry.

Compaction is a *replicated, deterministic* operation (the design and why: README.md,
"Log compaction", and node/README.md). The partition leader decides "compact every record
below offset X, removing tombstones appended before time H" and proposes it as a small
control entry through the partition's Raft group::

    u8 magic 'C' (0x43) | u8 version 1 | i64 below_offset X | i64 tombstones_below_offset Y
    | i64 tombstone_horizon_ms H | i64 decided_at_ms     (big-endian; 34 bytes)

Its magic differs from data entries' ('R'), so everything that reads data entries skips
it. Every replica applies it at the same log position and rewrites, in the background, the
data entries that hold offsets below X *in place*: same Raft index and term, same entry
header (offsets, append time, cumulative bytes), each batch rebuilt by
``recordbatch.rebuild_batch`` with the records it keeps. Rules for a record at offset o < X
with key k (``compact_entry``):

1. it is removed if a record with key k exists at an offset in (o, X) (superseded);
2. a tombstone (null value) that is the latest of its key below X is removed if it is
   below Y and its entry's append time (the leader's clock when it was written, stored
   in the entry header, so the same on every replica) is before H;
3. records without a key are kept (a compacted topic refuses them at produce, as Kafka
   does; they can only come from before the topic became compacted);
4. records at offsets >= X are never touched, so the last record of every key survives
   and offsets never change: readers see gaps;
5. a batch left without records is dropped, unless it is an idempotent producer's batch
   (producer id >= 0): it stays as an empty batch (61 bytes, recordCount 0) with its
   producer id, epoch, base sequence and last offset, so replaying the log into the
   producer table (``_partition._feed_producers``) gives the same table as before;
6. an entry whose batches are all dropped keeps its 34-byte header (offsets and time).

Why replicas end up byte-identical. Write C(X, H) for one compaction applied to a log.
The leader only proposes (X, H) componentwise >= the last applied one, and replicas take
the componentwise maximum anyway. For such parameters C(X2,H2)∘C(X1,H1) = C(X2,H2) and
C(X1,H1)∘C(X2,H2) = C(X2,H2) (removal only ever removes records that the larger
compaction removes as well, and a record it keeps has no later same-key record left below
X), and each C is idempotent. So whatever mix of compacted and uncompacted entries a
replica holds (a lagging follower receives the leader's already compacted entries, a
background pass was cut short by a crash and is redone after restart), applying the
last control entry gives the same records, and ``rebuild_batch`` makes the same bytes of
the same records. ``tests/node/test_compaction.py`` checks these laws.

Tombstones need more care, because removing one removes the reason why the earlier
records of its key go. A replica that holds an *uncompacted* earlier entry (value v of
key k) and receives from the leader a later entry whose tombstone of k was already
removed would keep v forever. Rule 2's Y prevents it. The leader proposes a new Y
(= the previous point X') and a new H only when (a) its own pass of the previous
compaction has finished, so every entry below X' in its log has no superseded record left,
and (b) every replica's log already holds the previous control entry (Raft's match
index), so every entry holding a tombstone below X' is already in every replica's log:
no replica will ever *receive* that entry with its tombstone removed; each removes the
tombstone itself, when it applies the new control entry, after removing what it
superseded. A replica added later receives the entries below X' from a leader that had
compacted them all (a), so it never holds a superseded record of a removed tombstone.
Otherwise the leader repeats the previous Y and H (tombstones wait for the next round).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from raftka.v1.recordbatch import parse_header, raw_records, rebuild_batch

CONTROL_MAGIC = 0x43  # 'C'
CONTROL_VERSION = 1
_CONTROL = struct.Struct(">BBqqqq")
CONTROL_SIZE = _CONTROL.size


class CompactionCommand(NamedTuple):
    """Compact every record below ``below_offset``; drop tombstones below
    ``tombstones_below_offset`` appended before ``tombstone_horizon_ms``.
    ``decided_at_ms``: the leader's clock when it decided (informational)."""

    below_offset: int
    tombstones_below_offset: int
    tombstone_horizon_ms: int
    decided_at_ms: int

    def encode(self) -> bytes:
        return _CONTROL.pack(CONTROL_MAGIC, CONTROL_VERSION, self.below_offset,
                             self.tombstones_below_offset, self.tombstone_horizon_ms,
                             self.decided_at_ms)


def decode_control(data: bytes) -> CompactionCommand | None:
    """The command in a control entry's data, or None if ``data`` is not one."""
    if len(data) != CONTROL_SIZE or data[0] != CONTROL_MAGIC:
        return None
    _, version, below, tombstones_below, horizon, at = _CONTROL.unpack(data)
    if version != CONTROL_VERSION:
        raise ValueError(f"compaction control entry of unknown version {version}")
    return CompactionCommand(below, tombstones_below, horizon, at)


def _batches(data: bytes | memoryview, start: int):
    """(position, header) of every batch of an entry's data from ``start``."""
    pos, size = start, len(data)
    while pos < size:
        header = parse_header(data, pos)
        yield pos, header
        pos += header.size


def index_keys(data: bytes, header_size: int, below: int, latest: dict[bytes, int]) -> int:
    """Record in ``latest`` the offset of every keyed record below ``below`` in one data
    entry (entries are fed in log order, so the last offset seen per key wins). Returns
    how many records were read."""
    count = 0
    for pos, header in _batches(data, header_size):
        if header.base_offset >= below:
            break
        if not header.record_count:
            continue
        for r in raw_records(data, pos, verify=False):
            count += 1
            if r.offset < below and r.key is not None:
                latest[r.key] = r.offset
    return count


class EntryResult(NamedTuple):
    data: bytes | None  # the rewritten entry data, None if nothing changed
    records_removed: int
    records_kept: int  # below ``below``, after compaction


def compact_entry(data: bytes, header_size: int, append_time_ms: int, below: int,
                  tombstones_below: int, horizon_ms: int,
                  latest: dict[bytes, int]) -> EntryResult:
    """One data entry compacted by the rules of the module docstring. ``latest`` holds,
    for every key with a record in the range being cleaned, its last offset below
    ``below`` (``index_keys``); a key not in it has at most one record below ``below``."""
    view = memoryview(data)
    parts: list[bytes | memoryview] = [view[:header_size]]
    changed = False
    removed = kept_total = 0
    old_tombstone = append_time_ms < horizon_ms
    for pos, header in _batches(data, header_size):
        end = pos + header.size
        if header.base_offset >= below:
            parts.append(view[pos:end])
            continue
        if not header.record_count:
            parts.append(view[pos:end])  # an empty idempotent batch: already compacted
            continue
        records = raw_records(data, pos, verify=False)
        keep = []
        for r in records:
            key, offset = r.key, r.offset
            if offset >= below or key is None:
                keep.append(r)
            elif latest.get(key, offset) > offset:
                continue  # superseded by a later record of its key below ``below``
            elif r.value is None and old_tombstone and offset < tombstones_below:
                continue  # a tombstone older than delete.retention.ms
            else:
                keep.append(r)
        kept_total += sum(1 for r in keep if r.offset < below)
        if len(keep) == len(records):
            parts.append(view[pos:end])
            continue
        changed = True
        removed += len(records) - len(keep)
        if keep or header.producer_id >= 0:
            parts.append(rebuild_batch(data, pos, header, keep))
    if not changed:
        return EntryResult(None, 0, kept_total)
    return EntryResult(b"".join(parts), removed, kept_total)
