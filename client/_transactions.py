"""A transactional producer's side of transactions (KIP-98): the transaction coordinator's
client and the producer's transaction state.

The coordinator of a transactional id is the leader of its ``__transaction_state``
partition; :class:`TxnCoordinatorClient` finds it (``TransactionCoordinator.
FindCoordinator`` at any node) and follows it when it moves, with the group coordinator
client's retry rules (``_coordinator.py``): NOT_COORDINATOR naming the new one is followed,
COORDINATOR_LOADING and CONCURRENT_TRANSACTIONS are retried after a backoff.

:class:`TransactionManager` is the producer's state machine (names as Kafka's)::

    uninitialized --init_transactions--> ready --begin_transaction--> in_transaction
    in_transaction --commit_transaction / abort_transaction--> ready
    any --fenced (PRODUCER_FENCED) or a failed init--> fatal (close the producer)

A send in a transaction returns at once. Its partition joins the transaction with its
first batch (as KIP-890 part 2): the produce requests name the transactional id (and, as a
hint, the transaction's other partitions of the topic queued so far), and the partition's
leader joins the partition to the transaction at the coordinator while the batch
replicates, answering once both are done (``node/_txn_join.py``); a refused join fails
the batch, and the leader aborts what it wrote. Every record answered means every
partition joined, so ``commit_transaction`` (which flushes first) can send EndTxn.

At the highest epoch (EndTxn cannot move it on, so two transactions would share an
epoch and a join could not tell them apart), partitions are added first, as before: one
AddPartitionsToTxn call adds every partition queued meanwhile
(:meth:`TransactionManager.take_adds` / :meth:`TransactionManager.adds_done`, driven by
the producer's I/O: a thread, or a task in ``raftka.aio``), and a partition's records wait
in the accumulator (its queue is ``txn_gated``) until the call that adds it succeeded. A
failed add fails the records waiting for it. A failed send makes the transaction
abortable: ``commit_transaction`` raises the error, ``abort_transaction`` is the way on.

Written once for both producers: every coordinator call of the manager is a sans-I/O
operation (``init_ops``, ``send_offsets_ops``, ``end_ops``; ``_ops.py``), which the threaded
``Producer`` runs with blocking gRPC (``init``, ``send_offsets``, ``end``) and
``raftka.aio.Producer`` awaits; the add-partitions bookkeeping (``take_adds``,
``adds_done``, :func:`adds_finished`) and the configuration checks
(:func:`transactional_settings`) are shared the same way.

Each EndTxn also asks the coordinator to open the next transaction at once with this
one's partitions (``EndTxnRequest.reopen``): a next transaction over the same partitions
then costs the coordinator no write for its partitions, one write per transaction in all.
Its timeout counts from that EndTxn, so a transaction begun more than half of
``transaction_timeout_ms`` later first ends the reopened one (``reset_ops``: EndTxn abort,
at the first send or ``send_offsets_to_transaction`` of the transaction), and goes on at
the epoch that answers; a coordinator that already let it lapse answers the same way.

``commit_transaction`` returns once the coordinator made the decision durable (KIP-98);
the markers follow asynchronously, so a read_committed reader sees the transaction on each
partition moments later (never partly for good). The epoch moves on with every EndTxn
(``next_epoch``), so the next transaction begins at once, and a partition holds its
batches until the previous transaction's marker is ahead of them (``node/_partition.py``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raftka.client._coordinator import Coordinator, GroupCoordinatorClient
from raftka.client._ops import Ops, Rpc, run_sync
from raftka.v1 import broker_pb2, txn_pb2, txn_pb2_grpc
from raftka.v1.errors import (
    InvalidTxnStateError,
    ProducerFencedError,
    RaftkaError,
)

__all__ = ["ConsumerGroupMetadata", "TransactionDescription", "TransactionManager",
           "TxnCoordinatorClient", "adds_finished", "transactional_settings"]


@dataclass(frozen=True)
class ConsumerGroupMetadata:
    """A group member's identity for ``Producer.send_offsets_to_transaction``
    (``Consumer.group_metadata()``): the group coordinator fences the commit as it fences
    the member's own commits (KIP-447)."""

    group_id: str
    member_id: str = ""
    member_epoch: int = -1


