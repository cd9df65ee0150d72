"""The Raft log as the core sees it: durable entries (read-only ``Storage``) plus an
unstable tail that a ``Ready`` has not yet made durable.

Positions, in order: ``applied <= applying <= committed <= last_index()``.

- ``committed``: never decreases; never exceeds ``last_index()``.
- ``applying``: committed entries already handed to the application in a Ready.
- ``applied``: what the application confirmed with ``advance``.
- ``persisted_index()``: last index whose entry is durable *and* part of this log; a leader
  counts only this toward its own match (commit = quorum of durable indexes).
"""

from __future__ import annotations

from ._errors import CompactedError, UnavailableError
from ._storage import Storage, limit_size
from ._types import Entry, Snapshot


class RaftLog:
    __slots__ = (
        "storage", "unstable_offset", "unstable_entries", "unstable_snapshot",
        "committed", "applying", "applied", "group_label",
    )

    def __init__(self, storage: Storage, applied: int = 0, group_label: str = "") -> None:
        self.storage = storage
        self.group_label = group_label
        self.unstable_offset = storage.last_index() + 1
        self.unstable_entries: list[Entry] = []
        self.unstable_snapshot: Snapshot | None = None
        first = storage.first_index()
        self.committed = first - 1
        self.applied = max(applied, first - 1)
        self.applying = self.applied

    # -- positions -------------------------------------------------------------------
    def first_index(self) -> int:
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.meta.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self.unstable_entries:
            return self.unstable_offset + len(self.unstable_entries) - 1
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.meta.index
        return self.storage.last_index()

    def persisted_index(self) -> int:
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.meta.index - 1  # nothing of this log is durable yet
        return self.unstable_offset - 1

    def last_term(self) -> int:
        return self.term(self.last_index())

    def term(self, index: int) -> int:
        """Term at ``index``; raises CompactedError / UnavailableError outside the log."""
        if self.unstable_entries and index >= self.unstable_offset:
            pos = index - self.unstable_offset
            if pos < len(self.unstable_entries):
                return self.unstable_entries[pos].term
            raise UnavailableError(f"index {index} is beyond last index {self.last_index()}")
        snap = self.unstable_snapshot
        if snap is not None:
            if index == snap.meta.index:
                return snap.meta.term
            if index < snap.meta.index:
                raise CompactedError(f"index {index} is below snapshot {snap.meta.index}")
            raise UnavailableError(f"index {index} is beyond last index {self.last_index()}")
        if index >= self.unstable_offset:
            raise UnavailableError(f"index {index} is beyond last index {self.last_index()}")
        return self.storage.term(index)

    def term_or_zero(self, index: int) -> int:
        try:
            return self.term(index)
        except (CompactedError, UnavailableError):
            return 0

    def match_term(self, index: int, term: int) -> bool:
        try:
            return self.term(index) == term
        except (CompactedError, UnavailableError):
            return False

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: the candidate's log is at least as up-to-date as ours."""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    # -- reading ---------------------------------------------------------------------
    def entries(self, lo: int, hi: int | None = None, max_size: int | None = None) -> list[Entry]:
        """Entries in ``[lo, hi)`` (hi defaults to last+1), at most ``max_size`` bytes of data
        but at least one entry."""
        last = self.last_index()
        if hi is None:
            hi = last + 1
        if lo >= hi:
            return []
        first = self.first_index()
        if lo < first:
            raise CompactedError(f"index {lo} is compacted (first index {first})")
        if hi > last + 1:
            raise UnavailableError(f"index {hi - 1} is beyond last index {last}")
        result: list[Entry] = []
        offset = self.unstable_offset
        if lo < offset:
            result = self.storage.entries(lo, min(hi, offset), max_size)
            if len(result) < min(hi, offset) - lo:  # size limit hit inside storage
                return result
        if hi > offset:
            start = max(lo, offset) - offset
            result = result + self.unstable_entries[start : hi - offset]
        if max_size is not None:
            result = limit_size(result, max_size)
        return result

    def snapshot(self) -> Snapshot:
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot
        return self.storage.snapshot()

    def has_next_committed(self, max_index: int | None = None) -> bool:
        hi = self.committed if max_index is None else min(self.committed, max_index)
        return hi > self.applying

    def next_committed_entries(self, max_size: int) -> list[Entry]:
        lo = max(self.applying + 1, self.first_index())
        hi = self.committed + 1
        if lo >= hi:
            return []
        return self.entries(lo, hi, max_size)

    # -- writing ---------------------------------------------------------------------
    def append(self, entries: list[Entry]) -> int:
        """Append ``entries``, truncating any of our entries at or after the first one.
        Never touches committed entries. Returns the new last index."""
        if not entries:
            return self.last_index()
        after = entries[0].index
        if after <= self.committed:
            raise RuntimeError(
                f"{self.group_label}raft safety: would overwrite committed entry {after} "
                f"(committed={self.committed})"
            )
        last = self.last_index()
        if after > last + 1:
            raise RuntimeError(f"{self.group_label}append at {after} leaves a gap after {last}")
        offset = self.unstable_offset
        if after == offset + len(self.unstable_entries):
            self.unstable_entries.extend(entries)
        elif after <= offset:
            # Replaces every unstable entry (and durable ones from ``after`` on, on save).
            self.unstable_offset = after
            self.unstable_entries = list(entries)
        else:
            del self.unstable_entries[after - offset :]
            self.unstable_entries.extend(entries)
        return self.last_index()

    def find_conflict(self, entries: list[Entry]) -> int:
        """Index of the first entry that is new or differs in term from ours; 0 if all
        of them are already in the log."""
        last = self.last_index()
        for e in entries:
            if e.index > last:
                return e.index
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """Largest ``i <= index`` whose term is <= ``term`` (the §5.3 backtracking skip:
        every entry above it has a higher term, so cannot match a log whose entry at
        ``index`` has ``term``)."""
        first = self.first_index()
        i = min(index, self.last_index())
        while i >= first:
            if self.term(i) <= term:
                return i
            i -= 1
        return first - 1

    def maybe_append(
        self, prev_index: int, prev_term: int, leader_commit: int, entries: list[Entry]
    ) -> tuple[int, int] | None:
        """Follower side of AppendEntries. Returns (last index known to match the leader,
        first index appended or 0 if nothing was new), or None if ``(prev_index,
        prev_term)`` does not match our log."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        conflict = 0
        if entries:
            conflict = self.find_conflict(entries)
            if conflict:
                if conflict <= self.committed:
                    raise RuntimeError(
                        f"{self.group_label}raft safety: entry {conflict} conflicts with a "
                        f"committed entry (committed={self.committed})"
                    )
                self.append(entries[conflict - entries[0].index :])
        self.commit_to(min(leader_commit, last_new))
        return last_new, conflict

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            last = self.last_index()
            if index > last:
                raise RuntimeError(
                    f"{self.group_label}commit index {index} is beyond last index {last}"
                )
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """Commit up to ``index`` only if that entry is from ``term`` (Raft §5.4.2)."""
        if index > self.committed and self.term_or_zero(index) == term:
            self.committed = index
            return True
        return False

    def restore(self, snapshot: Snapshot) -> None:
        self.committed = snapshot.meta.index
        self.unstable_offset = snapshot.meta.index + 1
        self.unstable_entries = []
        self.unstable_snapshot = snapshot

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to ``(index, term)`` are durable: drop them from the unstable tail
        unless the tail was rewritten since the Ready that carried them."""
        if not self.unstable_entries or index < self.unstable_offset:
            return
        pos = index - self.unstable_offset
        if pos >= len(self.unstable_entries) or self.unstable_entries[pos].term != term:
            return
        del self.unstable_entries[: pos + 1]
        self.unstable_offset = index + 1

    def stable_snapshot_to(self, index: int) -> None:
        if self.unstable_snapshot is not None and self.unstable_snapshot.meta.index == index:
            self.unstable_snapshot = None

    def applying_to(self, index: int) -> None:
        if index > self.applying:
            self.applying = index

    def applied_to(self, index: int) -> None:
        if index > self.applied:
            self.applied = index
        if index > self.applying:
            self.applying = index
