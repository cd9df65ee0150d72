"""Retry and dead-letter topics for consumer groups: the ``Consumer``'s ``retry_topics``
option and its ``process(handler)`` (threaded and ``raftka.aio``; the rules are here, each
consumer only does the I/O). After Spring Kafka's non-blocking retries.

    with Consumer(bootstrap, "billing", ["orders"],
                  retry_topics=RetryTopics(max_attempts=3, backoff_initial_ms=1000)) as c:
        while running:
            c.process(charge)            # charge(record) raising = a failed delivery

Flow of one record (``max_attempts`` deliveries in all):
1. ``process`` hands it to the handler. Returned: done. Raised: it is produced, acks=all,
   to the group's **retry topic** (``<group>.retry``) with its key, value and headers plus
   ``raftka.retry.*`` headers (source topic, partition, offset, failed deliveries so far,
   the last error text, and ``not-before``: now + the backoff for that attempt). Either
   way the source partition moves on at once: a failing record never blocks the records
   behind it (non-blocking).
2. The consumer is subscribed to the retry topic too. A retry record whose ``not-before``
   is in the future pauses that retry partition (``Consumer.pause``) at that record until
   its time, then it is delivered again, to the handler as the *source* record (source
   topic, partition and offset: the same identity on every attempt; the
   ``raftka.retry.*`` headers say which attempt it is).
3. The delivery that fails for the ``max_attempts``-th time, or with an exception of a
   type in ``not_retried``, produces it to the **dead-letter topic** (``<group>.dlq``)
   with ``raftka.dlq.*`` headers as a share group's dead letters carry (source topic,
   partition, offset, group, delivery count, reason ``attempts exhausted`` or
   ``rejected``, last error), so ``raftka dlq list|show|replay GROUP`` and
   ``Admin.list_dead_letters`` work the same on it.
4. Only once every retry and dead-letter record of the batch is acknowledged does
   ``process`` commit the batch's offsets: at-least-once (a crash in between redoes the
   batch, and may send a retry record twice).

Both topics are created, when missing, before the consumer first joins (with the most
partitions and the replication factor of the subscribed topics).

**Ordering trade-off.** A failed record is taken out of its partition's order: records
behind it (of the same key too) are handled before its retry, and retries of different
records interleave by due time per retry partition. One retry topic serves every
attempt, so a record with a short delay may wait behind one with a longer delay in the
same retry partition (it is delivered late, never early). Use it where records are
independent; where a key's order matters, retry in the handler (blocking) instead.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from raftka.client._admin import AdminOps
from raftka.client._ops import Ops
from raftka.client._types import ConsumedRecord, TopicPartition
from raftka.v1.errors import TopicExistsError

__all__ = ["RetryTopics"]

RETRY = "raftka.retry."
TOPIC, PARTITION, OFFSET = RETRY + "topic", RETRY + "partition", RETRY + "offset"
ATTEMPTS = RETRY + "attempts"  # failed deliveries so far
NOT_BEFORE = RETRY + "not-before"  # ms since the epoch
ERROR = RETRY + "error"
DLQ = "raftka.dlq."
ERROR_TEXT_MAX = 1000
TOPIC_NAME_MAX = 249


@dataclass(frozen=True)
class RetryTopics:
    """The retry/dead-letter option of a ``Consumer`` (module docstring).

    ``max_attempts``: deliveries in all, 1..100 (1: no retry, straight to the dead-letter
    topic). The delay before retry ``n`` (n = 1, 2, ...) is ``min(backoff_max_ms,
    backoff_initial_ms * backoff_multiplier ** (n - 1))``. Topics: "" = ``<group>.retry``
    and ``<group>.dlq``. ``not_retried``: exception types that go to the dead-letter
    topic at once (reason ``rejected``)."""

    max_attempts: int = 3
    backoff_initial_ms: int = 1000
    backoff_multiplier: float = 2.0
    backoff_max_ms: int = 60_000
    retry_topic: str = ""
    dead_letter_topic: str = ""
    not_retried: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.max_attempts <= 100:
            raise ValueError(f"max_attempts must be from 1 to 100, got {self.max_attempts}")
        if not (0 <= self.backoff_initial_ms <= 86_400_000
                and 1.0 <= self.backoff_multiplier <= 10.0
                and self.backoff_initial_ms <= self.backoff_max_ms <= 86_400_000):
            raise ValueError(
                "backoff: initial must be from 0 to 86400000 ms, the multiplier from 1.0 to "
                "10.0 and the maximum from initial to 86400000 ms; got "
                f"{self.backoff_initial_ms}, {self.backoff_multiplier}, {self.backoff_max_ms}")
        for name in (self.retry_topic, self.dead_letter_topic):
            if len(name) > TOPIC_NAME_MAX or (name and not name.isprintable()):
                raise ValueError(f"{name[:300]!r} is not a valid topic name")
        if not all(isinstance(t, type) and issubclass(t, BaseException)
                   for t in self.not_retried):
            raise ValueError("not_retried must be a tuple of exception types")

    def delay_ms(self, failures: int) -> int:
        """The delay before the delivery after ``failures`` failed ones."""
        return int(min(self.backoff_max_ms, self.backoff_initial_ms
                       * self.backoff_multiplier ** min(max(failures - 1, 0), 64)))


class Send(NamedTuple):
    """A record to produce (acks=all) before the batch's offsets are committed."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


