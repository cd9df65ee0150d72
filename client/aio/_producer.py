"""``raftka.aio.Producer``: the asyncio twin of :class:`raftka.client.Producer`.

The same parts, driven from one event loop instead of threads::

    await send() / send_many()      argument checks, partition choice and record size:
       │                            the threaded producer's functions (_producer.py)
       ▼
    Accumulator (_accumulator.py)   the same object: batches, linger, buffer_memory
       ▼
    AsyncSender (here)              a subclass of the threaded Sender (_sender.py): the
       │                            window, queue order, unary-or-stream choice, stamping,
       │                            answers, retries, sequence resets and timeouts are
       │                            its code; this class replaces only the I/O seams and
       │                            runs the sender loop as a task
       ├─► IdempotenceState (_idempotence.py), RetryPolicy (_retry.py): the same
       ▼
    AsyncProduceStreams (here)      one grpc.aio ProduceStream per broker (answers by
                                    correlation id, _produce_stream.py's rules), unary
                                    Produce calls as tasks

Everything runs on the loop: the Sender's lock is replaced by a no-op (one thread), its
condition variables by events the loop awaits. A metadata refresh the threaded sender
does inline (an unknown leader before a send, an error with ``invalid_metadata``) is
awaited by the sender task first, so the shared code then finds the metadata fresh.

Transactions (``transactional_id=...``): the threaded producer's TransactionManager
(``_transactions.py``) with its coordinator calls awaited as operations, its
AddPartitionsToTxn calls made by a task instead of a thread; ``begin_transaction()`` is a
plain method, the others coroutines.

Futures are asyncio futures: ``fut = await producer.send(...)`` queues the record (it
waits only for the topic's metadata the first time or for buffer room), ``await fut``
gives ``(partition, offset)``; ``await producer.send_and_wait(...)`` does both.
Cancelling a record's future does not withdraw the record (it may already be on the
wire).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

import grpc

from raftka.client._security import ClientSecurity
from raftka.client._accumulator import Accumulator, Batch
from raftka.client._delivery import Delay, DeliverAt, delivery_time_ms
from raftka.client._idempotence import IdempotenceState
from raftka.client._produce_stream import error_from_info
from raftka.client._producer import (
    RecordMetadata,
    _Group,
    _to_bytes,
    _to_headers,
    parse_acks,
    partition_count_ops,
    pick_partition,
    producer_settings,
    record_size,
)
from raftka.client._sender import Sender
from raftka.client._transactions import (
    ConsumerGroupMetadata,
    TransactionManager,
    TxnCoordinatorClient,
    adds_finished,
    transactional_settings,
)
from raftka.client.aio._cluster import AsyncCluster, run
from raftka.client.aio._waits import wait_event, wait_until
from raftka.v1 import broker_pb2
from raftka.v1.errors import (
    BrokerNotAvailableError,
    InvalidTxnStateError,
    NotLeaderError,
    ProducerClosedError,
    RaftkaError,
    RaftkaTimeoutError,
    RequestTimedOutError,
    error_from_rpc,
)

__all__ = ["Producer"]

_CLOSE = object()


class _RecordFuture(asyncio.Future):  # type: ignore[type-arg]
    """A record's future; a result arriving after the caller cancelled it is dropped."""

    def set_result(self, result: Any) -> None:
        if not self.done():
            super().set_result(result)

    def set_exception(self, exception: Any) -> None:
        if not self.done():
            super().set_exception(exception)


class _NoLock:
    """The Sender's lock on one event loop: every caller is the loop's thread."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _Signal(_NoLock):
    """Stands in for a ``threading.Condition`` of the Sender: ``notify`` sets an event
    that the loop awaits (the sender task, or callers waiting for room or a flush)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def notify(self, n: int = 1) -> None:
        self.event.set()

    def notify_all(self) -> None:
        self.event.set()

    async def wait(self, timeout: float | None) -> None:
        """Until the next notify (or ``timeout``); notifies before the call count."""
        if timeout is not None and timeout <= 0:
            return
        await wait_event(self.event, timeout)
        self.event.clear()


# ---------------------------------------------------------------------- streams


