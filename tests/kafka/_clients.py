"""Helpers shared by tests/kafka: drive Kafka clients until a condition holds."""

from __future__ import annotations

import time

from confluent_kafka import Consumer


def consume(consumer: Consumer, count: int, timeout: float = 60.0) -> list:
    """Poll until ``count`` records came (errors fail the test), or the timeout."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        assert message.error() is None, message.error()
        got.append(message)
    assert len(got) == count, f"consumed {len(got)} of {count} records in {timeout:.0f}s"
    return got


def quiet(config: dict) -> dict:
    """librdkafka logs connection churn at info level; the tests only want errors."""
    return {"log_level": 3, **config}
