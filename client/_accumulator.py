"""The producer's accumulator: records batched per partition, waiting to be sent.

Sans-I/O: no threads, no network. Its owner serializes every call (the ``Producer`` holds
its lock around them; an asyncio producer would call it from its loop) and gives it a
clock. The sender (``_sender.py``) decides which batches leave when; the idempotence state
(``_idempotence.py``) stamps them.

Layout: per ``(topic, partition)`` a :class:`PartitionQueue`, a FIFO of :class:`Batch`
in send order; only its last batch may still take records (it is *open*).

Rules:

1. A record goes into its partition's open batch while the batch stays within
   ``batch_size`` (``BatchBuilder`` counts the encoded bytes); a record that does not fit
   *closes* the batch and opens a new one at the tail. A closed batch never takes records
   again, so a batch's bytes are final once it is closed and the sender may build them.
   (One record larger than ``batch_size`` goes alone in its own batch.)
2. A batch may leave when it is closed (full, or taken by the sender), when ``linger_s``
   has passed since its first record (``created``), on flush/close, or, for a retry, when
   its backoff ended; the sender applies this (``_sender.py`` rule 1).
3. Backpressure: at most ``buffer_memory`` bytes of records are held, counted as key +
   value + header bytes + ``RECORD_OVERHEAD_BYTES`` per record (:meth:`fits`); an empty
   accumulator takes any record, so one record larger than the buffer still goes. The
   room is freed when a batch is *done* (acknowledged or failed for good), not when it is
   sent: a batch being retried keeps its room.
4. A done batch stays in its queue until it reaches the head (:meth:`prune`), so the
   sender's in-flight window counts from the oldest unfinished batch.
5. Keyless records are *sticky*: they fill one partition's batch, and once that batch is
   closed the next keyless record goes to the next partition (Kafka's sticky
   partitioner). The first partition of a topic is drawn at random.
6. Delayed records (a delivery time, ``deliver_at_ms`` > 0) share a batch only with
   records of the same partition and the same delivery time: the broker schedules a
   produce request whole, so a batch has one delivery time. A record whose time differs
   from the open batch's closes it (rule 1) and opens a new one.

A batch carries the owner's per-record completion handles (``futures``, one per record,
``None`` for records of a ``send_many`` group, which are listed in ``groups``); the
accumulator only stores them. A group is any object with a ``pending`` count of the batches
holding a part of it.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from raftka.client._retry import Retry
from raftka.v1.recordbatch import BatchBuilder

__all__ = ["RECORD_OVERHEAD_BYTES", "Accumulator", "Batch", "PartitionQueue"]

RECORD_OVERHEAD_BYTES = 24  # varints and attributes per record, for buffer accounting

Headers = tuple[tuple[str, bytes | None], ...]
Record = tuple[bytes | None, bytes | None, Headers, int | None]  # key, value, headers, ts


@dataclass(eq=False, slots=True)
class Batch:
    """One RecordBatch of a partition, from its first record until it is done."""

    topic: str
    partition: int
    builder: BatchBuilder | None  # None once built into ``payload``
    created: float  # the clock at its first record
    # one entry per record, by index in the batch: its future, or None for a record of a
    # send_many group (those are in `groups` as (group, group_start, batch_start, count))
    futures: list[Any] = field(default_factory=list)
    groups: list[tuple[Any, int, int, int]] = field(default_factory=list)
    waiter: Any = None  # the owner's wait object for the records' futures (made lazily)
    size_bytes: int = 0  # accounted against buffer_memory (rule 3)
    closed: bool = False  # no more appends (rule 1)
    done: bool = False  # acknowledged or failed for good
    # --- the sender's (``_sender.py``) and the idempotence state's (``_idempotence.py``)
    attempts: int = 0  # attempts sent so far
    payload: bytes | None = None  # built once, resent unchanged on retries (re-stamped
    # only by a sequence reset, see _idempotence.py rule 4)
    record_count: int = 0
    retry: Retry | None = None  # its retries (_retry.py), made at its first failure
    epoch: int = -1  # the idempotence stamp in the payload's header; sequence -1 = not
    sequence: int = -1  # stamped yet
    attempt: int = 0  # id of the attempt in flight (0: none); a response for another is stale
    unary: bool = False  # the attempt in flight is a unary Produce call
    sent_at: float = 0.0  # the clock at the attempt in flight
    retry_at: float = 0.0  # not to be sent again before this time
    acked: bool = False
    deliver_at_ms: int = 0  # > 0: delivered (made visible) at this time (rule 6)


@dataclass(eq=False, slots=True)
class PartitionQueue:
    # unfinished batches in send order, plus done ones not yet at the head (rule 4); the
    # last one may still be open
    batches: deque[Batch] = field(default_factory=deque)
    # --- the sender's state of the partition (_sender.py), kept here for one lookup
    in_flight: int = 0  # batches with an attempt in flight; <= max_in_flight
    reset_pending: bool = False  # re-stamp once nothing is in flight (_idempotence.py)
    dispatching: bool = False  # a thread is sending its selected batches
    unary: bool = False  # a unary Produce of it is in flight: nothing else goes
    # a transactional producer's partition not yet added to the transaction (its
    # AddPartitionsToTxn is queued or out, _transactions.py): nothing of it goes
    txn_gated: bool = False


class Accumulator:
    """Rules 1-5 of the module docstring. Not thread-safe: the owner serializes calls."""

    def __init__(self, *, compression: str, batch_size: int, buffer_memory: int,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        BatchBuilder(compression=compression, max_bytes=batch_size)  # validates both
        if buffer_memory < batch_size:
            raise ValueError("buffer_memory must be at least batch_size")
        self.compression = compression
        self.batch_size = batch_size
        self.buffer_memory = buffer_memory
        self.queues: dict[tuple[str, int], PartitionQueue] = {}
        self.buffered_bytes = 0  # <= buffer_memory, except one oversized record alone
        self._sticky: dict[str, tuple[int, Batch | None]] = {}
        self._clock = clock
        self._randrange = (rng or random).randrange

    # ------------------------------------------------------------------ appending

    def fits(self, size: int) -> bool:
        """Rule 3: whether ``size`` more bytes of records may be held now."""
        return not self.buffered_bytes or self.buffered_bytes + size <= self.buffer_memory

    def append(self, topic: str, partition: int | None, partition_count: int,
               key: bytes | None, value: bytes | None, headers: Headers,
               timestamp_ms: int | None, size: int,
               deliver_at_ms: int = 0) -> tuple[Batch, bool]:
        """Append one record of ``size`` bytes (rule 3) to ``partition``, or with None to
        the topic's sticky partition (rule 5), delivered at ``deliver_at_ms`` (rule 6; 0:
        at once). Returns its batch (the record's index is ``len(batch.futures)``, where
        the owner appends its future) and whether a batch was opened or closed (a linger
        deadline or a ready batch the sender must learn of)."""
        sticky = partition is None
        if sticky:
            partition = self._sticky_partition(topic, partition_count)
        assert partition is not None
        queue = self.queues.get((topic, partition))
        batch = queue.batches[-1] if queue is not None and queue.batches else None
        if (batch is not None and not batch.closed
                and batch.deliver_at_ms != deliver_at_ms):
            batch.closed = True  # rule 6: one delivery time per batch
            changed_time = True
            batch = None
        else:
            changed_time = False
        if (batch is not None and not batch.closed
                and batch.builder.append(key, value, headers, timestamp_ms)):  # type: ignore[union-attr]
            batch.size_bytes += size
            self.buffered_bytes += size
            if sticky:
                self._sticky[topic] = (partition, batch)
            return batch, False
        changed = changed_time
        if batch is not None and not batch.closed:
            batch.closed = True  # it is full (rule 1)
            changed = True
        batch = None
        if sticky and topic in self._sticky:  # it was just closed: the next partition's
            partition = self._sticky_partition(topic, partition_count)  # (rule 5)
            queue = self.queues.get((topic, partition))
            tail = queue.batches[-1] if queue is not None and queue.batches else None
            if tail is not None and not tail.closed and tail.deliver_at_ms != deliver_at_ms:
                tail.closed = True  # rule 6
                changed = True
            elif tail is not None and not tail.closed:
                if tail.builder.append(key, value, headers, timestamp_ms):  # type: ignore[union-attr]
                    batch = tail
                else:
                    tail.closed = True
                    changed = True
        if batch is None:
            batch = self._open(topic, partition)
            batch.deliver_at_ms = deliver_at_ms
            batch.builder.append(key, value, headers, timestamp_ms)  # type: ignore[union-attr]
            changed = True
        batch.size_bytes += size
        self.buffered_bytes += size
        if sticky:
            self._sticky[topic] = (partition, batch)
        return batch, changed

    def extend(self, topic: str, partition: int | None, partition_count: int,
               records: Sequence[Record], sizes: Sequence[int], group: Any) -> int:
        """Append many records to one partition (``partition``, or the sticky one) in as
        many batches as they need, each batch holding a part of ``group`` (its
        ``pending`` count grows by one per batch). Returns the partition."""
        sticky = partition is None
        part = self._sticky_partition(topic, partition_count) if sticky else partition
        assert part is not None
        done = 0
        n = len(records)
        batch: Batch | None = None
        while done < n:
            queue = self.queues.get((topic, part))
            batch = queue.batches[-1] if queue is not None and queue.batches else None
            if batch is not None and not batch.closed and batch.deliver_at_ms:
                batch.closed = True  # rule 6: send_many records are delivered at once
            if batch is None or batch.closed:
                batch = self._open(topic, part)
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
            self.buffered_bytes += part_size
            done += added
            if done < n:
                batch.closed = True  # full: the rest goes to the next batch
        if sticky:
            self._sticky[topic] = (part, batch)
        return part

    def _open(self, topic: str, partition: int) -> Batch:
        """A new open batch at the tail of the partition's queue."""
        batch = Batch(topic, partition,
                      BatchBuilder(compression=self.compression, max_bytes=self.batch_size),
                      self._clock())
        queue = self.queues.get((topic, partition))
        if queue is None:
            queue = self.queues[(topic, partition)] = PartitionQueue()
        queue.batches.append(batch)
        return batch

    def sticky_choice(self, topic: str, count: int) -> int:
        """The sticky partition for keyless records of ``topic``, fixed until
        ``forget_sticky`` (a transactional producer: it must add the partition to its
        transaction before the record is queued)."""
        current = self._sticky.get(topic)
        if current is not None and current[1] is None:
            return current[0] % count
        partition = self._sticky_partition(topic, count)
        self._sticky[topic] = (partition, None)
        return partition

    def forget_sticky(self) -> None:
        self._sticky.clear()

    def _sticky_partition(self, topic: str, count: int) -> int:
        """Rule 5: the partition keyless records of ``topic`` go to now."""
        current = self._sticky.get(topic)
        if current is None:
            return self._randrange(count)
        partition, batch = current
        if batch is not None and batch.closed:
            partition += 1
        return partition % count

    # ------------------------------------------------------------------ finishing

    def release(self, batch: Batch) -> bool:
        """The batch is done: free its room (rule 3); it leaves its queue once at the head
        (rule 4). False if it was done already (its futures are someone else's to
        resolve)."""
        if batch.done:
            return False
        batch.done = True
        batch.closed = True
        self.buffered_bytes -= batch.size_bytes
        return True

    @staticmethod
    def prune(queue: PartitionQueue) -> None:
        """Rule 4: drop the done batches at the head of ``queue``."""
        batches = queue.batches
        while batches and batches[0].done:
            batches.popleft()

    def unfinished(self) -> list[Batch]:
        """Every batch not done yet, in each partition's order."""
        return [b for q in self.queues.values() for b in q.batches if not b.done]

    def take_everything(self) -> list[Batch]:
        """Empty the accumulator; the batches that were not done (to fail them)."""
        batches = self.unfinished()
        self.queues.clear()
        return batches

    def buffered_records(self) -> int:
        return sum(len(b.futures) for q in self.queues.values() for b in q.batches
                   if not b.done)
