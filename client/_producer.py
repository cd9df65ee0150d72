"""``Producer``: batches records per partition and writes them, pipelined, to leaders.

Shape (the aiokafka split: an accumulator plus I/O that sends what is ready)::

    send() ─► accumulator: per (topic, partition) a FIFO of batches (BatchBuilder)
                 │ a batch is *ready* when full, when linger_ms has passed since its first
                 │ record, on flush()/close(), or when it is a retry whose backoff ended
                 ▼
              sent by the thread that finds it ready (rule 9): the caller of send() with
              linger_ms=0, the thread that delivered an answer, else the sender thread
                 │
                 ├─► a lone small batch: a unary Produce call (rule 10)
                 └─► else one ProduceStream per broker: requests tagged with a correlation
                     id, up to max_in_flight batches per partition
              answers: successes complete their batch on the thread that delivers them;
              errors go to the sender thread (retries, metadata refresh, timeouts)

**Why a bidirectional stream and not many unary calls.** Several unary calls on one HTTP/2
connection are independent RPCs: the server runs each in its own handler task, so two
batches sent in order may reach the partition in the other order. With idempotence that
is safe (the second gets OUT_OF_ORDER_SEQUENCE) but costs a retry; without it, it
reorders records. ``Broker.ProduceStream`` reads a stream's requests strictly in order
and queues each on its partition before reading the next, so pipelined batches reach the
Raft log in send order; answers come back tagged as each write completes. It is also
cheaper per message than a unary call. Sequence numbers remain the safety net: order
across streams (after a leader change) is never assumed. The one exception, rule 10, sends
a unary call only when nothing else of the partition is in flight, and nothing else until
it is answered: there is then no second request to reorder against.

Rules:

1. At most ``max_in_flight`` batches of a partition are in flight (default 5 with
   idempotence, the number of batches the broker remembers per producer; 1 without). The
   window counts from the oldest unfinished batch and includes batches acknowledged after
   it, so a retry of the oldest is always among the broker's last 5 and recognised.
2. Batches of a partition are sent in queue order; a batch is never sent before the ones
   ahead of it have been sent (again, when they are retried).
3. Retriable errors (NOT_LEADER, NO_QUORUM, LEADER_NOT_AVAILABLE, broker unavailable, a
   stream without answer for ``request_timeout_ms``) send the batch again with
   exponential backoff (at once to a newly named leader), refreshing metadata, until
   ``delivery_timeout_ms`` (120 s, counted from the batch's first record) runs out; then
   its records fail with :class:`RaftkaTimeoutError` whose ``__cause__`` is the last
   error. Non-retriable errors fail the batch at once.
4. Idempotence (``enable_idempotence``, default on with acks=all): the producer gets an id
   and epoch from ``InitProducerId`` before its first batch. A batch is stamped with its
   partition's epoch and next sequence when first sent, and every retry sends the same
   bytes: a retry of a batch that was written is answered with the original offsets, so
   nothing is written twice, also after a leader change.
5. OUT_OF_ORDER_SEQUENCE (or UNKNOWN_PRODUCER_ID) while an earlier batch of the partition
   is unfinished: an earlier batch is being retried; this one is sent again right after
   it (rule 2), never before.
6. The same error for the *oldest* unfinished batch means the gap before it is permanent:
   a batch before it failed for good or expired without being written (the leader only
   answers so once it has applied every earlier term's entries, so nothing it lacks can
   still commit). The partition then waits until no request of it is in flight, starts a
   new epoch for this partition (the broker accepts a higher epoch at sequence 0) and
   re-stamps its unfinished batches from sequence 0. All of them were rejected under the
   old epoch, so none is written twice, and the new epoch fences any old-epoch straggler.
   PRODUCER_FENCED for the current epoch (another instance took over) fails the batch.
7. Without idempotence a retry after an ambiguous failure (deadline, dropped connection,
   NO_QUORUM) may write the batch twice, and with ``max_in_flight`` > 1 a retry may land
   after a later batch. Each record's future reports the offsets of the write that was
   acknowledged.
8. The offset of a record is the ``base_offset`` the broker returned for its batch plus the
   record's index in the batch (-1 with acks=0, where the broker assigns none yet).
9. Any thread may send a partition's ready batches, one at a time: a thread that selects
   some (marking them in flight, under the lock) holds the partition (``dispatching``)
   until it has stamped and handed over all of them, then looks again before letting go;
   no other thread selects the partition's batches meanwhile. So batches are stamped
   (rule 4) and written in queue order (rule 2) whoever sends them, and nothing waits for
   a thread that is busy elsewhere. With linger_ms=0 ``send()`` sends its record itself
   when the window (rule 1) has room; a successful answer completes its batch where it
   arrives and sends what the window now lets go. Whatever may block stays on the sender
   thread: getting a producer id, a batch whose leader is unknown (metadata refresh),
   errors and retries, linger and backoff deadlines, the timeouts of rule 3. A batch a
   non-sender thread could not send goes to the sender together with every batch
   selected behind it (rule 2).
10. Low-rate path: a batch that is alone (nothing of its partition in flight, nothing
   queued behind it) and holds at most ``UNARY_MAX_BYTES`` of records goes as a unary
   ``Produce`` call. gRPC writes it from the sending thread and runs the answer's callback
   on its channel thread, two thread hand-offs fewer each way than the stream (its
   request-iterator thread, our reader thread): at low rates the hand-offs, not the
   broker, were most of the latency. Nothing else of the partition goes while the call is
   out (separate calls may reach the log in either order), so records arriving meanwhile
   gather into the next batch; once batches queue up behind each other, the partition
   pipelines them on its stream again. A unary call's deadline is the stream's silence
   limit of rule 3.

Bulk path: ``send_many(topic, values)`` appends many records to one partition under one
lock round (``BatchBuilder.extend``) with one future for all of them; per-record ``send``
costs a few microseconds of Python each, which caps it well below the broker's rate.

Partitioning: an explicit ``partition``; else Kafka's ``murmur2(key) & 0x7fffffff %
partitions`` for a key; else *sticky* round-robin: keyless records fill one partition's
batch, and the next batch goes to the next partition.

Bounds: ``buffer_memory`` bytes of records wait in the accumulator at most (``send``
blocks up to ``max_block_ms`` for room, then fails); ``send`` also blocks up to
``max_block_ms`` for the topic's metadata the first time.

Futures are resolved on a producer or gRPC thread (the sender, a stream's reader, gRPC's
channel thread) or, when the answer is already there, inside the ``send()`` that sent it:
done-callbacks must be quick and must not call ``flush()`` or ``close()`` or wait for
another record's future (they would wait for the thread that runs them).
"""