@dataclass(frozen=True)
class TransactionDescription:
    """A transactional id's state at its coordinator (``Admin.describe_transaction``)."""

    transactional_id: str
    producer_id: int
    producer_epoch: int
    state: str  # empty, ongoing, prepare_commit, prepare_abort, complete_commit, complete_abort
    timeout_ms: int
    start_time_ms: int  # when the open transaction began; 0 when none is open
    partitions: tuple[tuple[str, int], ...]
    coordinator_id: int

    @classmethod
    def from_pb(cls, t: Any) -> TransactionDescription:
        return cls(t.transactional_id, t.producer_id, t.producer_epoch, t.state,
                   t.transaction_timeout_ms, t.start_time_ms,
                   tuple((x.topic, p) for x in t.topics for p in x.partitions),
                   t.coordinator_id)


class TxnCoordinatorNotAvailableError(RaftkaError):
    """FindCoordinator answered, but the transactional id's ``__transaction_state``
    partition has no leader yet (an election, or the topic is being created)."""

    retriable = True
    invalid_metadata = True


class TxnCoordinatorClient(GroupCoordinatorClient):
    """``TransactionCoordinator`` RPCs for one transactional id at its coordinator."""

    service = "txn"

    def _default_stub(self, address: str) -> Any:
        return txn_pb2_grpc.TransactionCoordinatorStub(
            self.cluster.channel(address))  # type: ignore[attr-defined]

    def _find_once_ops(self, timeout_s: float) -> Ops[Coordinator]:
        candidates = self.cluster.candidate_addresses()
        address = candidates[self._rotation % len(candidates)]
        request = txn_pb2.FindTxnCoordinatorRequest(transactional_id=self.group_id)
        try:
            resp = yield Rpc(address, "txn", "FindCoordinator", request,
                             min(timeout_s, self.cluster.request_timeout_s),
                             f"FindCoordinator(transactional id {self.group_id!r})")
        except RaftkaError:
            self._rotation += 1
            raise
        target = resp.address or (self.cluster.broker_address(resp.node_id) or "")
        if not resp.node_id or not target:
            self._rotation += 1
            raise TxnCoordinatorNotAvailableError(
                f"the coordinator of transactional id {self.group_id!r} is not elected yet")
        return self._set(resp.node_id, target)


class GroupTxnClient(GroupCoordinatorClient):
    """TxnOffsetCommit at a GROUP's coordinator: found as the group's (GroupCoordinator.
    FindCoordinator), called on its TransactionCoordinator service."""

    service = "txn"

    def _stubs_for(self, address: str, service: str) -> Any:
        if service != "txn":
            return self._stub(address)  # the group's FindCoordinator
        with self._lock:
            key = "txn:" + address
            stub = self._stubs.get(key)
            if stub is None:
                stub = self._stubs[key] = txn_pb2_grpc.TransactionCoordinatorStub(
                    self.cluster.channel(address))  # type: ignore[attr-defined]
            return stub


_ACKS_ALL = broker_pb2.ACKS_ALL

EPOCH_MAX = 32767  # a producer epoch is an int16
UNINITIALIZED, READY, IN_TRANSACTION, FATAL = "uninitialized", "ready", "in_transaction", "fatal"