class AsyncProduceStream:
    """One ``Broker.ProduceStream`` on ``grpc.aio`` (``_produce_stream.py`` rules 1-3):
    requests go through a queue the call's request iterator drains in order; a reader
    task matches answers to callbacks by correlation id and fails the open ones when the
    stream ends."""

    def __init__(self, stub: Any, address: str) -> None:
        self.address = address
        self.broken = False
        self._callbacks: dict[int, Any] = {}
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._call = stub.ProduceStream(self._requests())
        self._reader = asyncio.ensure_future(self._read())

    async def _requests(self) -> Any:
        while True:
            item = await self._queue.get()
            if item is _CLOSE:
                return
            yield item

    def has(self, correlation_id: int) -> bool:
        return correlation_id in self._callbacks

    def send(self, correlation_id: int, request: broker_pb2.ProduceRequest,
             callback: Any) -> None:
        if not self.broken:
            self._callbacks[correlation_id] = callback
            self._queue.put_nowait(broker_pb2.ProduceStreamRequest(
                correlation_id=correlation_id, request=request))
            return
        callback(None, BrokerNotAvailableError(f"ProduceStream to {self.address} has ended"))

    def abandon(self, error: RaftkaError) -> None:
        self._call.cancel()
        self._fail_all(error)

    async def _read(self) -> None:
        error: RaftkaError
        try:
            async for answer in self._call:
                callback = self._callbacks.pop(answer.correlation_id, None)
                if callback is None:
                    continue
                if answer.HasField("error"):
                    callback(None, error_from_info(answer.error, f"Produce at {self.address}"))
                else:
                    callback(answer.response, None)
            error = BrokerNotAvailableError(f"ProduceStream to {self.address} ended")
        except grpc.RpcError as e:
            error = error_from_rpc(e, f"ProduceStream to {self.address}")
            if not error.retriable:  # e.g. CANCELLED: the answer may still come; retry
                error = BrokerNotAvailableError(str(error))
        except asyncio.CancelledError:
            error = BrokerNotAvailableError(f"ProduceStream to {self.address} was cancelled")
        except Exception as e:  # noqa: BLE001
            error = BrokerNotAvailableError(f"ProduceStream to {self.address}: {e!r}")
        self._fail_all(error)

    def _fail_all(self, error: RaftkaError) -> None:
        self.broken = True
        callbacks, self._callbacks = self._callbacks, {}
        self._queue.put_nowait(_CLOSE)
        for callback in callbacks.values():
            callback(None, error)


class AsyncProduceStreams:
    """``ProduceStreams`` on ``grpc.aio``: one stream per broker, replaced when broken."""

    def __init__(self, cluster: AsyncCluster) -> None:
        self._cluster = cluster
        self._streams: dict[str, AsyncProduceStream] = {}

    def get(self, address: str) -> AsyncProduceStream:
        stream = self._streams.get(address)
        if stream is None or stream.broken:
            stream = self._streams[address] = AsyncProduceStream(
                self._cluster.stub(address, "broker"), address)
        return stream

    def address_of(self, correlation_id: int) -> str:
        for address, stream in self._streams.items():
            if stream.has(correlation_id):
                return address
        return ""

    def abandon(self, address: str, error: RaftkaError) -> None:
        stream = self._streams.pop(address, None)
        if stream is not None:
            stream.abandon(error)

    def close(self, error: RaftkaError) -> None:
        streams = list(self._streams.values())
        self._streams.clear()
        for stream in streams:
            stream.abandon(error)


# ---------------------------------------------------------------------- sender