from __future__ import annotations

import queue
import random
import struct
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
from crc32c import crc32c as _crc32c

from raftka.client._cluster import Cluster
from raftka.client._retry import Backoff
from raftka.v1.errors import (
    ERROR_METADATA_KEY,
    BrokerNotAvailableError,
    NotLeaderError,
    OutOfOrderSequenceError,
    ProducerClosedError,
    ProducerFencedError,
    RaftkaError,
    RaftkaTimeoutError,
    RequestTimedOutError,
    UnknownPartitionError,
    UnknownProducerIdError,
    UnknownTopicError,
    error_from_rpc,
)
from raftka.client._partitioner import default_partition
from raftka.v1 import broker_pb2, broker_pb2_grpc
from raftka.v1.recordbatch import BatchBuilder

__all__ = ["Producer", "RecordMetadata", "parse_acks"]

MAX_IN_FLIGHT_IDEMPOTENT = 5  # the broker keeps the last 5 batches per producer per partition
MAX_IN_FLIGHT_LIMIT = 64
_SEQUENCE_MOD = 1 << 31
_EPOCH_MAX = 2**15 - 1
_PRODUCER_FIELDS = struct.Struct(">qhi")  # producerId, producerEpoch, baseSequence at byte 43
_CRC = struct.Struct(">I")  # at byte 17, over bytes 21..end

_ACKS: dict[object, int] = {
    "all": broker_pb2.ACKS_ALL, "-1": broker_pb2.ACKS_ALL, -1: broker_pb2.ACKS_ALL,
    "1": broker_pb2.ACKS_LEADER, 1: broker_pb2.ACKS_LEADER, "leader": broker_pb2.ACKS_LEADER,
    "0": broker_pb2.ACKS_NONE, 0: broker_pb2.ACKS_NONE, "none": broker_pb2.ACKS_NONE,
}
_RECORD_OVERHEAD_BYTES = 24  # varints and attributes per record, for buffer accounting
_RPC_MARGIN_S = 1.0  # the gRPC deadline exceeds the broker's ack timeout by this much
_UNKNOWN_TOPIC_CACHE_S = 1.0  # after a topic lookup failed, fail sends to it fast this long
_STREAM_CLOSE = object()
UNARY_MAX_BYTES = 64 * 1024  # records of a lone batch sent as a unary call (rule 10)

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


class _StreamError:
    """An ErrorInfo from a stream answer, shaped like the grpc.RpcError that
    ``error_from_rpc`` reads (the same table of classes applies)."""

    def __init__(self, info: Any) -> None:
        self._info = info

    def code(self) -> None:
        return None

    def details(self) -> str:
        return self._info.message

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return ((ERROR_METADATA_KEY, self._info.SerializeToString()),)


def error_from_info(info: Any, what: str) -> RaftkaError:
    return error_from_rpc(_StreamError(info), what)


