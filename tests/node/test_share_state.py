"""The share-partition state machine (node/_share_state.py): pure, deterministic."""

from __future__ import annotations

import pytest

from raftka.node._share_state import (
    ACCEPT,
    ACQUIRED,
    DEAD,
    REJECT,
    RELEASE,
    SharePartition,
    ShareOpError,
    ShareTable,
    decode_op,
    encode_op,
)

LOCK = 30_000


def acquire(sp, member, now, hw, max_records=500, cap=2000, attempts=5, log_start=0):
    return sp.apply({"g": "g", "op": "acquire", "m": member, "now": now, "lock_ms": LOCK,
                     "max": max_records, "cap": cap, "attempts": attempts,
                     "log_start": log_start}, hw)


def ack(sp, member, now, acks, attempts=5):
    return sp.apply({"g": "g", "op": "ack", "m": member, "now": now, "attempts": attempts,
                     "acks": [list(a) for a in acks]}, 0)


def test_two_members_split_one_partition_and_accepted_records_are_finished():
    sp = SharePartition()
    assert acquire(sp, "a", 0, hw=10, max_records=4) == [(0, 3, 1)]
    assert acquire(sp, "b", 0, hw=10, max_records=4) == [(4, 7, 1)]
    ack(sp, "b", 1, [(4, 7, ACCEPT, 0, "")])
    assert sp.start == 0  # 0-3 still held by a
    ack(sp, "a", 1, [(0, 3, ACCEPT, 0, "")])
    assert (sp.start, sp.end, sp.spans) == (8, 8, [])  # the state compacted away
    assert acquire(sp, "a", 2, hw=10) == [(8, 9, 1)]


def test_ack_of_a_record_not_held_changes_nothing():
    sp = SharePartition()
    acquire(sp, "a", 0, hw=10, max_records=5)
    before = sp.encode()
    for bad in ([(0, 5, ACCEPT, 0, "")],       # 5 was never acquired
                [(0, 1, ACCEPT, 0, ""), (1, 2, ACCEPT, 0, "")]):  # overlapping
        with pytest.raises(ShareOpError):
            ack(sp, "a", 1, bad)
    with pytest.raises(ShareOpError) as info:
        ack(sp, "b", 1, [(0, 0, ACCEPT, 0, "")])  # held by another member
    assert info.value.code == "INVALID_RECORD_STATE"
    assert sp.encode() == before


def test_lock_expiry_redelivers_with_a_higher_delivery_count():
    sp = SharePartition()
    acquire(sp, "a", 0, hw=3)
    assert acquire(sp, "b", LOCK - 1, hw=3) == []  # still locked
    assert acquire(sp, "b", LOCK, hw=3) == [(0, 2, 2)]
    with pytest.raises(ShareOpError):  # a's lock expired: its late accept is refused
        ack(sp, "a", LOCK + 1, [(0, 2, ACCEPT, 0, "")])
    ack(sp, "b", LOCK + 1, [(0, 2, ACCEPT, 0, "")])
    assert sp.start == 3


def test_release_with_delay_and_delivery_limit_goes_to_dead_letters():
    sp = SharePartition()
    now = 0
    for attempt in range(1, 4):
        assert acquire(sp, "a", now, hw=1, attempts=3) == [(0, 0, attempt)]
        ack(sp, "a", now, [(0, 0, RELEASE, 100, "boom")], attempts=3)
        assert acquire(sp, "a", now + 99, hw=1, attempts=3) == []  # delayed
        now += 100
    assert sp.record_info(0).state == DEAD
    assert (sp.record_info(0).reason, sp.record_info(0).error) == ("attempts exhausted", "boom")
    assert sp.apply({"g": "g", "op": "dlq_prepare", "max": 100}, 1) == [(0, 0)]
    sp.apply({"g": "g", "op": "dlq_done", "seq": 0, "n": 1}, 1)
    sp.apply({"g": "g", "op": "dlq_done", "seq": 0, "n": 1}, 1)  # a repeat: no effect
    assert (sp.start, sp.dead_lettered, sp.dlq_seq) == (1, 1, 1)


def test_reject_dead_letters_at_once_and_prepare_is_frozen_until_done():
    sp = SharePartition()
    acquire(sp, "a", 0, hw=6)
    ack(sp, "a", 1, [(1, 2, REJECT, 0, "bad json"), (4, 4, REJECT, 0, "")])
    prepared = sp.apply({"g": "g", "op": "dlq_prepare", "max": 2}, 6)
    assert prepared == [(1, 2)]
    assert sp.apply({"g": "g", "op": "dlq_prepare", "max": 2}, 6) == [(1, 2)]  # same batch
    sp.apply({"g": "g", "op": "dlq_done", "seq": 0, "n": 2}, 6)
    assert sp.apply({"g": "g", "op": "dlq_prepare", "max": 2}, 6) == [(4, 4)]
    assert sp.prepared_seq == 2


