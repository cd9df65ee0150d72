"""The storage seam between the Raft core and a disk.

The core only *reads* through ``Storage``; every write is driven from outside by a
``Ready`` (see ``raft._rawnode``). A store that implements both ``Storage`` and
``LogWriter`` can back a ``RawNode``.

Contract shared by every implementation:

1. The log is the contiguous range ``[first_index(), last_index()]``. ``first_index() - 1``
   is the snapshot's index; its term is ``term(first_index() - 1)``. An empty log has
   ``last_index() == first_index() - 1``.
2. ``save(hard_state, entries, snapshot)`` is atomic and durable when it returns: after a
   crash the store reads back exactly what the last returned ``save`` wrote, never a part.
   ``entries`` replace every stored entry at or after ``entries[0].index``.
3. Reads never see data that a ``save`` has not yet made durable.
4. Not thread-safe: one owner thread (the node's event loop) calls everything.
5. Returned lists are fresh; callers may keep them. Entries are immutable.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from ._errors import CompactedError, SnapshotOutOfDate, UnavailableError
from ._types import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    LogPosition,
    Snapshot,
    SnapshotMeta,
    Tombstone,
)


class Storage(Protocol):
    """Read-only view of one group's durable Raft state, as seen by the core."""

    def initial_state(self) -> tuple[HardState, ConfState]:
        """Hard state, and the configuration held by the snapshot (not by log entries)."""
        ...

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        """Entries with ``lo <= index < hi``; at least one if any, then at most ``max_size``
        bytes of data. Raises ``CompactedError`` if ``lo < first_index()``,
        ``UnavailableError`` if ``hi > last_index() + 1``."""
        ...

    def term(self, index: int) -> int:
        """Term of the entry at ``index``; valid for ``first_index() - 1 <= index <=
        last_index()``. Raises ``CompactedError`` / ``UnavailableError`` outside."""
        ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def snapshot(self) -> Snapshot:
        """The latest snapshot (possibly empty: index 0)."""
        ...

    def config_entries(self) -> list[Entry]:
        """Every ``EntryKind.CONF`` entry in the log (index >= first_index()), in order.
        Lets the core rebuild its configuration history on restart without a log scan."""
        ...

    def vote_floor(self) -> LogPosition:
        """The most up-to-date log position a replica of this group ever held on this node
        before its data was deleted (``Tombstone.floor``); ``LogPosition()`` if the data
        was never deleted. The core grants no vote to a log below it (rule 13)."""
        ...


class LogWriter(Protocol):
    """Writes that a node performs on behalf of the core, driven by ``Ready``."""

    def save(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None
    ) -> None:
        """Durably and atomically: install ``snapshot`` (dropping every entry it covers,
        and the whole log if the log does not match it), then append ``entries``
        (truncating any stored suffix from ``entries[0].index``), then set ``hard_state``."""
        ...

    def compact(self, snapshot: Snapshot) -> None:
        """Record ``snapshot`` (made by the application from its applied state) and drop
        entries with index <= snapshot.meta.index. Raises ``SnapshotOutOfDate`` if not
        newer than the held snapshot, ``UnavailableError`` beyond last_index()."""
        ...


