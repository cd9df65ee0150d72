"""The Raft log store on RocksDB (rocksdict): many Raft groups in one DB per node.

``RocksLogDB(path)`` opens the node's DB; ``db.group(group_id)`` returns a
``RocksGroupStorage`` that implements ``raft._storage.Storage`` and ``LogWriter`` with
exactly ``MemoryStorage``'s semantics; ``db.save_many(items)`` persists the ``Ready`` writes
of many groups with ONE ``WriteBatch`` and ONE sync (group commit).

Key layout (all integers big-endian, so byte order is index order)::

    u64 group_id | u8 kind                     kind 0x01 hard state
    u64 group_id | u8 kind                     kind 0x02 snapshot metadata
    u64 group_id | u8 kind | u64 chunk_number  kind 0x03 snapshot data, 1 MiB chunks
    u64 group_id | u8 kind | u64 index         kind 0x04 log entry
    u64 group_id | u8 kind | u64 index         kind 0x05 conf-entry index (secondary key:
                                               ``config_entries()`` without a log scan)
    u64 group_id | u8 kind                     kind 0x06 vote floor (``drop_group`` with a
                                               tombstone; read by ``vote_floor()``)

Value layout. Every value carries a CRC-32 (zlib) and a length, and the CRC always covers
the value's own *key* too, so a value copied under another key (other group, other index)
fails its check::

    generic (kinds 1, 2, 3, 5, 6): u32 crc | u32 body_size | body
                                 crc = crc32(key | body_size | body)
    entry (kind 4):              u32 head_crc | u32 data_size | u64 term | u8 entry_kind
                                 | u32 data_crc | data
                                 data_crc = crc32(data)
                                 head_crc = crc32(key | data_size | term | entry_kind | data_crc)
    hard state body:             u64 term | u64 vote | u64 commit
    snapshot metadata body:      u64 index | u64 term | u64 data_size | u32 data_crc
                                 | u32 chunk_count | ConfState.encode()
    snapshot chunk body:         up to 1 MiB of the snapshot's data
    conf-entry index body:       empty (the key is the information)
    vote floor body:             u64 term | u64 index

An entry has two CRCs so that ``term()`` can verify the header without hashing the data.
A missing group key means "nothing stored": a new group reads as ``MemoryStorage()``.

Writes. ``save_many`` validates every item while it builds one ``WriteBatch`` (range
deletes for suffix truncation, compaction and snapshot install; puts for the rest; batch
order = apply order); any error drops the batch unwritten, so a bad item writes nothing. It
writes the batch with ``sync=False`` and then makes it durable with ``flush_wal(True)``,
which releases the GIL during the fsync (a synced rocksdict write would hold it: see
bench/README.md). The in-memory metadata changes only after the sync returned. If the write or
the sync fails the DB is *poisoned*: every later write raises ``StorageFailed`` (the data may
be in RocksDB's memtable without being durable), and so do reads if that batch was
destructive (see below); reopen it.

Opening and recovery. RocksDB replays its WAL in ``tolerate_corrupted_tail_records`` mode
(with ``paranoid_checks``): a record cut short at the end of the newest WAL (a crash during an
unsynced write; never acknowledged) is dropped, but a record that fails its checksum anywhere,
the last one included, refuses the open. ``point_in_time`` (what this store used before)
silently dropped every record after a damaged one, synced or not; ``absolute_consistency``
also refuses the cut-short tail that an ordinary kill -9 leaves (measured: 2 of 15 kills
during 3 MiB batches). Not detected: a damaged *length* field in the newest WAL's last 32 KiB
block that points past the end of the file reads as a torn tail (RocksDB cannot tell them
apart). A DB that cannot be opened (damaged WAL or SST, locked by another process,
permission denied) raises ``StorageOpenError`` (``StorageCorruptError`` for damage) whose
message is one line for the operator: path, meaning, what to do.

Reads and threads. One writer at a time (``save_many``/``compact``/``bootstrap`` serialize
on a lock), which may be a worker thread so that the sync stays off the event loop; readers
(any thread) see the state as of the last *completed* save. Each read holds a short lock.
Reads are bounded by the in-memory metadata, so a batch that only appends after the last
index and sets hard states (the common case) is invisible to them until its sync returned
and the metadata was swapped: it is written and synced without blocking readers. A
*destructive* batch (suffix overwrite, snapshot install, compaction) changes keys readers
may look at, so it holds the read lock across its write and sync: readers wait (the GIL is
still released during the sync). RocksDB snapshots would avoid that wait, but rocksdict
0.3.29's ``Snapshot.items()/iter()`` ignore the snapshot and read the live DB.

Memory. Per group only cheap metadata is cached (``_Meta``: first/last index, last term,
snapshot metadata, hard state, conf-entry indices); entries and snapshot data are read from
RocksDB. No entry cache: the benchmark reads just-written entries at ~1.5-2.5 GB/s (64 KiB)
and ~230-330k entries/s (100 B), CRC-checked, far above what replication needs here.

Validation. Eagerly, when a group is first opened (``db.group(gid)``): the hard state and
snapshot metadata values (CRC, length, decoding), the first and the last stored entry (CRC,
and first == snapshot index + 1), and every conf-entry index key (CRC, index within
[first, last]). Lazily, on each read: every entry returned (both CRCs, key/index, entry
kind; ``term()`` checks the header CRC only, which covers the key and the term), gaps inside [first, last] (a range read that skips an index, a missing key),
conf-index keys pointing at a missing or non-CONF entry, and snapshot chunks (per-chunk CRC,
chunk count, total size and whole-data CRC) when ``snapshot()`` reads them. Not detected:
a CONF entry whose index key was lost (would need a log scan). Any failure raises
``StorageCorruption(group_id, index_or_None, detail)``; no corrupt data is ever returned.
RocksDB checks SST blocks when it reads them: a damaged block met while a group is opened
(a failed ``get``, an iterator stopped on an error) raises ``StorageCorruption`` too; in a
range read it shows as a missing entry (rocksdict's ``items()`` ends at the error silently).

Deliberate differences from ``MemoryStorage`` (only on inputs that are caller bugs):
``save`` is all-or-nothing (MemoryStorage may install a snapshot and then reject a gapped
append), and entries within one ``save`` must have consecutive indices (``ValueError``).
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from typing import NamedTuple, Sequence

import rocksdict

from .core._errors import (
    CompactedError,
    RaftError,
    SnapshotOutOfDate,
    StorageCorruption,
    UnavailableError,
)
from .core._types import (ConfState, Entry, EntryKind, HardState, LogPosition, Snapshot,
                          SnapshotMeta, Tombstone)

__all__ = [
    "RocksLogDB", "RocksGroupStorage", "SaveItem", "StorageCorruptError", "StorageFailed",
    "StorageOpenError", "damaged_store_advice",
]

SaveItem = tuple[int, "HardState | None", "Sequence[Entry]", "Snapshot | None"]
"""One group's share of a group commit: ``(group_id, hard_state, entries, snapshot)``."""