def test_leave_releases_the_members_records_and_keeps_their_count():
    sp = SharePartition()
    acquire(sp, "a", 0, hw=4, max_records=2)
    acquire(sp, "b", 0, hw=4, max_records=2)
    sp.apply({"g": "g", "op": "leave", "m": "a", "now": 5, "attempts": 5}, 4)
    assert acquire(sp, "c", 6, hw=4) == [(0, 1, 2)]
    assert sp.held_by("b") == [(2, 3)]


def test_in_flight_cap_bounds_the_state():
    sp = SharePartition()
    assert acquire(sp, "a", 0, hw=10_000, cap=100) == [(0, 99, 1)]
    assert acquire(sp, "b", 0, hw=10_000, cap=100) == []
    ack(sp, "a", 1, [(0, 49, ACCEPT, 0, "")])
    assert acquire(sp, "b", 2, hw=10_000, cap=100) == [(100, 149, 1)]


def test_records_below_the_log_start_are_finished():
    sp = SharePartition()
    acquire(sp, "a", 0, hw=10, max_records=5)
    assert acquire(sp, "b", 1, hw=10, log_start=3) == [(5, 9, 1)]
    assert sp.start == 3 and sp.held_by("a") == [(3, 4)]


def test_many_single_record_acks_keep_few_spans():
    sp = SharePartition()
    acquire(sp, "a", 0, hw=1000, max_records=1000)
    for offset in range(999, 0, -2):  # accept every other record, from the end
        ack(sp, "a", 1, [(offset, offset, ACCEPT, 0, "")])
    assert len(sp.spans) == 1000  # alternating held / done
    ack(sp, "a", 1, [(o, o, ACCEPT, 0, "") for o in range(0, 1000, 2)])
    assert sp.spans == [] and sp.start == 1000


def test_table_skips_replayed_entries_and_round_trips():
    table = ShareTable()
    op = {"g": "g", "op": "acquire", "m": "a", "now": 0, "lock_ms": LOCK, "max": 5,
          "cap": 100, "attempts": 5, "log_start": 0}
    assert decode_op(encode_op(op)) == op
    assert table.apply(7, op, 10) == [(0, 4, 1)]
    assert table.apply(7, op, 10) is None  # a replay of the same entry
    copy = ShareTable.decode(table.encode())
    assert copy.encode() == table.encode()
    assert copy.groups["g"].spans[0].state == ACQUIRED


def test_a_fresh_dead_letter_producer_id_restarts_the_sequence_once():
    sp = SharePartition()
    sp.apply({"g": "g", "op": "dlq_init", "pid": 7, "partition": 0}, 0)
    sp.apply({"g": "g", "op": "dlq_init", "pid": 8, "partition": 1}, 0)  # set once
    assert (sp.dlq_producer_id, sp.dlq_partition) == (7, 0)
    acquire(sp, "a", 0, hw=2)
    ack(sp, "a", 1, [(0, 1, REJECT, 0, "")])
    sp.apply({"g": "g", "op": "dlq_prepare", "max": 1}, 2)
    sp.apply({"g": "g", "op": "dlq_done", "seq": 0, "n": 1}, 2)
    sp.apply({"g": "g", "op": "dlq_prepare", "max": 1}, 2)
    assert sp.prepared_seq == 1
    sp.apply({"g": "g", "op": "dlq_init", "pid": 9, "partition": 0, "reset": True, "old": 7}, 2)
    sp.apply({"g": "g", "op": "dlq_init", "pid": 10, "partition": 0, "reset": True, "old": 7},
             2)  # a second writer's stale reset: ignored
    assert (sp.dlq_producer_id, sp.dlq_seq, sp.prepared_seq) == (9, 0, 0)


def test_ops_without_the_delivery_limit_expire_nothing_and_the_limit_is_never_passed():
    sp = SharePartition()
    acquire(sp, "a", 0, hw=1, attempts=2)
    acquire(sp, "a", LOCK, hw=1, attempts=2)  # second delivery
    sp.apply({"g": "g", "op": "dlq_prepare", "max": 10, "now": 2 * LOCK}, 1)  # no limit
    assert sp.record_info(0).state == ACQUIRED  # not released as if the limit were 5
    assert acquire(sp, "b", 2 * LOCK, hw=1, attempts=2) == []
    assert sp.record_info(0).state == DEAD