class TransactionManager:
    """The producer's transaction state (module docstring). Thread-safe."""

    def __init__(self, coordinator: TxnCoordinatorClient, transactional_id: str,
                 timeout_ms: int) -> None:
        self.coordinator = coordinator
        self.transactional_id = transactional_id
        self.timeout_ms = timeout_ms
        self.state = UNINITIALIZED
        self.producer_id = -1
        self.epoch = -1
        # the open transaction's partitions the coordinator has (added), that wait for the
        # next AddPartitionsToTxn (queued), that are in the call in flight (adding); the
        # three are disjoint. Guarded by the owner's lock (the producer's).
        self.partitions: set[tuple[str, int]] = set()
        self.queued: set[tuple[str, int]] = set()
        self.adding: frozenset[tuple[str, int]] = frozenset()
        self.offsets_added = False  # AddOffsetsToTxn made the transaction open
        # commit/abort has begun (Kafka's COMMITTING/ABORTING): no more sends; set under
        # the owner's lock, so a send that waited for buffer room meanwhile sees it
        self.ending = False
        self.error: BaseException | None = None  # makes the open transaction abortable
        # a partition joins the transaction with its first batch: the produce requests name
        # the transactional id and the partition leader joins it (node/_txn_join.py), no
        # AddPartitionsToTxn, no gating. Off (the AddPartitionsToTxn way) once EndTxn left
        # the epoch where it was (at its maximum): a join relies on every transaction
        # having an epoch of its own
        self.joins = True
        # partitions whose batches a node answered without joining them (it predates
        # joins: an upgrade under way); EndTxn adds them first, and the next transactions
        # add partitions first
        self.unjoined: set[tuple[str, int]] = set()
        self.fatal: BaseException | None = None
        # EndTxnRequest.reopen (module docstring): when the EndTxn that reopened the next
        # transaction was sent (monotonic s), and whether the open transaction began too
        # long after it and must end the reopened one before its first send
        self.reopened_at: float | None = None
        self.reset_due = False
        self._lock = threading.RLock()
        self._reset_lock = threading.Lock()

    # ------------------------------------------------------------------ checks
    def _require(self, *states: str, what: str) -> None:
        if self.state == FATAL:
            raise ProducerFencedError(f"{what}: the producer is fenced or failed for good "
                                      f"({self.fatal}); close it and create a new one") \
                from self.fatal
        if self.state not in states:
            hint = {UNINITIALIZED: "call init_transactions() first",
                    READY: "call begin_transaction() first",
                    IN_TRANSACTION: "a transaction is open: commit or abort it first"}
            raise InvalidTxnStateError(f"{what} while {self.state.replace('_', ' ')}: "
                                       f"{hint.get(self.state, '')}")

    def _fencing(self, ops: Ops[Any]) -> Ops[Any]:
        """``ops``, with a PRODUCER_FENCED answer making the producer fatal."""
        try:
            return (yield from ops)
        except ProducerFencedError as e:
            self.state, self.fatal = FATAL, e
            raise

    def _call_ops(self, method: str, request: Any, timeout_s: float) -> Ops[Any]:
        return self._fencing(self.coordinator.call_ops(method, request, timeout_s))

    def _run(self, ops: Ops[Any]) -> Any:
        """The threaded producer's driver (the asyncio one awaits the same operations)."""
        cluster = self.coordinator.cluster if self.coordinator is not None else None
        return run_sync(cluster, ops)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ API
    # Each call is an operation (``_ops.py``): the decisions live here once, the threaded
    # producer runs them with ``run_sync`` (the blocking methods below, under the lock), the
    # asyncio producer with ``await run(...)``. ``*_ops`` check the state when started.

    def init(self, timeout_s: float) -> tuple[int, int]:
        with self._lock:
            return self._run(self.init_ops(timeout_s))  # type: ignore[no-any-return]

    def init_ops(self, timeout_s: float) -> Ops[tuple[int, int]]:
        self._require(UNINITIALIZED, READY, what="init_transactions()")
        r = yield from self._call_ops("InitTransactions", txn_pb2.InitTransactionsRequest(
            transactional_id=self.transactional_id,
            transaction_timeout_ms=self.timeout_ms), timeout_s)
        self.producer_id, self.epoch = r.producer_id, r.producer_epoch
        self.reopened_at, self.reset_due = None, False
        self.state = READY
        return self.producer_id, self.epoch

    def begin(self) -> None:
        with self._lock:
            self._require(READY, what="begin_transaction()")
            if self.queued or self.adding:  # end() waits for them: a bug if not
                raise RuntimeError("begin_transaction() while partitions are being added")
            self.partitions = set()
            self.unjoined = set()
            self.offsets_added = False
            self.error = None
            self.ending = False
            self.reset_due = self.reopened_at is not None and \
                time.monotonic() - self.reopened_at > self.timeout_ms / 2000
            self.state = IN_TRANSACTION

    def check_send(self) -> None:
        self._require(IN_TRANSACTION, what="send()")
        if self.ending:
            raise InvalidTxnStateError("send() while the transaction is being committed or "
                                       "aborted: send it in the next transaction "
                                       "(begin_transaction() once this one ended)")

    def reset(self, timeout_s: float, on_epoch: Callable[[tuple[int, int]], None]) -> None:
        """The threaded producer's :meth:`reset_ops` (before the transaction's first send
        or offsets): ``on_epoch`` gets the producer id and epoch to go on with before any
        other send may see the reset done."""
        with self._reset_lock:
            if not self.reset_due:
                return
            with self._lock:
                producer = self._run(self.reset_ops(timeout_s))
            on_epoch(producer)
            self.reset_due = False

    def reset_ops(self, timeout_s: float) -> Ops[tuple[int, int]]:
        """End the reopened transaction this one began too long after (module docstring):
        EndTxn abort at its epoch, answered with the epoch to go on with (also once the
        coordinator let it lapse). The caller applies it, then clears ``reset_due``."""
        r = yield from self._call_ops("EndTxn", txn_pb2.EndTxnRequest(
            transactional_id=self.transactional_id, producer_id=self.producer_id,
            producer_epoch=self.epoch, next_epoch=True, result=txn_pb2.TXN_ABORT),
            timeout_s)
        self._take_epoch(r)
        self.reopened_at = None
        return self.producer_id, self.epoch

    def _take_epoch(self, r: Any) -> None:
        """An EndTxnResponse's epoch for the next transaction (``next_epoch``)."""
        if r.producer_id == self.producer_id and r.producer_epoch > self.epoch:
            self.epoch = r.producer_epoch
        else:  # the epoch stayed (its maximum): partitions are added first from now on
            self.joins = False

    def start_end(self, what: str) -> None:
        """commit/abort begins: from now on a send fails (``check_send``) rather than join
        a transaction whose records are being flushed. A failed commit may be retried or
        the transaction aborted: both stay allowed."""
        self._require(IN_TRANSACTION, what=what)
        self.ending = True

    # ------------------------------------------------------------------ adding partitions
    # All under the owner's lock (the producer's); the owner's I/O makes the calls.

    def queue_partition(self, key: tuple[str, int]) -> bool:
        """A record of the transaction was queued for ``key``: whether its partition's
        records must wait for an AddPartitionsToTxn (then the owner gates its queue)."""
        if key in self.partitions:
            return False
        if self.joining():  # its leader joins it with its first batch
            self.partitions.add(key)
            return False
        if key not in self.adding:
            self.queued.add(key)
        return True

    def joining(self) -> bool:
        """Whether the open transaction's partitions join with their first batch (at the
        highest epoch, EndTxn cannot move the epoch on: partitions are added first)."""
        return self.joins and self.epoch < EPOCH_MAX

    def not_joined(self, topic: str, partition: int) -> None:
        """A transactional batch was answered without its partition joined (the node does
        not join partitions): add it with AddPartitionsToTxn before EndTxn."""
        with self._lock:
            if self.joining() and self.state == IN_TRANSACTION:
                self.unjoined.add((topic, partition))

    def hints(self, topic: str, partition: int) -> list[int]:
        """The transaction's other partitions of ``topic`` known so far, for a produce
        request to name (its leader joins them in the same coordinator write)."""
        return sorted(p for t, p in list(self.partitions) if t == topic and p != partition)

    def take_adds(self) -> Any | None:
        """The next AddPartitionsToTxnRequest (every queued partition), or None when
        nothing is queued or a call is still out (one at a time: the next one carries
        what queued meanwhile)."""
        if self.adding or not self.queued:
            return None
        self.adding, self.queued = frozenset(self.queued), set()
        by_topic: dict[str, list[int]] = {}
        for topic, partition in sorted(self.adding):
            by_topic.setdefault(topic, []).append(partition)
        return txn_pb2.AddPartitionsToTxnRequest(
            transactional_id=self.transactional_id, producer_id=self.producer_id,
            producer_epoch=self.epoch,
            topics=[txn_pb2.TxnTopicPartitions(topic=t, partitions=ps)
                    for t, ps in by_topic.items()])

    def adds_done(self, error: BaseException | None) -> frozenset[tuple[str, int]]:
        """The call of :meth:`take_adds` ended (``error`` None: the partitions are in the
        transaction); the partitions it was for (the owner ungates them, and on an error
        fails their records, as does every later queued one's)."""
        keys, self.adding = self.adding, frozenset()
        if error is None:
            self.partitions |= keys
        else:
            self.failed(error)
        return keys

    def adds_idle(self) -> bool:
        return not self.queued and not self.adding

    def send_offsets(self, offsets: dict[tuple[str, int], int],
                     group: ConsumerGroupMetadata, timeout_s: float) -> None:
        with self._lock:
            self._run(self.send_offsets_ops(offsets, group, timeout_s))

    def send_offsets_ops(self, offsets: dict[tuple[str, int], int],
                         group: ConsumerGroupMetadata, timeout_s: float) -> Ops[None]:
        """KIP-447: the group's offsets partition joins the transaction (AddOffsetsToTxn
        at our coordinator), then the offsets are written pending at the group's
        coordinator (TxnOffsetCommit); they count iff the transaction commits."""
        self._require(IN_TRANSACTION, what="send_offsets_to_transaction()")
        if self.ending:
            raise InvalidTxnStateError("send_offsets_to_transaction() while the transaction "
                                       "is being committed or aborted")
        try:
            yield from self._call_ops("AddOffsetsToTxn", txn_pb2.AddOffsetsToTxnRequest(
                transactional_id=self.transactional_id, producer_id=self.producer_id,
                producer_epoch=self.epoch, group_id=group.group_id), timeout_s)
            self.offsets_added = True  # open at the coordinator: EndTxn must end it
            request = txn_pb2.TxnOffsetCommitRequest(
                transactional_id=self.transactional_id, producer_id=self.producer_id,
                producer_epoch=self.epoch, group_id=group.group_id,
                member_id=group.member_id, member_epoch=group.member_epoch)
            for (topic, partition), offset in sorted(offsets.items()):
                request.offsets.add(topic=topic, partition=partition, offset=int(offset))
            client = GroupTxnClient(self.coordinator.cluster, group.group_id)
            yield from self._fencing(client.call_ops("TxnOffsetCommit", request, timeout_s))
        except RaftkaError as e:
            self.error = self.error or e
            raise

    def records_failed(self, errors: list[BaseException | None]) -> None:
        """Before a commit: the first error among the transaction's records (their
        futures' exceptions) makes it abortable."""
        for err in errors:
            if err is not None:
                self.failed(err)
                return

    def failed(self, error: BaseException) -> None:
        """A record of the open transaction failed: only an abort can end it now."""
        with self._lock:
            if self.state == IN_TRANSACTION and self.error is None:
                self.error = error
            if isinstance(error, ProducerFencedError):
                self.state, self.fatal = FATAL, error

    def end(self, commit: bool, timeout_s: float) -> tuple[int, int]:
        with self._lock:
            return self._run(self.end_ops(commit, timeout_s))  # type: ignore[no-any-return]

    def end_ops(self, commit: bool, timeout_s: float) -> Ops[tuple[int, int]]:
        """EndTxn (when anything was added); the owner flushed the transaction's records
        and waited for its adds first. The producer id and epoch for the next transaction:
        the coordinator moves the epoch on with the decision (``next_epoch``, KIP-890
        style), so the next transaction need not wait for this one's markers; the owner
        restarts its sequences at the new epoch (``IdempotenceState.set_producer_id``)."""
        what = "commit_transaction()" if commit else "abort_transaction()"
        self._require(IN_TRANSACTION, what=what)
        if commit and self.error is not None:
            raise InvalidTxnStateError(f"commit_transaction(): a send of this transaction "
                                       f"failed ({self.error}); abort it") from self.error
        if self.queued or self.adding:  # the owner waits for the adds first
            raise RuntimeError(f"{what} while partitions are being added")
        if self.unjoined:  # answered by nodes that do not join partitions
            unjoined, self.joins = sorted(self.unjoined), False
            by_topic: dict[str, list[int]] = {}
            for topic, partition in unjoined:
                by_topic.setdefault(topic, []).append(partition)
            yield from self._call_ops("AddPartitionsToTxn", txn_pb2.AddPartitionsToTxnRequest(
                transactional_id=self.transactional_id, producer_id=self.producer_id,
                producer_epoch=self.epoch,
                topics=[txn_pb2.TxnTopicPartitions(topic=t, partitions=ps)
                        for t, ps in by_topic.items()]), timeout_s)
            self.unjoined = set()
        if self.partitions or self.offsets_added:
            sent = time.monotonic()
            r = yield from self._call_ops("EndTxn", txn_pb2.EndTxnRequest(
                transactional_id=self.transactional_id, producer_id=self.producer_id,
                producer_epoch=self.epoch, next_epoch=True, reopen=True,
                result=txn_pb2.TXN_COMMIT if commit else txn_pb2.TXN_ABORT), timeout_s)
            self._take_epoch(r)
            self.reopened_at = sent if r.reopened else None
        # (nothing sent: the transaction reopened before, if any, stays as it was)
        self.reset_due = False
        self.partitions = set()
        self.offsets_added = False
        self.error = None
        self.ending = False
        self.state = READY
        return self.producer_id, self.epoch


