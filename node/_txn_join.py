"""A partition joins its producer's transaction with the transaction's first batch there
(as KIP-890 part 2 in Kafka 4.x), instead of the producer calling AddPartitionsToTxn and
waiting for it before the first batch.

The partition leader asks the transaction coordinator to add the partition
(``TransactionCoordinator.JoinTxn``, ``_txn_service.py`` rule 8) while the batch
replicates: one coordinator write beside the data's, instead of one before it. Rules:

1. A transactional produce request that names its transactional id
   (``ProduceRequest.transactional_id``: our producers) is answered only once this leader,
   in its current term, has joined the partition to the producer's transaction at the
   batch's epoch, and the batch is committed. A duplicate (a retry of a batch already in
   the log) waits for the join too: its original may sit in the log of a leader that
   crashed between the append and the join, so the coordinator may not know the partition
   yet; an "OK" then would let the producer commit without a marker ever reaching it.
2. One join per (producer id, epoch) per leader term: the batches of a transaction share
   it. Retriable failures (the coordinator moving or loading, a previous transaction still
   completing, an unreachable node) are retried until a definite answer, while this node
   leads the partition in that term (``JOIN_GIVE_UP_S`` at most: the batch's answer then
   is retriable, and rule 4 settles what is in the log).
3. A refusal (fenced, no transaction at that epoch, too many partitions, unknown id) means
   no marker of the coordinator will ever end what the producer wrote here at that epoch:
   the leader refuses every later batch of the producer up to that epoch (leader memory,
   ``PartitionReplica.refuse_transactional``), then writes an abort marker for it, and only
   then answers the waiting requests with the refusal. The marker comes after every batch
   already proposed, and the refused ones are never written, so nothing of it is ever read
   as committed. If the leader loses the partition first, rule 4 at the next one does it.
4. Settling: a leader that has applied its term's first entry joins every transaction
   still open on its partition that no join of its term covers (after ``SETTLE_AFTER_MS``
   of age by its first batch, so a fresh batch's own join goes first): by the
   transactional id a produce request named, else by producer id at every coordinator. The
   coordinator adds the partition if the transaction is ongoing at that epoch (a later
   commit then writes a marker here) or confirms a decided one's marker is still to come;
   anything else is a refusal and rule 3 aborts it. So a leader killed between the append
   and the join leaves no hanging transaction. (A producer id that no transactional id
   has, written through the raw API whose markers an operator's tool writes, is left to
   the partition's ``transaction_max_timeout_ms`` backstop.)

5. Pre-joined: a marker the coordinator writes for the transaction that reopened the
   producer's next one (``_txn_service.py`` rule 9) names that next epoch
   (``WriteTxnMarkersRequest.joined_epoch``): the coordinator made the partition part of it
   durably before sending the marker, so when the marker arrives (before it is written:
   the next transaction's first batch often comes right behind it) this leader records
   the join of that epoch as done, in its term, and the next transaction's batches here
   need no JoinTxn. If that epoch's batches came first, their join of this term is
   answered by the marker (whether it has asked the coordinator yet or not: the answer
   would be the same). Nothing when the partition has seen a later epoch, or that one
   without a join of this term (the request arrived late). Kept
   ``PREJOIN_KEEP_MS`` while nothing of the producer is open here (a batch after that
   asks, which is only slower). A marker written drops the producer's ended joins of its
   epoch and older. A batch of a newer
   epoch than the producer's transaction open here cannot be written before that one's
   marker anyway (``_partition.py``), so its join waits for the marker first (up to
   ``MARKER_WAIT_S``) and asks only if the marker pre-joined nothing.

Kafka clients (``node/_kafka/``) add partitions with AddPartitionsToTxn before sending and
name no transactional id in the gRPC sense: their batches are not joined (rule 4 still
settles what they leave open, which finds the partition already added).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from raftka.raft import Role

from ._errors import BrokerError, Code
from ._partition import PartitionReplica

log = logging.getLogger("raftka.transactions")

JOIN_BACKOFF_S = 0.05
JOIN_GIVE_UP_S = 60.0
SETTLE_INTERVAL_S = 0.5
SETTLE_AFTER_MS = 1000
PREJOIN_KEEP_MS = 60_000  # rule 5
MARKER_WAIT_S = 0.5  # rule 5: a join behind its producer's previous marker waits for it
MARKER_TIMEOUT_S = 10.0
TIDS_MAX = 65536
# the coordinator's definite refusals (rule 3); anything else is retried
REFUSALS = frozenset({Code.PRODUCER_FENCED, Code.INVALID_PRODUCER_EPOCH, Code.INVALID_REQUEST,
                      Code.TRANSACTIONAL_ID_NOT_FOUND, Code.INVALID_TXN_STATE,
                      Code.UNKNOWN_TOPIC, Code.UNKNOWN_PARTITION})

# (transactional id or "" to look the producer id up, producer id, epoch, topic, partition,
# hinted partitions of the topic) -> returns once joined; raises BrokerError
Ask = Callable[[str, int, int, str, int, list[int]], Awaitable[None]]


class _Join:
    __slots__ = ("epoch", "term", "future", "prejoined_ms")

    def __init__(self, epoch: int, term: int, future: asyncio.Future,
                 prejoined_ms: int = 0) -> None:
        self.epoch = epoch
        self.term = term
        self.future = future
        self.prejoined_ms = prejoined_ms  # rule 5: when a marker said it (0: asked)


class TxnJoins:
    """The joins of the partitions this node leads (module docstring). Event loop only."""

    def __init__(self, ask: Ask, clock_ms: Callable[[], int] | None = None) -> None:
        self._ask = ask
        self._clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        # (topic, partition) -> producer id -> its join of this leader term
        self._joins: dict[tuple[str, int], dict[int, _Join]] = {}
        self._tids: dict[int, str] = {}  # producer id -> transactional id (from requests)
        # rule 5: (topic, partition, producer id) -> the join waiting for the marker of the
        # producer's transaction open there; resolved with the epoch it pre-joins (0: none)
        self._marker_waits: dict[tuple[str, int, int], asyncio.Future] = {}

    def joined(self, replica: PartitionReplica, tid: str, producer_id: int, epoch: int,
               hints: list[int], data: asyncio.Future) -> asyncio.Future:
        """Rule 1: the future of a transactional request's answer: ``data``'s offsets once
        the batch is committed and the partition joined; the join's refusal, or the
        data's failure, otherwise."""
        self._tids[producer_id] = tid
        join = self._join(replica, tid, producer_id, epoch, hints)
        answer = asyncio.get_running_loop().create_future()

        def decide(settled: asyncio.Future) -> None:
            if not settled.cancelled():
                settled.exception()  # read: once the answer is decided, a later failure
                # (the write lost in a leader change) has no reader and asyncio logs it
            if answer.done():
                return
            for f in (data, join.future):
                if f.done() and (f.cancelled() or f.exception() is not None):
                    answer.set_exception(
                        f.exception() if not f.cancelled() else BrokerError(
                            Code.NO_QUORUM, "the write was given up; retry it",
                            retriable=True))
                    return
            if data.done() and join.future.done():
                answer.set_result(data.result())

        data.add_done_callback(decide)
        join.future.add_done_callback(decide)
        return answer

    def _join(self, replica: PartitionReplica, tid: str, producer_id: int, epoch: int,
              hints: list[int]) -> _Join:
        """Rule 2: this term's join of (producer id, epoch), started if none."""
        node = replica.group.node if replica.group is not None else None
        term = node.term if node is not None else 0
        joins = self._joins.setdefault((replica.topic, replica.partition), {})
        join = joins.get(producer_id)
        if join is not None and join.term == term and join.epoch == epoch and not (
                join.future.done() and _gave_up(join.future)):
            return join
        future = asyncio.get_running_loop().create_future()
        join = joins[producer_id] = _Join(epoch, term, future)
        task = asyncio.get_running_loop().create_task(
            self._run(replica, tid, producer_id, epoch, hints, term, future),
            name=f"txn-join-{replica.topic}/{replica.partition}-{producer_id}")
        task.add_done_callback(_log_failure)
        return join

    async def _run(self, replica: PartitionReplica, tid: str, producer_id: int, epoch: int,
                   hints: list[int], term: int, future: asyncio.Future) -> None:
        if tid and await self._marker_prejoins(replica, producer_id, epoch) \
                and _leads(replica, term):
            _finish(future, None)  # rule 5
            return
        deadline = time.monotonic() + JOIN_GIVE_UP_S
        refusal: BrokerError | None = None
        while True:
            if future.done():
                return  # rule 5: a marker answered it (prejoined), before or while we asked
            if not _leads(replica, term):
                _finish(future, BrokerError(Code.NOT_LEADER, f"this node stopped leading "
                                            f"{replica.topic}/{replica.partition}; retry at "
                                            "its new leader", retriable=True))
                return
            try:
                await self._ask(tid, producer_id, epoch, replica.topic, replica.partition,
                                hints)
            except BrokerError as exc:
                if future.done():
                    # a marker said the coordinator has the partition in this epoch's
                    # transaction: a refusal now comes from a later decision (a fencing
                    # abort), whose markers end what is open here
                    return
                if exc.code in REFUSALS:
                    refusal = exc
                    break
                if time.monotonic() > deadline:
                    _finish(future, BrokerError(
                        Code.COORDINATOR_LOADING, f"joining {replica.topic}/"
                        f"{replica.partition} to the transaction failed for "
                        f"{JOIN_GIVE_UP_S:.0f}s ({exc.message}); retry", retriable=True))
                    return
                await asyncio.sleep(JOIN_BACKOFF_S)
                continue
            except Exception:  # noqa: BLE001 - a bug or a broken call: retried as unknown
                log.exception("joining %s/%d to the transaction of producer id %d failed",
                              replica.topic, replica.partition, producer_id)
                if time.monotonic() > deadline:
                    _finish(future, BrokerError(Code.INTERNAL_ERROR, "joining the partition "
                                                "to the transaction failed; retry",
                                                retriable=True))
                    return
                await asyncio.sleep(JOIN_BACKOFF_S)
                continue
            _finish(future, None)
            return
        # rule 3: nothing of (producer id, up to epoch) here may ever be read as committed
        replica.refuse_transactional(producer_id, epoch, refusal)
        while _leads(replica, term):
            try:
                await replica.write_marker(producer_id, epoch, False, -1, MARKER_TIMEOUT_S)
                break
            except BrokerError as exc:
                if exc.code == Code.INVALID_PRODUCER_EPOCH:
                    break  # a marker of a later epoch is ahead of it: that one ended it
                log.info("%s/%d: abort marker of producer id %d epoch %d not written (%s)",
                         replica.topic, replica.partition, producer_id, epoch, exc.message)
                await asyncio.sleep(JOIN_BACKOFF_S)
        # (not leading any more: the next leader settles what is left, rule 4)
        _finish(future, refusal)

    async def _marker_prejoins(self, replica: PartitionReplica, producer_id: int,
                               epoch: int) -> bool:
        """Rule 5: whether the marker of the producer's transaction open on ``replica``
        (of an older epoch than ``epoch``) arrived within MARKER_WAIT_S pre-joining
        ``epoch``; False at once when no such transaction is open."""
        open_txn = replica.txns.open.get(producer_id)
        if open_txn is None or open_txn.epoch >= epoch:
            return False
        key = (replica.topic, replica.partition, producer_id)
        waiter = asyncio.get_running_loop().create_future()
        self._marker_waits[key] = waiter
        try:
            return await asyncio.wait_for(waiter, MARKER_WAIT_S) == epoch
        except asyncio.TimeoutError:
            return False
        finally:
            if self._marker_waits.get(key) is waiter:
                del self._marker_waits[key]

    def _wake(self, replica: PartitionReplica, producer_id: int, joined_epoch: int) -> None:
        waiter = self._marker_waits.pop((replica.topic, replica.partition, producer_id), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(joined_epoch)

    def prejoined(self, replica: PartitionReplica, producer_id: int,
                  joined_epoch: int) -> None:
        """Rule 5: a marker for the producer arrived at ``replica`` (led here) saying the
        coordinator has this partition in the producer's transaction of ``joined_epoch``
        already."""
        node = replica.group.node if replica.group is not None else None
        if node is None or node.role != Role.LEADER:
            return
        self._wake(replica, producer_id, joined_epoch)
        key = (replica.topic, replica.partition)
        current = self._joins.get(key, {}).get(producer_id)
        if current is not None and current.term == node.term and \
                current.epoch >= joined_epoch:
            if current.epoch == joined_epoch:
                # that epoch's batches came first and their join is under way (or its task
                # has not begun: it starts on a later loop turn than this request): the
                # coordinator's word here is the answer JoinTxn would give
                _finish(current.future, None)
            return
        seen = replica.producers.current_epoch(producer_id)
        if seen is not None and seen >= joined_epoch:
            # a late marker request: the producer is at that epoch's marker or past it here
            return
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        self._joins.setdefault(key, {})[producer_id] = _Join(
            joined_epoch, node.term, future, self._clock_ms())

    def marked(self, replica: PartitionReplica, producer_id: int, epoch: int) -> None:
        """Rule 5: a marker of ``epoch`` for the producer was written on ``replica``: the
        producer's ended joins of that epoch and older are forgotten."""
        self._wake(replica, producer_id, 0)  # a join waiting for it asks now
        joins = self._joins.get((replica.topic, replica.partition))
        current = joins.get(producer_id) if joins is not None else None
        if current is not None and current.epoch <= epoch and current.future.done():
            del joins[producer_id]  # type: ignore[union-attr]

    # ------------------------------------------------------------------ settling
    def settle(self, lookup: Callable[[tuple[str, int]], PartitionReplica | None],
               open_keys: list[tuple[str, int]]) -> None:
        """Rule 4 (called every SETTLE_INTERVAL_S) for the partitions ``open_keys`` (the
        ordinary ones this node hosts with a transaction open; ``lookup`` finds an ordinary
        partition's replica); forgets the joins of the partitions it no longer leads and
        the ended joins of producers with nothing open."""
        for key in list(self._joins):
            replica = lookup(key)
            if replica is None or not replica.leader_ready():
                del self._joins[key]
                continue
            joins, term, open_txns = self._joins[key], replica.group.node.term, \
                replica.txns.open  # type: ignore[union-attr]
            kept = self._clock_ms() - PREJOIN_KEEP_MS
            for pid in [p for p, j in joins.items() if j.term != term or (
                    j.future.done() and p not in open_txns and j.prejoined_ms < kept)]:
                del joins[pid]
        if len(self._tids) > TIDS_MAX:
            self._tids.clear()  # only a hint: settling looks the producer id up without it
        cutoff = self._clock_ms() - SETTLE_AFTER_MS
        for key in open_keys:
            replica = lookup(key)
            if replica is None or not replica.txns.open or not replica.leader_ready():
                continue
            term = replica.group.node.term  # type: ignore[union-attr]
            joins = self._joins.get(key, {})
            for pid, txn in list(replica.txns.open.items()):
                join = joins.get(pid)
                if join is not None and join.term == term and join.epoch == txn.epoch \
                        and not (join.future.done() and _gave_up(join.future)):
                    continue
                if txn.start_ms > cutoff:
                    continue
                self._join(replica, self._tids.get(pid, ""), pid, txn.epoch, [])


def _gave_up(future: asyncio.Future) -> bool:
    """A join that ended without a definite answer (rule 2): the next request retries."""
    exc = future.exception() if not future.cancelled() else None
    return future.cancelled() or (isinstance(exc, BrokerError) and exc.code not in REFUSALS)


def _finish(future: asyncio.Future, error: BrokerError | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
        future.exception()  # retrieved: the answers read it


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("transaction join failed: %r", task.exception())


def _leads(replica: PartitionReplica, term: int) -> bool:
    group = replica.group
    return (group is not None and not group.closed and group.node.role == Role.LEADER
            and group.node.term == term)