def test_a_retried_acknowledgement_with_the_same_id_succeeds_again():
    sp = SharePartition()
    acquire(sp, "a", 0, hw=2)
    op = {"g": "g", "op": "ack", "m": "a", "now": 1, "attempts": 5, "id": "x1",
          "acks": [[0, 1, ACCEPT, 0, ""]]}
    sp.apply(op, 2)
    sp.apply(op, 2)  # the answer was lost; the retry is not refused
    with pytest.raises(ShareOpError):
        sp.apply({**op, "id": "x2"}, 2)  # a different acknowledgement of the same records
    assert SharePartition.decode(sp.encode()).ack_ids == ["x1"]


def test_redelivery_backoff_grows_per_delivery_up_to_its_maximum():
    sp = SharePartition()
    backoff = [100, 2.0, 300]

    def op(kind, now, **kw):
        return sp.apply({"g": "g", "op": kind, "m": "a", "now": now, "attempts": 10,
                         "backoff": backoff, "lock_ms": LOCK, "max": 10, "cap": 100,
                         "log_start": 0, **kw}, 1)

    assert op("acquire", 0) == [(0, 0, 1)]
    op("ack", 1, acks=[[0, 0, RELEASE, 0, ""]])  # after 1 delivery: 100 ms
    assert op("acquire", 100) == []
    assert op("acquire", 101) == [(0, 0, 2)]
    # the lock expires at 101 + LOCK; after 2 deliveries: 200 ms from then
    assert op("acquire", 101 + LOCK + 199) == []
    assert op("acquire", 101 + LOCK + 200) == [(0, 0, 3)]
    op("ack", 101 + LOCK + 201, acks=[[0, 0, RELEASE, 0, ""]])  # 400 -> capped at 300
    assert op("acquire", 101 + LOCK + 500) == []
    assert op("acquire", 101 + LOCK + 501) == [(0, 0, 4)]
    op("ack", 101 + LOCK + 502, acks=[[0, 0, RELEASE, 50, ""]])  # its own delay wins
    assert op("acquire", 101 + LOCK + 552) == [(0, 0, 5)]
    op("leave", 101 + LOCK + 553)  # leaving: no backoff
    assert op("acquire", 101 + LOCK + 553) == [(0, 0, 6)]


def test_a_retried_acquisition_gets_what_the_member_still_holds_of_it():
    sp = SharePartition()
    op = {"g": "g", "op": "acquire", "m": "a", "now": 0, "lock_ms": LOCK, "max": 3,
          "cap": 100, "attempts": 5, "log_start": 0, "id": "f1"}
    assert sp.apply(op, 10) == [(0, 2, 1)]
    ack(sp, "a", 1, [(1, 1, ACCEPT, 0, "")])
    assert sp.apply({**op, "now": 2}, 10) == [(0, 0, 1), (2, 2, 1)]  # nothing new
    assert sp.apply({**op, "m": "b", "now": 3}, 10) == [(3, 5, 1)]  # same id, other member
    assert SharePartition.decode(sp.encode()).fetch_ids == sp.fetch_ids


def test_an_acquisition_after_a_refused_acknowledgement_acquires_nothing():
    """ShareFetch with acknowledgements proposes the ack, then an acquisition naming it
    (``after_ack``): if the ack was refused, the acquisition takes nothing."""
    def acquire_after(sp, ack_id, now):
        return sp.apply({"g": "g", "op": "acquire", "m": "a", "now": now, "lock_ms": LOCK,
                         "max": 5, "cap": 2000, "attempts": 5, "after_ack": ack_id}, 10)

    sp = SharePartition()
    assert acquire(sp, "a", 0, hw=10, max_records=5) == [(0, 4, 1)]
    with pytest.raises(ShareOpError):  # 7 is not held: refused whole
        sp.apply({"g": "g", "op": "ack", "m": "a", "now": 1, "attempts": 5, "id": "x1",
                  "acks": [[0, 7, ACCEPT, 0, ""]]}, 10)
    before = sp.encode()
    assert acquire_after(sp, "x1", 2) == [] and sp.encode() == before
    sp.apply({"g": "g", "op": "ack", "m": "a", "now": 3, "attempts": 5, "id": "x2",
              "acks": [[0, 4, ACCEPT, 0, ""]]}, 10)
    assert acquire_after(sp, "x2", 4) == [(5, 9, 1)]