def _header(record: ConsumedRecord, name: str) -> bytes | None:
    for k, v in record.headers:
        if k == name:
            return v
    return None


def _int_header(record: ConsumedRecord, name: str, default: int) -> int:
    value = _header(record, name)
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


class RetryRouter:
    """The pure part of ``process`` for one consumer: which records wait, what the handler
    sees, where a failure goes, which retry partitions are paused until when."""

    def __init__(self, policy: RetryTopics, group_id: str) -> None:
        self.policy = policy
        self.group_id = group_id
        self.retry_topic = policy.retry_topic or f"{group_id}.retry"
        self.dead_letter_topic = policy.dead_letter_topic or f"{group_id}.dlq"
        self.paused_until_ms: dict[TopicPartition, int] = {}

    def subscription(self, topics: Iterable[str]) -> tuple[str, ...]:
        return tuple(sorted(set(topics) | {self.retry_topic}))

    def check_topics(self, topics: Sequence[str]) -> None:
        if self.dead_letter_topic in topics or self.dead_letter_topic == self.retry_topic:
            raise ValueError(f"the dead-letter topic {self.dead_letter_topic!r} must be "
                             "neither subscribed nor the retry topic")

    # ------------------------------------------------------------------ pausing
    def due(self, now_ms: int) -> list[TopicPartition]:
        """Paused retry partitions whose time has come (forgotten here: resume them)."""
        ready = [tp for tp, at in self.paused_until_ms.items() if at <= now_ms]
        for tp in ready:
            del self.paused_until_ms[tp]
        return ready

    def wait_s(self, now_ms: int, timeout_s: float) -> float:
        """How long a poll may wait: until the first paused partition is due, at most."""
        if not self.paused_until_ms:
            return timeout_s
        return max(min(timeout_s, (min(self.paused_until_ms.values()) - now_ms) / 1000), 0.0)

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            self.paused_until_ms.pop(tp, None)

    def not_yet(self, record: ConsumedRecord, now_ms: int) -> int:
        """The time (ms) a record of the retry topic is due, if still in the future; else 0."""
        if record.topic != self.retry_topic:
            return 0
        at = _int_header(record, NOT_BEFORE, 0)
        return at if at > now_ms else 0

    # ------------------------------------------------------------------ delivering
    def view(self, record: ConsumedRecord) -> ConsumedRecord:
        """What the handler sees: a retry record as its source record (topic, partition,
        offset of the source; headers kept, ``raftka.retry.*`` included)."""
        if record.topic != self.retry_topic:
            return record
        source = _header(record, TOPIC)
        if source is None:
            return record  # not written by us: as it is
        return record._replace(
            topic=source.decode("utf-8", "replace"),
            partition=_int_header(record, PARTITION, record.partition),
            offset=_int_header(record, OFFSET, record.offset))

    def on_failure(self, record: ConsumedRecord, error: BaseException, now_ms: int) -> Send:
        """Where a record whose handler raised ``error`` goes next."""
        retried = record.topic == self.retry_topic and _header(record, TOPIC) is not None
        failures = (_int_header(record, ATTEMPTS, 0) if retried else 0) + 1
        source = self.view(record)
        text = f"{type(error).__name__}: {error}"[:ERROR_TEXT_MAX]
        original = [(k, v) for k, v in record.headers
                    if not k.startswith(RETRY) and not k.startswith(DLQ)]
        if isinstance(error, self.policy.not_retried) or failures >= self.policy.max_attempts:
            reason = ("rejected" if isinstance(error, self.policy.not_retried)
                      else "attempts exhausted")
            return Send(self.dead_letter_topic, record.key, record.value, original + [
                (DLQ + k, v.encode()) for k, v in (
                    ("topic", source.topic), ("partition", str(source.partition)),
                    ("offset", str(source.offset)), ("group", self.group_id),
                    ("delivery.count", str(failures)), ("reason", reason), ("error", text))])
        return Send(self.retry_topic, record.key, record.value, original + [
            (k, v.encode()) for k, v in (
                (TOPIC, source.topic), (PARTITION, str(source.partition)),
                (OFFSET, str(source.offset)), (ATTEMPTS, str(failures)),
                (NOT_BEFORE, str(now_ms + self.policy.delay_ms(failures))), (ERROR, text))])

    # ------------------------------------------------------------------ topics
    def ensure_topics_ops(self, admin: AdminOps, sources: Sequence[str],
                          timeout_s: float) -> Ops[None]:
        """Create the retry and dead-letter topics unless they exist: as many partitions
        and the replication factor of the largest subscribed topic."""
        partitions, replication = 1, 1
        for topic in sources:
            if topic == self.retry_topic:
                continue
            d = yield from admin.describe_topic_ops(topic, timeout=timeout_s)
            partitions = max(partitions, d.partition_count)
            replication = max(replication, d.replication_factor)
        for topic in (self.retry_topic, self.dead_letter_topic):
            try:
                yield from admin.create_topic_ops(topic, partitions, replication,
                                                  timeout=timeout_s)
            except TopicExistsError:
                pass


def now_ms() -> int:
    return int(time.time() * 1000)


def check_handler_result(result: Any) -> None:
    """A coroutine returned by the threaded Consumer's handler was never run: say so."""
    if hasattr(result, "__await__"):
        close = getattr(result, "close", None)
        if close is not None:
            close()
        raise TypeError("the handler returned an awaitable: use raftka.aio.Consumer for "
                        "async handlers")
