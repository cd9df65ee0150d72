"""Delayed delivery: scheduled entries, their releases, and the index of pending ones.

A produce request with ``deliver_at_ms`` in the future becomes a *scheduled entry* of the
partition's Raft log instead of a data entry: replicated and durable like any write before
the producer hears back, but it has no offsets and no reader ever sees it (every read path
takes data entries only, ``_partition.entry_header``). When it is due, the leader appends
its batches as an ordinary data entry (offsets assigned then), right after a *release tag*
naming the scheduled entries it releases. Layouts (big-endian)::

    scheduled:   u8 'D' | u8 version 1 | i64 deliver_at_ms | i64 append_time_ms | batches...
    release tag: u8 'E' | u8 version 1 | u32 count | count x (i64 deliver_at_ms, i64 index)

Rules (every replica applies them at the same log positions, so every replica holds the
same pending set at the same index):

1. Applying a scheduled entry at index ``i`` adds the key ``(deliver_at_ms, i)`` to the
   partition's schedule index.
2. A release is the pair (tag at ``i``, data entry at ``i + 1``) of the *same term*: the
   leader proposes both in one ``propose_batch``, so they sit side by side in its log. Only
   when the data entry at ``i + 1`` applies with the tag's term are the tag's keys deleted.
   A tag whose next entry is anything else (a new leader's entry after a truncation) does
   nothing: Raft commits prefixes, so a committed data entry at ``i + 1`` implies its tag
   at ``i`` is committed too, and a truncated data entry leaves its keys pending. So a
   record is released at most once in the committed log, and a lost release is proposed
   again by the next leader.
3. The leader proposes releases only after it applied the first entry of its own term (it
   has then applied every release an earlier leader committed), only of applied keys that
   are due by its clock, in key order (time order; ties by log position), and never a key
   twice in one term (``in_flight``, cleared with the term).
4. Retention never drops a pending scheduled entry: its cut stays below the oldest pending
   index (``oldest_index``), so the records stay in the log until released. Hence the
   index is *derived* state: a restart rebuilds it by replaying the retained log
   (``reset`` then rules 1-2), and a snapshot at index ``S`` needs to carry nothing: every
   scheduled entry at or below ``S`` was released by a committed tag that is at or below
   the cutting replica's applied index; those above ``S`` are in the log after it.
   Installing a snapshot drops the keys at or below ``S`` (``drop_through``): the releases
   that covered them may be inside the snapshot.

Memory: the pending keys live in a RocksDB of their own per node (``RocksScheduleStore``,
unsynced, wiped at start: rule 4 rebuilds it), so memory does not grow with the number of
pending records: the records stay in the Raft log on disk, the keys in RocksDB (memtable
capped at ``SCHEDULE_WRITE_BUFFER_BYTES`` x 2, blocks in a bounded cache); in Python the
leader keeps only the keys it proposed and has not seen applied (``IN_FLIGHT_MAX``) and a
count. ``MemoryScheduleIndex`` is the same contract in memory, for tests.
"""

from __future__ import annotations

import os
import shutil
import struct
from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator
from typing import Protocol

import rocksdict

SCHEDULED_MAGIC = 0x44  # 'D'
RELEASE_MAGIC = 0x45  # 'E'
VERSION = 1
SCHEDULED_HEADER = struct.Struct(">BBqq")
SCHEDULED_HEADER_SIZE = SCHEDULED_HEADER.size  # 18
_TAG_HEAD = struct.Struct(">BBI")
_KEY = struct.Struct(">qq")
RELEASE_KEYS_MAX = 1000  # keys per release tag (and scheduled entries per release entry)
RELEASE_BYTES_MAX = 1 << 20  # batch bytes per release entry (a max.message.bytes)
IN_FLIGHT_MAX = 20_000  # keys a leader proposed and has not seen applied yet
SCHEDULE_WRITE_BUFFER_BYTES = 8 << 20

Key = tuple[int, int]  # (deliver_at_ms, raft index of the scheduled entry)


def encode_scheduled(deliver_at_ms: int, append_time_ms: int, payload: bytes) -> bytes:
    return SCHEDULED_HEADER.pack(SCHEDULED_MAGIC, VERSION, deliver_at_ms,
                                 append_time_ms) + payload


def scheduled_deliver_at(data: bytes) -> int | None:
    """The delivery time of a scheduled entry's data, or None if it is not one."""
    if len(data) < SCHEDULED_HEADER_SIZE or data[0] != SCHEDULED_MAGIC or data[1] != VERSION:
        return None
    return SCHEDULED_HEADER.unpack_from(data, 0)[2]


