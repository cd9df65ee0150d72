"""``--client kafka``: the log workload driven through confluent-kafka (librdkafka) against
the nodes' Kafka listeners, instead of our gRPC client. Same ops, same history, same
checker (``workload.py`` says what each op means); only the client differs:

- Producers: one ``confluent_kafka.Producer`` per producer process, ``acks=all``,
  ``enable.idempotence=true``, ``linger.ms=0``; a send is one ``produce()`` whose delivery
  report completes it. ``ok`` with the partition and offset of the report; ``fail`` only
  when ``produce()`` itself refused the record (it never reached librdkafka's queue);
  every delivery error is ``info`` (librdkafka may have written it before it gave up), and
  retires the process as with our client (Jepsen's rule).
- Consumers (one OS process each, ``python -m rkjepsen.kafka_client``): a classic Kafka
  consumer group (``group.id`` = the workload's group, the range assignor computed by
  the group's leader member, in librdkafka), ``enable.auto.commit=false``,
  ``auto.offset.reset=earliest``; ``consume()`` then a synchronous ``commit()`` of the
  offsets after what it returned. A commit the coordinator refused for the member's
  generation (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS,
  FENCED_INSTANCE_ID) is ``fail``: Kafka's coordinator writes nothing then; any other
  error is ``info``.
- The final read: each key read from offset 0 to its high watermark (``assign`` and
  ``consume`` with ``get_watermark_offsets``; no group).

The cluster's nodes serve the Kafka protocol on ``KAFKA_PORT`` of their addresses
(``NetCluster(kafka=True)``); the harness itself (topic creation, leader lookup for the
nemesis, replica comparison) still uses gRPC.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from rkjepsen.history import HistoryWriter
from rkjepsen.workload import GROUP, TOPIC

# Commit errors after which the coordinator certainly stored nothing (Kafka's
# OffsetCommit answers them before writing).
_COMMIT_REFUSED = ("ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID", "REBALANCE_IN_PROGRESS",
                   "FENCED_INSTANCE_ID")


# librdkafka's own log lines (a killed node's "Connection refused", ...) go here, not to
# the harness's terminal: the history records every outcome. A consumer process's go to
# its consumer-N.log.
_LIBRDKAFKA_LOG = logging.getLogger("rkjepsen.librdkafka")
_LIBRDKAFKA_LOG.addHandler(logging.NullHandler())  # in the harness: nowhere (no root handler)


def _common(bootstrap: str) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "log_level": 3, "logger": _LIBRDKAFKA_LOG,
            # partitions and kills: find a new leader fast, reconnect fast
            "reconnect.backoff.ms": 100, "reconnect.backoff.max.ms": 1000,
            "topic.metadata.refresh.interval.ms": 2000, "socket.timeout.ms": 5000}


class KafkaSendError(Exception):
    """A send that did not complete: ``definite`` when it certainly was not written."""

    def __init__(self, message: str, definite: bool) -> None:
        super().__init__(message)
        self.definite = definite


class _Delivery:
    """The outcome of one ``produce()``: ``result`` drives the producer's delivery
    reports (``poll``) until the record's report came or the time is up."""

    def __init__(self, owner: "KafkaSender") -> None:
        self._owner = owner
        self.done = False
        self.error: str | None = None
        self.partition = -1
        self.offset = -1

    def on_delivery(self, err, msg) -> None:
        self.done = True
        if err is not None:
            self.error = f"{err.name()}: {err.str()}"
        else:
            self.partition, self.offset = msg.partition(), msg.offset()

    def result(self, timeout: float) -> tuple[int, int]:
        deadline = time.monotonic() + timeout
        while not self.done and time.monotonic() < deadline:
            self._owner.producer.poll(0.05)
        if not self.done:
            raise KafkaSendError(f"no delivery report within {timeout:g}s", definite=False)
        if self.error is not None:
            raise KafkaSendError(self.error, definite=False)
        return self.partition, self.offset


class KafkaSender:
    """What ``workload.Producers`` needs of a producer (``send``, ``close``), over
    confluent-kafka: one record in flight at a time, as the workload sends."""

    def __init__(self, bootstrap: str, delivery_timeout_ms: int) -> None:
        from confluent_kafka import Producer

        self.producer = Producer({
            **_common(bootstrap), "acks": "all", "enable.idempotence": True,
            "linger.ms": 0, "request.timeout.ms": 3000,
            "delivery.timeout.ms": delivery_timeout_ms})

    def send(self, topic: str, value: bytes, partition: int) -> _Delivery:
        delivery = _Delivery(self)
        try:
            self.producer.produce(topic, value, partition=partition,
                                  on_delivery=delivery.on_delivery)
        except Exception as exc:  # noqa: BLE001 - BufferError, KafkaException: not queued
            raise KafkaSendError(f"produce() refused it: {type(exc).__name__}: {exc}",
                                 definite=True) from None
        return delivery

    def close(self, timeout: float = 0) -> None:
        """Drops what is queued or in flight (the workload already recorded those sends
        as ``info``) and destroys the producer."""
        try:
            self.producer.purge()
            self.producer.flush(timeout)
        finally:
            self.producer = None  # type: ignore[assignment]


