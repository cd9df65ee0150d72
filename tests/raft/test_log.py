"""RaftLog: the unstable tail over read-only storage, conflicts and the commit rules."""

from __future__ import annotations

import pytest

from raftka.raft import CompactedError, ConfState, Entry, MemoryStorage, Snapshot, SnapshotMeta
from raftka.raft.core._log import RaftLog


def _storage_with(terms: list[int]) -> MemoryStorage:
    st = MemoryStorage(ConfState(frozenset({1})))
    st.save(None, [Entry(t, i + 1) for i, t in enumerate(terms)], None)
    return st


def test_unstable_entries_overlay_storage_and_become_stable() -> None:
    st = _storage_with([1, 1, 2])
    log = RaftLog(st)
    log.append([Entry(3, 4), Entry(3, 5)])
    assert log.last_index() == 5 and log.persisted_index() == 3
    assert [e.index for e in log.entries(2)] == [2, 3, 4, 5]
    st.save(None, log.unstable_entries, None)
    log.stable_to(5, 3)
    assert log.unstable_entries == [] and log.persisted_index() == 5


def test_stable_to_ignores_a_rewritten_tail() -> None:
    log = RaftLog(_storage_with([1]))
    log.append([Entry(2, 2), Entry(2, 3)])
    log.append([Entry(3, 3)])  # tail rewritten before the first Ready was advanced
    log.stable_to(3, 2)
    assert [e.term for e in log.unstable_entries] == [2, 3]


def test_maybe_append_truncates_only_conflicting_suffix() -> None:
    log = RaftLog(_storage_with([1, 1, 2, 2]))
    result = log.maybe_append(2, 1, 3, [Entry(3, 3), Entry(3, 4), Entry(3, 5)])
    assert result == (5, 3)
    assert [log.term(i) for i in range(1, 6)] == [1, 1, 3, 3, 3]
    assert log.committed == 3


def test_maybe_append_commits_only_what_the_append_matched() -> None:
    """Raft figure 2, AppendEntries rule 5: commit min(leader_commit, index of the last
    new entry). Our entries past the APP's last one are not known to match the leader's:
    here the follower's stale term-1 suffix 3..5 differs from the leader's committed
    entries 3..4 (term 2), so committing to the leader's commit (4) would apply the wrong
    entries. The simulator cannot catch this (tests/sim/test_core_mutations.py)."""
    log = RaftLog(_storage_with([1, 1, 1, 1, 1]))
    assert log.maybe_append(1, 1, 4, [Entry(1, 2)]) == (2, 0)
    assert log.committed == 2
    assert log.maybe_append(2, 1, 4, []) == (2, 0)  # a bare probe matches up to 2 only
    assert log.committed == 2


def test_maybe_append_rejects_mismatched_previous_entry() -> None:
    log = RaftLog(_storage_with([1, 1, 2]))
    assert log.maybe_append(3, 1, 0, [Entry(3, 4)]) is None
    assert log.maybe_append(9, 2, 0, []) is None


def test_duplicate_append_changes_nothing() -> None:
    log = RaftLog(_storage_with([1, 1, 2]))
    assert log.maybe_append(1, 1, 0, [Entry(1, 2), Entry(2, 3)]) == (3, 0)
    assert log.unstable_entries == []


def test_committed_entries_are_never_overwritten() -> None:
    log = RaftLog(_storage_with([1, 1, 2]))
    log.commit_to(3)
    with pytest.raises(RuntimeError, match="safety"):
        log.maybe_append(1, 1, 3, [Entry(5, 2)])


def test_commit_only_counts_current_term_entries() -> None:
    """Raft §5.4.2 (figure 8): replication count alone never commits an older term."""
    log = RaftLog(_storage_with([1, 2, 2]))
    assert not log.maybe_commit(3, term=4)
    assert log.committed == 0
    log.append([Entry(4, 4)])
    assert log.maybe_commit(4, term=4)
    assert log.committed == 4


def test_find_conflict_by_term_skips_whole_terms() -> None:
    log = RaftLog(_storage_with([1, 1, 1, 4, 4, 5, 5, 6, 6, 6]))
    assert log.find_conflict_by_term(10, 3) == 3
    assert log.find_conflict_by_term(10, 5) == 7
    assert log.find_conflict_by_term(10, 0) == 0


def test_up_to_date_compares_last_term_then_index() -> None:
    log = RaftLog(_storage_with([1, 2, 2]))
    assert log.is_up_to_date(1, 3)
    assert log.is_up_to_date(3, 2)
    assert not log.is_up_to_date(2, 2)
    assert not log.is_up_to_date(9, 1)


def test_restore_snapshot_replaces_log() -> None:
    log = RaftLog(_storage_with([1, 1]))
    snap = Snapshot(SnapshotMeta(10, 3, ConfState(frozenset({1}))), b"state")
    log.restore(snap)
    assert log.first_index() == 11 and log.last_index() == 10 and log.committed == 10
    assert log.term(10) == 3
    with pytest.raises(CompactedError):
        log.term(5)


def test_entries_respect_size_limit_but_return_at_least_one() -> None:
    st = MemoryStorage(ConfState(frozenset({1})))
    st.save(None, [Entry(1, i, 0, b"x" * 10) for i in range(1, 6)], None)
    log = RaftLog(st)
    log.append([Entry(1, 6, 0, b"y" * 10)])
    assert len(log.entries(1, None, 25)) == 2
    assert len(log.entries(1, None, 1)) == 1
    assert len(log.entries(4, None, 30)) == 3


def test_follower_commits_only_what_the_leader_vouched_for() -> None:
    """Raft figure 2, AppendEntries rule 5: commitIndex = min(leaderCommit, index of the last
    *new* entry). Entries after the ones this APP carried may be a stale suffix from an old
    term, so a large leaderCommit must not commit them."""
    log = RaftLog(_storage_with([1, 1, 2, 2]))
    result = log.maybe_append(1, 1, 4, [Entry(1, 2)])
    assert result == (2, 0)
    assert log.committed == 2
