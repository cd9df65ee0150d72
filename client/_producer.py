"""``Producer``: batches records per partition and writes them with Produce RPCs.

Shape (the aiokafka split: a pure accumulator plus one I/O sender)::

    send() ─► accumulator: per (topic, partition) a FIFO of batches (BatchBuilder)
                 │ a batch is *ready* when full, when linger_ms has passed since its first
                 │ record, on flush()/close(), or when it is a retry whose backoff ended
                 ▼
              sender thread ─► Produce(record_batches=<one RecordBatch v2>) to the leader
                 ▲              via grpc's future API (partitions proceed in parallel)
                 └─ completions (grpc callback threads only enqueue them)

Rules of this minimal version (idempotence and pipelining are the next issue):

1. At most ONE Produce request is in flight per partition, and a batch leaves the head of
   its partition's queue only when it is acknowledged or has failed for good. Retries thus
   never reorder records within a partition.
2. Retriable errors (see ``_errors``) are retried with exponential backoff until the
   batch's ``delivery_timeout_ms`` (counted from its first record) runs out; then every
   record of the batch fails with :class:`RaftkaTimeoutError` whose ``__cause__`` is the
   last error. Non-retriable errors fail the batch at once.
3. NOT_LEADER naming the leader is retried at once against that leader; other metadata
   errors refresh the metadata first (at most once per ``retry_backoff_ms``), and retry
   at once if it names a different leader, else after the backoff (a few immediate hops
   in a row at most: stale nodes may point at each other).
4. Without idempotence a retry after an ambiguous failure (deadline, dropped connection,
   NO_QUORUM) may write the batch twice. Each record's future reports the offsets of the
   write that was acknowledged.
5. The offset of a record is the ``base_offset`` the broker returned for its batch plus the
   record's index in the batch (-1 with acks=0, where the broker assigns none yet).

Bulk path: ``send_many(topic, values)`` appends many records to one partition under one
lock round (``BatchBuilder.extend``) with one future for all of them; per-record ``send``
costs a few microseconds of Python each, which caps it well below the broker's rate.

Partitioning: an explicit ``partition``; else Kafka's ``murmur2(key) & 0x7fffffff %
partitions`` for a key; else *sticky* round-robin: keyless records fill one partition's
batch, and the next batch goes to the next partition.

Bounds: ``buffer_memory`` bytes of records wait in the accumulator at most (``send``
blocks up to ``max_block_ms`` for room, then fails); ``send`` also blocks up to
``max_block_ms`` for the topic's metadata the first time.

Futures are resolved on the sender thread: done-callbacks must be quick and must not call
``flush()`` or ``close()`` (they would wait for the thread that runs them).
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from concurrent.futures._base import RUNNING as _FUTURE_RUNNING
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import grpc

from client._cluster import Backoff, Cluster
from client._errors import (
    NotLeaderError,
    ProducerClosedError,
    RaftkaError,
    RaftkaTimeoutError,
    UnknownPartitionError,
    UnknownTopicError,
    error_from_rpc,
)
from client._partitioner import default_partition
from client.pb.raftka.v1 import broker_pb2
from client.recordbatch import BatchBuilder

__all__ = ["Producer", "RecordMetadata", "parse_acks"]

_ACKS: dict[object, int] = {
    "all": broker_pb2.ACKS_ALL, "-1": broker_pb2.ACKS_ALL, -1: broker_pb2.ACKS_ALL,
    "1": broker_pb2.ACKS_LEADER, 1: broker_pb2.ACKS_LEADER, "leader": broker_pb2.ACKS_LEADER,
    "0": broker_pb2.ACKS_NONE, 0: broker_pb2.ACKS_NONE, "none": broker_pb2.ACKS_NONE,
}
_RECORD_OVERHEAD_BYTES = 24  # varints and attributes per record, for buffer accounting
_RPC_MARGIN_S = 1.0  # the gRPC deadline exceeds the broker's ack timeout by this much
_UNKNOWN_TOPIC_CACHE_S = 1.0  # after a topic lookup failed, fail sends to it fast this long

RecordMetadata = tuple[int, int]  # (partition, offset)


def _failed_future(err: BaseException) -> Future[Any]:
    fut: Future[Any] = Future()
    fut.set_running_or_notify_cancel()
    fut.set_exception(err)
    return fut


def parse_acks(acks: str | int) -> int:
    """``"all"``/``-1`` -> ACKS_ALL, ``"1"``/``1`` -> ACKS_LEADER, ``"0"``/``0`` ->
    ACKS_NONE (the ``raftka.v1.Acks`` values)."""
    key = acks.strip().lower() if isinstance(acks, str) else acks
    try:
        return _ACKS[key]
    except (KeyError, TypeError):
        raise ValueError(f"acks must be 'all', '1' or '0' (or -1, 1, 0), got {acks!r}") from None


def _to_bytes(value: Any, what: str) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"record {what} must be bytes, str or None, not {type(value).__name__}")


def _to_headers(headers: Any) -> tuple[tuple[str, bytes | None], ...]:
    if not headers:
        return ()
    items = headers.items() if isinstance(headers, Mapping) else headers
    out = []
    for k, v in items:
        if not isinstance(k, str):
            raise TypeError(f"record header keys must be str, not {type(k).__name__}")
        out.append((k, _to_bytes(v, "header value")))
    return tuple(out)


class _RecordFuture(Future):  # type: ignore[type-arg]
    """A ``concurrent.futures.Future`` that is cheap to create: it borrows its batch's
    Condition instead of allocating a Condition and an RLock per record, and starts in
    the RUNNING state (not cancellable: a queued record may already be on the wire).
    Creating a plain Future and marking it running costs ~3 us, a third of a ``send``.
    Sets the attributes ``Future.__init__`` sets (CPython 3.8-3.13 keep the same ones;
    tests/client checks result(), add_done_callback() and concurrent.futures.wait())."""

    def __init__(self, condition: threading.Condition) -> None:  # noqa: D107
        self._condition = condition
        self._state = _FUTURE_RUNNING
        self._result = None
        self._exception = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Any] = []


class _Group:
    """The future of one ``send_many`` call: done when every batch holding a part of
    it is done. Touched only by the sender thread once queued."""

    __slots__ = ("future", "results", "pending", "failed")

    def __init__(self, count: int) -> None:
        self.future: Future[list[RecordMetadata]] = Future()
        self.future.set_running_or_notify_cancel()
        self.results: list[RecordMetadata] = [(-1, -1)] * count
        self.pending = 0  # parts (batches) not yet done
        self.failed = False

    def part_ok(self, start: int, partition: int, base_offset: int, count: int) -> None:
        if base_offset >= 0:
            self.results[start:start + count] = [(partition, base_offset + i)
                                                 for i in range(count)]
        else:
            self.results[start:start + count] = [(partition, -1)] * count
        self.pending -= 1
        if not self.pending and not self.failed:
            self.future.set_result(self.results)

    def part_failed(self, err: BaseException) -> None:
        self.pending -= 1
        if not self.failed:
            self.failed = True
            self.future.set_exception(err)


@dataclass(eq=False, slots=True)
class _Batch:
    topic: str
    partition: int
    builder: BatchBuilder | None
    created: float  # time.monotonic() of the first record
    # one entry per record, by index in the batch: its future, or None for a record of
    # a send_many group (those are in `groups` as (group, group_start, batch_start, count))
    futures: list[Future[RecordMetadata] | None] = field(default_factory=list)
    groups: list[tuple[_Group, int, int, int]] = field(default_factory=list)
    condition: threading.Condition = field(default_factory=threading.Condition)
    size_bytes: int = 0  # accounted against buffer_memory
    closed: bool = False  # no more appends (full, or taken by the sender)
    done: bool = False  # acknowledged or failed for good
    attempts: int = 0
    redirects: int = 0  # consecutive immediate retries (to a newly learned leader)
    payload: bytes | None = None  # built once, resent unchanged on retries
    last_error: RaftkaError | None = None
    backoff: Backoff | None = None


@dataclass(eq=False, slots=True)
class _PartitionQueue:
    batches: deque[_Batch] = field(default_factory=deque)
    in_flight: bool = False  # invariant: at most one request per partition
    retry_at: float = 0.0  # the head batch may not be sent before this time


class Producer:
    """Writes records to partition leaders; ``send`` returns a future of
    ``(partition, offset)``. Thread-safe. See the module docstring for the rules."""

    def __init__(
        self,
        bootstrap: str | Iterable[str],
        *,
        acks: str | int = "all",
        linger_ms: int = 5,
        batch_size: int = 256 * 1024,
        compression: str = "lz4",
        request_timeout_ms: int = 5000,
        delivery_timeout_ms: int = 30000,
        retry_backoff_ms: int = 50,
        retry_backoff_max_ms: int = 250,
        max_block_ms: int = 10000,
        buffer_memory: int = 64 * 1024 * 1024,
    ) -> None:
        self._acks = parse_acks(acks)
        BatchBuilder(compression=compression, max_bytes=batch_size)  # validates both
        if linger_ms < 0 or retry_backoff_ms <= 0 or delivery_timeout_ms <= 0:
            raise ValueError("linger_ms must be >= 0; retry_backoff_ms and "
                             "delivery_timeout_ms must be positive")
        if buffer_memory < batch_size:
            raise ValueError("buffer_memory must be at least batch_size")
        self._compression = compression
        self._batch_size = batch_size
        self._linger_s = linger_ms / 1000
        self._request_timeout_ms = request_timeout_ms
        self._delivery_timeout_s = delivery_timeout_ms / 1000
        self._retry_backoff_s = retry_backoff_ms / 1000
        self._retry_backoff_max_s = max(retry_backoff_max_ms, retry_backoff_ms) / 1000
        self._max_block_s = max_block_ms / 1000
        self._buffer_memory = buffer_memory

        self._cluster = Cluster(bootstrap, request_timeout_ms=request_timeout_ms)
        self._cond = threading.Condition()
        # guarded by _cond:
        self._queues: dict[tuple[str, int], _PartitionQueue] = {}
        self._sticky: dict[str, tuple[int, _Batch | None]] = {}
        self._completions: list[tuple[_Batch, str, grpc.Future]] = []
        self._buffered_bytes = 0  # <= buffer_memory, except one oversized record alone
        self._flushing = 0
        self._closing = False
        self._aborting = False
        self._crashed: BaseException | None = None
        self._unknown_topics: dict[str, float] = {}
        self._stats = {"records_sent": 0, "batches_sent": 0, "requests": 0, "retries": 0,
                       "records_failed": 0}
        self._sender = threading.Thread(target=self._run, name="raftka-producer-sender",
                                        daemon=True)
        self._sender.start()

    # ------------------------------------------------------------------ public API

    def send(
        self,
        topic: str,
        value: bytes | str | None,
        key: bytes | str | None = None,
        headers: Mapping[str, bytes | str | None] | Iterable[tuple[str, bytes | str | None]]
        | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> Future[RecordMetadata]:
        """Queue one record; the future resolves to ``(partition, offset)`` once the
        broker acknowledged it per ``acks``, or fails with a :class:`RaftkaError`.

        Blocks (up to ``max_block_ms``) only to learn the topic's partitions the first
        time or to wait for buffer room. Raises ProducerClosedError after ``close()``,
        TypeError/ValueError for bad arguments; every other failure goes into the future.
        """
        if self._closing:
            raise ProducerClosedError("send() after close(): the producer is closed")
        if self._crashed is not None:
            raise ProducerClosedError(f"the producer's sender failed: {self._crashed!r}")
        key_b = key if key is None or type(key) is bytes else _to_bytes(key, "key")
        value_b = (value if value is None or type(value) is bytes
                   else _to_bytes(value, "value"))
        hdrs = _to_headers(headers) if headers else ()
        size = len(key_b or b"") + len(value_b or b"") + _RECORD_OVERHEAD_BYTES
        if hdrs:
            size += sum(len(k) + len(v or b"") for k, v in hdrs)
        try:
            partition, count = self._choose_partition(topic, key_b, partition)
        except RaftkaError as e:
            return _failed_future(e)
        with self._cond:
            err = self._wait_for_room(size)
            if err is not None:
                return _failed_future(err)
            sticky = partition is None
            if sticky:
                partition = self._sticky_partition(topic, count)
            assert partition is not None
            batch = self._append(topic, partition, key_b, value_b, hdrs, timestamp_ms)
            if batch is None and sticky:
                # the sticky batch just filled up: the next batch goes to the next partition
                partition = self._sticky_partition(topic, count)
                batch = self._append(topic, partition, key_b, value_b, hdrs, timestamp_ms)
            if batch is None:
                batch = self._new_batch(topic, partition)
                batch.builder.append(key_b, value_b, hdrs, timestamp_ms)  # type: ignore[union-attr]
            fut = _RecordFuture(batch.condition)
            batch.futures.append(fut)
            batch.size_bytes += size
            self._buffered_bytes += size
            if sticky:
                self._sticky[topic] = (partition, batch)
        return fut

    def send_many(
        self,
        topic: str,
        values: Iterable[bytes | str | None],
        *,
        key: bytes | str | None = None,
        headers: Mapping[str, bytes | str | None] | Iterable[tuple[str, bytes | str | None]]
        | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> Future[list[RecordMetadata]]:
        """Queue many records for ONE partition (``partition``, else the key's, else the
        sticky choice) in one call: the fast path for bulk writes, without a future and a
        lock round per record. The future resolves to the ``(partition, offset)`` of each
        record, in order, once all are acknowledged; it fails with the first error if any
        batch failed (records in other batches may still have been written)."""
        if self._closing:
            raise ProducerClosedError("send_many() after close(): the producer is closed")
        key_b = _to_bytes(key, "key")
        hdrs = _to_headers(headers)
        hsize = sum(len(k) + len(v or b"") for k, v in hdrs)
        base = len(key_b or b"") + _RECORD_OVERHEAD_BYTES + hsize
        records: list[tuple[bytes | None, bytes | None, tuple[Any, ...], int | None]] = []
        sizes: list[int] = []
        for v in values:
            vb = v if v is None or type(v) is bytes else _to_bytes(v, "value")
            records.append((key_b, vb, hdrs, timestamp_ms))
            sizes.append(base + len(vb or b""))
        group = _Group(len(records))
        if not records:
            group.future.set_result([])
            return group.future
        try:
            chosen, count = self._choose_partition(topic, key_b, partition)
        except RaftkaError as e:
            return _failed_future(e)
        total = sum(sizes)
        with self._cond:
            err = self._wait_for_room(total)
            if err is not None:
                return _failed_future(err)
            sticky = chosen is None
            part = self._sticky_partition(topic, count) if sticky else chosen
            assert part is not None
            done = 0
            n = len(records)
            while done < n:
                queue = self._queues.get((topic, part))
                batch = queue.batches[-1] if queue is not None and queue.batches else None
                if batch is None or batch.closed:
                    batch = self._new_batch(topic, part)
                assert batch.builder is not None
                start = len(batch.futures)
                added = batch.builder.extend(records[done:] if done else records)
                if added == 0:  # the open batch is full
                    batch.closed = True
                    continue
                batch.futures.extend([None] * added)
                batch.groups.append((group, done, start, added))
                group.pending += 1
                part_size = sum(sizes[done:done + added])
                batch.size_bytes += part_size
                self._buffered_bytes += part_size
                done += added
                if done < n:
                    batch.closed = True  # full: the rest goes to the next batch
            self._cond.notify_all()
            if sticky:
                self._sticky[topic] = (part, batch)
        return group.future

    def flush(self, timeout: float | None = None) -> None:
        """Send everything queued now and wait until each of those records is
        acknowledged or failed. Raises RaftkaTimeoutError if ``timeout`` (seconds) ends
        first. Record failures are reported by their futures, not here."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            pending = [b for q in self._queues.values() for b in q.batches if not b.done]
            self._flushing += 1
            self._cond.notify_all()
            try:
                for b in pending:
                    while not b.done:
                        if self._crashed is not None and not self._sender.is_alive():
                            return
                        remaining = None if deadline is None else deadline - time.monotonic()
                        if remaining is not None and remaining <= 0:
                            left = sum(len(x.futures) for x in pending if not x.done)
                            raise RaftkaTimeoutError(
                                f"flush: {left} records still unacknowledged after {timeout:g}s"
                            )
                        self._cond.wait(remaining if remaining is not None else 1.0)
            finally:
                self._flushing -= 1

    def close(self, timeout: float | None = None) -> None:
        """Flush (up to ``timeout`` seconds), then stop: records still queued fail with
        ProducerClosedError. Idempotent."""
        with self._cond:
            if self._closing and not self._sender.is_alive():
                return
            self._closing = True
            self._cond.notify_all()
        try:
            self.flush(timeout)
        except RaftkaTimeoutError:
            pass
        finally:
            with self._cond:
                self._aborting = True
                self._cond.notify_all()
            self._sender.join(timeout=5.0)
            self._cluster.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def partitions_for(self, topic: str) -> list[int]:
        """The topic's partition numbers (blocks up to ``max_block_ms`` for metadata)."""
        return list(range(self._partition_count(topic)))

    def statistics(self) -> dict[str, int]:
        """Counters since creation plus what is buffered now."""
        with self._cond:
            stats = dict(self._stats)
            stats["buffered_bytes"] = self._buffered_bytes
            stats["buffered_records"] = sum(len(b.futures) for q in self._queues.values()
                                            for b in q.batches)
            stats["in_flight_requests"] = sum(q.in_flight for q in self._queues.values())
        return stats

    # ------------------------------------------------------------------ send helpers

    def _partition_count(self, topic: str) -> int:
        t = self._cluster.topic(topic)
        if t is None:
            failed_at = self._unknown_topics.get(topic)
            if failed_at is not None and time.monotonic() - failed_at < _UNKNOWN_TOPIC_CACHE_S:
                raise UnknownTopicError(f"topic {topic!r} does not exist")
            try:
                t = self._cluster.wait_for_topic(topic, self._max_block_s)
            except UnknownTopicError:
                self._unknown_topics[topic] = time.monotonic()
                raise
            self._unknown_topics.pop(topic, None)
        if not t.partitions:
            raise UnknownTopicError(f"topic {topic!r} has no partitions in the metadata")
        return t.partition_count

    def _choose_partition(self, topic: str, key: bytes | None,
                          partition: int | None) -> tuple[int | None, int]:
        """(partition or None for sticky, partition count); may block for metadata."""
        count = self._partition_count(topic)
        if partition is not None:
            if not 0 <= partition < count:
                raise UnknownPartitionError(
                    f"topic {topic!r} has partitions 0..{count - 1}, not {partition}")
            return partition, count
        if key is not None:
            return default_partition(key, count), count
        return None, count

    def _wait_for_room(self, size: int) -> RaftkaError | None:
        """Under _cond: wait (up to max_block_ms) until ``size`` more bytes fit in
        buffer_memory (an empty buffer takes anything). The error to report, if any."""
        if self._closing:
            raise ProducerClosedError("the producer is closed")
        if not self._buffered_bytes or self._buffered_bytes + size <= self._buffer_memory:
            return None
        deadline = time.monotonic() + self._max_block_s
        while self._buffered_bytes and self._buffered_bytes + size > self._buffer_memory:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return RaftkaTimeoutError(
                    f"producer buffer full ({self._buffered_bytes} of {self._buffer_memory} "
                    f"bytes) for {self._max_block_s:g}s: the cluster is not keeping up or "
                    "is unreachable")
            self._cond.wait(remaining)
            if self._closing:
                raise ProducerClosedError("the producer was closed while send() waited")
        return None

    def _new_batch(self, topic: str, partition: int) -> _Batch:
        """Under _cond: open a new batch at the tail of the partition's queue."""
        batch = _Batch(topic, partition,
                       BatchBuilder(compression=self._compression, max_bytes=self._batch_size),
                       time.monotonic())
        queue = self._queues.get((topic, partition))
        if queue is None:
            queue = self._queues[(topic, partition)] = _PartitionQueue()
        queue.batches.append(batch)
        self._cond.notify_all()  # the sender must learn the new linger deadline
        return batch

    def _append(self, topic: str, partition: int, key: bytes | None, value: bytes | None,
                headers: tuple[tuple[str, bytes | None], ...],
                timestamp_ms: int | None) -> _Batch | None:
        """Under _cond: append to the partition's open batch; None if there is none or it
        is full (then it is closed)."""
        queue = self._queues.get((topic, partition))
        batch = queue.batches[-1] if queue is not None and queue.batches else None
        if batch is None or batch.closed:
            return None
        assert batch.builder is not None
        if batch.builder.append(key, value, headers, timestamp_ms):
            return batch
        batch.closed = True
        self._cond.notify_all()  # a full batch is ready at once
        return None

    def _sticky_partition(self, topic: str, count: int) -> int:
        """Keyless records stay on one partition until the batch they fill is closed
        (full or taken by the sender), then move to the next partition. Under _cond."""
        current = self._sticky.get(topic)
        if current is None:
            return random.randrange(count)
        partition, batch = current
        if batch is not None and batch.closed:
            partition += 1
        return partition % count

    # ------------------------------------------------------------------ sender thread

    def _run(self) -> None:
        try:
            while True:
                abandoned: list[_Batch] | None = None
                with self._cond:
                    while True:
                        if self._aborting:
                            abandoned = self._take_everything()
                            break
                        now = time.monotonic()
                        completions, self._completions = self._completions, []
                        ready, expired, wake_at = self._collect(now)
                        if completions or ready or expired:
                            break
                        if self._closing and not self._queues:
                            return
                        self._cond.wait(None if wake_at is None else max(wake_at - now, 0.0005))
                if abandoned is not None:
                    err = ProducerClosedError("the producer was closed before delivery")
                    for b in abandoned:
                        self._resolve_failure(b, err)
                    return
                for batch, address, grpc_future in completions:
                    self._complete(batch, address, grpc_future)
                for batch in expired:
                    self._resolve_failure(batch, self._timeout_error(batch))
                for batch in ready:
                    self._dispatch(batch)
        except BaseException as e:  # a bug: fail loudly through every future
            with self._cond:
                self._crashed = e
                abandoned = self._take_everything()
                self._cond.notify_all()
            for b in abandoned:
                self._resolve_failure(b, ProducerClosedError(f"producer sender failed: {e!r}"))
            raise

    def _take_everything(self) -> list[_Batch]:
        batches = [b for q in self._queues.values() for b in q.batches if not b.done]
        self._queues.clear()
        return batches

    def _collect(self, now: float) -> tuple[list[_Batch], list[_Batch], float | None]:
        """Under _cond: the head batches to send now, the ones whose delivery timeout
        passed (removed from their queues), and when to look again."""
        ready: list[_Batch] = []
        expired: list[_Batch] = []
        wake_at: float | None = None
        urgent = self._flushing > 0 or self._closing
        for key in list(self._queues):
            q = self._queues[key]
            if q.in_flight:
                continue
            while q.batches and now >= q.batches[0].created + self._delivery_timeout_s:
                expired.append(q.batches.popleft())
            if not q.batches:
                del self._queues[key]
                continue
            head = q.batches[0]
            if now < q.retry_at:
                at = q.retry_at
            elif head.closed or head.attempts or urgent or now >= head.created + self._linger_s:
                head.closed = True
                q.in_flight = True
                ready.append(head)
                continue
            else:
                at = head.created + self._linger_s
            at = min(at, head.created + self._delivery_timeout_s)
            wake_at = at if wake_at is None else min(wake_at, at)
        return ready, expired, wake_at

    def _timeout_error(self, batch: _Batch) -> RaftkaError:
        last = f"; last error: {batch.last_error}" if batch.last_error else ""
        err = RaftkaTimeoutError(
            f"{len(batch.futures)} record(s) to {batch.topic}/{batch.partition} not "
            f"acknowledged within delivery_timeout_ms={self._delivery_timeout_s * 1000:g} "
            f"after {batch.attempts} attempt(s){last}"
        )
        err.__cause__ = batch.last_error
        return err

    def _dispatch(self, batch: _Batch) -> None:
        """Send one head batch to its partition leader (sender thread, no lock held)."""
        topic, partition = batch.topic, batch.partition
        remaining_s = batch.created + self._delivery_timeout_s - time.monotonic()
        address = self._cluster.leader_address(topic, partition)
        if address is None:
            try:
                self._cluster.refresh_metadata(min(max(remaining_s, 0.1), 5.0),
                                               min_age_s=self._retry_backoff_s)
            except RaftkaError as e:
                batch.last_error = e
            address = self._cluster.leader_address(topic, partition)
            if address is None:
                if batch.last_error is None or not batch.last_error.retriable:
                    batch.last_error = RaftkaError(
                        f"no leader known for {topic}/{partition} (election in progress?)",
                        retriable=True)
                if self._cluster.topic(topic) is None and self._cluster.metadata.fetched_at:
                    self._finish_failed(batch, UnknownTopicError(
                        f"topic {topic!r} no longer exists"))
                    return
                self._schedule_retry(batch, immediate=False)
                return
        if batch.payload is None:
            assert batch.builder is not None
            try:
                batch.payload = batch.builder.build()
            except ValueError as e:  # a header field out of range, e.g. a wild timestamp
                self._finish_failed(batch, RaftkaError(f"cannot build the batch: {e}"))
                return
            batch.builder = None  # the records now live in the payload only
        broker_timeout_ms = int(max(1, min(self._request_timeout_ms, remaining_s * 1000)))
        request = broker_pb2.ProduceRequest(
            topic=topic, partition=partition, acks=self._acks,  # type: ignore[arg-type]
            timeout_ms=broker_timeout_ms, record_batches=batch.payload,
        )
        batch.attempts += 1
        with self._cond:
            self._stats["requests"] += 1
            if batch.attempts > 1:
                self._stats["retries"] += 1
        try:
            stub = self._cluster.broker_stub(address)
            grpc_future = stub.Produce.future(request,
                                              timeout=broker_timeout_ms / 1000 + _RPC_MARGIN_S)
        except RaftkaError as e:  # the cluster was closed under us
            self._finish_failed(batch, e)
            return
        grpc_future.add_done_callback(
            lambda f, b=batch, a=address: self._on_done(b, a, f)
        )

    def _on_done(self, batch: _Batch, address: str, grpc_future: grpc.Future) -> None:
        # gRPC's callback thread: hand over to the sender, do nothing else here.
        with self._cond:
            self._completions.append((batch, address, grpc_future))
            self._cond.notify_all()

    def _complete(self, batch: _Batch, address: str, grpc_future: grpc.Future) -> None:
        if batch.done:
            return
        topic, partition = batch.topic, batch.partition
        try:
            response = grpc_future.result()
        except grpc.RpcError as e:
            err = error_from_rpc(e, f"Produce {topic}/{partition} at {address}")
        except Exception as e:  # noqa: BLE001 - e.g. cancelled when the channel closed
            err = RaftkaError(f"Produce {topic}/{partition} at {address}: {e!r}",
                              retriable=True)
            err.invalid_metadata = True
        else:
            self._cluster.note_success(address)
            self._finish_ok(batch, response.base_offset)
            return
        batch.last_error = err
        self._cluster.note_failure(address, err)
        if not err.retriable:
            self._finish_failed(batch, err)
            return
        named = False
        if isinstance(err, NotLeaderError):
            named = self._cluster.note_not_leader(topic, partition, err)
        elif err.invalid_metadata:
            self._cluster.forget_leader(topic, partition)
            if isinstance(err, (UnknownTopicError, UnknownPartitionError)):
                if not self._still_exists(topic, partition):
                    self._finish_failed(batch, err)
                    return
        if err.invalid_metadata and not named:
            self._refresh()
        # Go at once when we learned of another leader; back off when we would only ask
        # the same node again. A few immediate hops at most: stale nodes can point at
        # each other.
        leader = self._cluster.leader_address(topic, partition)
        immediate = leader is not None and leader != address and batch.redirects < 3
        batch.redirects = batch.redirects + 1 if immediate else 0
        self._schedule_retry(batch, immediate)

    def _still_exists(self, topic: str, partition: int) -> bool:
        if not self._refresh():
            return True  # cannot tell: keep retrying until the delivery timeout
        t = self._cluster.topic(topic)
        return t is not None and t.partition(partition) is not None

    def _refresh(self) -> bool:
        """Refresh metadata now unless done within retry_backoff_ms (sender thread).
        False when no broker answered."""
        try:
            self._cluster.refresh_metadata(min(self._request_timeout_ms / 1000, 2.0),
                                           min_age_s=self._retry_backoff_s)
        except RaftkaError:
            return False
        return True

    def _schedule_retry(self, batch: _Batch, immediate: bool) -> None:
        if batch.backoff is None:
            batch.backoff = Backoff(self._retry_backoff_s, self._retry_backoff_max_s)
        delay = 0.0 if immediate else batch.backoff.next()
        now = time.monotonic()
        if now + delay >= batch.created + self._delivery_timeout_s:
            self._finish_failed(batch, self._timeout_error(batch))
            return
        with self._cond:
            q = self._queues.get((batch.topic, batch.partition))
            if q is not None:
                q.in_flight = False
                q.retry_at = now + delay
            self._cond.notify_all()

    def _finish_ok(self, batch: _Batch, base_offset: int) -> None:
        with self._cond:
            self._release(batch)
            self._stats["records_sent"] += len(batch.futures)
            self._stats["batches_sent"] += 1
        partition = batch.partition
        if base_offset >= 0:
            for i, f in enumerate(batch.futures):
                if f is not None:
                    f.set_result((partition, base_offset + i))
        else:  # acks=0: no offsets yet
            for f in batch.futures:
                if f is not None:
                    f.set_result((partition, -1))
        for group, group_start, batch_start, count in batch.groups:
            group.part_ok(group_start, partition,
                          base_offset + batch_start if base_offset >= 0 else -1, count)

    def _finish_failed(self, batch: _Batch, err: BaseException) -> None:
        with self._cond:
            self._release(batch)
        self._resolve_failure(batch, err)

    def _release(self, batch: _Batch) -> None:
        """Under _cond: take a finished batch off its queue and free its buffer room."""
        q = self._queues.get((batch.topic, batch.partition))
        if q is not None:
            if q.batches and q.batches[0] is batch:
                q.batches.popleft()
            q.in_flight = False
            q.retry_at = 0.0
            if not q.batches:
                del self._queues[(batch.topic, batch.partition)]
        self._mark_done(batch)

    def _mark_done(self, batch: _Batch) -> None:
        if not batch.done:
            batch.done = True
            batch.closed = True
            self._buffered_bytes -= batch.size_bytes
            self._cond.notify_all()

    def _resolve_failure(self, batch: _Batch, err: BaseException) -> None:
        with self._cond:
            self._mark_done(batch)
            self._stats["records_failed"] += len(batch.futures)
        for f in batch.futures:
            if f is not None and not f.done():
                f.set_exception(err)
        for group, _start, _bstart, _count in batch.groups:
            group.part_failed(err)