class AsyncSender(Sender):
    """The threaded :class:`Sender` with asyncio I/O (see the module docstring)."""

    _cluster: AsyncCluster  # type: ignore[assignment]

    def __init__(self, cluster: AsyncCluster, *args: Any, **kwargs: Any) -> None:
        super().__init__(cluster, *args, lock=threading.RLock(),  # type: ignore[arg-type, misc]
                         **kwargs)
        self.cond = _Signal()  # type: ignore[assignment]
        self.sender_cond = _Signal()  # type: ignore[assignment]
        self._refreshed: bool = True  # what the last awaited refresh said (for _refresh)
        self._send_refresh_error: RaftkaError | None = None
        self._task: asyncio.Task[None] | None = None
        self._unary_tasks: set[asyncio.Future[Any]] = set()

    # ------------------------------------------------------------------ I/O seams

    def _make_streams(self) -> Any:
        return AsyncProduceStreams(self._cluster)

    def _refresh_for_send(self, remaining_s: float) -> RaftkaError | None:
        return self._send_refresh_error  # awaited by _run just before

    def _refresh(self) -> bool:
        return self._refreshed  # awaited by _run before _complete needs it

    def _send_unary(self, address: str, request: Any, callback: Any) -> None:
        call = self._cluster.stub(address, "broker").Produce(
            request, timeout=self.stuck_after_s)
        task = asyncio.ensure_future(call)
        self._unary_tasks.add(task)
        task.add_done_callback(lambda t: self._unary_done(t, address, callback))

    def _unary_done(self, task: asyncio.Future[Any], address: str, callback: Any) -> None:
        self._unary_tasks.discard(task)
        if task.cancelled():
            callback(None, BrokerNotAvailableError(f"Produce to {address} was cancelled"))
            return
        e = task.exception()
        if e is None:
            callback(task.result(), None)
            return
        if isinstance(e, grpc.RpcError):
            error = error_from_rpc(e, f"Produce to {address}")
            if not error.retriable and e.code() == grpc.StatusCode.CANCELLED:
                error = BrokerNotAvailableError(str(error))
        else:
            error = BrokerNotAvailableError(f"Produce to {address}: {e!r}")
        callback(None, error)

    # ------------------------------------------------------------------ the loop

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run_async())

    def is_alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def join_async(self) -> None:
        if self._task is not None:
            await asyncio.wait([self._task])

    def _needs_refresh(self, err: RaftkaError | None) -> bool:
        if err is None or not err.invalid_metadata:
            return False
        return not (isinstance(err, NotLeaderError) and (err.leader_address or err.leader_id))

    async def _refresh_now(self) -> bool:
        return await self._cluster.try_refresh(min(self._request_timeout_ms / 1000, 2.0),
                                               self._retry.refresh_min_age_s)

    async def _run_async(self) -> None:
        """The sender thread's loop (``Sender._run``) as a task: the same steps, with
        the waits and the refreshes awaited."""
        held: list[Any] = []
        signal: _Signal = self.sender_cond  # type: ignore[assignment]
        try:
            while True:
                abandoned: list[Batch] | None = None
                finished = False
                for q in held:
                    q.dispatching = False
                held.clear()
                while True:
                    self._wake_at = 0.0
                    if self.aborting:
                        abandoned = self._accumulator.take_everything()
                        break
                    now = time.monotonic()
                    completions, self._completions = self._completions, []
                    ready, expired, stuck, wake_at = self._collect(now, held)
                    if completions or ready or expired or stuck:
                        break
                    if self.closing and not self._queues:
                        finished = True
                        break
                    self._wake_at = float("inf") if wake_at is None else wake_at
                    await signal.wait(None if wake_at is None
                                      else max(wake_at - now, 0.0005))
                if abandoned is not None:
                    err = ProducerClosedError("the producer was closed before delivery")
                    for b in abandoned:
                        self._resolve_failure(b, err)
                if abandoned is not None or finished:
                    self._streams.close(ProducerClosedError("the producer is closed"))
                    return
                for batch, attempt, address, response, error in completions:
                    if self._needs_refresh(error):
                        self._refreshed = await self._refresh_now()
                    self._complete(batch, attempt, address, response, error)
                for address in stuck:
                    self._streams.abandon(address, RequestTimedOutError(
                        f"ProduceStream to {address}: no answer within request_timeout_ms"))
                for batch in expired:
                    self._resolve_failure(batch, self._timeout_error(batch))
                if (ready and self._idempotence is not None
                        and not self._idempotence.has_producer_id):
                    if not await run(self._cluster, self.init_producer_id_ops(ready)):
                        continue
                held_back: set[tuple[str, int]] = set()
                for batch in ready:
                    key = (batch.topic, batch.partition)
                    if key in held_back:  # rule 2: not before the batch ahead of it
                        self._back_off(batch, immediate=True)
                        continue
                    if self._cluster.leader_address(*key) is None:
                        remaining_s = (batch.created + self._delivery_timeout_s
                                       - time.monotonic())
                        try:
                            await self._cluster.refresh_metadata(
                                min(max(remaining_s, 0.1), 5.0),
                                min_age_s=self._retry.refresh_min_age_s)
                            self._send_refresh_error = None
                        except RaftkaError as e:
                            self._send_refresh_error = e
                    if not self._dispatch(batch):
                        held_back.add(key)
        except BaseException as e:  # a bug, or the loop closing: fail every future
            self.crashed = e
            abandoned = self._accumulator.take_everything()
            self.cond.notify_all()
            for b in abandoned:
                self._resolve_failure(b, ProducerClosedError(f"producer sender failed: {e!r}"))
            self._streams.close(ProducerClosedError("the producer is closed"))
            if not isinstance(e, asyncio.CancelledError):
                raise


