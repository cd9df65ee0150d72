"""Delayed delivery on the client (client/_delivery.py, _accumulator.py rule 6): a delay or
a time becomes one absolute delivery time in ms; bad ones are refused before anything is
queued; records share a batch only with records of the same delivery time."""

from __future__ import annotations

import datetime as dt

import pytest

from raftka.client._delivery import delivery_time_ms, parse_delay
from tests.client.test_producer_parts import accumulator, size


def test_a_delay_or_a_time_becomes_one_absolute_time_in_ms() -> None:
    assert delivery_time_ms(None, None) == 0
    assert delivery_time_ms(None, 30, now_s=1000.0) == 1_030_000
    assert delivery_time_ms(None, dt.timedelta(milliseconds=1500), now_s=1000.0) == 1_001_500
    assert delivery_time_ms(None, 0, now_s=1000.0) == 0, "no delay: an ordinary record"
    assert delivery_time_ms(1_700_000_000_123, None) == 1_700_000_000_123
    when = dt.datetime(2026, 12, 5, 18, 0, tzinfo=dt.timezone.utc)
    assert delivery_time_ms(when, None) == int(when.timestamp() * 1000)


@pytest.mark.parametrize("deliver_at, delay, error", [
    (None, -1, ValueError),
    (None, dt.timedelta(seconds=-1), ValueError),
    (5, 5, ValueError),
    (-1, None, ValueError),
    ("soon", None, TypeError),
    (None, "30s", TypeError),
])
def test_bad_delivery_times_are_refused(deliver_at, delay, error) -> None:
    with pytest.raises(error):
        delivery_time_ms(deliver_at, delay)


def test_cli_durations() -> None:
    assert [parse_delay(t) for t in ("30s", "500ms", "5m", "2h", "1d", "1.5")] == [
        30.0, 0.5, 300.0, 7200.0, 86400.0, 1.5]
    for bad in ("-5s", "soon", "5 weeks", ""):
        with pytest.raises(ValueError):
            parse_delay(bad)


def test_records_share_a_batch_only_with_the_same_delivery_time() -> None:
    acc = accumulator(batch_size=4096, buffer_memory=16384)

    def add(value: bytes, at: int):
        return acc.append("t", 0, 3, None, value, (), None, size(value), at)

    plain, _ = add(b"a", 0)
    later, changed = add(b"b", 5000)
    assert changed and later is not plain and plain.closed and later.deliver_at_ms == 5000
    same, changed = add(b"c", 5000)
    assert same is later and not changed
    other, changed = add(b"d", 6000)
    assert changed and other is not later and later.closed
    back, _ = add(b"e", 0)
    assert back is not other and back.deliver_at_ms == 0
    assert [len(b.futures) for b in acc.queues[("t", 0)].batches] == [0, 0, 0, 0]
    assert [len(b.builder) for b in acc.queues[("t", 0)].batches] == [1, 2, 1, 1]
