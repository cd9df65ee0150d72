"""Group membership records in ``__consumer_offsets`` (node/_offsets.py): every replica
decodes them into ``members``/``groups`` (and a Kafka classic group's record into
``classic``) as it applies them, tombstones remove, a deleted group takes its members
along, and the snapshot keeps them (and still reads the version-1 snapshots that held
committed offsets only, and version-2 ones written before classic records existed)."""

from __future__ import annotations

import json

from raftka.node._offsets import (
    _LEN,
    OffsetsReplica,
    encode_classic_group,
    encode_commits,
    encode_group_changes,
)
from raftka.node._partition import _HEADER, _SNAP, ENTRY_MAGIC, SNAPSHOT_VERSION, PartitionConfig
from raftka.raft import Entry, EntryKind, Snapshot, SnapshotMeta


def _replica() -> OffsetsReplica:
    return OffsetsReplica("__consumer_offsets", 0, 7, PartitionConfig(), lambda _: None)


def _entries(payloads: list[bytes], first_index: int = 1) -> list[Entry]:
    """Partition log entries (header + batch) as the leader would have proposed them."""
    out, offset = [], 0
    for i, batch in enumerate(payloads):
        header = _HEADER.pack(ENTRY_MAGIC, 1, offset, offset, 0, 0)
        out.append(Entry(1, first_index + i, EntryKind.NORMAL, header + batch))
        offset += 1
    return out


MEMBER = {"client_id": "c", "host": "h", "topics": ["orders"], "session_timeout_ms": 3000,
          "rebalance_timeout_ms": 30000, "epoch": 4, "sent": [["orders", 0]],
          "held": [["orders", 0], ["orders", 1]]}


def test_member_and_group_records_are_applied_and_removed():
    replica = _replica()
    batches = encode_group_changes("billing", {"m1": MEMBER, "m2": MEMBER},
                                   {"assignor": "sticky", "group_epoch": 9}, 0)
    batches += encode_group_changes("billing", {"m2": None}, None, 0)
    batches.append(encode_commits("billing", [("orders", 0, 42, "")], 0))
    replica.apply(_entries(batches))
    assert replica.members == {"billing": {"m1": MEMBER}}
    assert replica.groups == {"billing": {"assignor": "sticky", "group_epoch": 9}}
    assert replica.offsets["billing"][("orders", 0)].offset == 42

    replica.apply(_entries(encode_group_changes("billing", {}, None, 0, deleted=True),
                           first_index=5))
    assert replica.members == {} and replica.groups == {}
    assert replica.offsets["billing"][("orders", 0)].offset == 42  # offsets are separate


def test_large_changes_are_split_into_batches_that_fit_a_produce_request():
    members = {f"m{i:04d}": dict(MEMBER, sent=[["orders", p] for p in range(300)])
               for i in range(200)}
    batches = encode_group_changes("big", members, {"assignor": "range", "group_epoch": 1}, 0)
    assert len(batches) > 1 and all(len(b) < 1 << 20 for b in batches)
    replica = _replica()
    replica.apply(_entries(batches))
    assert replica.members["big"] == members


def test_the_snapshot_keeps_membership_and_version_1_snapshots_still_load():
    replica = _replica()
    replica.apply(_entries(encode_group_changes("g", {"m1": MEMBER},
                                                {"assignor": "range", "group_epoch": 3}, 0)
                           + [encode_commits("g", [("orders", 1, 7, "x")], 5)]))
    base = _SNAP.pack(SNAPSHOT_VERSION, 2, 0) + replica.producers.encode()
    data = _LEN.pack(len(base)) + base + replica.encode_tables()
    restored = _replica()
    restored.restore(Snapshot(SnapshotMeta(2, 1), data))
    assert restored.members == replica.members and restored.groups == replica.groups
    assert restored.offsets == replica.offsets

    old = _replica()  # a snapshot written before membership was replicated
    v1 = json.dumps({"g": [["orders", 1, 7, "x", 5]]}).encode()
    old.restore(Snapshot(SnapshotMeta(2, 1), _LEN.pack(len(base)) + base + v1))
    assert old.offsets == replica.offsets and old.members == {} and old.groups == {}


CLASSIC = {"generation": 3, "protocol_type": "consumer", "protocol": "range", "leader": "m1",
           "members": [{"member_id": "m1", "client_id": "c", "host": "h",
                        "session_timeout_ms": 45000, "rebalance_timeout_ms": 300000,
                        "protocol_type": "consumer", "protocols": [["range", "AAE="]],
                        "assignment": "AAI="}]}


def test_a_classic_group_record_is_applied_kept_by_the_snapshot_and_tombstoned():
    replica = _replica()
    replica.apply(_entries([encode_classic_group("legacy", CLASSIC, 0),
                            encode_group_changes("ours", {"m1": MEMBER}, None, 0)[0]]))
    assert replica.classic == {"legacy": CLASSIC}
    assert replica.members == {"ours": {"m1": MEMBER}}  # the kinds do not mix
    assert "legacy" not in replica.groups

    base = _SNAP.pack(SNAPSHOT_VERSION, 2, 0) + replica.producers.encode()
    restored = _replica()
    restored.restore(Snapshot(SnapshotMeta(2, 1),
                              _LEN.pack(len(base)) + base + replica.encode_tables()))
    assert restored.classic == {"legacy": CLASSIC}

    restored.apply(_entries([encode_classic_group("legacy", None, 0)], first_index=3))
    assert restored.classic == {}

    older = _replica()  # a version-2 snapshot from before classic records
    tables = replica.encode_tables()
    doc = json.loads(tables[1:])
    del doc["classic"]
    older.restore(Snapshot(SnapshotMeta(2, 1), _LEN.pack(len(base)) + base + tables[:1]
                           + json.dumps(doc).encode()))
    assert older.classic == {} and older.members == replica.members