def make_producer(bootstrap: str, delivery_timeout_ms: int) -> tuple[KafkaSender, bool]:
    """``workload.make_producer``'s counterpart: (producer, idempotent)."""
    return KafkaSender(bootstrap, delivery_timeout_ms), True


def definitely_not_sent(exc: BaseException) -> bool:
    return isinstance(exc, KafkaSendError) and exc.definite


def final_read(bootstrap: str, history: HistoryWriter, keys: int,
               timeout_s: float = 60.0, topic: str = TOPIC) -> list[int]:
    """``workload.final_read`` through the Kafka listener: every key from offset 0 to its
    high watermark. Returns the keys it could not read (each an ``info`` final-read)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    failed = []
    for key in range(keys):
        history.invoke("final", "final-read", {"key": key})
        records: list[list[Any]] = []
        consumer = Consumer({**_common(bootstrap), "group.id": "jepsen-final-read",
                             "enable.auto.commit": False, "enable.partition.eof": True})
        deadline = time.monotonic() + timeout_s
        try:
            high = None
            while high is None:
                try:
                    _, high = consumer.get_watermark_offsets(TopicPartition(topic, key),
                                                             timeout=5.0)
                except KafkaException:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            consumer.assign([TopicPartition(topic, key, 0)])
            position = 0
            while position < high:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"key {key} read to offset {position} of {high} in "
                                       f"{timeout_s:g}s")
                for m in consumer.consume(1000, timeout=1.0):
                    error = m.error()
                    if error is not None:
                        if error.code() == error._PARTITION_EOF:
                            continue
                        if error.fatal() or not error.retriable():
                            raise KafkaException(error)
                        continue
                    records.append([m.offset(), m.value().decode()])
                    position = m.offset() + 1
        except Exception as exc:  # noqa: BLE001
            history.complete("info", "final", "final-read",
                             {"key": key, "error": f"{type(exc).__name__}: {exc}"[:300]})
            failed.append(key)
            continue
        finally:
            consumer.close()
        history.complete("ok", "final", "final-read", {"key": key, "records": records})
    return failed


# ---------------------------------------------------------------------- consumer process

def consumer_main(argv: list[str] | None = None) -> int:
    """One consumer process: ``python -m rkjepsen.kafka_client --process N --bootstrap
    ...`` (Kafka bootstrap). Runs until SIGTERM (then leaves the group) or SIGKILL."""
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--process", type=int, required=True)
    p.add_argument("--history", required=True)
    p.add_argument("--t0", type=float, required=True)
    p.add_argument("--session-timeout-ms", type=int, default=6000)
    args = p.parse_args(argv)

    from confluent_kafka import Consumer, KafkaException, TopicPartition

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    h = HistoryWriter(args.history, args.t0)
    proc = args.process
    consumer = Consumer({
        **_common(args.bootstrap), "group.id": GROUP, "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "session.timeout.ms": args.session_timeout_ms,
        "heartbeat.interval.ms": 1000, "max.poll.interval.ms": 30000})
    consumer.subscribe([TOPIC])
    polls = 0
    try:
        while not stop.is_set():
            assigned = consumer.assignment()
            if polls % 20 == 0 and assigned:
                h.invoke(proc, "committed")
                try:
                    got = consumer.committed(assigned, timeout=3.0)
                    h.complete("ok", proc, "committed", {"offsets": {
                        tp.partition: tp.offset for tp in got if tp.offset >= 0}})
                except KafkaException as exc:
                    h.complete("info", proc, "committed", {"error": str(exc)[:300]})
            polls += 1
            h.invoke(proc, "poll")
            by_key: dict[int, list[list[Any]]] = {}
            error = None
            for m in consumer.consume(500, timeout=0.5):
                if m.error() is not None:
                    error = m.error()
                    continue
                by_key.setdefault(m.partition(), []).append([m.offset(), m.value().decode()])
            if error is not None and not by_key:  # with records: they were read, go on
                h.complete("info", proc, "poll", {"error": f"{error.name()}: {error.str()}"[:300]})
                time.sleep(0.1)
                continue
            assignment = sorted(tp.partition for tp in consumer.assignment())
            h.complete("ok", proc, "poll", {"records": by_key, "assignment": assignment})
            if not by_key:
                continue
            offsets = {k: recs[-1][0] + 1 for k, recs in by_key.items()}
            h.invoke(proc, "commit", {"offsets": offsets})
            try:
                consumer.commit(offsets=[TopicPartition(TOPIC, k, o) for k, o in offsets.items()],
                                asynchronous=False)
                h.complete("ok", proc, "commit", {"offsets": offsets})
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                name = err.name() if hasattr(err, "name") else str(exc)
                outcome = "fail" if name in _COMMIT_REFUSED else "info"
                h.complete(outcome, proc, "commit", {"offsets": offsets, "error": str(exc)[:300]})
    finally:
        try:
            consumer.close()
        finally:
            h.close()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    sys.exit(consumer_main())
