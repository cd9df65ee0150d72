"""Raftka's Raft consensus core: a pure, deterministic state machine.

Public API (everything else is private):

- ``RawNode(config, storage, rng)``: ``tick()``, ``step(msg)``, ``propose(data)``,
  ``propose_batch(datas)``, ``propose_conf_change(cc)``, ``transfer_leader(id)``,
  ``read_index(ctx)``, ``campaign()``, ``has_ready()``, ``ready()``, ``advance(ready)``.
- ``Config``, ``Ready``, ``Message``/``MsgType``, value types from ``_types``.
- ``Storage``/``LogWriter`` protocols and ``MemoryStorage``; the RocksDB adapter lives in
  ``raftka.raft.rocksdb``, beside this package, so the core never imports rocksdict.
"""

from ._errors import (
    CompactedError,
    ConfChangeRejected,
    NotLeader,
    ProposalDropped,
    RaftError,
    SnapshotOutOfDate,
    StorageCorruption,
    UnavailableError,
)
from ._messages import CAMPAIGN_TRANSFER, Message, MsgType
from ._rawnode import Config, RawNode, Ready
from ._storage import LogWriter, MemoryStorage, Storage
from ._types import (
    NO_NODE,
    ConfChange,
    ConfChangeKind,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Index,
    LogPosition,
    NodeId,
    ReadState,
    Role,
    Snapshot,
    SnapshotMeta,
    Term,
    Tombstone,
)

__all__ = [
    "CAMPAIGN_TRANSFER", "CompactedError", "ConfChange", "ConfChangeKind", "ConfChangeRejected",
    "ConfState", "Config", "Entry", "EntryKind", "HardState", "Index", "LogPosition", "LogWriter",
    "MemoryStorage", "Message", "MsgType", "NO_NODE", "NodeId", "NotLeader", "ProposalDropped",
    "RaftError", "RawNode", "ReadState", "Ready", "Role", "Snapshot", "SnapshotMeta",
    "SnapshotOutOfDate", "Storage", "StorageCorruption", "Term", "Tombstone", "UnavailableError",
]
