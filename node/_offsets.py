"""Committed offsets of consumer groups: a replica of a ``__consumer_offsets`` partition.

``__consumer_offsets`` is an ordinary partitioned, Raft-replicated topic; group ``g`` lives in
partition ``offsets_partition_for(g, N)``. Each commit is one RecordBatch appended through
the normal produce path (acks=all), so a commit is acknowledged only once a majority made it
durable, and the partition's leader (the group's coordinator) moves with Raft leadership.

Record formats (big-endian)::

    committed offset   key   = b"O" | u16 len | group | u16 len | topic | i32 partition
                       value = i64 offset | i64 commit_time_ms | metadata (utf-8)
                               (None: deleted)
    group member       key   = b"M" | u16 len | group | u16 len | member id
                       value = JSON member record (_coordinator.member_record)
                               (None: the member left or was removed)
    group              key   = b"G" | u16 len | group
                       value = JSON {"assignor", "group_epoch"}
                               (None: the group was deleted, its members with it)
    classic group      key   = b"C" | u16 len | group
                       value = JSON classic group record (_kafka/_classic.py: generation,
                               protocol, leader, members with metadata and assignment),
                               written when a generation's assignment is complete
                               (None: the group became empty)
    pending offset     key   = b"P" | i64 producer id | u16 len | group | u16 len | topic
                               | i32 partition
                       value = as a committed offset
                       (TxnOffsetCommit, KIP-447: kept in ``pending`` by producer id until
                       that producer's transaction marker reaches this partition: a commit
                       marker makes them committed offsets, an abort marker drops them)

Unlike data partitions, every replica here *decodes* what it applies (commits and
membership changes are small and rare next to data) into ``offsets``: group ->
{(topic, partition): CommittedOffset}, ``members``: group -> {member id: record},
``groups``: group -> group record and ``classic``: group -> classic group record. The last
three let a new coordinator (the next leader of the partition) rebuild the groups'
membership (``_coordinator.py`` rules 7 and 8, ``_kafka/_classic.py``).
Other keys are skipped, so a node that predates a record kind ignores it.

Time and size retention never apply to this topic (its configs say -1). Instead the log is
compacted Raft-style: once more than ``compact_after`` entries (node config
``offsets_compact_entries``) are applied past the
log's first index, the maintenance pass snapshots the whole map at the applied index and
drops the entries below it. After a restart the maps are the snapshot's plus a replay of
the (few) entries after it. Snapshot data::

    u32 len | partition snapshot data (see _partition.py) | tables
    tables, version 2 = b"\x02" | JSON {"offsets": OFFSETS, "members": {group: {member id:
                        record}}, "groups": {group: group record},
                        "classic": {group: classic group record},
                        "pending": {producer id: OFFSETS}}  (pending: absent before
                        transactions; classic: absent before classic membership was
                        persisted)
    tables, version 1 = OFFSETS (still read: a JSON object, so its first byte is "{")
    OFFSETS = {group: [[topic, partition, offset, metadata, commit_time_ms], ...]}
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass

from raftka.v1.recordbatch import BatchBuilder, CorruptBatchError, decode_batches
from raftka.raft import Entry, Snapshot

from ._host import Group
from ._partition import (
    replay_applied_log,
    _ATTRIBUTES,
    _ATTRIBUTES_AT,
    _CONTROL_BIT,
    _PRODUCER_FIELDS,
    _PRODUCER_FIELDS_AT,
    _SNAP,
    HEADER_SIZE,
    SNAPSHOT_VERSION,
    PartitionReplica,
    _marker_commits,
    entry_header,
)

OFFSETS_TOPIC = "__consumer_offsets"
OFFSETS_TOPIC_CONFIGS = {"retention.ms": "-1", "retention.bytes": "-1"}
_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")
_VALUE = struct.Struct(">qq")
GROUP_ID_MAX = 255
_LEN = struct.Struct(">I")
TABLES_V2 = b"\x02"
GROUP_RECORDS_BATCH_BYTES = 256 << 10  # below max.message.bytes (1 MiB) with room to spare


def offsets_partition_for(group_id: str, partitions: int) -> int:
    """Stable across nodes, restarts and Python versions (unlike ``hash``)."""
    return zlib.crc32(group_id.encode()) % partitions


@dataclass(frozen=True, slots=True)
class CommittedOffset:
    offset: int
    metadata: str
    commit_time_ms: int


def offset_key(group_id: str, topic: str, partition: int) -> bytes:
    g, t = group_id.encode(), topic.encode()
    return b"O" + _U16.pack(len(g)) + g + _U16.pack(len(t)) + t + _I32.pack(partition)


def parse_offset_key(key: bytes) -> tuple[str, str, int]:
    if not key or key[0:1] != b"O":
        raise ValueError("not an offset key")
    (glen,) = _U16.unpack_from(key, 1)
    group = key[3:3 + glen].decode()
    pos = 3 + glen
    (tlen,) = _U16.unpack_from(key, pos)
    topic = key[pos + 2:pos + 2 + tlen].decode()
    (partition,) = _I32.unpack_from(key, pos + 2 + tlen)
    return group, topic, partition


def _group_key(kind: bytes, group_id: str, member_id: str | None = None) -> bytes:
    g = group_id.encode()
    key = kind + _U16.pack(len(g)) + g
    if member_id is not None:
        m = member_id.encode()
        key += _U16.pack(len(m)) + m
    return key


def _parse_group_key(key: bytes) -> tuple[str, str | None]:
    (glen,) = _U16.unpack_from(key, 1)
    group = key[3:3 + glen].decode()
    if key[0:1] != b"M":  # G and C keys name only the group
        return group, None
    pos = 3 + glen
    (mlen,) = _U16.unpack_from(key, pos)
    return group, key[pos + 2:pos + 2 + mlen].decode()


def _decode_group_record(key: bytes, value: bytes | None
                         ) -> tuple[str, str | None, object] | None:
    """(group, member id or None, JSON value or None) of a group, member or classic record;
    None if it is not ours (someone produced to the internal topic)."""
    try:
        group, member_id = _parse_group_key(key)
        return group, member_id, None if value is None else json.loads(value)
    except (ValueError, struct.error, UnicodeDecodeError):
        return None


def _json(value: dict) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def encode_group_changes(group_id: str, members: dict[str, dict | None], group: dict | None,
                         now_ms: int, deleted: bool = False) -> list[bytes]:
    """Batches recording membership changes (``ConsumerGroup.take_changes``): one record per
    changed member, then the group record if it changed (a tombstone if ``deleted``). Split
    into batches of at most about ``GROUP_RECORDS_BATCH_BYTES``; write them in order."""
    records = [(_group_key(b"M", group_id, m), None if r is None else _json(r))
               for m, r in members.items()]
    if deleted:
        records.append((_group_key(b"G", group_id), None))
    elif group is not None:
        records.append((_group_key(b"G", group_id), _json(group)))
    batches: list[bytes] = []
    builder = BatchBuilder(compression="none", max_bytes=64 << 20)
    size = 0
    for key, value in records:
        if size and size + len(key) + len(value or b"") > GROUP_RECORDS_BATCH_BYTES:
            batches.append(builder.build())
            builder = BatchBuilder(compression="none", max_bytes=64 << 20)
            size = 0
        builder.append(key, value, (), now_ms)
        size += len(key) + len(value or b"") + 16
    if size:
        batches.append(builder.build())
    return batches


def encode_classic_group(group_id: str, record: dict | None, now_ms: int) -> bytes:
    """One batch holding a classic group's record (None: the group is empty)."""
    builder = BatchBuilder(compression="none", max_bytes=64 << 20)
    builder.append(_group_key(b"C", group_id), None if record is None else _json(record), (),
                   now_ms)
    return builder.build()


