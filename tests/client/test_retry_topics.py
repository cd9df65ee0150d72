"""The pure rules of the Consumer's retry/dead-letter topics (client/_retry_topics.py) and
of the dead-letter listing (client/_dlq.py), without a cluster."""

from __future__ import annotations

import pytest

from raftka.client._dlq import choose_dead_letters, dead_letters_from
from raftka.client._retry_topics import RetryRouter, RetryTopics
from raftka.client._types import ConsumedRecord, TopicPartition
from raftka.v1 import broker_pb2


def record(topic: str, offset: int, headers=(), value: bytes = b"v") -> ConsumedRecord:
    return ConsumedRecord(topic, 0, offset, b"k", value, tuple(headers), 1)


def test_backoff_grows_by_the_multiplier_up_to_the_maximum():
    policy = RetryTopics(backoff_initial_ms=100, backoff_multiplier=3.0, backoff_max_ms=1000)
    assert [policy.delay_ms(n) for n in (1, 2, 3, 4)] == [100, 300, 900, 1000]


@pytest.mark.parametrize("kwargs", [
    {"max_attempts": 0}, {"max_attempts": 101}, {"backoff_multiplier": 0.5},
    {"backoff_initial_ms": 2000, "backoff_max_ms": 1000}, {"backoff_initial_ms": -1},
    {"retry_topic": "x" * 250}, {"not_retried": (ValueError, "oops")},
])
def test_bad_options_are_refused(kwargs):
    with pytest.raises(ValueError):
        RetryTopics(**kwargs)


def test_the_dead_letter_topic_cannot_be_read_or_be_the_retry_topic():
    with pytest.raises(ValueError, match="dead-letter topic"):
        RetryRouter(RetryTopics(), "g").check_topics(["g.dlq"])
    with pytest.raises(ValueError, match="dead-letter topic"):
        RetryRouter(RetryTopics(retry_topic="r", dead_letter_topic="r"), "g").check_topics([])


def test_a_failure_goes_to_the_retry_topic_then_to_the_dead_letter_topic():
    router = RetryRouter(RetryTopics(max_attempts=3, backoff_initial_ms=100), "billing")
    assert router.subscription(["orders"]) == ("billing.retry", "orders")
    first = router.on_failure(record("orders", 7, [("h", b"1")]), RuntimeError("down"), 1000)
    assert first.topic == "billing.retry"
    headers = dict(first.headers)
    assert headers == {"h": b"1", "raftka.retry.topic": b"orders",
                       "raftka.retry.partition": b"0", "raftka.retry.offset": b"7",
                       "raftka.retry.attempts": b"1", "raftka.retry.not-before": b"1100",
                       "raftka.retry.error": b"RuntimeError: down"}
    retried = record("billing.retry", 3, first.headers)
    assert router.not_yet(retried, 1099) == 1100 and router.not_yet(retried, 1100) == 0
    view = router.view(retried)  # the handler sees the source record
    assert (view.topic, view.partition, view.offset) == ("orders", 0, 7)
    second = router.on_failure(retried, RuntimeError("still down"), 2000)
    assert dict(second.headers)["raftka.retry.attempts"] == b"2"
    assert dict(second.headers)["raftka.retry.not-before"] == b"2200"  # 100 * 2
    last = router.on_failure(record("billing.retry", 9, second.headers), KeyError("x"), 3000)
    assert last.topic == "billing.dlq"
    assert dict(last.headers) == {
        "h": b"1", "raftka.dlq.topic": b"orders", "raftka.dlq.partition": b"0",
        "raftka.dlq.offset": b"7", "raftka.dlq.group": b"billing",
        "raftka.dlq.delivery.count": b"3", "raftka.dlq.reason": b"attempts exhausted",
        "raftka.dlq.error": b"KeyError: 'x'"}


def test_a_not_retried_error_goes_straight_to_the_dead_letter_topic():
    router = RetryRouter(RetryTopics(not_retried=(ValueError,), dead_letter_topic="dead"), "g")
    send = router.on_failure(record("orders", 1), ValueError("poison"), 0)
    assert send.topic == "dead"
    assert dict(send.headers)["raftka.dlq.reason"] == b"rejected"
    assert dict(send.headers)["raftka.dlq.delivery.count"] == b"1"


def test_paused_partitions_come_due_and_bound_the_poll_wait():
    router = RetryRouter(RetryTopics(), "g")
    tp = TopicPartition("g.retry", 0)
    router.paused_until_ms[tp] = 5000
    assert router.wait_s(4000, 10.0) == 1.0
    assert router.due(4999) == [] and router.due(5000) == [tp]
    assert router.wait_s(5000, 10.0) == 10.0


def _pb(offset: int, value: bytes | None, headers: dict) -> broker_pb2.Record:
    r = broker_pb2.Record(offset=offset, key=b"k", timestamp_ms=5,
                          headers=[broker_pb2.Header(key=k, value=v) for k, v in headers.items()])
    if value is not None:
        r.value = value
    return r


def test_listing_skips_markers_and_what_they_mark():
    source = {"raftka.dlq.topic": b"t", "raftka.dlq.partition": b"2",
              "raftka.dlq.offset": b"9", "raftka.dlq.group": b"g",
              "raftka.dlq.delivery.count": b"5", "raftka.dlq.reason": b"rejected",
              "raftka.dlq.error": b"boom", "own": b"x"}
    records = [(0, _pb(0, b"a", source)), (0, _pb(1, b"b", source)),
               (0, _pb(2, None, {"raftka.dlq.replayed": b"0"}))]
    letters = dead_letters_from("g.dlq", records, include_replayed=False)
    assert [(x.dlq_offset, x.value, x.source_topic, x.source_partition, x.source_offset,
             x.delivery_count, x.headers) for x in letters] == [
        (1, b"b", "t", 2, 9, 5, (("own", b"x"),))]
    every = dead_letters_from("g.dlq", records, include_replayed=True)
    assert [(x.dlq_offset, x.replayed) for x in every] == [(0, True), (1, False)]
    assert choose_dead_letters(every, None) == [every[1]]
    assert choose_dead_letters(every, [(0, 1)]) == [every[1]]
    with pytest.raises(ValueError, match="already replayed"):
        choose_dead_letters(every, [(0, 1), (0, 0)])


def test_retry_topics_refuse_auto_commit_and_process_needs_the_option():
    from raftka.client import Consumer
    with pytest.raises(ValueError, match="enable_auto_commit=False"):
        Consumer("127.0.0.1:1", "g", ["t"], enable_auto_commit=True,
                 retry_topics=RetryTopics())
    with pytest.raises(ValueError, match="dead-letter topic"):
        Consumer("127.0.0.1:1", "g", ["t", "g.dlq"], retry_topics=RetryTopics())
