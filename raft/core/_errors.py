"""Errors raised by the Raft core and its storage adapters."""

from __future__ import annotations


class RaftError(Exception):
    """Base of every error the raft package raises."""


class ProposalDropped(RaftError):
    """The proposal was not appended; nothing was written. Safe to retry elsewhere/later."""


class NotLeader(ProposalDropped):
    """This replica is not the leader. ``leader_id`` is the leader it knows of (0: none)."""

    def __init__(self, leader_id: int, message: str = "") -> None:
        self.leader_id = leader_id
        super().__init__(message or f"not the leader; current leader is {leader_id or 'unknown'}")


class ConfChangeRejected(RaftError):
    """A membership change that would break a safety rule or makes no sense."""


class CompactedError(RaftError):
    """The requested index is below the first index of the log (it is in a snapshot)."""


class UnavailableError(RaftError):
    """The requested index is beyond the last index of the log."""


class SnapshotOutOfDate(RaftError):
    """A snapshot older than the one already held was offered."""


class StorageCorruption(RaftError):
    """Stored data failed its checksum or was truncated.

    ``group_id`` and ``index`` name the record (index is None for hard state/snapshot keys).
    The node must not replay such data: repair from peers or refuse to start.
    """

    def __init__(self, group_id: int, index: int | None, detail: str) -> None:
        self.group_id = group_id
        self.index = index
        where = f"group {group_id}" + (f" index {index}" if index is not None else "")
        super().__init__(f"corrupt raft storage in {where}: {detail}")
