"""Small value types shared by the Raft core, its storage seams and its callers.

Ids and positions are distinct ``NewType``s (free at run time) so that a signature says
which of them it wants. Entries are ``NamedTuple``s: immutable, cheap to build in bulk,
and comparable field by field in tests.

Configuration entries carry the *whole* resulting configuration, encoded with
``ConfState.encode`` (no pickle)::

    u16 voter_count | voter_count * u64 node_id | u16 learner_count | learner_count * u64
    (all big-endian)
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple, NewType

NodeId = NewType("NodeId", int)
Term = NewType("Term", int)
Index = NewType("Index", int)

NO_NODE: NodeId = NodeId(0)
"""Node ids are positive; 0 means "nobody" (no vote cast, no known leader)."""


class EntryKind(enum.IntEnum):
    NORMAL = 0
    CONF = 1  # data is an encoded ConfState: the configuration from this index on


class Entry(NamedTuple):
    term: int
    index: int
    kind: int = EntryKind.NORMAL
    data: bytes = b""


class HardState(NamedTuple):
    """What must be durable before a message that depends on it leaves the node.

    term: never decreases. vote: the candidate voted for in ``term`` (NO_NODE if none).
    commit: a hint only; it never decreases but may lag on disk.
    """

    term: int = 0
    vote: int = NO_NODE
    commit: int = 0


class LogPosition(NamedTuple):
    """A log's last entry as Raft's election rule orders logs (§5.4.1): a later last term
    wins, then a longer log. Tuples compare in exactly that order."""

    term: int = 0
    index: int = 0


class Tombstone(NamedTuple):
    """What a replica leaves on its node when the node deletes its data (the replica was
    moved off the node) so that a replica of the same group re-created there later, under
    the same Raft id, votes as the deleted one would have (raft/README.md, "Re-created
    replicas"): it starts in ``term`` with ``vote`` cast, and takes ``floor``, the most
    up-to-date log position the deleted replica held, as its vote floor."""

    term: int
    vote: int
    floor: LogPosition

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, 0)  # no entry is held: nothing is committed


_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")


class ConfState(NamedTuple):
    """A cluster configuration: who votes and who only replicates."""

    voters: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()

    def encode(self) -> bytes:
        parts = [_U16.pack(len(self.voters))]
        parts.extend(_U64.pack(v) for v in sorted(self.voters))
        parts.append(_U16.pack(len(self.learners)))
        parts.extend(_U64.pack(v) for v in sorted(self.learners))
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> ConfState:
        try:
            (n_voters,) = _U16.unpack_from(data, 0)
            pos = 2
            voters = [_U64.unpack_from(data, pos + 8 * i)[0] for i in range(n_voters)]
            pos += 8 * n_voters
            (n_learners,) = _U16.unpack_from(data, pos)
            pos += 2
            learners = [_U64.unpack_from(data, pos + 8 * i)[0] for i in range(n_learners)]
            pos += 8 * n_learners
        except struct.error as exc:
            raise ValueError(f"truncated configuration entry ({len(data)} bytes)") from exc
        if pos != len(data):
            raise ValueError(f"configuration entry has {len(data) - pos} trailing bytes")
        return cls(frozenset(voters), frozenset(learners))

    def all_nodes(self) -> frozenset[int]:
        return self.voters | self.learners


class SnapshotMeta(NamedTuple):
    index: int = 0  # last log index the snapshot covers
    term: int = 0  # term of that entry
    conf_state: ConfState = ConfState()  # configuration as of ``index``


class Snapshot(NamedTuple):
    meta: SnapshotMeta = SnapshotMeta()
    data: bytes = b""

    @property
    def is_empty(self) -> bool:
        return self.meta.index == 0


class ConfChangeKind(enum.IntEnum):
    ADD_VOTER = 0  # also promotes a learner
    ADD_LEARNER = 1  # also demotes a voter
    REMOVE_NODE = 2


class ConfChange(NamedTuple):
    """A one-server membership change, as asked for by the application."""

    kind: ConfChangeKind
    node_id: int


class ReadState(NamedTuple):
    """A linearizable read may be served once the state machine has applied ``index``."""

    index: int
    context: bytes


class Role(enum.IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3