class MemoryStorage:
    """Storage and LogWriter in memory, used by the simulator and unit tests.

    "Durable" here means "returned from ``save``": the simulator models a crash by
    throwing away a node's RawNode and keeping this object.
    """

    def __init__(self, conf_state: ConfState | None = None,
                 tombstone: Tombstone | None = None) -> None:
        """``tombstone``: what the replica that held this group's data here before left
        (``RawNode.tombstone()``); the store starts from its hard state and vote floor."""
        self._hard_state = tombstone.hard_state() if tombstone else HardState()
        self._vote_floor = tombstone.floor if tombstone else LogPosition()
        self._snapshot = Snapshot(SnapshotMeta(0, 0, conf_state or ConfState()))
        # _entries[0] is a dummy standing for the snapshot position (index, term).
        self._entries: list[Entry] = [Entry(0, 0)]
        self._conf: list[Entry] = []

    # -- Storage -----------------------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.meta.conf_state

    def first_index(self) -> int:
        return self._entries[0].index + 1

    def last_index(self) -> int:
        return self._entries[0].index + len(self._entries) - 1

    def term(self, index: int) -> int:
        offset = self._entries[0].index
        if index < offset:
            raise CompactedError(f"index {index} is compacted (first index {offset + 1})")
        if index - offset >= len(self._entries):
            raise UnavailableError(f"index {index} is beyond last index {self.last_index()}")
        return self._entries[index - offset].term

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        offset = self._entries[0].index
        if lo <= offset:
            raise CompactedError(f"index {lo} is compacted (first index {offset + 1})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"index {hi - 1} is beyond last index {self.last_index()}")
        result = self._entries[lo - offset : hi - offset]
        if max_size is not None:
            result = limit_size(result, max_size)
        return result

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def config_entries(self) -> list[Entry]:
        return list(self._conf)

    def vote_floor(self) -> LogPosition:
        return self._vote_floor

    def hard_state(self) -> HardState:
        return self._hard_state

    # -- LogWriter ---------------------------------------------------------------------
    def save(
        self, hard_state: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None
    ) -> None:
        if snapshot is not None and not snapshot.is_empty:
            self._install_snapshot(snapshot)
        if entries:
            self._append(entries)
        if hard_state is not None:
            self._hard_state = hard_state

    def compact(self, snapshot: Snapshot) -> None:
        index = snapshot.meta.index
        offset = self._entries[0].index
        if index <= offset:
            raise SnapshotOutOfDate(f"snapshot at {index} is not newer than {offset}")
        if index > self.last_index():
            raise UnavailableError(f"snapshot index {index} beyond last index {self.last_index()}")
        if self.term(index) != snapshot.meta.term:
            raise ValueError(f"snapshot term {snapshot.meta.term} != log term at {index}")
        self._snapshot = snapshot
        self._entries = [Entry(snapshot.meta.term, index)] + self._entries[index - offset + 1 :]
        self._conf = [e for e in self._conf if e.index > index]

    # -- internals ---------------------------------------------------------------------
    def _install_snapshot(self, snapshot: Snapshot) -> None:
        meta = snapshot.meta
        if meta.index <= self._snapshot.meta.index:
            raise SnapshotOutOfDate(
                f"snapshot at {meta.index} is not newer than {self._snapshot.meta.index}"
            )
        offset = self._entries[0].index
        keep: list[Entry] = []
        if meta.index <= self.last_index() and self.term(meta.index) == meta.term:
            keep = self._entries[meta.index - offset + 1 :]  # log matches: keep the suffix
        self._snapshot = snapshot
        self._entries = [Entry(meta.term, meta.index)] + keep
        self._conf = [e for e in self._conf if e.index > meta.index and keep]

    def _append(self, entries: Sequence[Entry]) -> None:
        first = entries[0].index
        offset = self._entries[0].index
        if first <= offset:  # part of the batch is already covered by the snapshot
            entries = [e for e in entries if e.index > offset]
            if not entries:
                return
            first = entries[0].index
        if first > self.last_index() + 1:
            raise ValueError(f"append at {first} leaves a gap after {self.last_index()}")
        del self._entries[first - offset :]
        self._entries.extend(entries)
        if self._conf and self._conf[-1].index >= first:
            self._conf = [e for e in self._conf if e.index < first]
        self._conf.extend(e for e in entries if e.kind == EntryKind.CONF)


def limit_size(entries: list[Entry], max_size: int) -> list[Entry]:
    """The longest prefix whose data fits ``max_size`` bytes, but at least one entry."""
    if not entries:
        return entries
    total = len(entries[0].data)
    for i in range(1, len(entries)):
        total += len(entries[i].data)
        if total > max_size:
            return entries[:i]
    return entries