def transactional_settings(transactional_id: str | None, enable_idempotence: bool | None,
                           acks_value: int, timeout_ms: int) -> bool | None:
    """Both producers' checks of a transactional configuration; the ``enable_idempotence``
    to use (a transactional producer is idempotent)."""
    if transactional_id is None:
        return enable_idempotence
    if not transactional_id:
        raise ValueError("transactional_id must not be empty")
    if enable_idempotence is False:
        raise ValueError("a transactional producer is idempotent: leave "
                         "enable_idempotence unset or True")
    if acks_value != _ACKS_ALL:
        raise ValueError("a transactional producer needs acks='all'")
    if timeout_ms < 1:
        raise ValueError("transaction_timeout_ms must be at least 1")
    return True


def adds_finished(txn: TransactionManager, queues: dict[Any, Any],
                  error: BaseException | None) -> list[Any]:
    """An AddPartitionsToTxn call ended (both producers' I/O, under their lock): its
    partitions' queues (the accumulator's) are ungated; on an error, the batches of
    theirs not yet sent are returned, for the owner to fail with ``error``."""
    failing: list[Any] = []
    for key in txn.adds_done(error):
        q = queues.get(key)
        if q is None:
            continue
        q.txn_gated = False
        if error is not None:
            failing += [b for b in q.batches if not b.done and not b.attempt]
    return failing