KIND_HARD_STATE = 0x01
KIND_SNAPSHOT_META = 0x02
KIND_SNAPSHOT_CHUNK = 0x03
KIND_ENTRY = 0x04
KIND_CONF_INDEX = 0x05
KIND_VOTE_FLOOR = 0x06

SNAPSHOT_CHUNK_SIZE_BYTES = 1 << 20
_INDEX_MAX = (1 << 64) - 1

_U32 = struct.Struct(">I")
_FRAME = struct.Struct(">II")  # crc, body_size
_PREFIX = struct.Struct(">QB")  # group_id, kind
_INDEXED = struct.Struct(">QBQ")  # group_id, kind, index
_ENTRY_HEAD = struct.Struct(">IIQBI")  # head_crc, data_size, term, entry_kind, data_crc
_ENTRY_HEAD_REST = struct.Struct(">IQBI")  # what head_crc covers after the key
_HARD_STATE = struct.Struct(">QQQ")
_VOTE_FLOOR = struct.Struct(">QQ")  # term, index
_SNAPSHOT_META = struct.Struct(">QQQII")  # index, term, data_size, data_crc, chunk_count
_ENTRY_KINDS = tuple(EntryKind)  # stored u8 -> EntryKind, by position
_crc32 = zlib.crc32


class StorageFailed(RaftError):
    """A write or sync failed; the DB may hold non-durable data. Close and reopen it."""


