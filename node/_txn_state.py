"""Transactional ids' state: a replica of a ``__transaction_state`` partition.

``__transaction_state`` is an internal, Raft-replicated topic like ``__consumer_offsets``
(``_offsets.py``, whose layout this follows): transactional id ``t`` lives in partition
``txn_partition_for(t, N)``, and that partition's leader is its coordinator
(``_txn_service.py``). Every state change of a transactional id is one record appended
through the normal produce path (acks=all), so it is acknowledged only once a majority made
it durable, and a new leader of the partition has every change an earlier one answered.

Record format::

    key   = b"X" | transactional id (utf-8)
    value = JSON {"pid", "epoch", "state", "timeout_ms", "start_ms", "partitions":
            [[topic, partition], ...], "groups": [...], "update_ms"}   (None: removed)

States (Kafka's): ``empty`` (initialized, no transaction open), ``ongoing`` (partitions
added), ``prepare_commit`` / ``prepare_abort`` (the decision is durable; markers are being
written), ``complete_commit`` / ``complete_abort`` (every marker is written). A
transaction whose decision is durable always completes: the coordinator (or the next one,
after a failover) writes the markers until every partition has one.

Every replica decodes what it applies into ``transactions`` (small, rare records). The log
is compacted Raft-style as ``__consumer_offsets`` is: past ``compact_after`` applied
entries, a snapshot holds the whole map at the applied index. Snapshot data::

    u32 len | partition snapshot data (_partition.py) | JSON {id: state}
"""

from __future__ import annotations

import json
import struct
import zlib

from raftka.v1.recordbatch import BatchBuilder, CorruptBatchError, decode_batches
from raftka.raft import Entry, Snapshot

from ._host import Group
from ._partition import (
    _SNAP,
    HEADER_SIZE,
    SNAPSHOT_VERSION,
    PartitionReplica,
    entry_header,
    replay_applied_log,
)

TXN_TOPIC = "__transaction_state"
TXN_TOPIC_CONFIGS = {"retention.ms": "-1", "retention.bytes": "-1"}
TXN_TOPIC_PARTITIONS = 6
TRANSACTIONAL_ID_MAX = 255
_LEN = struct.Struct(">I")

EMPTY = "empty"
ONGOING = "ongoing"
PREPARE_COMMIT = "prepare_commit"
PREPARE_ABORT = "prepare_abort"
COMPLETE_COMMIT = "complete_commit"
COMPLETE_ABORT = "complete_abort"
STATES = (EMPTY, ONGOING, PREPARE_COMMIT, PREPARE_ABORT, COMPLETE_COMMIT, COMPLETE_ABORT)
PREPARED = (PREPARE_COMMIT, PREPARE_ABORT)
ENDED = (EMPTY, COMPLETE_COMMIT, COMPLETE_ABORT)  # a new transaction may begin


def txn_partition_for(transactional_id: str, partitions: int) -> int:
    """Stable across nodes, restarts and Python versions (unlike ``hash``)."""
    return zlib.crc32(transactional_id.encode()) % partitions


def encode_state(transactional_id: str, state: dict | None, now_ms: int) -> bytes:
    """One record batch holding the new state of a transactional id."""
    builder = BatchBuilder(compression="none", max_bytes=64 << 20)
    value = None if state is None else json.dumps(state, sort_keys=True,
                                                  separators=(",", ":")).encode()
    builder.append(b"X" + transactional_id.encode(), value, (), now_ms)
    return builder.build()


class TxnStateReplica(PartitionReplica):
    """A ``__transaction_state`` partition replica that also keeps the decoded states."""

    def __init__(self, *args, compact_after: int = 10_000, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.compact_after = compact_after
        self.transactions: dict[str, dict] = {}

    def attach(self, group: Group) -> None:
        super().attach(group)
        replay_applied_log(group, f"{TXN_TOPIC}/{self.partition}", self._decode)

    def apply(self, entries: list[Entry]) -> None:
        self._decode(entries)  # before the base class answers the writer
        super().apply(entries)

    def _decode(self, entries: list[Entry]) -> None:
        for e in entries:
            if entry_header(e) is None:
                continue
            try:
                records = decode_batches(memoryview(e.data)[HEADER_SIZE:])
            except CorruptBatchError:
                continue
            for r in records:
                key = r.key or b""
                if key[:1] != b"X":
                    continue  # not ours
                try:
                    tid = bytes(key[1:]).decode()
                    state = None if r.value is None else json.loads(r.value)
                except (ValueError, UnicodeDecodeError):
                    continue
                if state is None:
                    self.transactions.pop(tid, None)
                elif isinstance(state, dict) and state.get("state") in STATES:
                    self.transactions[tid] = state

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
        tables = json.dumps(self.transactions, sort_keys=True).encode()
        return index, _LEN.pack(len(base)) + base + tables

    def compacted(self, index: int, snapshot_data: bytes) -> None:
        (n,) = _LEN.unpack_from(snapshot_data, 0)
        super().compacted(index, bytes(snapshot_data[4:4 + n]))

    def restore(self, snapshot: Snapshot) -> None:
        (n,) = _LEN.unpack_from(snapshot.data, 0)
        super().restore(Snapshot(snapshot.meta, bytes(snapshot.data[4:4 + n])))
        self.transactions = dict(json.loads(bytes(snapshot.data[4 + n:])))
