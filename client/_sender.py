"""The producer's sender: which batches go when, to whom, and what their answers lead to.

It takes ready batches from the accumulator (``_accumulator.py``), has them stamped by
the idempotence state (``_idempotence.py``), writes them on the broker's ProduceStream or
as a unary call (``_produce_stream.py``), and handles the answers: successes resolve the
records' futures, failures go through the client's retry policy (``_retry.py``).

Shape::

    accumulator ─► selected by the thread that finds a batch ready (rule 4): the caller
                   of send() with linger_ms=0, the thread that delivered an answer, else
                   the sender thread
                     │
                     ├─► a lone small batch: a unary Produce call (rule 5)
                     └─► else the broker's ProduceStream, up to max_in_flight batches
                         per partition (rule 1)
                   answers: successes complete their batch on the thread that delivers
                   them; errors go to the sender thread (retries, metadata refresh,
                   timeouts)

Rules:

1. At most ``max_in_flight`` batches of a partition are in flight (default 5 with
   idempotence, the number of batches the broker remembers per producer; 1 without). The
   window counts from the oldest unfinished batch and includes batches acknowledged after
   it, so a retry of the oldest is always among the broker's last 5 and recognised. A
   batch is ready when the accumulator says so (its rule 2: closed, lingered, flushing,
   or a retry whose backoff ended).
2. Batches of a partition are sent in queue order; a batch is never sent before the ones
   ahead of it have been sent (again, when they are retried): a batch handed back for a
   retry holds back the batches selected behind it.
3. Failures follow the retry policy (``_retry.py``) with the batch's deadline
   ``delivery_timeout_ms`` counted from its first record: a retriable error (NOT_LEADER,
   NO_QUORUM, LEADER_NOT_AVAILABLE, broker unavailable, a stream without answer for
   ``request_timeout_ms`` plus half again) sends the batch again, at once to a newly named
   leader (up to 3 hops in a row), else after a backoff (``retry_backoff_ms`` doubling to
   ``retry_backoff_max_ms``), refreshing metadata on ``invalid_metadata``; when the
   deadline passes its records fail with :class:`RaftkaTimeoutError` whose ``__cause__``
   is the last error. Non-retriable errors fail the batch at once; sequence errors are
   the idempotence state's to judge. A batch whose topic no longer exists in fresh
   metadata fails with UNKNOWN_TOPIC.
4. Any thread may send a partition's ready batches, one at a time: a thread that selects
   some (marking them in flight, under the lock) holds the partition (``dispatching``)
   until it has stamped and handed over all of them, then looks again before letting go;
   no other thread selects the partition's batches meanwhile. So batches are stamped and
   written in queue order (rule 2) whoever sends them, and nothing waits for a thread
   that is busy elsewhere. With linger_ms=0 ``send()`` sends its record itself when the
   window (rule 1) has room; a successful answer completes its batch where it arrives and
   sends what the window now lets go. Whatever may block stays on the sender thread:
   getting a producer id, a batch whose leader is unknown (metadata refresh), errors and
   retries, linger and backoff deadlines, the timeouts of rule 3. A batch a non-sender
   thread could not send goes to the sender together with every batch selected behind it
   (rule 2).
5. Low-rate path: a batch that is alone (nothing of its partition in flight, nothing
   queued behind it) and holds at most ``UNARY_MAX_BYTES`` of records goes as a unary
   ``Produce`` call. gRPC writes it from the sending thread and runs the answer's callback
   on its channel thread, two thread hand-offs fewer each way than the stream (its
   request-iterator thread, our reader thread): at low rates the hand-offs, not the
   broker, were most of the latency (p50 at 1k records/s ~40% lower). Nothing else of the
   partition goes while the call is out (separate calls may reach the log in either
   order), so records arriving meanwhile gather into the next batch; once batches queue
   up behind each other, the partition pipelines them on its stream again. With
   ``linger_ms=0`` a lone small batch also waits while the partition's stream requests are
   out, then goes unary: else one batch on the stream (a retry, a burst) kept the
   partition there for good, every record its own stream request while the one before
   was out (at 1,000 records/s after a NOT_LEADER retry: 7,142 requests for 10,000
   records, p50 6.9 ms against 4.9 on the unary path). A unary call's deadline is the
   stream's silence limit of rule 3.
6. The offset of a record is the ``base_offset`` the broker returned for its batch plus the
   record's index in the batch (-1 with acks=0, where the broker assigns none yet).
7. Without idempotence a retry after an ambiguous failure (deadline, dropped connection,
   NO_QUORUM) may write the batch twice, and with ``max_in_flight`` > 1 a retry may land
   after a later batch. Each record's future reports the offsets of the write that was
   acknowledged.

Locking: one lock (the producer's) guards the accumulator, the idempotence state and the
per-partition sender state; ``cond`` wakes callers (buffer room, flush), ``sender_cond``
the sender thread. The stream registry's lock is taken after it, never before. Futures
are resolved outside the lock.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from raftka.client._accumulator import Accumulator, Batch, PartitionQueue
from raftka.client._cluster import Cluster
from raftka.client._idempotence import IdempotenceState, Verdict, is_sequence_error, restamp
from raftka.client._ops import Ops, Rpc, run_sync
from raftka.client._produce_stream import ProduceStreams, produce_unary
from raftka.client._retry import Retry, RetryPolicy, Step
from raftka.v1 import broker_pb2
from raftka.v1.errors import (
    NotLeaderError,
    ProducerClosedError,
    ProducerFencedError,
    RaftkaError,
    RaftkaTimeoutError,
    RequestTimedOutError,
    UnknownPartitionError,
    UnknownTopicError,
)

__all__ = ["RPC_MARGIN_S", "UNARY_MAX_BYTES", "Sender"]

UNARY_MAX_BYTES = 64 * 1024  # records of a lone batch sent as a unary call (rule 5)
RPC_MARGIN_S = 1.0  # a stream is silent too long after request_timeout + max(this, half)
INIT_PRODUCER_ID_ATTEMPT_S = 1.0  # per node while other nodes are left to ask (a paused one)


class Sender:
    """Rules 1-7 of the module docstring, for one producer. ``start()`` runs the sender
    thread; ``claim``/``send_claimed`` are the caller-thread path of rule 4."""

    def __init__(
        self,
        cluster: Cluster,
        accumulator: Accumulator,
        idempotence: IdempotenceState | None,
        *,
        acks: int,
        max_in_flight: int,
        linger_s: float,
        request_timeout_ms: int,
        delivery_timeout_s: float,
        retry: RetryPolicy,
        lock: threading.RLock,
    ) -> None:
        self._cluster = cluster
        self._accumulator = accumulator
        self._queues = accumulator.queues  # the same dict, read on every selection
        self._idempotence = idempotence
        # a transactional producer's TransactionManager (``_transactions.py``), set by the
        # producer: its requests name the transactional id, so the partition leader joins
        # the partition to the transaction with its first batch
        self.transaction: Any = None
        self._acks = acks
        self._max_in_flight = max_in_flight
        self._linger_s = linger_s
        self._request_timeout_ms = request_timeout_ms
        # the broker answers every request within request_timeout_ms (NO_QUORUM at worst);
        # a stream silent for half as long again is treated as dead (rule 3)
        request_timeout_s = request_timeout_ms / 1000
        self.stuck_after_s = request_timeout_s + max(RPC_MARGIN_S, request_timeout_s / 2)
        self._delivery_timeout_s = delivery_timeout_s
        self._retry = retry
        self._unary_max_bytes = UNARY_MAX_BYTES
        self.cond = threading.Condition(lock)  # callers waiting: flush(), buffer room
        self.sender_cond = threading.Condition(lock)  # the sender thread waiting for work
        # when the sleeping sender wakes by itself (inf: not before it is notified; 0: it
        # is awake and looks at every queue before it sleeps again); guarded by the lock
        self._wake_at = 0.0
        # guarded by the lock:
        self._completions: list[tuple[Batch, int, str, Any, RaftkaError | None]] = []
        self._next_attempt = 1
        self.flushing = 0  # callers in flush(): every batch is ready
        self.closing = False
        self.aborting = False
        self.crashed: BaseException | None = None
        self.stats = {"records_sent": 0, "batches_sent": 0, "requests": 0, "retries": 0,
                      "records_failed": 0, "sequence_resets": 0}
        self._streams = self._make_streams()
        self._thread = threading.Thread(target=self._run, name="raftka-producer-sender",
                                        daemon=True)

    # ------------------------------------------------------------------ I/O seams
    # The asyncio producer (raftka.client.aio._producer.AsyncSender) overrides these
    # four and _refresh (it awaits the refresh first), and runs its own loop in place of
    # _run; every decision above and below is shared.

    def _make_streams(self) -> Any:
        return ProduceStreams(self._cluster.broker_stub)

    def _refresh_for_send(self, remaining_s: float) -> RaftkaError | None:
        """The metadata refresh of a dispatch whose leader is unknown (sender thread);
        the error if no broker answered."""
        try:
            self._cluster.refresh_metadata(min(max(remaining_s, 0.1), 5.0),
                                           min_age_s=self._retry.refresh_min_age_s)
        except RaftkaError as e:
            return e
        return None

    def _send_unary(self, address: str, request: Any, callback: Any) -> None:
        produce_unary(self._cluster.broker_stub(address), address, request,
                      self.stuck_after_s, callback)

    def _send_stream(self, address: str, attempt: int, request: Any, callback: Any) -> None:
        self._streams.get(address).send(attempt, request, callback)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout=timeout)

    def in_flight(self) -> int:
        """Under the lock: requests in flight now."""
        return sum(q.in_flight for q in self._queues.values())

    # ------------------------------------------------------------------ sender thread

    def _run(self) -> None:
        held: list[PartitionQueue] = []  # queues whose batches this thread selected
        cond, sender_cond = self.cond, self.sender_cond
        try:
            while True:
                abandoned: list[Batch] | None = None
                finished = False
                with cond:
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
                        if wake_at is None:
                            self._wake_at = float("inf")
                            sender_cond.wait()
                        else:
                            self._wake_at = wake_at
                            sender_cond.wait(max(wake_at - now, 0.0005))
                if abandoned is not None:
                    err = ProducerClosedError("the producer was closed before delivery")
                    for b in abandoned:
                        self._resolve_failure(b, err)
                if abandoned is not None or finished:
                    self._streams.close(ProducerClosedError("the producer is closed"))
                    return
                for batch, attempt, address, response, error in completions:
                    self._complete(batch, attempt, address, response, error)
                for address in stuck:
                    self._streams.abandon(address, RequestTimedOutError(
                        f"ProduceStream to {address}: no answer within request_timeout_ms"))
                for batch in expired:
                    self._resolve_failure(batch, self._timeout_error(batch))
                if (ready and self._idempotence is not None
                        and not self._idempotence.has_producer_id):
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
            with cond:
                self.crashed = e
                abandoned = self._accumulator.take_everything()
                cond.notify_all()
            for b in abandoned:
                self._resolve_failure(b, ProducerClosedError(f"producer sender failed: {e!r}"))
            self._streams.close(ProducerClosedError("the producer is closed"))
            raise

    def _collect(self, now: float, held: list[PartitionQueue]
                 ) -> tuple[list[Batch], list[Batch], set[str], float | None]:
        """Under the lock (sender thread): the batches to send now (in each partition's
        order; their queues are appended to ``held``, see rule 4), the ones whose delivery
        timeout passed, the streams whose oldest answer is overdue, and when to look
        again."""
        ready: list[Batch] = []
        expired: list[Batch] = []
        stuck: set[str] = set()
        wake_at: float | None = None
        urgent = self.flushing > 0 or self.closing
        request_timeout_s = self.stuck_after_s
        delivery_timeout_s = self._delivery_timeout_s

        def wake(at: float) -> None:
            nonlocal wake_at
            wake_at = at if wake_at is None else min(wake_at, at)

        for key in list(self._queues):
            q = self._queues[key]
            batches = q.batches
            while batches and (batches[0].done or (
                    not batches[0].attempt
                    and now >= batches[0].created + delivery_timeout_s)):
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
                        stuck.add(self._streams.address_of(b.attempt))
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
                wake(batches[0].created + delivery_timeout_s)
        stuck.discard("")
        return ready, expired, stuck, wake_at

    def _select(self, q: PartitionQueue, now: float, urgent: bool,
                wake: Any) -> list[Batch]:
        """Under the lock: rules 1, 2 and 5 for one partition. Marks the batches to send
        now as in flight and returns them in queue order; calls ``wake(t)`` with the time
        a batch it held back becomes ready."""
        ready: list[Batch] = []
        if q.reset_pending or q.unary or q.txn_gated:  # _idempotence.py rule 4: every
            return ready  # old-stamp answer first; rule 5: nothing overtakes a unary call;
        # a partition not yet in the transaction waits for its AddPartitionsToTxn
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
            lone = (b.size_bytes <= self._unary_max_bytes
                    and position == len(q.batches) - 1)
            if lone and q.in_flight and self._linger_s == 0 and not b.attempts:
                break  # rule 5: it gathers records until the requests out are answered
            b.closed = True
            b.attempt = self._next_attempt
            self._next_attempt += 1
            b.sent_at = now
            if lone and not q.in_flight:
                b.unary = q.unary = True  # rule 5
                q.in_flight = 1
                ready.append(b)
                break
            q.in_flight += 1
            ready.append(b)
        return ready

    # ------------------------------------------------------------------ any thread (rule 4)

    def claim(self, topic: str, partition: int
              ) -> tuple[PartitionQueue, list[Batch]] | None:
        """Under the lock, on a caller or stream thread: select the partition's batches
        that can go now (rule 4) so that this thread sends them itself, without waking the
        sender. None when there are none, or when another thread is sending the
        partition's batches (it looks again when done). Wakes the sender when it must act
        sooner than it planned (a stuck check, a linger deadline) or must do what only it
        does (get a producer id)."""
        q = self._queues.get((topic, partition))
        if (q is None or q.dispatching or q.unary or q.in_flight >= self._max_in_flight
                or self.aborting):
            return None  # nothing can go before an answer comes (whose thread looks again)
        idempotence = self._idempotence
        if idempotence is not None and idempotence.producer_id < 0:
            self.sender_cond.notify()  # only the sender gets a producer id
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

        ready = self._select(q, now, self.flushing > 0 or self.closing, wake)
        if ready:
            wake(now + self.stuck_after_s)
            q.dispatching = True
        if wake_at < self._wake_at:
            self.sender_cond.notify()
        return (q, ready) if ready else None

    def send_claimed(self, q: PartitionQueue, ready: list[Batch]) -> None:
        """Send batches selected by :meth:`claim` (no lock held), then look again for more
        of the partition before letting other threads select its batches."""
        topic, partition = ready[0].topic, ready[0].partition
        while True:
            for i, batch in enumerate(ready):
                if not self._dispatch(batch, may_block=False):
                    for behind in ready[i + 1:]:  # rule 2: retried after it, by the sender
                        self._back_off(behind, immediate=True)
                    with self.cond:
                        q.dispatching = False
                        self.sender_cond.notify()
                    return
            with self.cond:
                q.dispatching = False
                claimed = self.claim(topic, partition)
            if claimed is None:
                return
            q, ready = claimed

    # ------------------------------------------------------------------ sending

    def _dispatch(self, batch: Batch, may_block: bool = True) -> bool:
        """Send one batch to its partition leader (no lock held; the thread that selected
        it, see rule 4). With ``may_block`` False (not the sender thread) a batch whose
        leader is unknown goes back to the sender, which refreshes the metadata. False
        when the batch was not sent and waits for a retry: then the batches selected
        behind it must not go either (rule 2)."""
        topic, partition = batch.topic, batch.partition
        remaining_s = batch.created + self._delivery_timeout_s - time.monotonic()
        cluster = self._cluster
        address = cluster.leader_address(topic, partition)
        if address is None and not may_block:
            self._back_off(batch, immediate=True)
            return False
        if address is None:
            retry = self._retry_of(batch)
            refresh_error = self._refresh_for_send(remaining_s)
            if refresh_error is not None:
                retry.last = refresh_error
            address = cluster.leader_address(topic, partition)
            if address is None:
                if retry.last is None or not retry.last.retriable:
                    retry.last = RaftkaError(
                        f"no leader known for {topic}/{partition} (election in progress?)",
                        retriable=True)
                if cluster.topic(topic) is None and cluster.metadata.fetched_at:
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
        if self._idempotence is not None and batch.sequence < 0:
            self._stamp(batch)
        broker_timeout_ms = int(max(1, min(self._request_timeout_ms, remaining_s * 1000)))
        request = broker_pb2.ProduceRequest(
            topic=topic, partition=partition, acks=self._acks,  # type: ignore[arg-type]
            timeout_ms=broker_timeout_ms, record_batches=batch.payload,
            deliver_at_ms=batch.deliver_at_ms,
        )
        txn = self.transaction
        if txn is not None and txn.joining():
            request.transactional_id = txn.transactional_id
            request.transaction_partitions.extend(txn.hints(topic, partition))
        batch.attempts += 1
        with self.cond:
            self.stats["requests"] += 1
            if batch.attempts > 1:
                self.stats["retries"] += 1
        attempt = batch.attempt
        callback = (lambda response, error, b=batch, a=address, n=attempt:
                    self._on_done(b, n, a, response, error))
        try:
            if batch.unary:
                self._send_unary(address, request, callback)
            else:
                self._send_stream(address, attempt, request, callback)
        except (RaftkaError, ValueError) as e:  # the cluster was closed under us
            self._finish_failed(batch, e)
        return True

    def _stamp(self, batch: Batch) -> None:
        """First send of an idempotent batch (``_idempotence.py`` rule 2)."""
        idempotence = self._idempotence
        assert idempotence is not None
        with self.cond:
            batch.epoch, batch.sequence = idempotence.stamp((batch.topic, batch.partition),
                                                            batch.record_count)
            producer_id = idempotence.producer_id
        batch.payload = restamp(batch.payload, producer_id, batch.epoch,  # type: ignore[arg-type]
                                batch.sequence, idempotence.transactional)

    def _reset_sequences(self, key: tuple[str, int], q: PartitionQueue) -> None:
        """Under the lock, nothing of the partition in flight: ``_idempotence.py`` rule 4.
        A new epoch for this partition, every unfinished batch re-stamped at its next
        send (or, rule 5, failed when the epoch cannot grow)."""
        q.reset_pending = False
        assert self._idempotence is not None
        bumped = self._idempotence.bump(key)
        if bumped is None:
            return
        if not bumped:
            err = ProducerFencedError(
                f"{key[0]}/{key[1]} lost a batch of this transaction for good (a sequence "
                "gap); abort the transaction" if self._idempotence.transactional
                else f"producer epoch exhausted for {key[0]}/{key[1]}")
            for b in q.batches:
                if not b.done:
                    self._retry_of(b).last = err
                    b.retry_at = b.created + self._delivery_timeout_s  # then fails
            return
        self.stats["sequence_resets"] += 1
        for b in q.batches:
            if not b.done:
                b.sequence = -1
                b.retry_at = 0.0

    # ------------------------------------------------------------------ answers

    def _on_done(self, batch: Batch, attempt: int, address: str, response: Any,
                 error: RaftkaError | None) -> None:
        """An answer, on the stream's reader thread, gRPC's channel thread (unary), or the
        sending thread when the stream had already ended. A success is completed right
        here (futures resolved, and the partition's next batches sent, rule 4); an error
        goes to the sender, whose handling may block (metadata refresh)."""
        if error is None:
            self._complete(batch, attempt, address, response, None)
            with self.cond:
                claimed = self.claim(batch.topic, batch.partition)
            if claimed:
                self.send_claimed(*claimed)
            return
        with self.cond:
            self._completions.append((batch, attempt, address, response, error))
            self.sender_cond.notify()

    def _complete(self, batch: Batch, attempt: int, address: str, response: Any,
                  err: RaftkaError | None) -> None:
        if batch.attempt != attempt:
            return  # cannot happen: one attempt per batch at a time
        # The attempt stays in flight until its outcome is settled, and ends in the same
        # hold of the lock that settles it (_finish_ok, _finish_failed, _back_off,
        # _sequence_error): in between, another thread's _select saw the batch neither in
        # flight nor done and sent it again (a success resent: written twice without
        # idempotence), or sent a failed one before its backoff was set.
        with self.cond:
            q = self._queues.get((batch.topic, batch.partition))
            reset_pending = q is not None and q.reset_pending
            if batch.done:
                self._end_attempt(batch)
                return
        topic, partition = batch.topic, batch.partition
        cluster = self._cluster
        if err is None:
            cluster.note_success(address)
            txn = self.transaction
            if txn is not None and not response.transaction_joined:
                txn.not_joined(topic, partition)  # a node that does not join: add it
            self._finish_ok(batch, response.base_offset)
            return
        retry = self._retry_of(batch)
        step = retry.classify(err)
        cluster.note_failure(address, err)
        if self._idempotence is not None and is_sequence_error(err):
            self._sequence_error(batch, err, reset_pending)
            return
        if step is Step.RAISE:
            self._finish_failed(batch, err)
            return
        named = False
        if isinstance(err, NotLeaderError):
            named = cluster.note_not_leader(topic, partition, err)
        elif err.invalid_metadata:
            cluster.forget_leader(topic, partition)
            if isinstance(err, (UnknownTopicError, UnknownPartitionError)):
                if not self._still_exists(topic, partition):
                    self._finish_failed(batch, err)
                    return
        if err.invalid_metadata and not named:
            self._refresh()
        # Retry policy rule 2: go at once when we learned of another leader (named, or
        # from the refreshed metadata); back off when we would only ask the same node again.
        immediate = retry.follow(address, cluster.leader_address(topic, partition))
        self._back_off(batch, immediate)

    def _sequence_error(self, batch: Batch, err: RaftkaError, reset_pending: bool) -> None:
        """``_idempotence.py`` rules 3-5 for OUT_OF_ORDER_SEQUENCE, UNKNOWN_PRODUCER_ID,
        PRODUCER_FENCED."""
        assert self._idempotence is not None
        key = (batch.topic, batch.partition)
        with self.cond:
            q = self._queues.get(key)
            oldest = q is not None and next((b for b in q.batches if not b.done),
                                            None) is batch
            verdict = self._idempotence.judge(err, key, batch.epoch, oldest=oldest,
                                              reset_pending=reset_pending)
            if verdict is Verdict.RESET and q is not None:
                q.reset_pending = True  # the gap before this batch is permanent
            if verdict is not Verdict.FAIL:
                self._end_attempt(batch)
                batch.retry_at = 0.0  # resent right after the batches before it
            self.sender_cond.notify()
        if verdict is Verdict.FAIL:
            self._finish_failed(batch, err)

    def _still_exists(self, topic: str, partition: int) -> bool:
        if not self._refresh():
            return True  # cannot tell: keep retrying until the delivery timeout
        t = self._cluster.topic(topic)
        return t is not None and t.partition(partition) is not None

    def _refresh(self) -> bool:
        """Refresh metadata now unless done within the policy's minimum age (sender
        thread). False when no broker answered."""
        return self._cluster.try_refresh(min(self._request_timeout_ms / 1000, 2.0),
                                         self._retry.refresh_min_age_s)

    def _retry_of(self, batch: Batch) -> Retry:
        retry = batch.retry
        if retry is None:
            retry = batch.retry = self._retry.start(
                deadline=batch.created + self._delivery_timeout_s)
        return retry

    def _back_off(self, batch: Batch, immediate: bool) -> None:
        """A retriable failure: send the batch again after a backoff (at once when a new
        leader is known), and nothing after it before it (rules 2 and 3)."""
        retry = self._retry_of(batch)
        delay = 0.0 if immediate else retry.delay()
        now = time.monotonic()
        if now + delay >= retry.deadline:
            self._finish_failed(batch, self._timeout_error(batch))
            return
        with self.cond:
            self._end_attempt(batch)  # when the dispatch never left
            batch.retry_at = now + delay
            self.sender_cond.notify()

    def _timeout_error(self, batch: Batch) -> RaftkaError:
        retry = batch.retry
        last = retry.last if retry is not None else None
        detail = f"; last error: {last}" if last else ""
        if retry is not None and retry.ambiguous and self._idempotence is None:
            detail += " (an earlier attempt's outcome is unknown: it may have been written)"
        err = RaftkaTimeoutError(
            f"{len(batch.futures)} record(s) to {batch.topic}/{batch.partition} not "
            f"acknowledged within delivery_timeout_ms={self._delivery_timeout_s * 1000:g} "
            f"after {batch.attempts} attempt(s){detail}"
        )
        err.__cause__ = last
        return err

    # ------------------------------------------------------------------ finishing

    def _finish_ok(self, batch: Batch, base_offset: int) -> None:
        """Rule 6: resolve the records' futures with their offsets."""
        with self.cond:
            self._end_attempt(batch)
            if not self._release(batch):
                return  # failed meanwhile by another thread (close)
            batch.acked = True
            self.stats["records_sent"] += len(batch.futures)
            self.stats["batches_sent"] += 1
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
        self._resolved(batch)

    def _finish_failed(self, batch: Batch, err: BaseException) -> None:
        self._resolve_failure(batch, err, end_attempt=True)

    def _end_attempt(self, batch: Batch) -> PartitionQueue | None:
        """Under the lock: the batch's attempt in flight (if any) is over; its queue."""
        q = self._queues.get((batch.topic, batch.partition))
        if batch.attempt:
            batch.attempt = 0
            if q is not None:
                q.in_flight -= 1
                if batch.unary:
                    q.unary = False
            batch.unary = False
        return q

    def _release(self, batch: Batch) -> bool:
        """Under the lock: the batch is done; wake who waits for buffer room or a flush.
        False if it was done already: then its futures are someone else's to resolve."""
        if not self._accumulator.release(batch):
            return False
        self.cond.notify_all()
        return True

    def _resolve_failure(self, batch: Batch, err: BaseException,
                         end_attempt: bool = False) -> None:
        with self.cond:
            if end_attempt:  # in the same hold as the release: see _complete
                self._end_attempt(batch)
            if not self._release(batch):
                return
            self.stats["records_failed"] += len(batch.futures)
        for f in batch.futures:
            if f is not None and not f.done():
                f.set_exception(err)
        for group, _start, _bstart, _count in batch.groups:
            group.part_failed(err)
        self._resolved(batch)

    def _resolved(self, batch: Batch) -> None:
        """The batch's futures hold its outcome now: wake ``flush``."""
        with self.cond:
            batch.resolved = True
            self.cond.notify_all()

    # ------------------------------------------------------------------ producer id

    def _init_producer_id(self, ready: list[Batch]) -> bool:
        """``_idempotence.py`` rule 1 (sender thread): :meth:`init_producer_id_ops`."""
        return run_sync(self._cluster, self.init_producer_id_ops(ready))

    def init_producer_id_ops(self, ready: list[Batch]) -> Ops[bool]:
        """``_idempotence.py`` rule 1, one sweep within ``request_timeout_ms``: the
        controller first, then every candidate, following a NOT_LEADER that names the
        controller leader. On failure the batches go back to their queues and are retried
        after a backoff."""
        assert self._idempotence is not None
        cluster = self._cluster
        retry = self._retry.start(self._request_timeout_ms / 1000)
        addresses = [cluster.controller_address()] + cluster.candidate_addresses()
        tried: set[str] = set()
        while addresses and not retry.expired():
            address = addresses.pop(0)
            if not address or address in tried:
                continue
            tried.add(address)
            try:
                # a node that holds the call without answering (paused, cut off) must not
                # take the whole sweep while others are left to ask
                cap = INIT_PRODUCER_ID_ATTEMPT_S if addresses else retry.remaining()
                r = yield Rpc(address, "broker", "InitProducerId",
                              broker_pb2.InitProducerIdRequest(),
                              max(retry.attempt_timeout(cap), 0.1), "InitProducerId")
            except RaftkaError as e:
                step = retry.classify(e)
                if step is Step.RAISE:
                    break
                if isinstance(e, NotLeaderError) and e.leader_address:
                    # only the controller leader reserves id blocks: ask it next
                    addresses.insert(0, e.leader_address)
                    tried.discard(e.leader_address)
                continue
            with self.cond:
                self._idempotence.set_producer_id(r.producer_id, r.producer_epoch)
            return True
        err = retry.last or RaftkaError("no broker answered InitProducerId", retriable=True)
        for b in ready:
            self._retry_of(b).last = err
            if not err.retriable:
                self._finish_failed(b, err)
            else:
                self._back_off(b, immediate=False)
        return False