class StorageOpenError(RaftError):
    """The log DB could not be opened. ``str(error)`` is one line meant for the operator:
    what failed (with the path), what it means and what to do. ``path`` is the DB directory,
    ``detail`` RocksDB's own message."""

    def __init__(self, path: str, detail: str, message: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(message)


class StorageCorruptError(StorageOpenError):
    """RocksDB found damaged data (WAL or SST) while opening the log DB and refused it."""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def damaged_store_advice(path: str) -> str:
    """What the operator does about a damaged log DB at ``path`` (one sentence group)."""
    return (f"To recover: keep the node stopped, move {path} aside (keep it for diagnosis) "
            f"and start the node again: it starts with an empty log and the other replicas "
            f"send it theirs. Do this for one node at a time and only while the other "
            f"replicas are up (node/README.md, 'Operations: damaged storage')")


def _check_iterator(group_id: int, it: rocksdict.RdictIter) -> None:
    """An iterator that is not ``valid()`` may have stopped on a read error (a damaged SST
    block) rather than at the end of the data: raise ``StorageCorruption`` for the former."""
    try:
        it.status()
    except Exception as exc:  # rocksdict raises bare Exception("Corruption: ...")
        raise StorageCorruption(group_id, None, _one_line(str(exc))) from exc


def _open_error(path: str, exc: Exception) -> StorageOpenError:
    """Translate RocksDB's open failure into an error the operator can act on."""
    detail = _one_line(str(exc))
    if detail.startswith("Corruption:"):
        where = ""
        if ".sst" not in detail and "MANIFEST" not in detail:
            # RocksDB's WAL replay errors name no file ("Corruption: checksum mismatch")
            try:
                logs = sorted(n for n in os.listdir(path) if n.endswith(".log"))
            except OSError:
                logs = []
            if logs:
                where = f" in its write-ahead log ({', '.join(logs)})"
        return StorageCorruptError(path, detail, (
            f"raft log store {path} is damaged{where} and was not opened ({detail}); it may have "
            f"lost records this node synced and acknowledged, so the node must not run on "
            f"what is left. {damaged_store_advice(path)}"))
    if "permission denied" in detail.lower():
        return StorageOpenError(path, detail, (
            f"raft log store {path} cannot be opened: permission denied ({detail}); run the "
            f"node as the user that owns the data directory, or fix its owner and mode"))
    if "/LOCK" in detail:
        return StorageOpenError(path, detail, (
            f"raft log store {path} is locked by another process ({detail}); is another "
            f"raftka node running with this data directory? Stop it, or give this node its "
            f"own --data-dir"))
    return StorageOpenError(path, detail, (
        f"raft log store {path} cannot be opened ({detail}); check that the data directory "
        f"exists, is writable and has free space"))


# -- keys ------------------------------------------------------------------------------


def hard_state_key(group_id: int) -> bytes:
    return _PREFIX.pack(group_id, KIND_HARD_STATE)


def vote_floor_key(group_id: int) -> bytes:
    return _PREFIX.pack(group_id, KIND_VOTE_FLOOR)


def snapshot_meta_key(group_id: int) -> bytes:
    return _PREFIX.pack(group_id, KIND_SNAPSHOT_META)


def snapshot_chunk_key(group_id: int, chunk_number: int) -> bytes:
    return _INDEXED.pack(group_id, KIND_SNAPSHOT_CHUNK, chunk_number)


def entry_key(group_id: int, index: int) -> bytes:
    return _INDEXED.pack(group_id, KIND_ENTRY, index)


def conf_index_key(group_id: int, index: int) -> bytes:
    return _INDEXED.pack(group_id, KIND_CONF_INDEX, index)


def _kind_end(group_id: int, kind: int) -> bytes:
    """First key after every key of ``kind`` in the group."""
    return _PREFIX.pack(group_id, kind + 1)


# -- values ----------------------------------------------------------------------------


def _frame(key: bytes, body: bytes) -> bytes:
    size = _U32.pack(len(body))
    crc = _crc32(body, _crc32(size, _crc32(key)))
    return b"".join((_U32.pack(crc), size, body))


def _unframe(group_id: int, index: int | None, key: bytes, value: bytes, what: str) -> bytes:
    if len(value) < _FRAME.size:
        raise StorageCorruption(group_id, index, f"{what}: truncated value ({len(value)} bytes)")
    crc, size = _FRAME.unpack_from(value)
    if size != len(value) - _FRAME.size:
        raise StorageCorruption(
            group_id, index, f"{what}: value holds {len(value) - _FRAME.size} bytes, header says {size}"
        )
    if _crc32(memoryview(value)[4:], _crc32(key)) != crc:
        raise StorageCorruption(group_id, index, f"{what}: checksum mismatch")
    return value[_FRAME.size :]


def _encode_entry(key: bytes, entry: Entry) -> bytes:
    data = entry.data
    rest = _ENTRY_HEAD_REST.pack(len(data), entry.term, entry.kind, _crc32(data))
    return b"".join((_U32.pack(_crc32(rest, _crc32(key))), rest, data))


def _check_entry_head(group_id: int, index: int, key: bytes, value: bytes) -> tuple[int, int, int, int]:
    """Verify an entry's header; return (data_size, term, entry_kind, data_crc)."""
    if len(value) < _ENTRY_HEAD.size:
        raise StorageCorruption(group_id, index, f"entry: truncated value ({len(value)} bytes)")
    head_crc, size, term, kind, data_crc = _ENTRY_HEAD.unpack_from(value)
    if size != len(value) - _ENTRY_HEAD.size:
        raise StorageCorruption(
            group_id, index,
            f"entry: value holds {len(value) - _ENTRY_HEAD.size} data bytes, header says {size}",
        )
    if _crc32(memoryview(value)[4 : _ENTRY_HEAD.size], _crc32(key)) != head_crc:
        raise StorageCorruption(group_id, index, "entry: header checksum mismatch")
    if kind >= len(_ENTRY_KINDS):
        raise StorageCorruption(group_id, index, f"entry: unknown entry kind {kind}")
    return size, term, kind, data_crc


def _decode_entry(group_id: int, index: int, key: bytes, value: bytes) -> Entry:
    _, term, kind, data_crc = _check_entry_head(group_id, index, key, value)
    data = value[_ENTRY_HEAD.size :]
    if _crc32(data) != data_crc:
        raise StorageCorruption(group_id, index, "entry: data checksum mismatch")
    return Entry(term, index, _ENTRY_KINDS[kind], data)


class _SnapshotInfo(NamedTuple):
    meta: SnapshotMeta = SnapshotMeta()
    data_size: int = 0
    data_crc: int = 0
    chunk_count: int = 0


def _encode_snapshot_meta(info: _SnapshotInfo) -> bytes:
    m = info.meta
    return _SNAPSHOT_META.pack(
        m.index, m.term, info.data_size, info.data_crc, info.chunk_count
    ) + m.conf_state.encode()


def _decode_snapshot_meta(group_id: int, body: bytes) -> _SnapshotInfo:
    if len(body) < _SNAPSHOT_META.size:
        raise StorageCorruption(group_id, None, "snapshot metadata: body too short")
    index, term, size, crc, chunks = _SNAPSHOT_META.unpack_from(body)
    try:
        conf = ConfState.decode(body[_SNAPSHOT_META.size :])
    except ValueError as exc:
        raise StorageCorruption(group_id, None, f"snapshot metadata: {exc}") from exc
    if chunks != -(-size // SNAPSHOT_CHUNK_SIZE_BYTES):
        raise StorageCorruption(group_id, None, f"snapshot metadata: {chunks} chunks for {size} bytes")
    return _SnapshotInfo(SnapshotMeta(index, term, conf), size, crc, chunks)


# -- per-group metadata ----------------------------------------------------------------


class _Meta(NamedTuple):
    """Immutable: replaced whole (one attribute store) after each durable write.

    first: snapshot.index + 1. last: >= first - 1 (== first - 1: empty log).
    last_term: term at ``last`` (the snapshot's term if the log is empty).
    conf: indices of CONF entries in [first, last], ascending.
    vote_floor: from a tombstone (``drop_group``); never changed by a save.
    """

    first: int
    last: int
    last_term: int
    snapshot: _SnapshotInfo
    hard_state: HardState
    conf: tuple[int, ...]
    vote_floor: LogPosition = LogPosition()


_EMPTY_META = _Meta(1, 0, 0, _SnapshotInfo(), HardState(), ())


class _Work:
    """Mutable planning copy of one group's metadata while a batch is being built.

    ``appended`` holds the runs of entries written earlier in the same batch (not yet
    readable from RocksDB), newest last, so that a group may appear more than once in one
    save_many: the newest run that covers an index <= last holds its term.
    """

    __slots__ = ("first", "last", "last_term", "snapshot", "hard_state", "conf", "appended",
                 "vote_floor")

    def __init__(self, m: _Meta) -> None:
        self.first = m.first
        self.last = m.last
        self.last_term = m.last_term
        self.snapshot = m.snapshot
        self.hard_state = m.hard_state
        self.conf = list(m.conf)
        self.appended: list[Sequence[Entry]] = []
        self.vote_floor = m.vote_floor

    def meta(self) -> _Meta:
        return _Meta(self.first, self.last, self.last_term, self.snapshot, self.hard_state,
                     tuple(self.conf), self.vote_floor)


# -- the DB ----------------------------------------------------------------------------


def _options() -> rocksdict.Options:
    opts = rocksdict.Options(raw_mode=True)  # bytes in, bytes out: no pickle on disk
    opts.create_if_missing(True)
    # Drop a record cut short at the end of the WAL (an unsynced write torn by a crash), but
    # refuse to open on any record that fails its checksum: it may have been synced and
    # acknowledged, and point_in_time would silently drop it and everything after it. See
    # "Opening and recovery" in the module docstring for why not absolute_consistency.
    opts.set_wal_recovery_mode(rocksdict.DBRecoveryMode.tolerate_corrupted_tail_records())
    opts.set_paranoid_checks(True)  # the default; without it the WAL checks above are off
    # Raft logs are written once, read soon, deleted by compaction: big memtables let most
    # entries die before they are ever flushed. 64 MiB x 4 bounds the memtable memory.
    opts.set_write_buffer_size(64 << 20)
    opts.set_max_write_buffer_number(4)
    # Stored as the producer sent them, like Kafka: record batches are lz4 already (the
    # client's default), and compressing them again cost CPU at every flush and compaction
    # for nothing; compactions after a burst of writes competed with the Raft loop on small
    # machines (p99 at 1,000/s 5 -> 35-63 ms while one ran, bench w3 after w2).
    opts.set_compression_type(rocksdict.DBCompressionType.none())
    opts.set_level_compaction_dynamic_level_bytes(True)
    opts.set_max_background_jobs(2)
    opts.set_bytes_per_sync(1 << 20)  # smooth SST writeback instead of one big fsync
    opts.set_keep_log_file_num(4)  # RocksDB's info LOG files, not the WAL
    return opts


class RocksLogDB:
    """One RocksDB holding the Raft logs of every group on a node."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = os.fspath(path)
        try:
            db = rocksdict.Rdict(self._path, _options())
        except Exception as exc:  # rocksdict raises bare Exception("Corruption: ...") etc.
            raise _open_error(self._path, exc) from exc
        self._db: rocksdict.Rdict | None = db
        self._write_options = rocksdict.WriteOptions()
        self._write_options.sync = False  # durability comes from flush_wal(True)
        self._write_lock = threading.Lock()  # one writer at a time; never held by readers
        self._read_lock = threading.Lock()  # held by each read; by writers: see _commit
        self._groups: dict[int, RocksGroupStorage] = {}
        self._failed: BaseException | None = None  # set when a write or sync failed
        self._reads_failed = False  # ... and that write may have changed readable keys

    @property
    def path(self) -> str:
        return self._path

    def __enter__(self) -> RocksLogDB:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush memtables and close the DB; its groups' stores then raise on use."""
        with self._write_lock, self._read_lock:
            db, self._db = self._db, None
            if db is not None:
                db.close()

    def int_property(self, name: str) -> int | None:
        """A RocksDB integer property (``rocksdb.total-sst-files-size``, ...), or None if
        the DB is closed or does not know it. Safe from any thread (metrics read it)."""
        with self._read_lock:
            db = self._db
            if db is None:
                return None
            try:
                return db.property_int_value(name)
            except Exception:  # noqa: BLE001 - an unknown property or a closing DB
                return None

    def group(self, group_id: int) -> RocksGroupStorage:
        """The store of one group (created empty if nothing is stored); loads and validates
        its metadata on first use (see the module docstring)."""
        g = self._groups.get(group_id)
        if g is not None:
            return g
        if not 0 <= group_id < _INDEX_MAX:
            raise ValueError(f"group id {group_id} out of range")
        with self._read_lock:
            g = self._groups.get(group_id)
            if g is None:
                try:
                    meta = self._load(self._require_readable(), group_id)
                except RaftError:
                    raise
                except Exception as exc:  # RocksDB read error, e.g. a damaged SST block
                    if "Corruption" not in str(exc):
                        raise
                    raise StorageCorruption(group_id, None, _one_line(str(exc))) from exc
                g = RocksGroupStorage(self, group_id, meta)
                self._groups[group_id] = g
        return g

    def group_ids(self) -> list[int]:
        """Ids of every group that has anything stored, ascending (one seek per group)."""
        with self._read_lock:
            it = self._require_readable().iter()
            found: list[int] = []
            it.seek(bytes(8))
            while it.valid():
                (gid,) = struct.unpack_from(">Q", it.key())
                found.append(gid)
                if gid == _INDEX_MAX:
                    break
                it.seek(struct.pack(">Q", gid + 1))
            return found

    def save_many(self, items: Sequence[SaveItem], sync: bool = True) -> None:
        """Group commit: for each ``(group_id, hard_state, entries, snapshot)`` do what
        ``LogWriter.save`` does, all in one WriteBatch made durable by one sync. Atomic across
        groups: on any validation error nothing is written. Items apply in order; a group may
        appear more than once.

        ``sync=False`` is for batches that only move commit indexes (``Ready.must_sync`` is
        false): the write reaches the WAL unsynced and becomes durable with the next synced
        batch; losing it in a crash only makes a restarted node re-learn its commit index."""
        with self._write_lock:
            db = self._require_writable()
            batch = rocksdict.WriteBatch(raw_mode=True)
            work: dict[int, _Work] = {}
            destructive = False
            for group_id, hard_state, entries, snapshot in items:
                w = work.get(group_id)
                if w is None:
                    w = work[group_id] = _Work(self.group(group_id)._meta)
                if snapshot is not None and not snapshot.is_empty:
                    self._plan_install(db, batch, group_id, w, snapshot)
                    destructive = True
                if entries:
                    destructive |= self._plan_append(db, batch, group_id, w, entries)
                if hard_state is not None:
                    key = hard_state_key(group_id)
                    batch.put(key, _frame(key, _HARD_STATE.pack(*hard_state)))
                    w.hard_state = hard_state
            if batch.is_empty():
                return
            self._commit(db, batch, {gid: w.meta() for gid, w in work.items()}, destructive,
                         sync)

    def drop_group(self, group_id: int, tombstone: Tombstone | None = None) -> None:
        """Durably delete everything stored for ``group_id`` (a deleted partition, or a
        replica moved off this node). Stores handed out earlier for it must not be used
        afterwards. With ``tombstone`` (a replica moved off: the group lives on elsewhere)
        its hard state and vote floor are kept in the same atomic write, so that a replica
        re-created here starts from them (rule 13 of ``raft.core._raft``); a later
        ``drop_group`` without one removes them (the group's topic was deleted)."""
        with self._write_lock:
            db = self._require_writable()
            batch = rocksdict.WriteBatch(raw_mode=True)
            batch.delete_range(struct.pack(">Q", group_id), struct.pack(">Q", group_id + 1))
            if tombstone is not None:
                key = hard_state_key(group_id)
                batch.put(key, _frame(key, _HARD_STATE.pack(*tombstone.hard_state())))
                key = vote_floor_key(group_id)
                batch.put(key, _frame(key, _VOTE_FLOOR.pack(*tombstone.floor)))
            with self._read_lock:
                db.write(batch, self._write_options)
                self._sync(db)
                self._groups.pop(group_id, None)

    # -- internals ---------------------------------------------------------------------
    def _require_readable(self) -> rocksdict.Rdict:
        if self._db is None:
            raise RaftError("the raft log DB is closed")
        if self._reads_failed:
            raise StorageFailed(f"a write that changed readable data failed ({self._failed!r}); reopen the DB")
        return self._db

    def _require_writable(self) -> rocksdict.Rdict:
        if self._db is None:
            raise RaftError("the raft log DB is closed")
        if self._failed is not None:
            raise StorageFailed(f"an earlier write failed ({self._failed!r}); reopen the DB")
        return self._db

    def _sync(self, db: rocksdict.Rdict) -> None:
        """Make every written batch durable; releases the GIL during the fsync."""
        db.flush_wal(True)

    def _commit(
        self, db: rocksdict.Rdict, batch: rocksdict.WriteBatch, metas: dict[int, _Meta],
        destructive: bool, sync: bool = True,
    ) -> None:
        """Write ``batch`` durably, then publish ``metas``. Caller holds the write lock.

        ``destructive``: the batch deletes or overwrites keys inside some group's
        [first - 1, last] or its snapshot, so readers are kept out until it is durable."""
        if destructive:
            self._read_lock.acquire()
        try:
            db.write(batch, self._write_options)
            if sync or destructive:
                self._sync(db)
            if destructive:  # before readers get in: the old metadata names deleted keys
                self._publish(metas)
        except BaseException as exc:
            self._failed = exc
            self._reads_failed = destructive
            if isinstance(exc, Exception):
                raise StorageFailed(f"raft log write failed: {exc!r}") from exc
            raise
        finally:
            if destructive:
                self._read_lock.release()
        if not destructive:
            with self._read_lock:
                self._publish(metas)

    def _publish(self, metas: dict[int, _Meta]) -> None:
        for gid, meta in metas.items():
            self._groups[gid]._meta = meta

    def _stored_term(self, db: rocksdict.Rdict, group_id: int, w: _Work, index: int) -> int:
        """Term at ``index`` (first - 1 <= index <= last) during planning."""
        if index == w.first - 1:
            return w.snapshot.meta.term
        if index == w.last:
            return w.last_term
        for run in reversed(w.appended):
            if run[0].index <= index <= run[-1].index:
                return run[index - run[0].index].term
        key = entry_key(group_id, index)
        value = db.get(key)  # the writer holds the write lock: db is the durable state
        if value is None:
            raise StorageCorruption(group_id, index, "missing entry inside [first, last]")
        return _check_entry_head(group_id, index, key, value)[1]

    def _plan_install(
        self, db: rocksdict.Rdict, batch: rocksdict.WriteBatch, group_id: int, w: _Work, snapshot: Snapshot
    ) -> None:
        meta = snapshot.meta
        if meta.index <= w.snapshot.meta.index:
            raise SnapshotOutOfDate(f"snapshot at {meta.index} is not newer than {w.snapshot.meta.index}")
        if meta.index <= w.last and self._stored_term(db, group_id, w, meta.index) == meta.term:
            # The log matches the snapshot: keep the suffix after it.
            batch.delete_range(entry_key(group_id, 0), entry_key(group_id, meta.index + 1))
            batch.delete_range(conf_index_key(group_id, 0), conf_index_key(group_id, meta.index + 1))
            w.conf = [i for i in w.conf if i > meta.index]
        else:
            batch.delete_range(entry_key(group_id, 0), _kind_end(group_id, KIND_ENTRY))
            batch.delete_range(conf_index_key(group_id, 0), _kind_end(group_id, KIND_CONF_INDEX))
            w.conf = []
            w.appended.clear()
            w.last, w.last_term = meta.index, meta.term
        w.first = meta.index + 1
        w.snapshot = self._plan_snapshot(batch, group_id, snapshot)

    def _plan_snapshot(self, batch: rocksdict.WriteBatch, group_id: int, snapshot: Snapshot) -> _SnapshotInfo:
        data = snapshot.data
        chunk_count = -(-len(data) // SNAPSHOT_CHUNK_SIZE_BYTES)
        info = _SnapshotInfo(snapshot.meta, len(data), _crc32(data), chunk_count)
        batch.delete_range(snapshot_chunk_key(group_id, 0), _kind_end(group_id, KIND_SNAPSHOT_CHUNK))
        view = memoryview(data)
        for n in range(chunk_count):
            key = snapshot_chunk_key(group_id, n)
            chunk = bytes(view[n * SNAPSHOT_CHUNK_SIZE_BYTES : (n + 1) * SNAPSHOT_CHUNK_SIZE_BYTES])
            batch.put(key, _frame(key, chunk))
        key = snapshot_meta_key(group_id)
        batch.put(key, _frame(key, _encode_snapshot_meta(info)))
        return info

    def _plan_append(
        self, db: rocksdict.Rdict, batch: rocksdict.WriteBatch, group_id: int, w: _Work, entries: Sequence[Entry]
    ) -> bool:
        """Plan an append; True if it overwrites stored entries (destructive)."""
        offset = w.first - 1
        if entries[0].index <= offset:  # part of the batch is already covered by the snapshot
            entries = [e for e in entries if e.index > offset]
            if not entries:
                return False
        first = entries[0].index
        if first > w.last + 1:
            raise ValueError(f"append at {first} leaves a gap after {w.last}")
        overwrite = first <= w.last
        if overwrite:  # drop the stored suffix from ``first``
            batch.delete_range(entry_key(group_id, first), _kind_end(group_id, KIND_ENTRY))
            batch.delete_range(conf_index_key(group_id, first), _kind_end(group_id, KIND_CONF_INDEX))
            if w.conf and w.conf[-1] >= first:
                w.conf = [i for i in w.conf if i < first]
        # The hot loop (inlined _encode_entry). Validation errors may stop it half way:
        # the batch is then dropped unwritten, so that is still all-or-nothing.
        crc32, pack_key, pack_rest, pack_u32, join, put = (
            _crc32, _INDEXED.pack, _ENTRY_HEAD_REST.pack, _U32.pack, b"".join, batch.put
        )
        expected = first
        for term, index, kind, data in entries:
            if index != expected:
                raise ValueError(f"entries are not consecutive: {index} after {expected - 1}")
            if kind != 0 and kind != 1:  # EntryKind.NORMAL, EntryKind.CONF
                raise ValueError(f"unknown entry kind {kind} at {index}")
            key = pack_key(group_id, KIND_ENTRY, index)
            rest = pack_rest(len(data), term, kind, crc32(data))
            put(key, join((pack_u32(crc32(rest, crc32(key))), rest, data)))
            if kind:
                ckey = conf_index_key(group_id, index)
                put(ckey, _frame(ckey, b""))
                w.conf.append(index)
            expected += 1
        w.appended.append(entries)
        w.last, w.last_term = entries[-1].index, entries[-1].term
        return overwrite

    def rewrite_entries(self, group_id: int,
                        rewrites: Sequence[tuple[int, int, int, bytes]]) -> tuple[int, int]:
        """Replace the data of stored NORMAL entries in place, keeping index, term and kind:
        the partition's log compaction (node/_compaction.py), which rewrites committed
        entries the same way on every replica. Each item is ``(index, term, old_data_crc,
        new_data)``; ``old_data_crc`` is ``zlib.crc32`` of the data the caller read.

        An item is skipped, not an error, when the entry is no longer the one the caller
        read: its index is below the first stored index (retention or a snapshot install
        removed it) or its term or data CRC differ. Returns ``(written, beyond_last)``:
        ``beyond_last`` counts items above the last stored index (not durable here yet:
        the caller retries them later).

        Not synced and not destructive: readers may see the old or the new value of an
        entry, both valid (compaction only removes records that a later record of their
        key replaces); a crash that loses the write leaves the old data, which the caller
        compacts again after the restart. The write lock serializes it with ``save_many``
        and ``compact`` (this may run on a worker thread)."""
        with self._write_lock:
            db = self._require_writable()
            meta = self.group(group_id)._meta
            batch = rocksdict.WriteBatch(raw_mode=True)
            written = beyond = 0
            for index, term, old_crc, data in rewrites:
                if index > meta.last:
                    beyond += 1
                    continue
                if index < meta.first:
                    continue
                key = entry_key(group_id, index)
                value = db.get(key)
                if value is None:
                    raise StorageCorruption(group_id, index, "missing entry inside [first, last]")
                _, stored_term, kind, data_crc = _check_entry_head(group_id, index, key, value)
                if stored_term != term or data_crc != old_crc or kind != EntryKind.NORMAL:
                    continue
                batch.put(key, _encode_entry(key, Entry(term, index, EntryKind.NORMAL, data)))
                written += 1
            if written:
                self._commit(db, batch, {}, destructive=False, sync=False)
            return written, beyond

    def _compact(self, group_id: int, snapshot: Snapshot) -> None:
        with self._write_lock:
            db = self._require_writable()
            w = _Work(self.group(group_id)._meta)
            index = snapshot.meta.index
            if index <= w.first - 1:
                raise SnapshotOutOfDate(f"snapshot at {index} is not newer than {w.first - 1}")
            if index > w.last:
                raise UnavailableError(f"snapshot index {index} beyond last index {w.last}")
            if self._stored_term(db, group_id, w, index) != snapshot.meta.term:
                raise ValueError(f"snapshot term {snapshot.meta.term} != log term at {index}")
            batch = rocksdict.WriteBatch(raw_mode=True)
            w.snapshot = self._plan_snapshot(batch, group_id, snapshot)
            batch.delete_range(entry_key(group_id, 0), entry_key(group_id, index + 1))
            batch.delete_range(conf_index_key(group_id, 0), conf_index_key(group_id, index + 1))
            w.first = index + 1
            w.conf = [i for i in w.conf if i > index]
            self._commit(db, batch, {group_id: w.meta()}, destructive=True)

    def _bootstrap(self, group_id: int, conf_state: ConfState) -> None:
        with self._write_lock:
            db = self._require_writable()
            g = self.group(group_id)
            it = db.iter()
            it.seek(_PREFIX.pack(group_id, 0))
            if g._meta != _EMPTY_META or (it.valid() and it.key()[:8] == _PREFIX.pack(group_id, 0)[:8]):
                raise ValueError(f"group {group_id} already has state; cannot bootstrap it")
            del it
            batch = rocksdict.WriteBatch(raw_mode=True)
            empty = Snapshot(SnapshotMeta(0, 0, conf_state))
            info = self._plan_snapshot(batch, group_id, empty)
            self._commit(db, batch, {group_id: g._meta._replace(snapshot=info)}, destructive=True)

    @staticmethod
    def _load(db: rocksdict.Rdict, group_id: int) -> _Meta:
        """Read and validate one group's metadata (see "Validation" in the module doc)."""
        hard_state = HardState(*RocksLogDB._load_fields(
            db, group_id, hard_state_key(group_id), _HARD_STATE, "hard state"))
        vote_floor = LogPosition(*RocksLogDB._load_fields(
            db, group_id, vote_floor_key(group_id), _VOTE_FLOOR, "vote floor"))

        key = snapshot_meta_key(group_id)
        value = db.get(key)
        snapshot = _SnapshotInfo()
        if value is not None:
            snapshot = _decode_snapshot_meta(group_id, _unframe(group_id, None, key, value, "snapshot metadata"))

        first = snapshot.meta.index + 1
        last, last_term = snapshot.meta.index, snapshot.meta.term
        entry_prefix = _PREFIX.pack(group_id, KIND_ENTRY)
        it = db.iter()
        it.seek(entry_prefix)
        if not it.valid():
            _check_iterator(group_id, it)
        if it.valid() and it.key()[:9] == entry_prefix:
            first_key, first_value = it.key(), it.value()
            stored_first = RocksLogDB._key_index(group_id, first_key)
            if stored_first != first:
                raise StorageCorruption(
                    group_id, stored_first,
                    f"first stored entry is {stored_first}, expected snapshot index + 1 = {first}",
                )
            _decode_entry(group_id, stored_first, first_key, first_value)
            it.seek_for_prev(entry_key(group_id, _INDEX_MAX))
            if not it.valid():
                _check_iterator(group_id, it)
            last_key = it.key()
            last = RocksLogDB._key_index(group_id, last_key)
            last_term = _decode_entry(group_id, last, last_key, it.value()).term

        conf: list[int] = []
        conf_prefix = _PREFIX.pack(group_id, KIND_CONF_INDEX)
        it.seek(conf_prefix)
        while it.valid() and it.key()[:9] == conf_prefix:
            key = it.key()
            index = RocksLogDB._key_index(group_id, key)
            _unframe(group_id, index, key, it.value(), "conf-entry index")
            if not first <= index <= last:
                raise StorageCorruption(group_id, index, f"conf-entry index outside [{first}, {last}]")
            conf.append(index)
            it.next()
        if not it.valid():
            _check_iterator(group_id, it)
        return _Meta(first, last, last_term, snapshot, hard_state, tuple(conf), vote_floor)

    @staticmethod
    def _load_fields(db: rocksdict.Rdict, group_id: int, key: bytes, layout: struct.Struct,
                     what: str) -> tuple[int, ...]:
        """The fixed-size integer fields stored at ``key``, validated; () if none."""
        value = db.get(key)
        if value is None:
            return ()
        body = _unframe(group_id, None, key, value, what)
        if len(body) != layout.size:
            raise StorageCorruption(group_id, None, f"{what}: body of {len(body)} bytes")
        return layout.unpack(body)

    @staticmethod
    def _key_index(group_id: int, key: bytes) -> int:
        if len(key) != _INDEXED.size:
            raise StorageCorruption(group_id, None, f"malformed key {key.hex()}")
        return _INDEXED.unpack(key)[2]


class RocksGroupStorage:
    """One Raft group's log in a ``RocksLogDB``: ``Storage`` + ``LogWriter``.

    Obtain it from ``RocksLogDB.group``; it is valid until the DB is closed.
    """

    def __init__(self, db: RocksLogDB, group_id: int, meta: _Meta) -> None:
        self._owner = db
        self._group_id = group_id
        self._meta = meta  # replaced whole by the owner after each durable write

    @property
    def group_id(self) -> int:
        return self._group_id

    # -- Storage -----------------------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        m = self._meta
        return m.hard_state, m.snapshot.meta.conf_state

    def hard_state(self) -> HardState:
        return self._meta.hard_state

    def vote_floor(self) -> LogPosition:
        return self._meta.vote_floor

    def first_index(self) -> int:
        return self._meta.first

    def last_index(self) -> int:
        return self._meta.last

    def snapshot_meta(self) -> SnapshotMeta:
        """The latest snapshot's metadata, without reading its data."""
        return self._meta.snapshot.meta

    def term(self, index: int) -> int:
        owner = self._owner
        with owner._read_lock:
            m = self._meta
            if index < m.first - 1:
                raise CompactedError(f"index {index} is compacted (first index {m.first})")
            if index > m.last:
                raise UnavailableError(f"index {index} is beyond last index {m.last}")
            if index == m.last:
                return m.last_term
            if index == m.first - 1:
                return m.snapshot.meta.term
            gid = self._group_id
            key = entry_key(gid, index)
            value = owner._require_readable().get(key)
            if value is None:
                raise StorageCorruption(gid, index, "missing entry inside [first, last]")
            return _check_entry_head(gid, index, key, value)[1]

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        owner = self._owner
        with owner._read_lock:
            m = self._meta
            if lo < m.first:
                raise CompactedError(f"index {lo} is compacted (first index {m.first})")
            if hi > m.last + 1:
                raise UnavailableError(f"index {hi - 1} is beyond last index {m.last}")
            if lo >= hi:
                return []
            gid = self._group_id
            read_options = rocksdict.ReadOptions()
            read_options.set_iterate_upper_bound(entry_key(gid, hi))
            pack = _INDEXED.pack
            out: list[Entry] = []
            index = lo
            size = 0
            head_size = _ENTRY_HEAD.size
            for key, value in owner._require_readable().items(from_key=entry_key(gid, lo), read_opt=read_options):
                if key != pack(gid, KIND_ENTRY, index):
                    raise StorageCorruption(gid, index, "missing entry inside [first, last]")
                if max_size is not None:
                    size += len(value) - head_size
                    if size > max_size and out:
                        return out
                out.append(_decode_entry(gid, index, key, value))
                index += 1
            if index != hi:
                raise StorageCorruption(gid, index, "missing entry inside [first, last]")
            return out

    def snapshot(self) -> Snapshot:
        owner = self._owner
        with owner._read_lock:
            info = self._meta.snapshot
            if info.chunk_count == 0:
                return Snapshot(info.meta, b"")
            gid = self._group_id
            read_options = rocksdict.ReadOptions()
            read_options.set_iterate_upper_bound(_kind_end(gid, KIND_SNAPSHOT_CHUNK))
            chunks: list[bytes] = []
            for key, value in owner._require_readable().items(
                from_key=snapshot_chunk_key(gid, 0), read_opt=read_options
            ):
                if key != snapshot_chunk_key(gid, len(chunks)):
                    raise StorageCorruption(gid, None, f"snapshot: chunk {len(chunks)} missing")
                chunks.append(_unframe(gid, None, key, value, f"snapshot chunk {len(chunks)}"))
            if len(chunks) != info.chunk_count:
                raise StorageCorruption(gid, None, f"snapshot: {len(chunks)} of {info.chunk_count} chunks")
            data = b"".join(chunks)
            if len(data) != info.data_size or _crc32(data) != info.data_crc:
                raise StorageCorruption(gid, None, "snapshot: data size or checksum mismatch")
            return Snapshot(info.meta, data)

    def config_entries(self) -> list[Entry]:
        owner = self._owner
        with owner._read_lock:
            m = self._meta
            if not m.conf:
                return []
            gid = self._group_id
            db = owner._require_readable()
            out: list[Entry] = []
            for index in m.conf:
                key = entry_key(gid, index)
                value = db.get(key)
                if value is None:
                    raise StorageCorruption(gid, index, "conf-entry index points at a missing entry")
                entry = _decode_entry(gid, index, key, value)
                if entry.kind != EntryKind.CONF:
                    raise StorageCorruption(gid, index, "conf-entry index points at a non-CONF entry")
                out.append(entry)
            return out

    # -- LogWriter ---------------------------------------------------------------------
    def save(self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None) -> None:
        self._owner.save_many([(self._group_id, hard_state, entries, snapshot)])

    def compact(self, snapshot: Snapshot) -> None:
        self._owner._compact(self._group_id, snapshot)

    def rewrite_entries(self, rewrites: Sequence[tuple[int, int, int, bytes]]) -> tuple[int, int]:
        """``RocksLogDB.rewrite_entries`` for this group (log compaction)."""
        return self._owner.rewrite_entries(self._group_id, rewrites)

    def bootstrap(self, conf_state: ConfState) -> None:
        """Durably give a brand-new group its initial configuration (an empty snapshot
        holding ``conf_state``). Raises ``ValueError`` if the group has any stored state."""
        self._owner._bootstrap(self._group_id, conf_state)