def encode_release_tag(keys: list[Key]) -> bytes:
    out = bytearray(_TAG_HEAD.size + _KEY.size * len(keys))
    _TAG_HEAD.pack_into(out, 0, RELEASE_MAGIC, VERSION, len(keys))
    pos = _TAG_HEAD.size
    for deliver_at, index in keys:
        _KEY.pack_into(out, pos, deliver_at, index)
        pos += _KEY.size
    return bytes(out)


def decode_release_tag(data: bytes) -> list[Key] | None:
    if len(data) < _TAG_HEAD.size or data[0] != RELEASE_MAGIC or data[1] != VERSION:
        return None
    _, _, count = _TAG_HEAD.unpack_from(data, 0)
    if len(data) != _TAG_HEAD.size + count * _KEY.size:
        return None
    return [_KEY.unpack_from(data, _TAG_HEAD.size + k * _KEY.size) for k in range(count)]


class ScheduleIndex(Protocol):
    """The pending keys of one partition replica. Called on the event loop only; writes
    need not be durable (the index is rebuilt from the log at start, rule 4)."""

    count: int
    """Number of pending keys."""

    def add(self, key: Key) -> None:
        """Add a key (idempotent: adding a present key changes nothing)."""
        ...

    def remove(self, keys: Iterable[Key]) -> None:
        """Delete keys (absent ones are ignored)."""
        ...

    def first(self) -> Iterator[Key]:
        """Pending keys in key order (time order), lazily."""
        ...

    def oldest_index(self) -> int | None:
        """The smallest raft index of a pending key, or None."""
        ...

    def drop_through(self, index: int) -> None:
        """Delete every key whose raft index is <= ``index``."""
        ...

    def reset(self) -> None:
        """Delete every key."""
        ...


class MemoryScheduleIndex:
    """``ScheduleIndex`` in memory (tests; O(n) inserts)."""

    def __init__(self) -> None:
        self._keys: list[Key] = []
        self._by_index: dict[int, int] = {}
        self.count = 0

    def add(self, key: Key) -> None:
        if key[1] in self._by_index:
            return
        self._by_index[key[1]] = key[0]
        insort(self._keys, key)
        self.count += 1

    def remove(self, keys: Iterable[Key]) -> None:
        for key in keys:
            if self._by_index.get(key[1]) != key[0]:
                continue
            del self._by_index[key[1]]
            del self._keys[bisect_left(self._keys, key)]
            self.count -= 1

    def first(self) -> Iterator[Key]:
        return iter(list(self._keys))

    def oldest_index(self) -> int | None:
        return min(self._by_index) if self._by_index else None

    def drop_through(self, index: int) -> None:
        self.remove([(t, i) for i, t in self._by_index.items() if i <= index])

    def reset(self) -> None:
        self._keys.clear()
        self._by_index.clear()
        self.count = 0


# RocksDB layout, per partition group id g (big-endian, so iteration is in key order):
#   u32 g | u8 0 | u64 deliver_at_ms | u64 index  -> b""            (by time)
#   u32 g | u8 1 | u64 index                      -> u64 deliver_at  (by index)
_BY_TIME = struct.Struct(">IBQQ")
_BY_INDEX = struct.Struct(">IBQ")
_U64 = struct.Struct(">Q")
_PREFIX = struct.Struct(">IB")


