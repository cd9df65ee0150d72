"""Quorum arithmetic and per-follower flow control, each tested alone."""

from __future__ import annotations

import pytest

from raftka.raft.core._progress import Inflights, Progress, ProgressState
from raftka.raft.core._quorum import VoteResult, committed_index, has_quorum, majority, vote_result


@pytest.mark.parametrize("voters,expected", [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)])
def test_majority(voters: int, expected: int) -> None:
    assert majority(voters) == expected


def test_committed_index_is_the_highest_index_on_a_majority() -> None:
    assert committed_index({1, 2, 3}, {1: 5, 2: 3, 3: 1}) == 3
    assert committed_index({1, 2, 3, 4}, {1: 5, 2: 3, 3: 1, 4: 9}) == 3
    assert committed_index({1, 2, 3}, {1: 5}) == 0  # unknown voters count as 0
    assert committed_index(set(), {1: 5}) == 0


def test_committed_index_ignores_non_voters() -> None:
    assert committed_index({1, 2, 3}, {1: 9, 2: 9, 3: 1, 4: 100}) == 9
    assert committed_index({1, 2, 3}, {1: 1, 2: 1, 3: 1, 4: 100}) == 1


def test_vote_result() -> None:
    voters = frozenset({1, 2, 3})
    assert vote_result(voters, {1: True}) == VoteResult.PENDING
    assert vote_result(voters, {1: True, 2: True}) == VoteResult.WON
    assert vote_result(voters, {1: True, 2: False}) == VoteResult.PENDING
    assert vote_result(voters, {1: True, 2: False, 3: False}) == VoteResult.LOST
    assert vote_result(voters, {4: True, 5: True}) == VoteResult.PENDING  # non-voters
    assert vote_result(frozenset(), {1: True}) == VoteResult.LOST


def test_has_quorum() -> None:
    assert has_quorum(frozenset({1, 2, 3}), [1, 3])
    assert not has_quorum(frozenset({1, 2, 3}), [1, 4, 5])
    assert not has_quorum(frozenset(), [1])


def test_inflights_window() -> None:
    window = Inflights(3)
    for last in (10, 20, 30):
        window.add(last)
    assert window.full()
    with pytest.raises(RuntimeError):
        window.add(40)
    window.free_to(20)
    assert window.count() == 1 and not window.full()
    window.free_first()
    assert window.count() == 0


def test_probe_sends_one_message_at_a_time() -> None:
    pr = Progress(next_index=5, max_inflight=4)
    assert pr.state == ProgressState.PROBE and not pr.is_paused()
    pr.sent_entries(last_index=7, count=3)
    assert pr.is_paused() and pr.next == 5  # probe does not advance next optimistically
    assert pr.maybe_update(7)
    assert pr.match == 7 and pr.next == 8 and not pr.is_paused()


def test_replicate_pipelines_up_to_the_window() -> None:
    pr = Progress(next_index=1, max_inflight=2)
    pr.maybe_update(0)
    pr.become_replicate()
    pr.sent_entries(5, 5)
    assert pr.next == 6 and not pr.is_paused()
    pr.sent_entries(9, 4)
    assert pr.next == 10 and pr.is_paused()
    pr.maybe_update(5)
    pr.inflights.free_to(5)
    assert not pr.is_paused()


def test_stale_rejection_is_ignored() -> None:
    pr = Progress(next_index=11, max_inflight=4)
    pr.maybe_update(10)
    pr.become_replicate()
    assert not pr.maybe_decrease_to(rejected=9, match_hint=3)  # older than match: stale
    assert pr.maybe_decrease_to(rejected=15, match_hint=12)
    assert pr.next == 11


def test_probe_rejection_uses_the_hint() -> None:
    pr = Progress(next_index=101, max_inflight=4)
    pr.sent_entries(100, 0)
    assert pr.maybe_decrease_to(rejected=100, match_hint=40)
    assert pr.next == 41 and not pr.is_paused()
    assert not pr.maybe_decrease_to(rejected=100, match_hint=40)  # duplicate: stale now


def test_snapshot_state_pauses_until_acknowledged() -> None:
    pr = Progress(next_index=3, max_inflight=4)
    pr.become_snapshot(50)
    assert pr.is_paused()
    pr.maybe_update(50)
    pr.become_probe()
    assert pr.next == 51 and pr.state == ProgressState.PROBE