# ---------------------------------------------------------------------- producer


class Producer:
    """Writes records to partition leaders from an event loop (see the module
    docstring). The settings and their meaning are :class:`raftka.client.Producer`'s.

    Create it inside a running loop (``async with raftka.aio.Producer(...) as p``); use
    it from that loop only.
    """

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
        acks_value, idempotence, max_in_flight, retry = producer_settings(
            acks=acks, linger_ms=linger_ms, batch_size=batch_size, compression=compression,
            delivery_timeout_ms=delivery_timeout_ms, retry_backoff_ms=retry_backoff_ms,
            retry_backoff_max_ms=retry_backoff_max_ms, buffer_memory=buffer_memory,
            enable_idempotence=enable_idempotence, max_in_flight=max_in_flight)
        self._loop = asyncio.get_running_loop()  # raises outside a loop: say so early
        self._linger_s = linger_ms / 1000
        self._max_block_s = max_block_ms / 1000
        self._cluster = AsyncCluster(bootstrap, request_timeout_ms=request_timeout_ms,
                                  security=security)
        self._accumulator = Accumulator(compression=compression, batch_size=batch_size,
                                        buffer_memory=buffer_memory)
        self._idempotence = (IdempotenceState(transactional=transactional_id is not None)
                             if idempotence else None)
        # transactions: the threaded producer's TransactionManager, its operations awaited
        self._txn: TransactionManager | None = None
        self._txn_futures: list[asyncio.Future[Any]] = []  # the open transaction's records
        self._adds_task: asyncio.Task[None] | None = None
        self._adds_signal = _Signal()  # the AddPartitionsToTxn task's wake-up
        self._adds_ended = _Signal()  # a call of it ended (_end waits for none out)
        self._reset_lock = asyncio.Lock()  # one reset of a reopened transaction at a time
        if transactional_id is not None:
            self._txn = TransactionManager(
                TxnCoordinatorClient(self._cluster, transactional_id), transactional_id,
                transaction_timeout_ms)
        self._sender = AsyncSender(
            self._cluster, self._accumulator, self._idempotence, acks=acks_value,
            max_in_flight=max_in_flight, linger_s=self._linger_s,
            request_timeout_ms=request_timeout_ms,
            delivery_timeout_s=delivery_timeout_ms / 1000, retry=retry)
        self._sender.transaction = self._txn
        self._progress: _Signal = self._sender.cond  # type: ignore[assignment]
        self._wake_sender: _Signal = self._sender.sender_cond  # type: ignore[assignment]
        self._unknown_topics: dict[str, float] = {}
        self._sender.start()

    # ------------------------------------------------------------------ public API

    async def send(
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
    ) -> asyncio.Future[RecordMetadata]:
        """Queue one record; returns a future of ``(partition, offset)``, resolved once
        the broker acknowledged it per ``acks`` (or failed with a :class:`RaftkaError`).
        Waits (up to ``max_block_ms``) only for the topic's metadata the first time or
        for buffer room. Raises ProducerClosedError after ``close()``. ``delay`` /
        ``deliver_at``: delayed delivery, as the threaded ``Producer.send`` (the offset
        is then -1)."""
        self._check_open()
        deliver_at_ms = (delivery_time_ms(deliver_at, delay)
                         if deliver_at is not None or delay is not None else 0)
        if self._txn is not None:
            if deliver_at_ms:
                raise ValueError("delayed records cannot be sent in a transaction: send "
                                 "them with a producer that has no transactional_id")
            self._txn.check_send()  # raises: a send outside a transaction is a bug (Kafka)
        key_b = key if key is None or type(key) is bytes else _to_bytes(key, "key")
        value_b = (value if value is None or type(value) is bytes
                   else _to_bytes(value, "value"))
        hdrs = _to_headers(headers) if headers else ()
        size = record_size(key_b, value_b, hdrs)
        fut: _RecordFuture = _RecordFuture()
        try:
            await self._txn_reset()
            chosen, count = await self._choose_partition(topic, key_b, partition)
            await self._wait_for_room(size)
        except RaftkaError as e:
            fut.set_exception(e)
            return self._txn_failed(fut, e)
        if self._txn is not None:  # a commit may have begun while this send waited
            self._txn.check_send()
        batch, changed = self._accumulator.append(topic, chosen, count, key_b, value_b,
                                                  hdrs, timestamp_ms, size, deliver_at_ms)
        batch.futures.append(fut)
        if self._txn is not None:
            self._txn_gate(topic, batch.partition)
            self._txn_futures.append(fut)
        self._kick(topic, batch.partition, changed)
        return fut

    async def send_and_wait(self, topic: str, value: bytes | str | None,
                            **kwargs: Any) -> RecordMetadata:
        """``await (await send(...))``: the record's ``(partition, offset)``."""
        return await (await self.send(topic, value, **kwargs))

    async def send_many(
        self,
        topic: str,
        values: Iterable[bytes | str | None],
        *,
        key: bytes | str | None = None,
        headers: Mapping[str, bytes | str | None] | Iterable[tuple[str, bytes | str | None]]
        | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> asyncio.Future[list[RecordMetadata]]:
        """Queue many records for ONE partition in one call (see the threaded
        ``send_many``); the future gives every record's ``(partition, offset)``."""
        self._check_open()
        if self._txn is not None:
            self._txn.check_send()
        key_b = _to_bytes(key, "key")
        hdrs = _to_headers(headers)
        records: list[tuple[bytes | None, bytes | None, tuple[Any, ...], int | None]] = []
        sizes: list[int] = []
        for v in values:
            vb = v if v is None or type(v) is bytes else _to_bytes(v, "value")
            records.append((key_b, vb, hdrs, timestamp_ms))
            sizes.append(record_size(key_b, vb, hdrs))
        group = _Group(len(records), self._loop.create_future())
        if not records:
            group.future.set_result([])
            return group.future  # type: ignore[no-any-return]
        try:
            await self._txn_reset()
            chosen, count = await self._choose_partition(topic, key_b, partition)
            await self._wait_for_room(sum(sizes))
        except RaftkaError as e:
            group.future.set_exception(e)
            return self._txn_failed(group.future, e)  # type: ignore[no-any-return]
        if self._txn is not None:  # a commit may have begun while this send waited
            self._txn.check_send()
        part = self._accumulator.extend(topic, chosen, count, records, sizes, group)
        if self._txn is not None:
            self._txn_gate(topic, part)
            self._txn_futures.append(group.future)
        self._kick(topic, part, True)
        return group.future  # type: ignore[no-any-return]

    async def flush(self, timeout: float | None = None) -> None:
        """Send everything queued now and wait until each of those records is
        acknowledged or failed. Raises RaftkaTimeoutError if ``timeout`` ends first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        sender = self._sender
        pending = self._accumulator.unfinished()
        sender.flushing += 1
        self._wake_sender.notify()
        try:
            for b in pending:
                while not b.done:
                    if sender.crashed is not None and not sender.is_alive():
                        return
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        left = sum(len(x.futures) for x in pending if not x.done)
                        raise RaftkaTimeoutError(
                            f"flush: {left} records still unacknowledged after {timeout:g}s")
                    await self._progress.wait(remaining if remaining is not None else 1.0)
        finally:
            sender.flushing -= 1

    async def close(self, timeout: float | None = None) -> None:
        """Flush (up to ``timeout`` seconds), then stop: records still queued fail with
        ProducerClosedError. Idempotent."""
        sender = self._sender
        if sender.closing and not sender.is_alive():
            return
        sender.closing = True
        self._progress.notify_all()
        self._wake_sender.notify()
        try:
            await self.flush(timeout)
        except RaftkaTimeoutError:
            pass
        finally:
            sender.aborting = True
            self._progress.notify_all()
            self._wake_sender.notify()
            self._adds_signal.notify()
            self._adds_ended.notify()
            await wait_until(sender.join_async(), 5.0)
            if self._adds_task is not None:
                await wait_until(self._adds_task, 5.0)
            await self._cluster.close()

    async def __aenter__(self) -> Producer:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    # ------------------------------------------------------------------ transactions
    # The threaded Producer's API and rules (its docstrings); the state and every
    # coordinator call are TransactionManager's operations (_transactions.py), awaited here.

    async def init_transactions(self, timeout: float | None = None) -> None:
        """Register the ``transactional_id`` with its coordinator: a producer id and a new
        epoch, which fences every older producer with this id and aborts a transaction
        one of them left open. Call once, before the first transaction."""
        txn = self._require_txn("init_transactions()")
        pid, epoch = await run(self._cluster, txn.init_ops(
            self._max_block_s if timeout is None else timeout))
        assert self._idempotence is not None
        self._idempotence.set_producer_id(pid, epoch)
        if self._adds_task is None:
            self._adds_task = self._loop.create_task(self._run_adds(),
                                                     name="raftka-producer-txn")

    def begin_transaction(self) -> None:
        """Start a transaction (no I/O: a plain method, as in aiokafka)."""
        self._require_txn("begin_transaction()").begin()
        self._txn_futures = []
        self._accumulator.forget_sticky()  # keyless records: a partition per transaction

    async def commit_transaction(self, timeout: float | None = None) -> None:
        """Flush the transaction's records, then commit it; returns once the coordinator
        made the decision durable. Raises the error of a record that failed (abort the
        transaction then), ProducerFencedError if a newer producer took over."""
        await self._end(True, "commit_transaction()", timeout)

    async def abort_transaction(self, timeout: float | None = None) -> None:
        """Abort the transaction: none of its records is ever visible to read_committed
        consumers."""
        await self._end(False, "abort_transaction()", timeout)

    async def send_offsets_to_transaction(self, offsets: Mapping[tuple[str, int], int],
                                          group_metadata: ConsumerGroupMetadata | str,
                                          timeout: float | None = None) -> None:
        """Commit a group's offsets ({(topic, partition): next offset}) as part of the
        open transaction (KIP-447): ``group_metadata`` is ``consumer.group_metadata()``
        or a group id."""
        txn = self._require_txn("send_offsets_to_transaction()")
        group = (ConsumerGroupMetadata(group_metadata) if isinstance(group_metadata, str)
                 else group_metadata)
        if not offsets:
            return
        await self._txn_reset()
        await run(self._cluster, txn.send_offsets_ops(
            dict(offsets), group, self._max_block_s if timeout is None else timeout))

    async def _end(self, commit: bool, what: str, timeout: float | None) -> None:
        txn = self._require_txn(what)
        txn.start_end(what)
        timeout_s = self._max_block_s if timeout is None else timeout
        deadline = time.monotonic() + timeout_s
        await self.flush(timeout_s)  # no batch of it may land after the marker
        if commit:
            txn.records_failed([f.exception() if f.done() and not f.cancelled() else None
                                for f in self._txn_futures])
        while not txn.adds_idle():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RaftkaTimeoutError("the transaction's AddPartitionsToTxn did not "
                                         "finish in time")
            await self._adds_ended.wait(remaining)
        pid, epoch = await run(self._cluster, txn.end_ops(
            commit, max(deadline - time.monotonic(), 0.001)))
        assert self._idempotence is not None
        self._idempotence.set_producer_id(pid, epoch)  # the next transaction's epoch
        self._txn_futures = []

    async def _txn_reset(self) -> None:
        """Before a transaction's first send or offsets: end the reopened transaction it
        began too long after (``_transactions.py``), one call for all the sends."""
        txn = self._txn
        if txn is None or not txn.reset_due:
            return
        async with self._reset_lock:
            if txn.reset_due:
                producer = await run(self._cluster, txn.reset_ops(self._max_block_s))
                assert self._idempotence is not None
                self._idempotence.set_producer_id(*producer)
                txn.reset_due = False

    def _require_txn(self, what: str) -> TransactionManager:
        if self._txn is None:
            raise InvalidTxnStateError(f"{what} needs a transactional producer: create it "
                                       "with transactional_id=...")
        return self._txn

    def _txn_gate(self, topic: str, partition: int) -> None:
        """A partition not yet in the transaction holds its batches back until its
        AddPartitionsToTxn succeeded (the threaded producer's rule)."""
        txn = self._txn
        assert txn is not None
        if txn.queue_partition((topic, partition)):
            self._accumulator.queues[(topic, partition)].txn_gated = True
            self._adds_signal.notify()

    def _txn_failed(self, future: Any, error: BaseException) -> Any:
        if self._txn is not None:
            self._txn.failed(error)
        return future

    async def _run_adds(self) -> None:
        """The AddPartitionsToTxn task: one call at a time for every partition queued
        meanwhile; then their batches go (or fail with the call's error)."""
        txn, sender = self._txn, self._sender
        assert txn is not None
        while True:
            request = txn.take_adds()
            if request is None:
                if sender.closing or sender.crashed is not None:
                    return
                await self._adds_signal.wait(1.0)
                continue
            error: BaseException | None = None
            try:
                await run(self._cluster, txn.coordinator.call_ops(
                    "AddPartitionsToTxn", request, self._max_block_s))
            except RaftkaError as e:
                error = e
            failing = adds_finished(txn, self._accumulator.queues, error)
            self._adds_ended.notify()  # _end waits for the adds to be idle
            self._wake_sender.notify()
            for batch in failing:
                sender._resolve_failure(batch, error)

    async def partitions_for(self, topic: str) -> list[int]:
        return list(range(await self._partition_count(topic)))

    def statistics(self) -> dict[str, int]:
        """Counters since creation plus what is buffered now."""
        stats = dict(self._sender.stats)
        stats["buffered_bytes"] = self._accumulator.buffered_bytes
        stats["buffered_records"] = self._accumulator.buffered_records()
        stats["in_flight_requests"] = self._sender.in_flight()
        stats["producer_id"] = (self._idempotence.producer_id
                                if self._idempotence is not None else -1)
        return stats

    # ------------------------------------------------------------------ helpers

    def _check_open(self) -> None:
        sender = self._sender
        if sender.closing:
            raise ProducerClosedError("send() after close(): the producer is closed")
        if sender.crashed is not None:
            raise ProducerClosedError(f"the producer's sender failed: {sender.crashed!r}")

    def _kick(self, topic: str, partition: int, changed: bool) -> None:
        """After an append: with linger, wake the sender for a new deadline or a full
        batch; with linger_ms=0 send now when the window has room (``_sender.py``
        rule 4: this task is the one that finds the batch ready)."""
        sender = self._sender
        if self._linger_s:
            if changed:
                self._wake_sender.notify()
            return
        claimed = sender.claim(topic, partition)
        if claimed:
            sender.send_claimed(*claimed)

    async def _partition_count(self, topic: str) -> int:
        t = self._cluster.topic(topic)
        if t is not None and t.partitions:
            return t.partition_count
        return await run(self._cluster, partition_count_ops(
            self._cluster, topic, self._unknown_topics, self._max_block_s))

    async def _choose_partition(self, topic: str, key: bytes | None,
                                partition: int | None) -> tuple[int | None, int]:
        count = await self._partition_count(topic)
        return pick_partition(topic, count, key, partition), count

    async def _wait_for_room(self, size: int) -> None:
        """Wait (up to max_block_ms) until ``size`` more bytes fit in buffer_memory."""
        accumulator = self._accumulator
        if accumulator.fits(size):
            return
        deadline = time.monotonic() + self._max_block_s
        while not accumulator.fits(size):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RaftkaTimeoutError(
                    f"producer buffer full ({accumulator.buffered_bytes} of "
                    f"{accumulator.buffer_memory} bytes) for {self._max_block_s:g}s: the "
                    "cluster is not keeping up or is unreachable")
            await self._progress.wait(remaining)
            if self._sender.closing:
                raise ProducerClosedError("the producer was closed while send() waited")