class RocksScheduleStore:
    """One unsynced RocksDB per node holding every partition's pending keys (derived
    state: wiped when opened, rebuilt by each replica as it attaches)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        shutil.rmtree(self.path, ignore_errors=True)
        opts = rocksdict.Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.set_write_buffer_size(SCHEDULE_WRITE_BUFFER_BYTES)
        opts.set_max_write_buffer_number(2)
        opts.set_compression_type(rocksdict.DBCompressionType.none())
        opts.set_keep_log_file_num(2)
        self._db: rocksdict.Rdict | None = rocksdict.Rdict(self.path, opts)
        self._write_options = rocksdict.WriteOptions()
        self._write_options.sync = False
        self._write_options.disable_wal = True  # rebuilt from the Raft log at start

    def index(self, group_id: int) -> RocksScheduleIndex:
        index = RocksScheduleIndex(self, group_id)
        index.reset()
        return index

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    @property
    def db(self) -> rocksdict.Rdict:
        if self._db is None:
            raise RuntimeError("the schedule store is closed")
        return self._db


class RocksScheduleIndex:
    """``ScheduleIndex`` of one group in the node's ``RocksScheduleStore``."""

    def __init__(self, store: RocksScheduleStore, group_id: int) -> None:
        self._store = store
        self._group = group_id
        self.count = 0

    def add(self, key: Key) -> None:
        db = self._store.db
        by_index = _BY_INDEX.pack(self._group, 1, key[1])
        if db.get(by_index) is not None:
            return
        batch = rocksdict.WriteBatch(raw_mode=True)
        batch.put(_BY_TIME.pack(self._group, 0, max(key[0], 0), key[1]), b"")
        batch.put(by_index, _U64.pack(max(key[0], 0)))
        db.write(batch, self._store._write_options)
        self.count += 1

    def remove(self, keys: Iterable[Key]) -> None:
        db = self._store.db
        batch = rocksdict.WriteBatch(raw_mode=True)
        removed = 0
        for deliver_at, index in keys:
            by_index = _BY_INDEX.pack(self._group, 1, index)
            stored = db.get(by_index)
            if stored is None or _U64.unpack(stored)[0] != max(deliver_at, 0):
                continue
            batch.delete(_BY_TIME.pack(self._group, 0, max(deliver_at, 0), index))
            batch.delete(by_index)
            removed += 1
        if removed:
            db.write(batch, self._store._write_options)
            self.count -= removed

    def first(self) -> Iterator[Key]:
        db = self._store.db
        prefix = _PREFIX.pack(self._group, 0)
        it = db.iter()
        it.seek(prefix)
        while it.valid():
            k = it.key()
            if k[:_PREFIX.size] != prefix:
                return
            _, _, deliver_at, index = _BY_TIME.unpack(k)
            yield deliver_at, index
            it.next()

    def oldest_index(self) -> int | None:
        prefix = _PREFIX.pack(self._group, 1)
        it = self._store.db.iter()
        it.seek(prefix)
        if it.valid() and it.key()[:_PREFIX.size] == prefix:
            return _BY_INDEX.unpack(it.key())[2]
        return None

    def drop_through(self, index: int) -> None:
        prefix = _PREFIX.pack(self._group, 1)
        it = self._store.db.iter()
        it.seek(prefix)
        keys: list[Key] = []
        while it.valid():
            k = it.key()
            if k[:_PREFIX.size] != prefix:
                break
            i = _BY_INDEX.unpack(k)[2]
            if i > index:
                break
            keys.append((_U64.unpack(it.value())[0], i))
            it.next()
        self.remove(keys)

    def reset(self) -> None:
        batch = rocksdict.WriteBatch(raw_mode=True)
        batch.delete_range(_PREFIX.pack(self._group, 0), _PREFIX.pack(self._group, 2))
        self._store.db.write(batch, self._store._write_options)
        self.count = 0


class DelayedState:
    """A replica's delayed-delivery state: the pending index (rules 1, 2, 4) and, on the
    leader, the keys it proposed this term (rule 3)."""

    def __init__(self, index: ScheduleIndex | None = None) -> None:
        self.index: ScheduleIndex = index if index is not None else MemoryScheduleIndex()
        self._tag: tuple[int, int, list[Key]] | None = None  # (raft index, term, keys)
        self.in_flight: set[Key] = set()
        self.in_flight_term = 0
        self.changed = False  # a key was added or removed since the leader last looked

    @property
    def pending_count(self) -> int:
        return self.index.count

    def apply_scheduled(self, index: int, data: bytes) -> None:
        deliver_at = scheduled_deliver_at(data)
        if deliver_at is not None:
            self.index.add((deliver_at, index))
            self.changed = True

    def apply_tag(self, index: int, term: int, data: bytes) -> None:
        keys = decode_release_tag(data)
        self._tag = (index, term, keys) if keys else None

    def apply_data(self, index: int, term: int) -> int:
        """A data entry applied at ``index``: if it completes a release (rule 2), delete
        its keys. Returns the number of scheduled entries released."""
        tag = self._tag
        if tag is None:
            return 0
        self._tag = None
        tag_index, tag_term, keys = tag
        if index != tag_index + 1 or term != tag_term:
            return 0
        self.index.remove(keys)
        self.in_flight.difference_update(keys)
        self.changed = True
        return len(keys)

    def drop_through(self, index: int) -> None:
        """A snapshot at ``index`` was installed (rule 4)."""
        self.index.drop_through(index)
        self._tag = None
        self.changed = True

    def reset(self) -> None:
        self.index.reset()
        self._tag = None
        self.in_flight.clear()
        self.changed = True

    def new_term(self, term: int) -> None:
        """Leadership (or its loss) at ``term``: nothing proposed in it yet."""
        if term != self.in_flight_term:
            self.in_flight.clear()
            self.in_flight_term = term

    def due(self, now_ms: int, limit: int) -> list[Key]:
        """Up to ``limit`` keys due at ``now_ms`` not proposed this term, in key order."""
        out: list[Key] = []
        if limit <= 0:
            return out
        in_flight = self.in_flight
        for key in self.index.first():
            if key[0] > now_ms:
                break
            if key in in_flight:
                continue
            out.append(key)
            if len(out) >= limit:
                break
        return out

    def next_due_ms(self) -> int | None:
        """Delivery time of the first pending key not proposed this term, or None."""
        in_flight = self.in_flight
        for key in self.index.first():
            if key not in in_flight:
                return key[0]
        return None
