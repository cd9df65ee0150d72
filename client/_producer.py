"""``Producer``: batches records per partition and writes them, pipelined, to leaders.

The public facade over four parts, each a module with its own rules (the aiokafka split:
a pure accumulator plus an I/O sender)::

    send() / send_many()
       │  partition choice (metadata), per-record futures
       ▼
    _accumulator.py   batches per partition, linger/batch_size, buffer_memory bound
       │              (sans-I/O)
       ▼
    _sender.py        which batches go when: in-flight window per partition, queue
       │              order, the linger_ms=0 fast path (the thread that finds a batch
       │              ready sends it), a lone small batch as a unary call; answers,
       │              retries (by _retry.py, the client's one retry policy), timeouts
       ├─► _idempotence.py    producer id/epoch, per-partition sequences, what a
       │                      sequence error means (sans-I/O)
       ▼
    _produce_stream.py one bidirectional ProduceStream per broker (answers matched by
                       correlation id), unary Produce calls

This module holds the API and what only it does: validating arguments, choosing
partitions, creating futures, waiting for buffer room, flush and close.

Partitioning: an explicit ``partition``; else Kafka's ``murmur2(key) & 0x7fffffff %
partitions`` for a key; else *sticky* round-robin: keyless records fill one partition's
batch, and the next batch goes to the next partition.

Bulk path: ``send_many(topic, values)`` appends many records to one partition under one
lock round (``BatchBuilder.extend``) with one future for all of them; per-record ``send``
costs a few microseconds of Python each, which caps it well below the broker's rate.

Bounds: ``buffer_memory`` bytes of records wait in the accumulator at most (``send``
blocks up to ``max_block_ms`` for room, then fails); ``send`` also blocks up to
``max_block_ms`` for the topic's metadata the first time.

Futures are resolved on a producer or gRPC thread (the sender, a stream's reader, gRPC's
channel thread) or, when the answer is already there, inside the ``send()`` that sent it:
done-callbacks must be quick and must not call ``flush()`` or ``close()`` or wait for
another record's future (they would wait for the thread that runs them).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from concurrent.futures._base import CANCELLED as _FUTURE_CANCELLED
from concurrent.futures._base import CANCELLED_AND_NOTIFIED as _FUTURE_CANCELLED_AND_NOTIFIED
from concurrent.futures._base import FINISHED as _FUTURE_FINISHED
from concurrent.futures._base import RUNNING as _FUTURE_RUNNING
from types import TracebackType
from typing import Any

from raftka.client._security import ClientSecurity
from raftka.client._accumulator import RECORD_OVERHEAD_BYTES, Accumulator
from raftka.client._delivery import Delay, DeliverAt, delivery_time_ms
from raftka.client._cluster import Cluster, ClusterState
from raftka.client._ops import Ops, run_sync
from raftka.client._idempotence import MAX_IN_FLIGHT_IDEMPOTENT, IdempotenceState
from raftka.client._partitioner import default_partition
from raftka.client._retry import RetryPolicy
from raftka.client._sender import Sender
from raftka.client._transactions import (
    ConsumerGroupMetadata,
    TransactionManager,
    TxnCoordinatorClient,
    adds_finished,
    transactional_settings,
)
from raftka.v1 import broker_pb2
from raftka.v1.errors import (
    InvalidTxnStateError,
    ProducerClosedError,
    RaftkaError,
    RaftkaTimeoutError,
    UnknownPartitionError,
    UnknownTopicError,
)
from raftka.v1.recordbatch import BatchBuilder

__all__ = ["Producer", "RecordMetadata", "parse_acks", "pick_partition", "producer_settings",
           "record_size"]

MAX_IN_FLIGHT_LIMIT = 64
_ACKS: dict[object, int] = {
    "all": broker_pb2.ACKS_ALL, "-1": broker_pb2.ACKS_ALL, -1: broker_pb2.ACKS_ALL,
    "1": broker_pb2.ACKS_LEADER, 1: broker_pb2.ACKS_LEADER, "leader": broker_pb2.ACKS_LEADER,
    "0": broker_pb2.ACKS_NONE, 0: broker_pb2.ACKS_NONE, "none": broker_pb2.ACKS_NONE,
}
_FUTURE_DONE = (_FUTURE_FINISHED, _FUTURE_CANCELLED, _FUTURE_CANCELLED_AND_NOTIFIED)
_UNKNOWN_TOPIC_CACHE_S = 1.0  # after a topic lookup failed, fail sends to it fast this long
_REDIRECTS_MAX = 3  # immediate retries to a newly learned leader in a row (_retry.py rule 2)

RecordMetadata = tuple[int, int]  # (partition, offset)


def _failed_future(err: BaseException) -> Future[Any]:
    fut: Future[Any] = Future()
    fut.set_running_or_notify_cancel()
    fut.set_exception(err)
    return fut


def producer_settings(*, acks: str | int, linger_ms: int, batch_size: int, compression: str,
                      delivery_timeout_ms: int, retry_backoff_ms: int,
                      retry_backoff_max_ms: int, buffer_memory: int,
                      enable_idempotence: bool | None, max_in_flight: int | None
                      ) -> tuple[int, bool, int, RetryPolicy]:
    """Validate a producer's settings (both clients'): (acks value, idempotence,
    max_in_flight, retry policy). Raises ValueError naming the bad one."""
    acks_value = parse_acks(acks)
    BatchBuilder(compression=compression, max_bytes=batch_size)  # validates both
    if linger_ms < 0 or retry_backoff_ms <= 0 or delivery_timeout_ms <= 0:
        raise ValueError("linger_ms must be >= 0; retry_backoff_ms and "
                         "delivery_timeout_ms must be positive")
    if buffer_memory < batch_size:
        raise ValueError("buffer_memory must be at least batch_size")
    if enable_idempotence is None:  # Kafka's default: on, unless acks says otherwise
        enable_idempotence = acks_value == broker_pb2.ACKS_ALL
    elif enable_idempotence and acks_value != broker_pb2.ACKS_ALL:
        raise ValueError("enable_idempotence=True needs acks='all' (a sequence error "
                         "is only seen on an acknowledgement)")
    if max_in_flight is None:
        max_in_flight = MAX_IN_FLIGHT_IDEMPOTENT if enable_idempotence else 1
    if not 1 <= max_in_flight <= (MAX_IN_FLIGHT_IDEMPOTENT if enable_idempotence
                                  else MAX_IN_FLIGHT_LIMIT):
        raise ValueError(
            f"max_in_flight must be 1..{MAX_IN_FLIGHT_IDEMPOTENT} with idempotence (the "
            f"broker remembers the last {MAX_IN_FLIGHT_IDEMPOTENT} batches of a producer "
            f"per partition), else 1..{MAX_IN_FLIGHT_LIMIT}; got {max_in_flight}")
    retry_backoff_s = retry_backoff_ms / 1000
    retry = RetryPolicy(
        backoff_initial_s=retry_backoff_s,
        backoff_max_s=max(retry_backoff_max_ms, retry_backoff_ms) / 1000,
        redirects_max=_REDIRECTS_MAX, refresh_min_age_s=retry_backoff_s)
    return acks_value, enable_idempotence, max_in_flight, retry


def pick_partition(topic: str, count: int, key: bytes | None,
                   partition: int | None) -> int | None:
    """The partition of a record (both clients): ``partition`` if valid, else the key's,
    else None for the sticky choice of the accumulator."""
    if partition is not None:
        if not 0 <= partition < count:
            raise UnknownPartitionError(
                f"topic {topic!r} has partitions 0..{count - 1}, not {partition}")
        return partition
    if key is not None:
        return default_partition(key, count)
    return None


def partition_count_ops(cluster: ClusterState, topic: str, unknown_topics: dict[str, float],
                        max_block_s: float) -> Ops[int]:
    """The topic's partition count, waiting up to ``max_block_s`` for its metadata; a
    topic found missing fails fast for a while (``unknown_topics``: topic -> when)."""
    t = cluster.topic(topic)
    if t is None:
        failed_at = unknown_topics.get(topic)
        if failed_at is not None and time.monotonic() - failed_at < _UNKNOWN_TOPIC_CACHE_S:
            raise UnknownTopicError(f"topic {topic!r} does not exist")
        try:
            t = yield from cluster.wait_for_topic_ops(topic, max_block_s)
        except UnknownTopicError:
            unknown_topics[topic] = time.monotonic()
            raise
        unknown_topics.pop(topic, None)
    if not t.partitions:
        raise UnknownTopicError(f"topic {topic!r} has no partitions in the metadata")
    return t.partition_count


def record_size(key: bytes | None, value: bytes | None,
                headers: tuple[tuple[str, bytes | None], ...]) -> int:
    """A record's bytes for ``buffer_memory`` (``_accumulator.py`` rule 3)."""
    size = len(key or b"") + len(value or b"") + RECORD_OVERHEAD_BYTES
    if headers:
        size += sum(len(k) + len(v or b"") for k, v in headers)
    return size


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
    tests/client checks result(), add_done_callback() and concurrent.futures.wait()).

    Because the Condition is shared, completing one record of a batch wakes the waiters
    of the others: ``result`` and ``exception`` wait on until their own future is done
    (``Future`` itself takes any wake-up without a result for its timeout)."""

    def __init__(self, condition: threading.Condition) -> None:  # noqa: D107
        self._condition = condition
        self._state = _FUTURE_RUNNING
        self._result = None
        self._exception = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Any] = []

    def result(self, timeout: float | None = None) -> Any:
        if self._state != _FUTURE_FINISHED:
            self._wait_done(timeout)
        return super().result(0)  # raises TimeoutError if still not done

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state != _FUTURE_FINISHED:
            self._wait_done(timeout)
        return super().exception(0)

    def _wait_done(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while self._state not in _FUTURE_DONE:
                if deadline is None:
                    self._condition.wait()
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._condition.wait(remaining)


class _Group:
    """The future of one ``send_many`` call: done when every batch holding a part of
    it is done. Its parts may complete on different threads (_sender.py rule 4)."""

    __slots__ = ("future", "results", "pending", "failed", "_lock")

    def __init__(self, count: int, future: Any = None) -> None:
        if future is None:  # the asyncio producer passes an asyncio future
            future = Future()
            future.set_running_or_notify_cancel()
        self.future = future
        self.results: list[RecordMetadata] = [(-1, -1)] * count
        self.pending = 0  # parts (batches) not yet done
        self.failed = False
        self._lock = threading.Lock()

    def part_ok(self, start: int, partition: int, base_offset: int, count: int) -> None:
        if base_offset >= 0:
            self.results[start:start + count] = [(partition, base_offset + i)
                                                 for i in range(count)]
        else:
            self.results[start:start + count] = [(partition, -1)] * count
        with self._lock:
            self.pending -= 1
            last = not self.pending and not self.failed
        if last and not self.future.done():
            self.future.set_result(self.results)

    def part_failed(self, err: BaseException) -> None:
        with self._lock:
            self.pending -= 1
            first, self.failed = not self.failed, True
        if first and not self.future.done():
            self.future.set_exception(err)


class Producer:
    """Writes records to partition leaders; ``send`` returns a future of
    ``(partition, offset)``. Thread-safe. See the module docstring for the parts and
    their rules."""

    def __init__(
        self,
        bootstrap: str | Iterable[str],
        *,
        acks: str | int = "all",
        linger_ms: int = 5,
        batch_size: int = 256 * 1024,
        compression: str = "lz4",
        request_timeout_ms: int = 5000,
        security: ClientSecurity | None = None,
        delivery_timeout_ms: int = 120_000,
        retry_backoff_ms: int = 50,
        retry_backoff_max_ms: int = 250,
        max_block_ms: int = 10000,
        buffer_memory: int = 64 * 1024 * 1024,
        enable_idempotence: bool | None = None,
        max_in_flight: int | None = None,
        transactional_id: str | None = None,
        transaction_timeout_ms: int = 60_000,
    ) -> None:
        enable_idempotence = transactional_settings(
            transactional_id, enable_idempotence, parse_acks(acks), transaction_timeout_ms)
        settings = producer_settings(
            acks=acks, linger_ms=linger_ms, batch_size=batch_size, compression=compression,
            delivery_timeout_ms=delivery_timeout_ms, retry_backoff_ms=retry_backoff_ms,
            retry_backoff_max_ms=retry_backoff_max_ms, buffer_memory=buffer_memory,
            enable_idempotence=enable_idempotence, max_in_flight=max_in_flight)
        acks_value, enable_idempotence, max_in_flight, retry = settings
        self._linger_s = linger_ms / 1000
        self._max_block_s = max_block_ms / 1000

        self._cluster = Cluster(bootstrap, request_timeout_ms=request_timeout_ms,
                                security=security)
        self._accumulator = Accumulator(compression=compression, batch_size=batch_size,
                                        buffer_memory=buffer_memory)
        self._idempotence = (IdempotenceState(transactional=transactional_id is not None)
                             if enable_idempotence else None)
        self._request_timeout_s = request_timeout_ms / 1000
        self._txn: TransactionManager | None = None
        self._txn_futures: list[Future[Any]] = []  # the open transaction's records
        if transactional_id is not None:
            self._txn = TransactionManager(
                TxnCoordinatorClient(self._cluster, transactional_id), transactional_id,
                transaction_timeout_ms)
        lock = threading.RLock()
        self._sender = Sender(
            self._cluster, self._accumulator, self._idempotence, acks=acks_value,
            max_in_flight=max_in_flight, linger_s=self._linger_s,
            request_timeout_ms=request_timeout_ms,
            delivery_timeout_s=delivery_timeout_ms / 1000, retry=retry,
            lock=lock)
        self._sender.transaction = self._txn
        # the AddPartitionsToTxn thread waits on this (started by init_transactions)
        self._txn_cond = threading.Condition(lock)
        self._txn_thread: threading.Thread | None = None
        self._cond = self._sender.cond  # callers waiting: flush(), buffer room
        self._sender_cond = self._sender.sender_cond  # the sender thread waiting for work
        self._unknown_topics: dict[str, float] = {}
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
        *,
        deliver_at: DeliverAt | None = None,
        delay: Delay | None = None,
    ) -> Future[RecordMetadata]:
        """Queue one record; the future resolves to ``(partition, offset)`` once the
        broker acknowledged it per ``acks``, or fails with a :class:`RaftkaError`.

        Delayed delivery: with ``delay`` (seconds or a ``timedelta``) or ``deliver_at``
        (a ``datetime`` or epoch ms) the record is stored durably when acknowledged but
        no consumer sees it before that time; its offset is then unknown, so the future
        resolves to ``(partition, -1)``. Not in a transaction.

        Blocks (up to ``max_block_ms``) only to learn the topic's partitions the first
        time or to wait for buffer room. Raises ProducerClosedError after ``close()``,
        TypeError/ValueError for bad arguments, InvalidTxnStateError for a transactional
        producer outside a transaction; every other failure goes into the future.
        """
        sender = self._sender
        if sender.closing:
            raise ProducerClosedError("send() after close(): the producer is closed")
        if sender.crashed is not None:
            raise ProducerClosedError(f"the producer's sender failed: {sender.crashed!r}")
        key_b = key if key is None or type(key) is bytes else _to_bytes(key, "key")
        value_b = (value if value is None or type(value) is bytes
                   else _to_bytes(value, "value"))
        hdrs = _to_headers(headers) if headers else ()
        size = record_size(key_b, value_b, hdrs)
        deliver_at_ms = (delivery_time_ms(deliver_at, delay)
                         if deliver_at is not None or delay is not None else 0)
        if deliver_at_ms and self._txn is not None:
            raise ValueError("delayed records cannot be sent in a transaction: send them "
                             "with a producer that has no transactional_id")
        if self._txn is not None:
            self._txn.check_send()  # raises: a send outside a transaction is a bug (Kafka)
        try:
            partition, count = self._choose_partition(topic, key_b, partition)
            if self._txn is not None:
                partition = self._txn_partition(topic, partition, count)
        except RaftkaError as e:
            return self._txn_failed(_failed_future(e), e)
        with self._cond:
            err = self._wait_for_room(size)
            if err is not None:
                return _failed_future(err)
            if self._txn is not None:  # a commit may have begun while this send waited
                self._txn.check_send()
            batch, changed = self._accumulator.append(topic, partition, count, key_b, value_b,
                                                      hdrs, timestamp_ms, size, deliver_at_ms)
            if self._txn is not None:
                self._txn_gate(topic, batch.partition)
            waiter = batch.waiter
            if waiter is None:  # one Condition per batch, borrowed by its records' futures
                waiter = batch.waiter = threading.Condition()
            fut = _RecordFuture(waiter)
            batch.futures.append(fut)
            if self._linger_s:
                if changed:  # a new linger deadline, or a full batch ready at once
                    self._sender_cond.notify()
                claimed = None
            else:  # _sender.py rule 4: this thread sends it when the window has room
                claimed = sender.claim(topic, batch.partition)
        if claimed:
            sender.send_claimed(*claimed)
        if self._txn is not None:
            self._txn_futures.append(fut)
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
        if self._sender.closing:
            raise ProducerClosedError("send_many() after close(): the producer is closed")
        key_b = _to_bytes(key, "key")
        hdrs = _to_headers(headers)
        hsize = sum(len(k) + len(v or b"") for k, v in hdrs)
        base = len(key_b or b"") + RECORD_OVERHEAD_BYTES + hsize
        records: list[tuple[bytes | None, bytes | None, tuple[Any, ...], int | None]] = []
        sizes: list[int] = []
        for v in values:
            vb = v if v is None or type(v) is bytes else _to_bytes(v, "value")
            records.append((key_b, vb, hdrs, timestamp_ms))
            sizes.append(base + len(vb or b""))
        if self._txn is not None:
            self._txn.check_send()
        group = _Group(len(records))
        if not records:
            group.future.set_result([])
            return group.future
        try:
            chosen, count = self._choose_partition(topic, key_b, partition)
            if self._txn is not None:
                chosen = self._txn_partition(topic, chosen, count)
        except RaftkaError as e:
            return self._txn_failed(_failed_future(e), e)
        total = sum(sizes)
        with self._cond:
            err = self._wait_for_room(total)
            if err is not None:
                return _failed_future(err)
            if self._txn is not None:  # a commit may have begun while this send waited
                self._txn.check_send()
            part = self._accumulator.extend(topic, chosen, count, records, sizes, group)
            if self._txn is not None:
                self._txn_gate(topic, part)
            if self._linger_s:
                self._sender_cond.notify()
                claimed = None
            else:
                claimed = self._sender.claim(topic, part)
        if claimed:
            self._sender.send_claimed(*claimed)
        if self._txn is not None:
            self._txn_futures.append(group.future)
        return group.future

    # ------------------------------------------------------------------ transactions

    def init_transactions(self, timeout: float | None = None) -> None:
        """Register the ``transactional_id`` with its coordinator (Kafka's
        initTransactions): a producer id and a new epoch, which fences every older
        producer with this id (their later sends and commits fail with
        ProducerFencedError) and aborts a transaction one of them left open. Call once,
        before the first transaction."""
        txn = self._require_txn("init_transactions()")
        pid, epoch = txn.init(self._max_block_s if timeout is None else timeout)
        with self._cond:
            assert self._idempotence is not None
            self._idempotence.set_producer_id(pid, epoch)
            if self._txn_thread is None:
                self._txn_thread = threading.Thread(target=self._run_adds, daemon=True,
                                                    name="raftka-producer-txn")
                self._txn_thread.start()

    def begin_transaction(self) -> None:
        """Start a transaction: the records sent until commit_transaction() or
        abort_transaction() become visible to read_committed consumers all together, or
        never."""
        self._require_txn("begin_transaction()").begin()
        self._txn_futures = []
        with self._cond:
            self._accumulator.forget_sticky()  # keyless records: a partition per transaction

    def commit_transaction(self, timeout: float | None = None) -> None:
        """Flush the transaction's records, then commit it; returns once the coordinator
        made the decision durable (the markers reach the partitions moments later, as in
        Kafka). Raises the error of a record that failed (the transaction
        must then be aborted), ProducerFencedError if a newer producer took over."""
        txn = self._require_txn("commit_transaction()")
        with self._cond:  # the lock sends append under: none joins after this
            txn.start_end("commit_transaction()")
        timeout_s = self._max_block_s if timeout is None else timeout
        deadline = time.monotonic() + timeout_s
        self.flush(timeout_s)
        txn.records_failed([f.exception() for f in self._txn_futures])
        self._wait_adds_idle(deadline)
        self._next_epoch(txn.end(True, max(deadline - time.monotonic(), 0.001)))
        self._txn_futures = []

    def abort_transaction(self, timeout: float | None = None) -> None:
        """Abort the transaction: none of its records is ever visible to read_committed
        consumers (read_uncommitted ones see them, as in Kafka)."""
        txn = self._require_txn("abort_transaction()")
        with self._cond:
            txn.start_end("abort_transaction()")
        timeout_s = self._max_block_s if timeout is None else timeout
        deadline = time.monotonic() + timeout_s
        self.flush(timeout_s)  # no batch of it may land after the abort marker
        self._wait_adds_idle(deadline)
        self._next_epoch(txn.end(False, max(deadline - time.monotonic(), 0.001)))
        self._txn_futures = []

    def send_offsets_to_transaction(self, offsets: Mapping[tuple[str, int], int],
                                    group_metadata: ConsumerGroupMetadata | str,
                                    timeout: float | None = None) -> None:
        """Commit a consumer group's offsets ({(topic, partition): next offset to read})
        as part of the open transaction (KIP-447, consume-transform-produce exactly once):
        the group sees them if and only if the transaction commits. ``group_metadata`` is
        ``consumer.group_metadata()`` (the coordinator fences a member that lost its
        partitions, as for its own commits) or a group id for a standalone consumer."""
        txn = self._require_txn("send_offsets_to_transaction()")
        group = (ConsumerGroupMetadata(group_metadata) if isinstance(group_metadata, str)
                 else group_metadata)
        if not offsets:
            return
        timeout_s = self._max_block_s if timeout is None else timeout
        if txn.reset_due:
            txn.reset(timeout_s, self._next_epoch)
        txn.send_offsets(dict(offsets), group, timeout_s)

    def _next_epoch(self, producer: tuple[int, int]) -> None:
        """After EndTxn: the next transaction's batches carry its epoch, from sequence 0."""
        with self._cond:
            assert self._idempotence is not None
            self._idempotence.set_producer_id(*producer)

    def _require_txn(self, what: str) -> TransactionManager:
        if self._txn is None:
            raise InvalidTxnStateError(f"{what} needs a transactional producer: create it "
                                       "with transactional_id=...")
        return self._txn

    def _txn_partition(self, topic: str, partition: int | None, count: int) -> int:
        """A transactional send's partition (the sticky choice made now, so that
        :meth:`_txn_gate` knows it)."""
        txn = self._txn
        assert txn is not None
        txn.check_send()
        if txn.reset_due:  # the reopened transaction is ended first (_transactions.py)
            txn.reset(self._max_block_s, self._next_epoch)
        if partition is None:
            with self._cond:
                partition = self._accumulator.sticky_choice(topic, count)
        return partition

    def _txn_gate(self, topic: str, partition: int) -> None:
        """Under the lock, after a transactional record was queued: a partition not yet in
        the transaction holds its batches back until its AddPartitionsToTxn succeeded
        (``_transactions.py``), so no batch reaches a partition the coordinator does not
        know."""
        txn = self._txn
        assert txn is not None
        if txn.queue_partition((topic, partition)):
            self._accumulator.queues[(topic, partition)].txn_gated = True
            self._txn_cond.notify()

    def _run_adds(self) -> None:
        """The AddPartitionsToTxn thread: one call at a time for every partition queued
        meanwhile; then their batches go (or fail with the call's error)."""
        txn, sender = self._txn, self._sender
        assert txn is not None
        while True:
            with self._cond:
                request = txn.take_adds()
                while request is None:
                    if sender.closing or sender.crashed is not None:
                        return
                    self._txn_cond.wait(1.0)
                    request = txn.take_adds()
            error: BaseException | None = None
            try:
                txn.coordinator.call("AddPartitionsToTxn", request, self._max_block_s)
            except RaftkaError as e:
                error = e
            with self._cond:
                failing = adds_finished(txn, self._accumulator.queues, error)
                self._txn_cond.notify_all()
                self._sender_cond.notify()
            for batch in failing:
                sender._resolve_failure(batch, error)

    def _wait_adds_idle(self, deadline: float) -> None:
        """Before EndTxn: every AddPartitionsToTxn of the transaction has ended."""
        txn = self._txn
        assert txn is not None
        with self._cond:
            while not txn.adds_idle():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RaftkaTimeoutError("the transaction's AddPartitionsToTxn did not "
                                             "finish in time")
                self._txn_cond.wait(remaining)

    def _txn_failed(self, future: Future[Any], error: BaseException) -> Future[Any]:
        if self._txn is not None:
            self._txn.failed(error)
        return future

    def flush(self, timeout: float | None = None) -> None:
        """Send everything queued now and wait until each of those records is
        acknowledged or failed and its future says so. Raises RaftkaTimeoutError if
        ``timeout`` (seconds) ends first. Record failures are reported by their futures,
        not here."""
        deadline = None if timeout is None else time.monotonic() + timeout
        sender = self._sender
        with self._cond:
            pending = self._accumulator.unfinished()
            sender.flushing += 1
            self._sender_cond.notify()
            try:
                for b in pending:
                    while not b.resolved:
                        if sender.crashed is not None and not sender.is_alive():
                            return
                        remaining = None if deadline is None else deadline - time.monotonic()
                        if remaining is not None and remaining <= 0:
                            left = sum(len(x.futures) for x in pending if not x.resolved)
                            raise RaftkaTimeoutError(
                                f"flush: {left} records still unacknowledged after {timeout:g}s"
                            )
                        self._cond.wait(remaining if remaining is not None else 1.0)
            finally:
                sender.flushing -= 1

    def close(self, timeout: float | None = None) -> None:
        """Flush (up to ``timeout`` seconds), then stop: records still queued fail with
        ProducerClosedError. Idempotent."""
        sender = self._sender
        with self._cond:
            if sender.closing and not sender.is_alive():
                return
            sender.closing = True
            self._cond.notify_all()
            self._sender_cond.notify()
        try:
            self.flush(timeout)
        except RaftkaTimeoutError:
            pass
        finally:
            with self._cond:
                sender.aborting = True
                self._cond.notify_all()
                self._sender_cond.notify()
                self._txn_cond.notify_all()
            sender.join(timeout=5.0)
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
            stats = dict(self._sender.stats)
            stats["buffered_bytes"] = self._accumulator.buffered_bytes
            stats["buffered_records"] = self._accumulator.buffered_records()
            stats["in_flight_requests"] = self._sender.in_flight()
            stats["producer_id"] = (self._idempotence.producer_id
                                    if self._idempotence is not None else -1)
        return stats

    # ------------------------------------------------------------------ send helpers

    def _partition_count(self, topic: str) -> int:
        t = self._cluster.topic(topic)
        if t is not None and t.partitions:
            return t.partition_count  # the common case, without an operation
        return run_sync(self._cluster, partition_count_ops(
            self._cluster, topic, self._unknown_topics, self._max_block_s))

    def _choose_partition(self, topic: str, key: bytes | None,
                          partition: int | None) -> tuple[int | None, int]:
        """(partition or None for sticky, partition count); may block for metadata."""
        count = self._partition_count(topic)
        return pick_partition(topic, count, key, partition), count

    def _wait_for_room(self, size: int) -> RaftkaError | None:
        """Under _cond: wait (up to max_block_ms) until ``size`` more bytes fit in
        buffer_memory (``_accumulator.py`` rule 3). The error to report, if any."""
        sender, accumulator = self._sender, self._accumulator
        if sender.closing:
            raise ProducerClosedError("the producer is closed")
        if accumulator.fits(size):
            return None
        deadline = time.monotonic() + self._max_block_s
        while not accumulator.fits(size):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return RaftkaTimeoutError(
                    f"producer buffer full ({accumulator.buffered_bytes} of "
                    f"{accumulator.buffer_memory} bytes) for {self._max_block_s:g}s: the "
                    "cluster is not keeping up or is unreachable")
            self._cond.wait(remaining)
            if sender.closing:
                raise ProducerClosedError("the producer was closed while send() waited")
        return None
