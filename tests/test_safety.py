"""tests/safety.py's acknowledgement check must be able to fail: each violation it exists
for (loss, duplicate, reordering, a foreign record, a wrong offset, a gap) is caught, and
records whose acknowledgement is unknown may appear once, in their place."""

from __future__ import annotations

import pytest

from tests.safety import assert_log_matches_acks

SENT = [b"a", b"b", b"c", b"d"]


def log(*values: bytes, start: int = 0) -> list[tuple[int, bytes]]:
    return [(start + i, v) for i, v in enumerate(values)]


def test_exactly_the_acknowledged_records_pass():
    assert_log_matches_acks(log(*SENT), SENT)
    assert_log_matches_acks(log(*SENT, start=10), SENT, {v: 10 + i for i, v in enumerate(SENT)})


@pytest.mark.parametrize(("read", "acked", "complaint"), [
    (log(b"a", b"b", b"d"), None, "missing (lost): [b'c']"),
    (log(b"a", b"b", b"b", b"c", b"d"), None, "written more than once"),
    (log(b"a", b"c", b"b", b"d"), None, "out of send order"),
    (log(b"a", b"b", b"x", b"c", b"d"), None, "never sent"),
    (log(b"a", b"b", b"c", b"d"), {b"a": 0, b"b": 1, b"c": 3, b"d": 3}, "not at their acknowledged"),
    ([(0, b"a"), (1, b"b"), (3, b"c"), (4, b"d")], None, "not contiguous"),
])
def test_each_violation_is_named(read, acked, complaint):
    with pytest.raises(AssertionError) as failure:
        assert_log_matches_acks(read, SENT, acked, where="t/0")
    assert complaint in str(failure.value) and "t/0" in str(failure.value)


def test_an_unacknowledged_record_may_be_there_once_in_its_place_or_not_at_all():
    acked = [b"a", b"b", b"d"]  # c's answer was lost: maybe written
    assert_log_matches_acks(log(b"a", b"b", b"c", b"d"), SENT, acked)
    assert_log_matches_acks(log(b"a", b"b", b"d"), SENT, acked)
    with pytest.raises(AssertionError, match="more than once"):
        assert_log_matches_acks(log(b"a", b"b", b"c", b"c", b"d"), SENT, acked)
    with pytest.raises(AssertionError, match="out of send order"):
        assert_log_matches_acks(log(b"a", b"c", b"b", b"d"), SENT, acked)


def test_sent_values_must_be_unique_to_be_checked():
    with pytest.raises(ValueError):
        assert_log_matches_acks(log(b"a"), [b"a", b"a"])
