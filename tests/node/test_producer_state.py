"""The idempotent-producer table of a partition (node/_producer_state.py): the verdicts of
KIP-98 (append, duplicate of one of the last 5, out of order, fenced), the leader's pending
overlay, the snapshot round trip and the rebuild from committed entries."""

from __future__ import annotations

import pytest

from raftka.node._errors import Code
from raftka.node._producer_state import (
    APPEND,
    BATCHES_KEPT,
    DUPLICATE,
    PRODUCER_EXPIRY_MS,
    REJECT,
    SEQUENCE_MOD,
    SWEEP_INTERVAL_MS,
    ProducerStateTable,
)

PID = 7
T0 = 1_700_000_000_000


def _applied(*batches: tuple[int, int, int], pid: int = PID, epoch: int = 0) -> ProducerStateTable:
    """A table that applied batches given as (first_seq, count, raft index); offsets are
    10 x the sequence so they differ from sequences."""
    t = ProducerStateTable()
    for seq, count, index in batches:
        t.apply_batch(pid, epoch, seq, count, seq * 10, seq * 10 + count - 1, T0, index)
    return t


def test_first_batch_of_an_unknown_producer_must_start_at_zero() -> None:
    t = ProducerStateTable()
    assert t.check(PID, 0, 0, 5).kind == APPEND
    v = t.check(PID, 0, 5, 5)
    assert (v.kind, v.code) == (REJECT, Code.UNKNOWN_PRODUCER_ID)


def test_next_sequence_is_appended_a_gap_is_out_of_order() -> None:
    t = _applied((0, 5, 1))
    assert t.check(PID, 0, 5, 3).kind == APPEND
    v = t.check(PID, 0, 6, 3)
    assert (v.kind, v.code) == (REJECT, Code.OUT_OF_ORDER_SEQUENCE)
    assert "expected sequence 5, got 6" in v.message


def test_a_retry_of_one_of_the_last_five_batches_is_a_duplicate_with_its_original_offsets() -> None:
    t = _applied(*[(i * 2, 2, i + 1) for i in range(7)])  # 7 batches, only the last 5 kept
    for i in range(7 - BATCHES_KEPT, 7):
        v = t.check(PID, 0, i * 2, 2)
        assert v.kind == DUPLICATE
        assert (v.duplicate_of.base_offset, v.duplicate_of.last_offset) == (i * 20, i * 20 + 1)
    for i in range(7 - BATCHES_KEPT):  # too old to be recognised: never written again
        v = t.check(PID, 0, i * 2, 2)
        assert (v.kind, v.code) == (REJECT, Code.OUT_OF_ORDER_SEQUENCE)
    # same first sequence, different length: not the same batch
    assert t.check(PID, 0, 12, 1).kind == REJECT


def test_an_older_epoch_is_fenced_a_newer_one_restarts_at_zero() -> None:
    t = _applied((0, 5, 1), epoch=3)
    v = t.check(PID, 2, 5, 1)
    assert (v.kind, v.code) == (REJECT, Code.PRODUCER_FENCED)
    v = t.check(PID, 4, 5, 1)
    assert (v.kind, v.code) == (REJECT, Code.OUT_OF_ORDER_SEQUENCE)
    assert t.check(PID, 4, 0, 1).kind == APPEND
    t.apply_batch(PID, 4, 0, 1, 100, 100, T0, 2)
    assert t.producers[PID].epoch == 4 and len(t.producers[PID].batches) == 1
    v = t.check(PID, 3, 5, 1)
    assert v.code == Code.PRODUCER_FENCED


def test_sequences_wrap_at_int32() -> None:
    t = _applied((SEQUENCE_MOD - 2, 2, 1))
    assert t.check(PID, 0, 0, 4).kind == APPEND
    assert t.check(PID, 0, SEQUENCE_MOD - 1, 1).kind == REJECT


def test_pending_batches_of_the_leader_are_checked_before_they_apply() -> None:
    t = _applied((0, 2, 1))
    a = t.add_pending(PID, 0, 2, 2, 20, 21)
    a.index, a.term = 2, 1
    assert t.check(PID, 0, 4, 2).kind == APPEND, "continues the pending batch"
    v = t.check(PID, 0, 2, 2)
    assert v.kind == DUPLICATE and v.duplicate_of is a
    b = t.add_pending(PID, 0, 4, 2, 22, 23)
    t.drop_pending([b])  # the proposal failed
    assert t.check(PID, 0, 4, 2).kind == APPEND
    t.apply_batch(PID, 0, 2, 2, 20, 21, T0, 2)
    t.applied_through(2)
    assert t.pending_count == 0
    assert t.check(PID, 0, 2, 2).kind == DUPLICATE
    t.add_pending(PID, 0, 4, 2, 22, 23)
    t.clear_pending()  # leadership lost: only the applied table remains
    assert t.check(PID, 0, 4, 2).kind == APPEND


def test_snapshot_round_trip_is_canonical() -> None:
    t = _applied((0, 3, 1), (3, 3, 2))
    t.apply_batch(99, 2, 0, 1, 50, 50, T0 + 5, 3)
    t.observe_time(T0 + 5)
    data = t.encode()
    u = ProducerStateTable.decode(data)
    assert u.encode() == data
    assert u.sweep_bucket == t.sweep_bucket
    assert u.check(PID, 0, 3, 3).kind == DUPLICATE
    assert u.check(99, 1, 1, 1).code == Code.PRODUCER_FENCED
    assert ProducerStateTable.decode(ProducerStateTable().encode()).producers == {}
    with pytest.raises(ValueError):
        ProducerStateTable.decode(data[:-3])
    with pytest.raises(ValueError):
        ProducerStateTable.decode(data + b"\0")
    with pytest.raises(ValueError):
        ProducerStateTable.decode(b"\x09" + data[1:])


def test_rebuild_from_entries_replays_over_a_snapshot_that_is_ahead() -> None:
    """A retention snapshot holds the table of the applied index; replaying the entries
    after the snapshot index into it changes nothing."""
    entries = [(i * 3, 3, i + 1) for i in range(8)]
    full = _applied(*entries)
    snapshot_ahead = ProducerStateTable.decode(full.encode())
    for seq, count, index in entries[3:]:  # replay from a snapshot at index 3
        snapshot_ahead.apply_batch(PID, 0, seq, count, seq * 10, seq * 10 + count - 1, T0, index)
    assert snapshot_ahead.encode() == full.encode()
    rebuilt = _applied(*entries)  # a restarted node applying the whole log
    assert rebuilt.encode() == full.encode()


def test_idle_producers_expire_by_entry_append_time() -> None:
    t = ProducerStateTable()
    t.observe_time(T0)
    t.apply_batch(1, 0, 0, 1, 0, 0, T0, 1)
    t.apply_batch(2, 0, 0, 1, 1, 1, T0 + PRODUCER_EXPIRY_MS // 2, 2)
    t.observe_time(T0 + PRODUCER_EXPIRY_MS)  # exactly 7 days idle: kept
    assert set(t.producers) == {1, 2}
    t.observe_time(T0 + PRODUCER_EXPIRY_MS + SWEEP_INTERVAL_MS)
    assert set(t.producers) == {2}
    assert t.check(1, 0, 1, 1).code == Code.UNKNOWN_PRODUCER_ID
