"""The workload (Jepsen's Kafka / Maelstrom "kafka" style) over the public client only.

- Producers (threads of the harness): each sends unique values ``"<process>-<n>"`` to a
  random key (a partition of one topic), one at a time, acks=all, idempotence on when the
  client has it. An op whose outcome is unknown retires its process: the producer is
  closed and a new one takes a new process number (Jepsen's rule), so a process never has
  a write in flight that it does not know about.
- Consumers (separate OS processes, so the harness can kill -9 them): members of one
  group, ``poll`` then ``commit`` exactly the offsets after what the poll returned; they
  read the group's committed offsets now and then. A killed consumer comes back as a new
  process and resumes from the committed offsets.
- The final read (after every fault healed): each key read from the start to its high
  watermark with a ``PartitionReader``.

Outcomes: ``ok``; ``fail`` only when the op certainly did not take effect (a send the
client never put on the wire, a commit the coordinator refused); ``info`` otherwise.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from rkjepsen.history import HistoryWriter

TOPIC = "jepsen"
GROUP = "jepsen-group"
_NEVER_SENT = re.compile(r"after 0 attempt\(s\)")


def _definitely_not_sent(exc: BaseException) -> bool:
    """The producer gave up before any attempt reached the wire (no leader was ever known
    within the delivery timeout): the record cannot have been written."""
    from raftka.client import ProducerClosedError

    return isinstance(exc, ProducerClosedError) or bool(_NEVER_SENT.search(str(exc)))


def make_producer(bootstrap: str, delivery_timeout_ms: int):
    from raftka.client import Producer

    kwargs: dict[str, Any] = dict(acks="all", linger_ms=0, request_timeout_ms=3000,
                                  delivery_timeout_ms=delivery_timeout_ms)
    try:
        return Producer(bootstrap, enable_idempotence=True, **kwargs), True
    except TypeError:  # a client without idempotence yet
        return Producer(bootstrap, **kwargs), False


class Producers:
    """``count`` producer threads writing to ``keys`` partitions until ``stop()``."""

    def __init__(self, bootstrap: str, history: HistoryWriter, count: int, keys: int,
                 seed: int, delivery_timeout_ms: int = 8000,
                 value_suffix: Callable[[random.Random], str] | None = None,
                 delivery: Callable[[random.Random], dict] | None = None,
                 make_producer: Callable[[str, int], tuple[Any, bool]] = make_producer,
                 definitely_not_sent: Callable[[BaseException], bool] = _definitely_not_sent
                 ) -> None:
        self.bootstrap = bootstrap
        # another client's producer (kafka_client.py): send(...).result(t), close(timeout)
        self.make_producer = make_producer
        self.definitely_not_sent = definitely_not_sent
        # the queue workload marks some values (poison, always failing) by a suffix
        self.value_suffix = value_suffix
        # ... and delays some (``delivery``: {} or send()'s ``delay``/``deliver_at``); the
        # due time goes into the send's history value as "deliver_after" (history s)
        self.delivery = delivery
        self.delayed_acked: list[tuple[int, str, float]] = []  # (key, value, due)
        self.last_due = 0.0  # the latest due time of any delayed send tried (history s)
        self.history = history
        self.count = count
        self.keys = keys
        self.delivery_timeout_ms = delivery_timeout_ms
        self._rng = random.Random(seed)
        self._next_process = count
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.idempotent: bool | None = None
        self.errors: list[str] = []

    def _new_process(self) -> int:
        with self._lock:
            p = self._next_process
            self._next_process += 1
            return p

    def start(self) -> None:
        for i in range(self.count):
            t = threading.Thread(target=self._run, args=(i, self._rng.randrange(1 << 30)),
                                 name=f"producer-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)

    def _run(self, process: int, seed: int) -> None:
        rng = random.Random(seed)
        producer, self.idempotent = self.make_producer(self.bootstrap,
                                                       self.delivery_timeout_ms)
        n = 0
        try:
            while not self._stop.is_set():
                key = rng.randrange(self.keys)
                value = f"{process}-{n}"
                if self.value_suffix is not None:
                    value += self.value_suffix(rng)
                n += 1
                invoke: dict[str, Any] = {"key": key, "value": value}
                options = self.delivery(rng) if self.delivery is not None else {}
                if options:
                    invoke["deliver_after"] = due = _due(options, self.history.now())
                    with self._lock:
                        self.last_due = max(self.last_due, due)
                self.history.invoke(process, "send", invoke)
                try:
                    fut = producer.send(TOPIC, value.encode(), partition=key, **options)
                    partition, offset = fut.result(self.delivery_timeout_ms / 1000 + 5)
                except Exception as exc:  # noqa: BLE001 - every failure is an outcome
                    definite = self.definitely_not_sent(exc)
                    self.history.complete("fail" if definite else "info", process, "send",
                                          {"key": key, "value": value,
                                           "error": f"{type(exc).__name__}: {exc}"[:300]})
                    if not definite:  # retire the process (its write may still land)
                        producer.close(timeout=0)
                        producer, _ = self.make_producer(self.bootstrap,
                                                         self.delivery_timeout_ms)
                        process, n = self._new_process(), 0
                    continue
                self.history.complete("ok", process, "send",
                                      {"key": key, "value": value, "offset": offset})
                if options:  # offset -1: assigned when the broker releases it
                    with self._lock:
                        self.delayed_acked.append((key, value, invoke["deliver_after"]))
        except Exception as exc:  # noqa: BLE001 - reported by the runner
            self.errors.append(f"producer {process} crashed: {exc!r}")
        finally:
            producer.close(timeout=0)


def _due(options: dict, now_h: float) -> float:
    """The history time (s) at which a send with ``options`` is due: its wall-clock due
    time moved onto the history's monotonic clock (both read here, microseconds apart).
    For ``delay`` it is read just before send(), which reads the wall clock again: the
    real due time is at most microseconds later (the checker's tolerance covers it)."""
    wall = time.time()
    due_wall = options["deliver_at"] / 1000 if "deliver_at" in options \
        else wall + options["delay"]
    return round(now_h + (due_wall - wall), 6)


def final_read(bootstrap: str, history: HistoryWriter, keys: int,
               timeout_s: float = 60.0, topic: str = TOPIC) -> list[int]:
    """Read every key from the start to its end; returns the keys it could not read (each
    is an ``info`` final-read in the history, so the checker reports it too)."""
    from raftka.client import Admin, PartitionReader, RaftkaError

    failed = []
    try:
        with Admin(bootstrap) as admin:
            admin.wait_for_topic_ready(topic, timeout=timeout_s)
    except RaftkaError:
        pass  # a key without a serving leader fails its own read below, with the reason
    for key in range(keys):
        history.invoke("final", "final-read", {"key": key})
        records: list[list[Any]] = []
        deadline = time.monotonic() + timeout_s
        try:
            with PartitionReader(bootstrap, topic, key, "earliest") as reader:
                while time.monotonic() < deadline:
                    batch = reader.poll(timeout=1.0)
                    records += [[r.offset, r.value.decode()] for r in batch]
                    if not batch and reader.at_end:
                        break
                else:
                    raise TimeoutError(f"key {key} not read to its end in {timeout_s:g}s")
        except Exception as exc:  # noqa: BLE001
            history.complete("info", "final", "final-read",
                             {"key": key, "error": f"{type(exc).__name__}: {exc}"[:300]})
            failed.append(key)
            continue
        history.complete("ok", "final", "final-read", {"key": key, "records": records})
    return failed


# ---------------------------------------------------------------------- consumer process

def consumer_main(argv: list[str] | None = None) -> int:
    """One consumer process: ``python -m rkjepsen.workload --process N --bootstrap ...``.
    Runs until SIGTERM (then closes cleanly) or SIGKILL (a crash)."""
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--process", type=int, required=True)
    p.add_argument("--history", type=Path, required=True)
    p.add_argument("--t0", type=float, required=True)
    p.add_argument("--session-timeout-ms", type=int, default=6000)
    args = p.parse_args(argv)

    from raftka.client import Consumer, RaftkaError
    from raftka.client._consumer import CommitFailedError

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    h = HistoryWriter(args.history, args.t0)
    proc = args.process
    consumer = Consumer(args.bootstrap, GROUP, [TOPIC], auto_offset_reset="earliest",
                        enable_auto_commit=False, session_timeout_ms=args.session_timeout_ms)
    polls = 0
    try:
        while not stop.is_set():
            if polls % 20 == 0:
                h.invoke(proc, "committed")
                try:
                    got = consumer.committed([(TOPIC, k.partition if hasattr(k, "partition")
                                               else k[1]) for k in consumer.assignment()])
                    h.complete("ok", proc, "committed", {"offsets": {
                        tp[1]: off for tp, off in got.items() if off is not None}})
                except RaftkaError as exc:
                    h.complete("info", proc, "committed", {"error": str(exc)[:300]})
            polls += 1
            h.invoke(proc, "poll")
            try:
                records = consumer.poll(0.5)
            except RaftkaError as exc:
                h.complete("info", proc, "poll", {"error": f"{type(exc).__name__}: {exc}"[:300]})
                time.sleep(0.1)
                continue
            by_key: dict[int, list[list[Any]]] = {}
            for r in records:
                by_key.setdefault(r.partition, []).append([r.offset, r.value.decode()])
            assignment = sorted(tp[1] for tp in consumer.assignment())
            h.complete("ok", proc, "poll", {"records": by_key, "assignment": assignment})
            if not by_key:
                continue
            offsets = {k: recs[-1][0] + 1 for k, recs in by_key.items()}
            h.invoke(proc, "commit", {"offsets": offsets})
            try:
                consumer.commit({(TOPIC, k): o for k, o in offsets.items()})
                h.complete("ok", proc, "commit", {"offsets": offsets})
            except CommitFailedError as exc:
                h.complete("fail", proc, "commit", {"offsets": offsets, "error": str(exc)[:300]})
            except RaftkaError as exc:
                h.complete("info", proc, "commit", {"offsets": offsets, "error": str(exc)[:300]})
    finally:
        try:
            consumer.close(timeout=3)
        finally:
            h.close()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    sys.exit(consumer_main())