def _restamp(batch: bytes, producer_id: int, epoch: int, sequence: int) -> bytes:
    """``batch`` (one RecordBatch v2) with producerId/producerEpoch/baseSequence replaced
    and its CRC-32C recomputed (the CRC covers those fields). Costs one CRC pass, no
    record work."""
    out = bytearray(batch)
    _PRODUCER_FIELDS.pack_into(out, 43, producer_id, epoch, sequence)
    _CRC.pack_into(out, 17, _crc32c(memoryview(out)[21:]))
    return bytes(out)


class _ProduceStream:
    """One ``Broker.ProduceStream`` to one broker, shared by every partition it leads.

    The broker handles a stream's requests in the order they were sent, so batches of a
    partition pipelined on it reach the log in order (see the module docstring). The
    thread holding the partition calls ``send`` (rule 9); gRPC consumes the request queue
    in its own thread; a reader thread matches answers to callbacks by correlation id.
    When the stream ends or is abandoned, every unanswered request gets a retriable
    error."""

    def __init__(self, stub: broker_pb2_grpc.BrokerStub, address: str) -> None:
        self.address = address
        self.broken = False
        self._lock = threading.Lock()
        self._callbacks: dict[int, Any] = {}
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._call = stub.ProduceStream(iter(self._requests.get, _STREAM_CLOSE))
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name=f"raftka-producer-stream-{address}")
        self._reader.start()

    def has(self, correlation_id: int) -> bool:
        with self._lock:
            return correlation_id in self._callbacks

    def send(self, correlation_id: int, request: broker_pb2.ProduceRequest, callback: Any) -> None:
        with self._lock:
            if not self.broken:
                self._callbacks[correlation_id] = callback
                self._requests.put(broker_pb2.ProduceStreamRequest(
                    correlation_id=correlation_id, request=request))
                return
        err = BrokerNotAvailableError(f"ProduceStream to {self.address} has ended")
        callback(None, err)

    def abandon(self, error: RaftkaError) -> None:
        self._call.cancel()
        self._fail_all(error)

    def _read(self) -> None:
        error: RaftkaError
        try:
            for answer in self._call:
                with self._lock:
                    callback = self._callbacks.pop(answer.correlation_id, None)
                if callback is None:
                    continue
                if answer.HasField("error"):
                    callback(None, error_from_info(
                        answer.error, f"Produce at {self.address}"))
                else:
                    callback(answer.response, None)
            error = BrokerNotAvailableError(f"ProduceStream to {self.address} ended")
        except grpc.RpcError as e:
            error = error_from_rpc(e, f"ProduceStream to {self.address}")
            if not error.retriable:  # e.g. CANCELLED: the answer may still come; retry
                error = BrokerNotAvailableError(str(error))
        except Exception as e:  # noqa: BLE001
            error = BrokerNotAvailableError(f"ProduceStream to {self.address}: {e!r}")
        self._fail_all(error)

    def _fail_all(self, error: RaftkaError) -> None:
        with self._lock:
            self.broken = True
            callbacks, self._callbacks = self._callbacks, {}
        self._requests.put(_STREAM_CLOSE)
        for callback in callbacks.values():
            callback(None, error)


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
    it is done. Its parts may complete on different threads (rule 9)."""

    __slots__ = ("future", "results", "pending", "failed", "_lock")

    def __init__(self, count: int) -> None:
        self.future: Future[list[RecordMetadata]] = Future()
        self.future.set_running_or_notify_cancel()
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
        if last:
            self.future.set_result(self.results)

    def part_failed(self, err: BaseException) -> None:
        with self._lock:
            self.pending -= 1
            first, self.failed = not self.failed, True
        if first:
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
    payload: bytes | None = None  # built once, resent unchanged on retries (re-stamped
    # only by a sequence reset, see rule 6)
    last_error: RaftkaError | None = None
    backoff: Backoff | None = None
    record_count: int = 0
    # idempotence: the stamp in the payload's header; sequence -1 = not stamped yet
    epoch: int = -1
    sequence: int = -1
    attempt: int = 0  # id of the attempt in flight (0: none); a response for another is stale
    unary: bool = False  # the attempt in flight is a unary Produce call (rule 10)
    sent_at: float = 0.0  # time.monotonic() of the attempt in flight
    retry_at: float = 0.0  # not to be sent again before this time
    acked: bool = False


@dataclass(eq=False, slots=True)
class _PartitionQueue:
    # unfinished batches in send order, plus finished ones not yet at the head (kept so
    # that the window below counts them); the last one may still be open
    batches: deque[_Batch] = field(default_factory=deque)
    in_flight: int = 0  # batches with an attempt in flight; <= max_in_flight
    reset_pending: bool = False  # rule 6: re-stamp once nothing is in flight
    # a thread is sending this partition's selected batches (rule 9): no other thread
    # selects any until it is done
    dispatching: bool = False
    unary: bool = False  # a unary Produce of it is in flight: nothing else goes (rule 10)


@dataclass(eq=False, slots=True)
class _Sequences:
    """Per-partition idempotence state; survives the partition's queue."""

    epoch: int
    next_sequence: int = 0


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
        delivery_timeout_ms: int = 120_000,
        retry_backoff_ms: int = 50,
        retry_backoff_max_ms: int = 250,
        max_block_ms: int = 10000,
        buffer_memory: int = 64 * 1024 * 1024,
        enable_idempotence: bool | None = None,
        max_in_flight: int | None = None,
    ) -> None:
        self._acks = parse_acks(acks)
        BatchBuilder(compression=compression, max_bytes=batch_size)  # validates both
        if linger_ms < 0 or retry_backoff_ms <= 0 or delivery_timeout_ms <= 0:
            raise ValueError("linger_ms must be >= 0; retry_backoff_ms and "
                             "delivery_timeout_ms must be positive")
        if buffer_memory < batch_size:
            raise ValueError("buffer_memory must be at least batch_size")
        if enable_idempotence is None:  # Kafka's default: on, unless acks says otherwise
            enable_idempotence = self._acks == broker_pb2.ACKS_ALL
        elif enable_idempotence and self._acks != broker_pb2.ACKS_ALL:
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
        self._idempotent = enable_idempotence
        self._max_in_flight = max_in_flight
        self._compression = compression
        self._batch_size = batch_size
        self._linger_s = linger_ms / 1000
        self._request_timeout_ms = request_timeout_ms
        # the broker answers every request within request_timeout_ms (NO_QUORUM at worst);
        # a stream silent for half as long again is treated as dead (rule 3)
        request_timeout_s = request_timeout_ms / 1000
        self._stuck_after_s = request_timeout_s + max(_RPC_MARGIN_S, request_timeout_s / 2)
        self._delivery_timeout_s = delivery_timeout_ms / 1000
        self._retry_backoff_s = retry_backoff_ms / 1000
        self._retry_backoff_max_s = max(retry_backoff_max_ms, retry_backoff_ms) / 1000
        self._max_block_s = max_block_ms / 1000
        self._buffer_memory = buffer_memory
        self._unary_max_bytes = UNARY_MAX_BYTES

        self._cluster = Cluster(bootstrap, request_timeout_ms=request_timeout_ms)
        lock = threading.RLock()
        self._cond = threading.Condition(lock)  # callers waiting: flush(), buffer room
        self._sender_cond = threading.Condition(lock)  # the sender thread waiting for work
        # when the sleeping sender wakes by itself (inf: not before it is notified; 0: it
        # is awake and looks at every queue before it sleeps again); guarded by the lock
        self._sender_wake_at = 0.0
        # guarded by _cond:
        self._queues: dict[tuple[str, int], _PartitionQueue] = {}
        self._sticky: dict[str, tuple[int, _Batch | None]] = {}
        self._completions: list[tuple[_Batch, int, str, Any, RaftkaError | None]] = []
        self._sequences: dict[tuple[str, int], _Sequences] = {}
        self._producer_id = -1
        self._producer_epoch = -1
        self._streams: dict[str, _ProduceStream] = {}  # guarded by _streams_lock
        self._streams_lock = threading.Lock()  # taken after _cond, never before
        self._next_attempt = 1
        self._buffered_bytes = 0  # <= buffer_memory, except one oversized record alone
        self._flushing = 0
        self._closing = False
        self._aborting = False
        self._crashed: BaseException | None = None
        self._unknown_topics: dict[str, float] = {}
        self._stats = {"records_sent": 0, "batches_sent": 0, "requests": 0, "retries": 0,
                       "records_failed": 0, "sequence_resets": 0}
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
            claimed = self._claim(topic, partition) if not self._linger_s else None
        if claimed:
            self._send_claimed(*claimed)
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
            if sticky:
                self._sticky[topic] = (part, batch)
            if self._linger_s:
                self._sender_cond.notify()
                claimed = None
            else:
                claimed = self._claim(topic, part)
        if claimed:
            self._send_claimed(*claimed)
        return group.future

    def flush(self, timeout: float | None = None) -> None:
        """Send everything queued now and wait until each of those records is
        acknowledged or failed. Raises RaftkaTimeoutError if ``timeout`` (seconds) ends
        first. Record failures are reported by their futures, not here."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            pending = [b for q in self._queues.values() for b in q.batches if not b.done]
            self._flushing += 1
            self._sender_cond.notify()
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
            self._sender_cond.notify()
        try:
            self.flush(timeout)
        except RaftkaTimeoutError:
            pass
        finally:
            with self._cond:
                self._aborting = True
                self._cond.notify_all()
                self._sender_cond.notify()
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
                                            for b in q.batches if not b.done)
            stats["in_flight_requests"] = sum(q.in_flight for q in self._queues.values())
            stats["producer_id"] = self._producer_id
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
        if self._linger_s:
            self._sender_cond.notify()  # the sender must learn the new linger deadline
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
        if self._linger_s:
            self._sender_cond.notify()  # a full batch is ready at once
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
        held: list[_PartitionQueue] = []  # queues whose batches this thread selected
        try:
            while True:
                abandoned: list[_Batch] | None = None
                finished = False
                with self._cond:
                    for q in held:
                        q.dispatching = False
                    held.clear()
                    while True:
                        self._sender_wake_at = 0.0
                        if self._aborting:
                            abandoned = self._take_everything()
                            break
                        now = time.monotonic()
                        completions, self._completions = self._completions, []
                        ready, expired, stuck, wake_at = self._collect(now, held)
                        if completions or ready or expired or stuck:
                            break
                        if self._closing and not self._queues:
                            finished = True
                            break
                        if wake_at is None:
                            self._sender_wake_at = float("inf")
                            self._sender_cond.wait()
                        else:
                            self._sender_wake_at = wake_at
                            self._sender_cond.wait(max(wake_at - now, 0.0005))
                if abandoned is not None:
                    err = ProducerClosedError("the producer was closed before delivery")
                    for b in abandoned:
                        self._resolve_failure(b, err)
                if abandoned is not None or finished:
                    self._close_streams()
                    return
                for batch, attempt, address, response, error in completions:
                    self._complete(batch, attempt, address, response, error)
                for address in stuck:
                    self._abandon_stream(address, "no answer within request_timeout_ms")
                for batch in expired:
                    self._resolve_failure(batch, self._timeout_error(batch))
                if ready and self._idempotent and self._producer_id < 0:
                    if not self._init_producer_id(ready):
                        continue
                held_back: set[tuple[str, int]] = set()
                for batch in ready:
                    key = (batch.topic, batch.partition)
                    if key in held_back:  # rule 2: not before the batch ahead of it
                        self._back_off(batch, immediate=True)
                    elif not self._dispatch(batch):
                        held_back.add(key)
        except BaseException as e:  # a bug: fail loudly through every future
            with self._cond:
                self._crashed = e
                abandoned = self._take_everything()
                self._cond.notify_all()
            for b in abandoned:
                self._resolve_failure(b, ProducerClosedError(f"producer sender failed: {e!r}"))
            self._close_streams()
            raise

    def _take_everything(self) -> list[_Batch]:
        batches = [b for q in self._queues.values() for b in q.batches if not b.done]
        self._queues.clear()
        return batches

    def _collect(self, now: float, held: list[_PartitionQueue]
                 ) -> tuple[list[_Batch], list[_Batch], set[str], float | None]:
        """Under _cond (sender thread): the batches to send now (in each partition's
        order; their queues are appended to ``held``, see rule 9), the ones whose delivery
        timeout passed, the streams whose oldest answer is overdue, and when to look
        again."""
        ready: list[_Batch] = []
        expired: list[_Batch] = []
        stuck: set[str] = set()
        wake_at: float | None = None
        urgent = self._flushing > 0 or self._closing
        request_timeout_s = self._stuck_after_s

        def wake(at: float) -> None:
            nonlocal wake_at
            wake_at = at if wake_at is None else min(wake_at, at)

        for key in list(self._queues):
            q = self._queues[key]
            batches = q.batches
            while batches and (batches[0].done or (
                    not batches[0].attempt
                    and now >= batches[0].created + self._delivery_timeout_s)):
                head = batches.popleft()
                if not head.done:
                    expired.append(head)  # failed by the caller, outside the lock
            if not batches:
                if not q.dispatching:
                    del self._queues[key]
                continue
            for b in batches:
                if b.attempt:  # in flight: is its stream still answering?
                    if now >= b.sent_at + request_timeout_s:
                        stuck.add(self._stream_address_of(b))
                    else:
                        wake(b.sent_at + request_timeout_s)
            if not q.dispatching:  # else the thread sending them looks again when done
                if q.reset_pending and not q.in_flight:
                    self._reset_sequences(key, q)
                selected = self._select(q, now, urgent, wake)
                if selected:
                    q.dispatching = True
                    held.append(q)
                    ready.extend(selected)
            if batches and not batches[0].attempt:
                wake(batches[0].created + self._delivery_timeout_s)
        stuck.discard("")
        return ready, expired, stuck, wake_at

    def _select(self, q: _PartitionQueue, now: float, urgent: bool,
                wake: Any) -> list[_Batch]:
        """Under _cond: rules 1 and 2 for one partition. Marks the batches to send now
        as in flight and returns them in queue order; calls ``wake(t)`` with the time a
        batch it held back becomes ready."""
        ready: list[_Batch] = []
        if q.reset_pending or q.unary:  # rule 6: wait for every old-stamp answer first;
            return ready  # rule 10: nothing overtakes a unary call
        max_in_flight = self._max_in_flight
        for position, b in enumerate(q.batches):
            if b.attempt or b.done:
                continue
            if position >= max_in_flight or q.in_flight >= max_in_flight:
                break  # rule 1: the window counts from the oldest unfinished
            if now < b.retry_at:
                wake(b.retry_at)
                break  # rule 2: nothing overtakes it
            if not (b.closed or b.attempts or urgent or now >= b.created + self._linger_s):
                wake(b.created + self._linger_s)
                break
            b.closed = True
            b.attempt = self._next_attempt
            self._next_attempt += 1
            b.sent_at = now
            if (not q.in_flight and b.size_bytes <= self._unary_max_bytes
                    and position == len(q.batches) - 1):
                b.unary = q.unary = True  # rule 10
                q.in_flight = 1
                ready.append(b)
                break
            q.in_flight += 1
            ready.append(b)
        return ready

    def _claim(self, topic: str, partition: int
               ) -> tuple[_PartitionQueue, list[_Batch]] | None:
        """Under _cond, on a caller or stream thread: select the partition's batches that
        can go now (rule 9) so that this thread sends them itself, without waking the
        sender. None when there are none, or when another thread is sending the
        partition's batches (it looks again when done). Wakes the sender when it must act
        sooner than it planned (a stuck check, a linger deadline) or must do what only it
        does (get a producer id)."""
        q = self._queues.get((topic, partition))
        if (q is None or q.dispatching or q.unary or q.in_flight >= self._max_in_flight
                or self._aborting):
            return None  # nothing can go before an answer comes (whose thread looks again)
        if self._idempotent and self._producer_id < 0:
            self._sender_cond.notify()  # only the sender gets a producer id
            return None
        batches = q.batches
        while batches and batches[0].done:  # so that the window of rule 1 moves on
            batches.popleft()
        if q.reset_pending and not q.in_flight:
            self._reset_sequences((topic, partition), q)
        now = time.monotonic()
        wake_at = float("inf")

        def wake(at: float) -> None:
            nonlocal wake_at
            wake_at = min(wake_at, at)

        ready = self._select(q, now, self._flushing > 0 or self._closing, wake)
        if ready:
            wake(now + self._stuck_after_s)
            q.dispatching = True
        if wake_at < self._sender_wake_at:
            self._sender_cond.notify()
        return (q, ready) if ready else None

    def _send_claimed(self, q: _PartitionQueue, ready: list[_Batch]) -> None:
        """Send batches selected by ``_claim`` (no lock held), then look again for more of
        the partition before letting other threads select its batches."""
        topic, partition = ready[0].topic, ready[0].partition
        while True:
            for i, batch in enumerate(ready):
                if not self._dispatch(batch, may_block=False):
                    for behind in ready[i + 1:]:  # rule 2: retried after it, by the sender
                        self._back_off(behind, immediate=True)
                    with self._cond:
                        q.dispatching = False
                        self._sender_cond.notify()
                    return
            with self._cond:
                q.dispatching = False
                claimed = self._claim(topic, partition)
            if claimed is None:
                return
            q, ready = claimed

    def _stream_address_of(self, batch: _Batch) -> str:
        with self._streams_lock:
            streams = list(self._streams.items())
        for address, stream in streams:
            if stream.has(batch.attempt):
                return address
        return ""

    def _timeout_error(self, batch: _Batch) -> RaftkaError:
        last = f"; last error: {batch.last_error}" if batch.last_error else ""
        err = RaftkaTimeoutError(
            f"{len(batch.futures)} record(s) to {batch.topic}/{batch.partition} not "
            f"acknowledged within delivery_timeout_ms={self._delivery_timeout_s * 1000:g} "
            f"after {batch.attempts} attempt(s){last}"
        )
        err.__cause__ = batch.last_error
        return err

    # ------------------------------------------------------------------ idempotence

    def _init_producer_id(self, ready: list[_Batch]) -> bool:
        """Get a producer id before the first idempotent batch (sender thread). On
        failure the batches go back to their queues and are retried after a backoff."""
        deadline = time.monotonic() + self._request_timeout_ms / 1000
        last: RaftkaError | None = None
        addresses = ([self._cluster.controller_address()] + self._cluster.candidate_addresses())
        tried: set[str] = set()
        while addresses and time.monotonic() < deadline:
            address = addresses.pop(0)
            if not address or address in tried:
                continue
            tried.add(address)
            try:
                r = self._cluster.call_broker(address, "InitProducerId",
                                              broker_pb2.InitProducerIdRequest(),
                                              max(deadline - time.monotonic(), 0.1))
            except NotLeaderError as e:  # only the controller leader reserves id blocks
                last = e
                if e.leader_address:
                    addresses.insert(0, e.leader_address)
                    tried.discard(e.leader_address)
                continue
            except RaftkaError as e:
                last = e
                if not e.retriable:
                    break
                continue
            with self._cond:
                self._producer_id, self._producer_epoch = r.producer_id, r.producer_epoch
            return True
        err = last or RaftkaError("no broker answered InitProducerId", retriable=True)
        for b in ready:
            b.last_error = err
            if not err.retriable:
                self._finish_failed(b, err)
            else:
                self._back_off(b, immediate=False)
        return False

    def _stamp(self, batch: _Batch) -> None:
        """First send of an idempotent batch: give it the partition's next sequence."""
        key = (batch.topic, batch.partition)
        with self._cond:
            seq = self._sequences.get(key)
            if seq is None:
                seq = self._sequences[key] = _Sequences(self._producer_epoch)
            batch.epoch, batch.sequence = seq.epoch, seq.next_sequence
            seq.next_sequence = (seq.next_sequence + batch.record_count) % _SEQUENCE_MOD
        batch.payload = _restamp(batch.payload, self._producer_id, batch.epoch,  # type: ignore[arg-type]
                                 batch.sequence)

    def _reset_sequences(self, key: tuple[str, int], q: _PartitionQueue) -> None:
        """Under _cond, nothing of the partition in flight: rule 6. A new epoch for this
        partition, sequences from 0, every unfinished batch re-stamped at its next send."""
        q.reset_pending = False
        seq = self._sequences.get(key)
        if seq is None:
            return
        if seq.epoch >= _EPOCH_MAX:
            err = ProducerFencedError(f"producer epoch exhausted for {key[0]}/{key[1]}")
            for b in q.batches:
                if not b.done:
                    b.last_error = err
                    b.retry_at = b.created + self._delivery_timeout_s  # then fails
            return
        seq.epoch += 1
        seq.next_sequence = 0
        self._stats["sequence_resets"] += 1
        for b in q.batches:
            if not b.done:
                b.sequence = -1
                b.retry_at = 0.0

    # ------------------------------------------------------------------ sending

    def _dispatch(self, batch: _Batch, may_block: bool = True) -> bool:
        """Send one batch to its partition leader (no lock held; the thread that selected
        it, see rule 9). With ``may_block`` False (not the sender thread) a batch whose
        leader is unknown goes back to the sender, which refreshes the metadata. False
        when the batch was not sent and waits for a retry: then the batches selected
        behind it must not go either (rule 2)."""
        topic, partition = batch.topic, batch.partition
        remaining_s = batch.created + self._delivery_timeout_s - time.monotonic()
        address = self._cluster.leader_address(topic, partition)
        if address is None and not may_block:
            self._back_off(batch, immediate=True)
            return False
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
                    return True
                self._back_off(batch, immediate=False)
                return False
        if batch.payload is None:
            assert batch.builder is not None
            try:
                batch.payload = batch.builder.build()
            except ValueError as e:  # a header field out of range, e.g. a wild timestamp
                self._finish_failed(batch, RaftkaError(f"cannot build the batch: {e}"))
                return True
            batch.record_count = len(batch.builder)
            batch.builder = None  # the records now live in the payload only
        if self._idempotent and batch.sequence < 0:
            self._stamp(batch)
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
        attempt = batch.attempt
        if batch.unary:
            try:
                call = self._cluster.broker_stub(address).Produce.future(
                    request, timeout=self._stuck_after_s)
            except (RaftkaError, ValueError) as e:  # the cluster was closed under us
                self._finish_failed(batch, e)
                return True
            call.add_done_callback(
                lambda c, b=batch, a=address, n=attempt: self._on_unary_done(b, n, a, c))
            return True
        try:
            stream = self._stream(address)
        except RaftkaError as e:  # the cluster was closed under us
            self._finish_failed(batch, e)
            return True
        stream.send(attempt, request,
                    lambda response, error, b=batch, a=address, n=attempt:
                    self._on_done(b, n, a, response, error))
        return True

    def _stream(self, address: str) -> _ProduceStream:
        with self._streams_lock:
            stream = self._streams.get(address)
            if stream is None or stream.broken:
                stream = self._streams[address] = _ProduceStream(
                    self._cluster.broker_stub(address), address)
            return stream

    def _abandon_stream(self, address: str, why: str) -> None:
        with self._streams_lock:
            stream = self._streams.pop(address, None)
        if stream is not None:
            stream.abandon(RequestTimedOutError(f"ProduceStream to {address}: {why}"))

    def _close_streams(self) -> None:
        with self._streams_lock:
            streams = list(self._streams.values())
            self._streams.clear()
        for stream in streams:
            stream.abandon(ProducerClosedError("the producer is closed"))

    def _on_done(self, batch: _Batch, attempt: int, address: str, response: Any,
                 error: RaftkaError | None) -> None:
        """An answer, on the stream's reader thread (or the sending thread when the
        stream had already ended). A success is completed right here (futures resolved,
        and the partition's next batches sent, rule 9); an error goes to the sender,
        whose handling may block (metadata refresh)."""
        if error is None:
            self._complete(batch, attempt, address, response, None)
            with self._cond:
                claimed = self._claim(batch.topic, batch.partition)
            if claimed:
                self._send_claimed(*claimed)
            return
        with self._cond:
            self._completions.append((batch, attempt, address, response, error))
            self._sender_cond.notify()

    def _on_unary_done(self, batch: _Batch, attempt: int, address: str, call: Any) -> None:
        """A unary Produce ended (on gRPC's channel thread, or the sending thread when it
        ended at once)."""
        try:
            response = call.result()
        except grpc.RpcError as e:
            error = error_from_rpc(e, f"Produce to {address}")
            if not error.retriable and e.code() == grpc.StatusCode.CANCELLED:
                error = BrokerNotAvailableError(str(error))  # e.g. a channel closed under it
            self._on_done(batch, attempt, address, None, error)
        except Exception as e:  # noqa: BLE001 - e.g. CancelledError
            self._on_done(batch, attempt, address, None,
                          BrokerNotAvailableError(f"Produce to {address}: {e!r}"))
        else:
            self._on_done(batch, attempt, address, response, None)

    def _complete(self, batch: _Batch, attempt: int, address: str, response: Any,
                  err: RaftkaError | None) -> None:
        if batch.attempt != attempt:
            return  # cannot happen: one attempt per batch at a time
        with self._cond:
            q = self._end_attempt(batch)
            stale = q is not None and q.reset_pending
        if batch.done:
            return
        topic, partition = batch.topic, batch.partition
        if err is None:
            self._cluster.note_success(address)
            self._finish_ok(batch, response.base_offset)
            return
        batch.last_error = err
        self._cluster.note_failure(address, err)
        if self._idempotent and isinstance(err, (OutOfOrderSequenceError,
                                                 UnknownProducerIdError, ProducerFencedError)):
            self._sequence_error(batch, err, stale)
            return
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
        self._back_off(batch, immediate)

    def _sequence_error(self, batch: _Batch, err: RaftkaError, stale: bool) -> None:
        """Rules 4-6 for OUT_OF_ORDER_SEQUENCE, UNKNOWN_PRODUCER_ID, PRODUCER_FENCED."""
        with self._cond:
            q = self._queues.get((batch.topic, batch.partition))
            seq = self._sequences.get((batch.topic, batch.partition))
            head = q is not None and next((b for b in q.batches if not b.done), None) is batch
            current = seq is not None and batch.epoch == seq.epoch and not stale
            if isinstance(err, ProducerFencedError) and current:
                fatal = True
            else:
                fatal = False
                if current and head and q is not None:
                    q.reset_pending = True  # rule 6: the gap before this batch is permanent
                batch.retry_at = 0.0  # rule 5: resent right after the batches before it
            self._sender_cond.notify()
        if fatal:
            self._finish_failed(batch, err)

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

    def _back_off(self, batch: _Batch, immediate: bool) -> None:
        """A retriable failure: send the batch again after a backoff (at once when a new
        leader is known), and nothing after it before it (rule 3)."""
        if batch.backoff is None:
            batch.backoff = Backoff(self._retry_backoff_s, self._retry_backoff_max_s)
        delay = 0.0 if immediate else batch.backoff.next()
        now = time.monotonic()
        if now + delay >= batch.created + self._delivery_timeout_s:
            self._finish_failed(batch, self._timeout_error(batch))
            return
        with self._cond:
            self._end_attempt(batch)  # when the dispatch never left
            batch.retry_at = now + delay
            self._sender_cond.notify()

    def _finish_ok(self, batch: _Batch, base_offset: int) -> None:
        with self._cond:
            if not self._mark_done(batch):
                return  # failed meanwhile by another thread (close)
            batch.acked = True
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
            self._end_attempt(batch)
        self._resolve_failure(batch, err)

    def _end_attempt(self, batch: _Batch) -> _PartitionQueue | None:
        """Under _cond: the batch's attempt in flight (if any) is over; its queue."""
        q = self._queues.get((batch.topic, batch.partition))
        if batch.attempt:
            batch.attempt = 0
            if q is not None:
                q.in_flight -= 1
                if batch.unary:
                    q.unary = False
            batch.unary = False
        return q

    def _mark_done(self, batch: _Batch) -> bool:
        """Under _cond: free the batch's buffer room. It leaves its queue once it reaches
        the head (``_collect``), so the window of rule 1 still counts it until then.
        False if it was done already: then its futures are someone else's to resolve."""
        if batch.done:
            return False
        batch.done = True
        batch.closed = True
        self._buffered_bytes -= batch.size_bytes
        self._cond.notify_all()
        return True

    def _resolve_failure(self, batch: _Batch, err: BaseException) -> None:
        with self._cond:
            if not self._mark_done(batch):
                return
            self._stats["records_failed"] += len(batch.futures)
        for f in batch.futures:
            if f is not None and not f.done():
                f.set_exception(err)
        for group, _start, _bstart, _count in batch.groups:
            group.part_failed(err)