def encode_pending_commits(group_id: str, producer_id: int,
                           commits: list[tuple[str, int, int, str]], now_ms: int) -> bytes:
    """One record batch of a transaction's pending offsets (TxnOffsetCommit)."""
    builder = BatchBuilder(compression="none", max_bytes=64 << 20)
    for topic, partition, offset, metadata in commits:
        value = _VALUE.pack(offset, now_ms) + metadata.encode()
        builder.append(b"P" + struct.pack(">q", producer_id)
                       + offset_key(group_id, topic, partition)[1:], value, (), now_ms)
    return builder.build()


def encode_commits(group_id: str, commits: list[tuple[str, int, int, str]],
                   now_ms: int) -> bytes:
    """One batch holding ``(topic, partition, offset, metadata)`` commits; offset -1 deletes."""
    builder = BatchBuilder(compression="none", max_bytes=64 << 20)
    for topic, partition, offset, metadata in commits:
        value = None if offset < 0 else _VALUE.pack(offset, now_ms) + metadata.encode()
        builder.append(offset_key(group_id, topic, partition), value, (), now_ms)
    return builder.build()


class OffsetsReplica(PartitionReplica):
    """A ``__consumer_offsets`` partition replica that also keeps the decoded offsets."""

    # a marker here makes a transaction's offsets committed: nothing comes behind it to
    # share its write with (the next transaction's offsets come at its end), and the
    # next AddOffsetsToTxn waits for it
    marker_linger_s = 0.0

    def __init__(self, *args, compact_after: int = 10_000, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.compact_after = compact_after
        self.offsets: dict[str, dict[tuple[str, int], CommittedOffset]] = {}
        self.members: dict[str, dict[str, dict]] = {}  # group -> member id -> record
        self.groups: dict[str, dict] = {}  # group -> group record
        self.classic: dict[str, dict] = {}  # group -> classic group record (Kafka listener)
        # producer id -> {(group, topic, partition): offset} of its open transaction
        self.pending: dict[int, dict[tuple[str, str, int], CommittedOffset]] = {}

    def attach(self, group: Group) -> None:
        super().attach(group)
        self._replay(group)

    def _replay(self, group: Group) -> None:
        replay_applied_log(group, f"{OFFSETS_TOPIC}/{self.partition}", self._decode)

    def apply(self, entries: list[Entry]) -> None:
        self._decode(entries)  # before the base class answers the committers
        super().apply(entries)

    def _decode(self, entries: list[Entry]) -> None:
        offsets = self.offsets
        for e in entries:
            if entry_header(e) is None:
                continue
            data = e.data
            if len(data) >= _PRODUCER_FIELDS_AT + _PRODUCER_FIELDS.size and \
                    _ATTRIBUTES.unpack_from(data, _ATTRIBUTES_AT)[0] & _CONTROL_BIT:
                pid = _PRODUCER_FIELDS.unpack_from(data, _PRODUCER_FIELDS_AT)[0]
                self._end_pending(pid, _marker_commits(data))
                continue
            try:
                records = decode_batches(memoryview(e.data)[HEADER_SIZE:])
            except CorruptBatchError:
                continue  # validated before it was proposed; nothing usable here
            for r in records:
                key = r.key or b""
                if key[0:1] in (b"M", b"G"):
                    self._apply_group_record(key, r.value)
                    continue
                if key[0:1] == b"P":
                    self._apply_pending(key, r.value)
                    continue
                if key[0:1] == b"C":
                    self._apply_classic(key, r.value)
                    continue
                try:
                    group, topic, partition = parse_offset_key(key)
                except (ValueError, struct.error, UnicodeDecodeError):
                    continue  # not ours (someone produced to the internal topic)
                if r.value is None:
                    committed = offsets.get(group)
                    if committed is not None:
                        committed.pop((topic, partition), None)
                        if not committed:
                            del offsets[group]
                    continue
                if len(r.value) < _VALUE.size:
                    continue
                offset, at_ms = _VALUE.unpack_from(r.value, 0)
                metadata = bytes(r.value[_VALUE.size:]).decode("utf-8", "replace")
                offsets.setdefault(group, {})[(topic, partition)] = CommittedOffset(
                    offset, metadata, at_ms)

    def _apply_pending(self, key: bytes, value: bytes | None) -> None:
        try:
            (pid,) = struct.unpack_from(">q", key, 1)
            group, topic, partition = parse_offset_key(b"O" + bytes(key[9:]))
        except (ValueError, struct.error, UnicodeDecodeError):
            return
        if value is None or len(value) < _VALUE.size:
            return
        offset, at_ms = _VALUE.unpack_from(value, 0)
        metadata = bytes(value[_VALUE.size:]).decode("utf-8", "replace")
        self.pending.setdefault(pid, {})[(group, topic, partition)] = CommittedOffset(
            offset, metadata, at_ms)

    def _end_pending(self, producer_id: int, commit: bool) -> None:
        """A transaction marker of ``producer_id`` reached this partition."""
        pending = self.pending.pop(producer_id, None)
        if not pending or not commit:
            return
        for (group, topic, partition), committed in pending.items():
            self.offsets.setdefault(group, {})[(topic, partition)] = committed

    def has_pending(self, group_id: str, topic: str, partition: int) -> bool:
        return any((group_id, topic, partition) in p for p in self.pending.values())

    def _apply_classic(self, key: bytes, value: bytes | None) -> None:
        decoded = _decode_group_record(key, value)
        if decoded is None:
            return
        group, _, record = decoded
        if isinstance(record, dict):
            self.classic[group] = record
        else:
            self.classic.pop(group, None)

    def _apply_group_record(self, key: bytes, value: bytes | None) -> None:
        decoded = _decode_group_record(key, value)
        if decoded is None:
            return
        group, member_id, record = decoded
        if member_id is not None:
            members = self.members.setdefault(group, {})
            if record is None:
                members.pop(member_id, None)
            else:
                members[member_id] = record
            if not members:
                del self.members[group]
        elif record is None:
            self.groups.pop(group, None)
            self.members.pop(group, None)
        else:
            self.groups[group] = record

    def retention_point(self) -> tuple[int, bytes] | None:
        group = self._require_group()
        node = group.node
        index = self.applied_index
        if index - node.first_index < self.compact_after:
            return None
        _, header = self._next_data_entry_backwards(index, node.first_index)
        if header is None:
            return None
        base = (_SNAP.pack(SNAPSHOT_VERSION, header.last_offset + 1, header.cumulative_bytes)
                + self.producers.encode())
        return index, _LEN.pack(len(base)) + base + self.encode_tables()

    def encode_tables(self) -> bytes:
        """The maps, as the snapshot holds them (tables version 2)."""
        offsets = {g: [[t, p, c.offset, c.metadata, c.commit_time_ms]
                       for (t, p), c in sorted(committed.items())]
                   for g, committed in sorted(self.offsets.items())}
        pending = {str(pid): [[g, t, p, c.offset, c.metadata, c.commit_time_ms]
                              for (g, t, p), c in sorted(rows.items())]
                   for pid, rows in sorted(self.pending.items())}
        return TABLES_V2 + _json({"offsets": offsets, "members": self.members,
                                  "groups": self.groups, "classic": self.classic,
                                  "pending": pending})

    def compacted(self, index: int, snapshot_data: bytes) -> None:
        base, _ = _split(snapshot_data)
        super().compacted(index, base)

    def restore(self, snapshot: Snapshot) -> None:
        base, tables = _split(snapshot.data)
        super().restore(Snapshot(snapshot.meta, base))
        if tables[:1] == TABLES_V2:
            doc = json.loads(tables[1:])
            offsets = doc["offsets"]
            self.members = {g: dict(m) for g, m in doc.get("members", {}).items()}
            self.groups = dict(doc.get("groups", {}))
            self.classic = dict(doc.get("classic", {}))
            self.pending = {int(pid): {(g, t, p): CommittedOffset(o, m, at)
                                       for g, t, p, o, m, at in rows}
                            for pid, rows in doc.get("pending", {}).items()}
        else:  # version 1: committed offsets only
            offsets = json.loads(tables)
            self.members, self.groups, self.pending, self.classic = {}, {}, {}, {}
        self.offsets = {
            g: {(t, p): CommittedOffset(o, m, at) for t, p, o, m, at in rows}
            for g, rows in offsets.items()}


def _split(data: bytes) -> tuple[bytes, bytes]:
    (n,) = _LEN.unpack_from(data, 0)
    return bytes(data[4:4 + n]), bytes(data[4 + n:])
