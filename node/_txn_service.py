"""The TransactionCoordinator gRPC service (txn.proto): transactions on ``__transaction_state``.

This node coordinates the transactional ids whose ``__transaction_state`` partition it leads
(``_txn_state.py``), and only once it applied an entry of its own term (COORDINATOR_LOADING
before; NOT_COORDINATOR naming the leader elsewhere). Calls of one transactional id are
handled one at a time (a lock per id). Rules:

1. ``InitTransactions``: a new id gets a producer id (the cluster's allocator) and epoch 0.
   A known id gets its epoch bumped, which fences every older incarnation: their
   AddPartitionsToTxn/EndTxn fail PRODUCER_FENCED here, their batches PRODUCER_FENCED at
   the partitions once a marker of the new epoch reached them. An open transaction of the
   id is aborted first with the new epoch (rule 3), a prepared one completed (rule 4).
2. ``AddPartitionsToTxn`` (Kafka clients; our producers' partitions join through their
   leaders, rule 8) begins a transaction (state ongoing, start time now) or extends
   it; the set is durable before the answer, so the coordinator knows every partition it
   must write a marker to. More than ``transaction_max_partitions``: INVALID_REQUEST,
   nothing added.
3. ``EndTxn`` writes the decision (prepare_commit / prepare_abort) through Raft and
   answers once it is durable (as Kafka's coordinator does): from then on the outcome is
   fixed and survives any failover. A completion task then writes a marker to every
   partition of the transaction, all in parallel (``WriteTxnMarkers`` at each partition's
   leader, this node's own directly; retried until every partition has one), then the
   completion (complete_commit / complete_abort). A read_committed reader sees the
   transaction on a partition once its marker is there. A retried EndTxn of a prepared or
   completed transaction with the same result is answered OK; the other result is
   INVALID_TXN_STATE.
4. A prepared transaction always completes: while its completion task runs, only that
   task writes the id's state; every call that must change the state of an id whose
   transaction is prepared (AddPartitionsToTxn of the next transaction, InitTransactions,
   AbortTransaction) waits for that task, under the id's lock, for up to
   ``COMPLETION_WAIT_S`` and then answers CONCURRENT_TRANSACTIONS (retriable, as Kafka).
   So the next transaction's batches never reach a partition before the previous one's
   marker: its partitions are added only after every marker is written (but see rule 7). An
   AddPartitionsToTxn/AddOffsetsToTxn waiting so hands the next transaction's state
   (ongoing, its partitions) to the completion task, which writes it in place of the
   completion record (one Raft write less per transaction; the markers are all written
   before it, so a failover after it has nothing left to finish). The resume loop
   (every ``RESUME_INTERVAL_S``) starts the completion task of every prepared transaction
   this node coordinates that has none, which covers a coordinator failover between
   prepare and complete.
5. A transaction open longer than its timeout is aborted by the coordinator with a bumped
   epoch (the producer is fenced, as Kafka does); ``AbortTransaction`` (an operator) does
   the same at once.
6. ``AddOffsetsToTxn`` adds the group's ``__consumer_offsets`` partition to the
   transaction (it gets a marker like any other); ``TxnOffsetCommit``, served by the
   GROUP's coordinator, checks the member as ``CommitOffsets`` does and writes the offsets
   pending there (``_offsets.py``): the marker makes them committed, or drops them.

7. The epoch moves on with every decision (KIP-890 "transactions v2", asked for by the
   producer: ``EndTxn.next_epoch``, which our clients set; Kafka clients do not). The
   decision record keeps the transaction's own epoch as ``marker_epoch`` (its markers carry
   it) and the producer's next one as ``epoch``, answered to EndTxn. The next
   transaction's AddPartitionsToTxn then begins it at once, without waiting for the
   markers: its state (ongoing, the new epoch) records the previous transaction's
   still-unfinished markers (``previous``: epoch, result, partitions), which the completion
   task goes on writing, and which a new coordinator resumes. Order at each partition is
   the partition's rule: a transactional batch of an epoch newer than the producer's open
   transaction there waits until that transaction's marker is proposed ahead of it
   (``_partition.py``), and a marker of an epoch older than the producer's latest batch is
   refused (it is stale: its transaction ended there already, or never reached it). What
   still waits for every previous marker: EndTxn (the decision record forgets
   ``previous``), AddOffsetsToTxn (the group's pending offsets must not meet the previous
   transaction's marker) and InitTransactions/AbortTransaction/the timeout abort (through
   the decision). A retried EndTxn of the old epoch is recognized by ``marker_epoch``.

8. ``JoinTxn``: a partition joins the transaction with its first batch there, its leader
   asking while the batch replicates (``_txn_join.py``; our producers no longer call
   AddPartitionsToTxn, Kafka clients still do). Answered once durable, as rule 2: the
   transaction ongoing at the batch's epoch gets the partition, or one begins with it
   (rules 4 and 7 as for AddPartitionsToTxn), or a decided transaction whose markers are
   not all written already has it (``_covers``: its marker will end what is open there).
   Anything else is refused (PRODUCER_FENCED for an older epoch, INVALID_REQUEST beyond
   the partition limit, ...), and the leader aborts what the producer wrote there. The
   joins of one transaction that wait for the id's lock are made by one write, and a join
   may name more partitions of the transaction (the producer's hint: those its records
   were queued for), added in the same write when within the limit: the three leaders of a
   transaction over three partitions ask at about the same time and the first one's write
   covers the others', so a transaction costs one coordinator write for its partitions,
   as with AddPartitionsToTxn. A leader settling a transaction it found open on its
   partition names no id (it looks up the producer id here); for a producer whose epoch
   stays from one transaction to the next (a Kafka client) whose last transaction ended,
   it is refused rather than begin one (what is open there began after that partition's
   marker). An EndTxn abort with ``next_epoch`` of an id with no transaction open still
   moves the epoch on (``complete_abort`` at the next epoch): a join of that epoch still
   on its way is then refused, so it cannot begin a transaction with data the producer
   gave up on.

9. Reopening (``EndTxn.reopen`` with ``next_epoch``, asked for by our producers): the
   decision record is the producer's next transaction already, ongoing at the next epoch
   with the decided one's ordinary partitions (``reopened``: the decided epoch and
   result), the decided one in ``previous`` for the completion task to mark. The next
   transaction's joins of those partitions are then covered (rule 8): one coordinator
   write per transaction. A retried EndTxn of the decided epoch is answered from
   ``reopened``. The reopened transaction's timeout counts from the decision; past it the
   coordinator lets it lapse (``_lapse``): aborted with markers of the epoch after its
   own, so a later batch of its epoch is refused at the partitions rather than taken for
   a new transaction there (a marker of the batch's own epoch would leave ``_covers``
   unable to tell the two apart), and the producer goes on at the epoch after that
   (``lapsed``: an EndTxn abort of the lapsed epoch is answered with it, a commit refused
   PRODUCER_FENCED). A producer that begins a transaction more than half the timeout after
   the reopening EndTxn ends the reopened one first (``client/_transactions.py``), so an
   idle producer is never fenced. A reopen needs ``REOPEN_EPOCHS`` epochs of room, and
   ordinary partitions (a transaction of offsets only is not reopened).

The coordinator epoch in markers is the term of the coordinator's partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
import grpc

from raftka.v1 import txn_pb2, txn_pb2_grpc
from raftka.v1.errors import error_details
from raftka.raft import Role

from ._broker import Broker
from ._controller_commands import encode_create_topic
from ._errors import BrokerError, Code
from ._forwarding import CHANNEL_OPTIONS, FORWARDED_BY_KEY, ControllerForwarder
from ._group_service import GroupCoordinatorService
from ._offsets import GROUP_ID_MAX, OFFSETS_TOPIC, encode_pending_commits, offsets_partition_for
from ._periodic import every
from ._services import BrokerService, _AtControllerLeader, _handler, _require_leader
from ._txn_join import SETTLE_INTERVAL_S, TxnJoins
from ._txn_state import (
    COMPLETE_ABORT,
    COMPLETE_COMMIT,
    EMPTY,
    ENDED,
    ONGOING,
    PREPARE_ABORT,
    PREPARE_COMMIT,
    PREPARED,
    TRANSACTIONAL_ID_MAX,
    TXN_TOPIC,
    TXN_TOPIC_CONFIGS,
    TXN_TOPIC_PARTITIONS,
    TxnStateReplica,
    encode_state,
    txn_partition_for,
)

log = logging.getLogger("raftka.transactions")

WRITE_TIMEOUT_S = 10.0
MARKER_TIMEOUT_S = 10.0
MARKER_BACKOFF_S = 0.1
RESUME_INTERVAL_S = 0.5
COMPLETION_WAIT_S = 5.0  # rule 4: then CONCURRENT_TRANSACTIONS
EPOCH_MAX = 32767
# rule 9: a reopen needs room for its lapse (the epoch after the reopened one's for its
# markers, the one after that for the producer)
REOPEN_EPOCHS = 3
# what a decision or a new transaction does not inherit from the state before it
_DECISION_KEYS = ("marker_epoch", "previous", "reopened", "lapsed")
# A partition's answer that its marker is not needed: one of an epoch older than the
# producer's latest there is stale (that transaction ended there, or never reached it).
# Not UNKNOWN_TOPIC/UNKNOWN_PARTITION: a node that has not replayed its controller log yet
# (restarted, or recreated empty) answers so for topics that exist, and taking it for a
# deleted topic left a committed transaction unmarked there, which the partition's
# settling then aborted (jepsen-like txn workload with disk faults: non-atomic reads).
# Only this node's own caught-up metadata may say a topic is gone (_markers).
_MARKER_DONE = frozenset({Code.INVALID_PRODUCER_EPOCH})


def _now_ms() -> int:
    return int(time.time() * 1000)


class TransactionCoordinatorService(_AtControllerLeader,
                                    txn_pb2_grpc.TransactionCoordinatorServicer):
    stub_class = txn_pb2_grpc.TransactionCoordinatorStub

    def __init__(self, broker: Broker, forwarder: ControllerForwarder,
                 producer_ids: BrokerService, groups: GroupCoordinatorService) -> None:
        super().__init__(broker, forwarder)
        self._producer_ids = producer_ids
        self._groups = groups
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._channels: dict[int, grpc.aio.Channel] = {}
        self._finishing: set[str] = set()  # ids a timeout abort is being started for
        # rule 4: the completion task of each id whose transaction is prepared (at most one;
        # it alone writes the id's state while it runs)
        self._completing: dict[str, asyncio.Task] = {}
        # rule 4: the next transaction's first state of an id, waiting for the completion
        # task, which writes it in place of the completion record (one Raft write less)
        self._successors: dict[str, tuple[dict, asyncio.Future]] = {}
        # rule 7: the state writes of each id under way (a completion task does not record
        # the completion over a newer state), and per id the (producer id, marker epoch)
        # of the last transaction whose markers are all written
        self._writing: dict[str, int] = defaultdict(int)
        self._marked: dict[str, tuple[int, int]] = {}
        # (topic, partition) -> the node to send its next marker to, from a failed round:
        # the leader a replica named, else the replica after the one that failed (its
        # preferred replica may be up but not leading, or not caught up after a restart)
        self._marker_targets: dict[tuple[str, int], int] = {}
        # rule 8: per (id, producer id, epoch), the JoinTxn calls waiting for the id's lock:
        # (partitions joining, hinted partitions, their answer), one write for all
        self._joining: dict[tuple[str, int, int],
                            tuple[set[tuple[str, int]], set[tuple[str, int]],
                                  asyncio.Future]] = {}
        self._task: asyncio.Task | None = None
        # rule 8, at the partitions this node leads: their joins (_txn_join.py)
        self.joins = TxnJoins(self._ask_join)
        self._settle_task: asyncio.Task | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._resume_loop(), name="txn-resume")
        self._settle_task = loop.create_task(self._settle_loop(), name="txn-settle")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._settle_task is not None:
            self._settle_task.cancel()
        for task in list(self._completing.values()):
            task.cancel()
        channels, self._channels = self._channels, {}
        await asyncio.gather(*(c.close() for c in channels.values()), return_exceptions=True)

    # ------------------------------------------------------------------ routing
    def _replica(self, tid: str) -> TxnStateReplica:
        _check_id(tid)
        meta = self.broker.controller.state.topic(TXN_TOPIC)
        if meta is None:
            raise BrokerError(Code.COORDINATOR_LOADING, f"the {TXN_TOPIC} topic is being "
                              "created; retry shortly", retriable=True)
        pnum = txn_partition_for(tid, len(meta.partitions))
        replica = self.broker.partitions.get((TXN_TOPIC, pnum))
        leader = self.broker.leader_of(meta, meta.partitions[pnum])
        if not isinstance(replica, TxnStateReplica) or replica.group is None \
                or replica.group.node.role != Role.LEADER:
            raise BrokerError(
                Code.NOT_COORDINATOR,
                f"node {self.broker.node_id} is not the coordinator of transactional id "
                f"{tid!r}" + (f"; node {leader} is" if leader and leader != self.broker.node_id
                              else "; an election is in progress"),
                retriable=True, leader_id=leader if leader != self.broker.node_id else 0)
        if not replica.leader_ready():
            raise BrokerError(Code.COORDINATOR_LOADING, f"the coordinator of transactional "
                              f"id {tid!r} is catching up on its log; retry shortly",
                              retriable=True)
        return replica

    async def _write(self, replica: TxnStateReplica, tid: str, state: dict) -> dict:
        state = dict(state, update_ms=_now_ms())
        if "previous" in state and state["previous"] is None:
            del state["previous"]
        self._writing[tid] += 1
        try:
            await replica.produce(encode_state(tid, state, state["update_ms"]), -1,
                                  WRITE_TIMEOUT_S)
        finally:
            self._writing[tid] -= 1
            if not self._writing[tid]:
                del self._writing[tid]
        return state

    def _current(self, replica: TxnStateReplica, tid: str, pid: int, epoch: int) -> dict:
        """The id's state, checked against the caller's producer id and epoch."""
        state = replica.transactions.get(tid)
        if state is None:
            raise BrokerError(Code.TRANSACTIONAL_ID_NOT_FOUND, f"transactional id {tid!r} is "
                              "not known here; call InitTransactions first")
        if pid != state["pid"] or epoch < state["epoch"]:
            raise BrokerError(Code.PRODUCER_FENCED, f"producer id {pid} epoch {epoch} is "
                              f"fenced: transactional id {tid!r} is at producer id "
                              f"{state['pid']} epoch {state['epoch']} (a newer instance "
                              "initialized it, or the coordinator aborted a timed-out "
                              "transaction); close this producer")
        if epoch > state["epoch"]:
            raise BrokerError(Code.INVALID_PRODUCER_EPOCH, f"epoch {epoch} is newer than "
                              f"transactional id {tid!r}'s ({state['epoch']})")
        return state

    # ------------------------------------------------------------------ RPCs
    @_handler
    async def FindCoordinator(self, request, context):  # noqa: N802
        _check_id(request.transactional_id)
        meta = self.broker.controller.state.topic(TXN_TOPIC)
        if meta is None:
            await self._create_topic(context, request)
            return txn_pb2.FindTxnCoordinatorResponse()
        pnum = txn_partition_for(request.transactional_id, len(meta.partitions))
        leader = self.broker.leader_of(meta, meta.partitions[pnum])
        return txn_pb2.FindTxnCoordinatorResponse(node_id=leader,
                                                  address=self.broker.address_of(leader))

    async def _create_topic(self, context, request) -> None:
        async def local(timeout_s: float) -> txn_pb2.FindTxnCoordinatorResponse:
            if self.broker.controller.state.topic(TXN_TOPIC) is None:
                result = await self.broker.controller.propose(encode_create_topic(
                    TXN_TOPIC, TXN_TOPIC_PARTITIONS, min(3, len(self.broker.config.peers)),
                    TXN_TOPIC_CONFIGS, internal=True), timeout_s)
                if not result.ok and result.code != Code.TOPIC_EXISTS:
                    raise BrokerError(result.code, result.message)
            return txn_pb2.FindTxnCoordinatorResponse()

        await self.at_controller_leader(context, "FindCoordinator", request,
                                        f"create {TXN_TOPIC}", local)

    @_handler
    async def InitTransactions(self, request, context):  # noqa: N802
        tid = request.transactional_id
        timeout_ms = request.transaction_timeout_ms
        max_ms = self.broker.config.transaction_max_timeout_ms
        if not 1 <= timeout_ms <= max_ms:
            raise BrokerError(Code.INVALID_TRANSACTION_TIMEOUT, f"transaction_timeout_ms "
                              f"{timeout_ms} must be within 1..{max_ms} (the node's "
                              "transaction_max_timeout_ms)")
        replica = self._replica(tid)
        async with self._locks[tid]:
            replica = self._replica(tid)
            state = replica.transactions.get(tid)
            if state is None:
                answer = await self._producer_ids.new_producer_id(context)
                pid, epoch = answer.producer_id, 0
            else:
                pid, epoch = state["pid"], state["epoch"] + 1
                if epoch > EPOCH_MAX:  # a new producer id starts again at epoch 0
                    answer = await self._producer_ids.new_producer_id(context)
                    pid, epoch = answer.producer_id, 0
                if state["state"] == ONGOING:
                    # abort the open transaction with the new epoch: fences the old one
                    state = await self._end(replica, tid, dict(state, epoch=epoch)
                                            if pid == state["pid"] else state, commit=False)
                if state["state"] in PREPARED:
                    state = await self._wait_completed(replica, tid, state)
            await self._write(replica, tid, {
                "pid": pid, "epoch": epoch, "state": EMPTY, "timeout_ms": timeout_ms,
                "start_ms": 0, "partitions": [], "groups": []})
        return txn_pb2.InitTransactionsResponse(producer_id=pid, producer_epoch=epoch)

    @_handler
    async def AddPartitionsToTxn(self, request, context):  # noqa: N802
        wanted = {(t.topic, p) for t in request.topics for p in t.partitions}
        if not wanted:
            raise BrokerError(Code.INVALID_REQUEST, "name at least one partition")
        self._check_partitions(wanted)
        await self._add(request.transactional_id, request.producer_id,
                        request.producer_epoch, wanted, set())
        return txn_pb2.AddPartitionsToTxnResponse()

    async def _add(self, tid: str, pid: int, epoch: int, wanted: set[tuple[str, int]],
                   groups: set[str]) -> None:
        """Rule 2 for AddPartitionsToTxn and AddOffsetsToTxn."""
        replica = self._replica(tid)
        async with self._locks[tid]:
            await self._add_locked(self._replica(tid), tid, pid, epoch, wanted, groups)

    async def _add_locked(self, replica: TxnStateReplica, tid: str, pid: int, epoch: int,
                          wanted: set[tuple[str, int]], groups: set[str]) -> None:
        """Rule 2, under the id's lock."""
        state = self._current(replica, tid, pid, epoch)
        if state["state"] in PREPARED:
            if "marker_epoch" in state and not groups:  # rule 7: at once
                self._check_limit(tid, wanted)
                await self._write(replica, tid, dict(
                    _next_transaction(state), start_ms=_now_ms(),
                    partitions=sorted([t, p] for t, p in wanted),
                    previous=self._unmarked(tid, state)))
                if self._unmarked(tid, state) is not None:
                    self._complete_later(replica, tid, state)  # runs, or resumes
                return
            # rule 4: after the previous one's markers
            if await self._begin_after(replica, tid, state, wanted, groups):
                return
            state = self._current(replica, tid, pid, epoch)
        if groups and state.get("previous"):  # rule 7: offsets after every marker
            state = await self._previous_marked(replica, tid, state)
        ongoing = state["state"] == ONGOING
        have = {tuple(x) for x in state["partitions"]} if ongoing else set()
        have_groups = set(state.get("groups", [])) if ongoing else set()
        union = have | wanted
        self._check_limit(tid, union)
        if ongoing and union == have and groups <= have_groups:
            return
        if not ongoing:
            state = dict(_next_transaction(state), start_ms=_now_ms())
        previous = state.get("previous")
        if previous is not None:
            state = dict(state, previous=self._unmarked(tid, state, previous))
        await self._write(replica, tid, dict(
            state, partitions=sorted([t, p] for t, p in union),
            groups=sorted(have_groups | groups)))

    @_handler
    async def JoinTxn(self, request, context):  # noqa: N802
        """Rule 8: a partition leader joins its partition to the transaction."""
        return await self._join_request(request)

    async def _join_request(self, request: txn_pb2.JoinTxnRequest) -> txn_pb2.JoinTxnResponse:
        joining = (request.topic, request.partition)
        self._check_partitions({joining})
        pid, epoch = request.producer_id, request.producer_epoch
        if request.transactional_id:
            hints = {(t.topic, p) for t in request.topics for p in t.partitions}
            await self.join(request.transactional_id, pid, epoch, joining,
                            self._valid_partitions(hints - {joining}))
            return txn_pb2.JoinTxnResponse(found=True)
        led = self._led_replicas()
        for replica in led:  # settling (rule 8): which id is the producer id's
            for tid, state in list(replica.transactions.items()):
                if state["pid"] == pid:
                    await self.join(tid, pid, epoch, joining, set(), settling=True)
                    return txn_pb2.JoinTxnResponse(found=True)
        return txn_pb2.JoinTxnResponse(found=False,
                                       coordinated=[r.partition for r in led])

    async def join(self, tid: str, pid: int, epoch: int, joining: tuple[str, int],
                   hints: set[tuple[str, int]], settling: bool = False) -> None:
        """Rule 8. Joins of one transaction that arrive while its id's lock is held wait
        together and make one write. ``settling``: a partition leader settling what it
        found open, looked up by producer id (it may be a Kafka client's)."""
        if settling:
            async with self._locks[tid]:
                replica = self._replica(tid)
                state = replica.transactions.get(tid)
                if self._covers(tid, state, pid, epoch, joining):
                    return
                if state is not None and state["state"] in (COMPLETE_COMMIT, COMPLETE_ABORT) \
                        and "marker_epoch" not in state and state["epoch"] == epoch:
                    # a Kafka client's (its epoch stays from one transaction to the next):
                    # this partition's marker came already, what is open began after it
                    raise BrokerError(Code.INVALID_TXN_STATE, f"{tid!r} has no open "
                                      "transaction that this partition is part of")
                await self._add_locked(replica, tid, pid, epoch, {joining}, set())
            return
        key = (tid, pid, epoch)
        batch = self._joining.get(key)
        if batch is not None:  # the next write of this id takes ours too
            batch[0].add(joining)
            batch[1].update(hints)
            await asyncio.shield(batch[2])
            return
        batch = ({joining}, set(hints), asyncio.get_running_loop().create_future())
        self._joining[key] = batch
        try:
            replica = self._replica(tid)
            async with self._locks[tid]:
                if self._joining.get(key) is batch:
                    del self._joining[key]
                replica = self._replica(tid)
                state = replica.transactions.get(tid)
                wanted = {tp for tp in batch[0]
                          if not self._covers(tid, state, pid, epoch, tp)}
                if wanted:
                    extra = {tp for tp in batch[1] - wanted
                             if not self._covers(tid, state, pid, epoch, tp)}
                    have = (len(state["partitions"]) if state is not None
                            and state["state"] == ONGOING else 0)
                    if have + len(wanted) + len(extra) <= \
                            self.broker.config.transaction_max_partitions:
                        wanted |= extra  # the hints only when they fit
                    await self._add_locked(replica, tid, pid, epoch, wanted, set())
        except BaseException as exc:
            if self._joining.get(key) is batch:
                del self._joining[key]
            if not batch[2].done():
                batch[2].set_exception(exc)
                batch[2].exception()  # retrieved: the waiters get it through the future
            raise
        if not batch[2].done():
            batch[2].set_result(None)

    def _covers(self, tid: str, state: dict | None, pid: int, epoch: int,
                tp: tuple[str, int]) -> bool:
        """Rule 8: a marker of ``epoch`` or later is still to reach ``tp`` for ``pid``'s
        transaction there: the transaction ongoing at ``epoch`` has ``tp``, or a decided one
        (prepared, or the previous one of rule 7) whose markers are not all written."""
        if state is None or state["pid"] != pid:
            return False
        entry = [tp[0], tp[1]]
        kind = state["state"]
        if kind == ONGOING and state["epoch"] == epoch and entry in state["partitions"]:
            return True
        if kind in PREPARED and state.get("marker_epoch", state["epoch"]) >= epoch \
                and entry in state["partitions"] and self._unmarked(
                    tid, state, None if "marker_epoch" in state else {
                        "epoch": state["epoch"], "partitions": state["partitions"],
                        "commit": kind == PREPARE_COMMIT}) is not None:
            return True
        previous = state.get("previous")
        return bool(previous and previous["epoch"] >= epoch
                    and entry in previous["partitions"]
                    and self._unmarked(tid, state, previous) is not None)

    def _valid_partitions(self, wanted: set[tuple[str, int]]) -> set[tuple[str, int]]:
        """The ones of ``wanted`` that are partitions of ordinary topics (hints)."""
        state = self.broker.controller.state
        out = set()
        for topic, p in wanted:
            meta = state.topic(topic)
            if meta is not None and not meta.internal and 0 <= p < len(meta.partitions):
                out.add((topic, p))
        return out

    def _check_limit(self, tid: str, partitions: set[tuple[str, int]]) -> None:
        limit = self.broker.config.transaction_max_partitions
        if len(partitions) > limit:
            raise BrokerError(Code.INVALID_REQUEST, f"transaction of {tid!r} would touch "
                              f"{len(partitions)} partitions, more than the maximum {limit} "
                              "(node config transaction_max_partitions); nothing added")

    def _unmarked(self, tid: str, state: dict, previous: dict | None = None) -> dict | None:
        """Rule 7: the markers still to write before ``state``'s transaction may end
        (``previous``, or those of ``state`` itself when it is the prepared one); None once
        the completion task wrote them all."""
        if previous is None:
            previous = {"epoch": state["marker_epoch"],
                        "commit": state["state"] == PREPARE_COMMIT,
                        "partitions": state["partitions"]}
        if self._marked.get(tid) == (state["pid"], previous["epoch"]):
            return None
        return previous

    async def _previous_marked(self, replica: TxnStateReplica, tid: str, state: dict
                               ) -> dict:
        """Rule 7 (under the id's lock): wait until every marker of the transaction
        before ``state``'s is written (CONCURRENT_TRANSACTIONS after COMPLETION_WAIT_S);
        ``state`` without them."""
        previous = state.get("previous")
        if previous is None or self._unmarked(tid, state, previous) is None:
            return dict(state, previous=None)
        await self._await_completion(replica, tid, state)
        if self._unmarked(tid, state, previous) is not None:
            raise _still_completing(tid)
        return dict(state, previous=None)

    @_handler
    async def AddOffsetsToTxn(self, request, context):  # noqa: N802
        group_id = request.group_id
        meta = self.broker.controller.state.topic(OFFSETS_TOPIC)
        if not group_id or len(group_id) > GROUP_ID_MAX:
            raise BrokerError(Code.INVALID_REQUEST, f"group_id must be 1..{GROUP_ID_MAX} "
                              "characters")
        if meta is None:
            raise BrokerError(Code.COORDINATOR_LOADING, f"{OFFSETS_TOPIC} is being created; "
                              "retry shortly", retriable=True)
        partition = offsets_partition_for(group_id, len(meta.partitions))
        await self._add(request.transactional_id, request.producer_id,
                        request.producer_epoch, {(OFFSETS_TOPIC, partition)}, {group_id})
        return txn_pb2.AddOffsetsToTxnResponse()

    @_handler
    async def TxnOffsetCommit(self, request, context):  # noqa: N802
        """At the group's coordinator (module docstring of txn.proto): pending offsets."""
        groups = self._groups
        replica = groups._replica(request.group_id)
        commits = groups._validated_commits(request.offsets)
        current = replica.producers.current_epoch(request.producer_id)
        if current is not None and request.producer_epoch < current:
            raise BrokerError(Code.PRODUCER_FENCED, f"producer id {request.producer_id} "
                              f"epoch {request.producer_epoch} is fenced (epoch {current} "
                              "reached the group's offsets partition)")
        c = groups._coordinated(request.group_id, replica)
        c.group.check_commit(request.member_id, request.member_epoch,
                             [(t, p) for t, p, _, _ in commits])
        await replica.produce(encode_pending_commits(
            request.group_id, request.producer_id, commits, _now_ms()), -1, WRITE_TIMEOUT_S)
        return txn_pb2.TxnOffsetCommitResponse()

    def _check_partitions(self, wanted: set[tuple[str, int]]) -> None:
        state = self.broker.controller.state
        for topic, p in sorted(wanted):
            meta = state.topic(topic)
            if (meta is None or not 0 <= p < len(meta.partitions)) \
                    and not self.broker.metadata_caught_up():
                # not a refusal: a partition leader aborts its part on one (_txn_join.py)
                raise BrokerError(Code.COORDINATOR_LOADING, f"the coordinator (node "
                                  f"{self.broker.node_id}) has not caught up with the "
                                  f"cluster metadata for {topic}/{p} yet; retry",
                                  retriable=True)
            if meta is None:
                raise BrokerError(Code.UNKNOWN_TOPIC, f"topic {topic!r} does not exist")
            if meta.internal:
                raise BrokerError(Code.INVALID_REQUEST, f"{topic} is internal; transactions "
                                  "write ordinary topics")
            if not 0 <= p < len(meta.partitions):
                raise BrokerError(Code.UNKNOWN_PARTITION, f"topic {topic!r} has partitions "
                                  f"0..{len(meta.partitions) - 1}, not {p}")

    @_handler
    async def EndTxn(self, request, context):  # noqa: N802
        tid = request.transactional_id
        if request.result not in (txn_pb2.TXN_COMMIT, txn_pb2.TXN_ABORT):
            raise BrokerError(Code.INVALID_REQUEST, "result must be TXN_COMMIT or TXN_ABORT")
        commit = request.result == txn_pb2.TXN_COMMIT
        replica = self._replica(tid)
        async with self._locks[tid]:
            replica = self._replica(tid)
            state = replica.transactions.get(tid)
            answered = self._reopen_retry(tid, state, request, commit)
            if answered is not None:
                return answered
            if state is not None and state["state"] not in (EMPTY, ONGOING) \
                    and state.get("marker_epoch") == request.producer_epoch \
                    and state["pid"] == request.producer_id:
                pass  # rule 7: a retry of the EndTxn that moved the epoch on
            else:
                state = self._current(replica, tid, request.producer_id,
                                      request.producer_epoch)
                if not commit and request.next_epoch and state["state"] in ENDED \
                        and state["epoch"] < EPOCH_MAX:
                    # rule 8: an abort with nothing open here still moves the epoch on, so
                    # a join of that epoch still on its way is refused (and its partition
                    # aborts what it wrote) rather than begin a transaction with it
                    state = await self._write(replica, tid, dict(
                        _next_transaction(state), state=COMPLETE_ABORT, start_ms=0,
                        marker_epoch=state["epoch"], epoch=state["epoch"] + 1))
                    return txn_pb2.EndTxnResponse(producer_id=state["pid"],
                                                  producer_epoch=state["epoch"])
                if "marker_epoch" in state and state["state"] != ONGOING:
                    raise BrokerError(Code.INVALID_TXN_STATE, f"{tid!r} has no open "
                                      "transaction (its last one ended)")
            kind = state["state"]
            if kind in PREPARED:
                if (kind == PREPARE_COMMIT) != commit:
                    raise BrokerError(Code.INVALID_TXN_STATE, f"{tid!r} is completing a "
                                      f"{'commit' if kind == PREPARE_COMMIT else 'abort'}")
                self._complete_later(replica, tid, state)  # a retry: the decision stands
            elif kind in (COMPLETE_COMMIT, COMPLETE_ABORT):
                if (kind == COMPLETE_COMMIT) != commit:
                    raise BrokerError(Code.INVALID_TXN_STATE, f"the last transaction of "
                                      f"{tid!r} was {kind.split('_')[1]}ed; no transaction "
                                      "is open")
            elif kind == EMPTY:
                raise BrokerError(Code.INVALID_TXN_STATE, f"{tid!r} has no open transaction "
                                  "(nothing was sent in it)")
            else:
                state = await self._end(replica, tid, state, commit, request.next_epoch,
                                        reopen=request.reopen)
        return txn_pb2.EndTxnResponse(producer_id=state["pid"], producer_epoch=state["epoch"],
                                      reopened=state["state"] == ONGOING)

    def _reopen_retry(self, tid: str, state: dict | None, request: txn_pb2.EndTxnRequest,
                      commit: bool) -> txn_pb2.EndTxnResponse | None:
        """Rule 9: the answer to a retry of the EndTxn that reopened the transaction open
        now, and to an EndTxn of a reopened transaction the coordinator let lapse; None
        for any other call."""
        if state is None or state["pid"] != request.producer_id:
            return None
        reopened = state.get("reopened")
        if state["state"] == ONGOING and reopened and reopened[0] == request.producer_epoch:
            if reopened[1] != commit:
                raise BrokerError(Code.INVALID_TXN_STATE, f"the transaction of {tid!r} at "
                                  f"epoch {reopened[0]} was {'commit' if reopened[1] else 'abort'}"
                                  "ed; no transaction of that epoch is open")
            return txn_pb2.EndTxnResponse(producer_id=state["pid"],
                                          producer_epoch=state["epoch"], reopened=True)
        if state.get("lapsed") == request.producer_epoch and state["state"] != ONGOING:
            if commit:
                raise BrokerError(Code.PRODUCER_FENCED, (
                    f"the transaction of {tid!r} at epoch {request.producer_epoch} was "
                    "aborted by its coordinator: it timed out (it was opened by the previous "
                    "commit, and its transaction_timeout_ms counts from there) or an "
                    "operator aborted it; close this producer"))
            return txn_pb2.EndTxnResponse(producer_id=state["pid"],
                                          producer_epoch=state["epoch"])
        return None

    @_handler
    async def AbortTransaction(self, request, context):  # noqa: N802
        tid = request.transactional_id
        replica = self._replica(tid)
        async with self._locks[tid]:
            replica = self._replica(tid)
            state = replica.transactions.get(tid)
            if state is None:
                raise BrokerError(Code.TRANSACTIONAL_ID_NOT_FOUND,
                                  f"transactional id {tid!r} is not known")
            if state["state"] == ONGOING and state.get("reopened") \
                    and state["epoch"] + 2 <= EPOCH_MAX:
                state = await self._lapse(replica, tid, state, "aborted by an operator")
            elif state["state"] == ONGOING:
                state = await self._abort_fencing(replica, tid, state, "operator")
            elif state["state"] not in PREPARED:
                raise BrokerError(Code.INVALID_TXN_STATE, f"{tid!r} has no open transaction "
                                  f"(state {state['state']})")
            await self._wait_completed(replica, tid, state)
        return txn_pb2.AbortTransactionResponse()

    @_handler
    async def ListTransactions(self, request, context):  # noqa: N802
        """The transactions this node coordinates (ask every node for all of them)."""
        states = set(request.states)
        response = txn_pb2.ListTransactionsResponse()
        for replica in self._led_replicas():
            for tid, state in sorted(replica.transactions.items()):
                if not states or state["state"] in states:
                    response.transactions.append(self._describe(tid, state))
        return response

    @_handler
    async def DescribeTransactions(self, request, context):  # noqa: N802
        response = txn_pb2.DescribeTransactionsResponse()
        for tid in request.transactional_ids:
            replica = self._replica(tid)
            state = replica.transactions.get(tid)
            if state is None:
                raise BrokerError(Code.TRANSACTIONAL_ID_NOT_FOUND,
                                  f"transactional id {tid!r} is not known")
            response.transactions.append(self._describe(tid, state))
        return response

    def _describe(self, tid: str, state: dict) -> txn_pb2.TransactionState:
        out = txn_pb2.TransactionState(
            transactional_id=tid, producer_id=state["pid"], producer_epoch=state["epoch"],
            state=state["state"], transaction_timeout_ms=state["timeout_ms"],
            start_time_ms=state["start_ms"] if state["state"] != EMPTY else 0,
            groups=state.get("groups", []), coordinator_id=self.broker.node_id)
        by_topic: dict[str, list[int]] = {}
        for t, p in state["partitions"]:
            by_topic.setdefault(t, []).append(p)
        for t in sorted(by_topic):
            out.topics.add(topic=t, partitions=sorted(by_topic[t]))
        return out

    def _led_replicas(self) -> list[TxnStateReplica]:
        """This node's ready-led ``__transaction_state`` replicas, by partition (looked up
        by key: sorting every partition of the node each resume pass cost O(partitions))."""
        meta = self.broker.controller.state.topic(TXN_TOPIC)
        if meta is None:
            return []
        partitions = self.broker.partitions
        return [r for p in range(len(meta.partitions))
                if isinstance(r := partitions.get((TXN_TOPIC, p)), TxnStateReplica)
                and r.leader_ready()]

    # ------------------------------------------------------------------ ending
    async def _end(self, replica: TxnStateReplica, tid: str, state: dict,
                   commit: bool, next_epoch: bool = False, reopen: bool = False,
                   lapsed: int | None = None) -> dict:
        """Rule 3 (under the id's lock): the decision, durable; then the completion task.
        The prepared state. ``next_epoch``: rule 7 (the epoch moves on with it);
        ``reopen``: rule 9 (then the state written is the next transaction's, ongoing);
        ``lapsed``: rule 9's lapse of the reopened transaction of that epoch."""
        state = await self._previous_marked(replica, tid, state)
        decided = {k: v for k, v in state.items() if k not in _DECISION_KEYS}
        decided["state"] = PREPARE_COMMIT if commit else PREPARE_ABORT
        if lapsed is not None:
            decided["lapsed"] = lapsed
        if next_epoch and state["epoch"] < EPOCH_MAX:
            decided["marker_epoch"], decided["epoch"] = state["epoch"], state["epoch"] + 1
            reopening = [[t, p] for t, p in state["partitions"] if self._ordinary(t)]
            if reopen and reopening and state["epoch"] + REOPEN_EPOCHS <= EPOCH_MAX:
                decided = dict(
                    _next_transaction(decided), start_ms=_now_ms(), partitions=reopening,
                    reopened=[state["epoch"], commit],
                    previous={"epoch": state["epoch"], "commit": commit,
                              "partitions": state["partitions"]})
        state = await self._write(replica, tid, decided)
        self._complete_later(replica, tid, state)
        return state

    def _complete_later(self, replica: TxnStateReplica, tid: str, state: dict
                        ) -> asyncio.Task:
        """Rule 4: the completion task of ``tid``'s prepared transaction (started if none
        runs)."""
        task = self._completing.get(tid)
        if task is not None and not task.done():
            return task
        task = asyncio.get_running_loop().create_task(self._finish(replica, tid, state),
                                                      name=f"txn-complete-{tid}")
        self._completing[tid] = task

        def done(t: asyncio.Task) -> None:
            if self._completing.get(tid) is t:
                del self._completing[tid]
            if not t.cancelled() and t.exception() is not None:
                exc = t.exception()
                log.info("transactional id %s: completing its transaction stopped (%s); "
                         "its coordinator resumes it", tid,
                         exc.message if isinstance(exc, BrokerError) else repr(exc))

        task.add_done_callback(done)
        return task

    async def _begin_after(self, replica: TxnStateReplica, tid: str, state: dict,
                           wanted: set[tuple[str, int]], groups: set[str]) -> bool:
        """Rule 4 for AddPartitionsToTxn/AddOffsetsToTxn (under the id's lock) while the
        previous transaction completes: the completion task writes the new transaction's
        state (ongoing, these partitions) in place of the completion record, once every
        marker is written. True once that is durable; False if the task completed the
        old one without it (then the caller goes on as usual)."""
        self._check_limit(tid, wanted)
        successor = dict(_next_transaction(state), start_ms=_now_ms(),
                         partitions=sorted([t, p] for t, p in wanted), groups=sorted(groups))
        entry = (successor, asyncio.get_running_loop().create_future())
        self._successors[tid] = entry
        try:
            await self._wait_completed(replica, tid, state)
        finally:
            if self._successors.get(tid) is entry:
                del self._successors[tid]
        future = entry[1]
        return future.done() and not future.cancelled() and future.exception() is None

    async def _wait_completed(self, replica: TxnStateReplica, tid: str, state: dict) -> dict:
        """Rule 4 (under the id's lock): wait for the prepared transaction to complete; the
        state then. CONCURRENT_TRANSACTIONS after COMPLETION_WAIT_S."""
        await self._await_completion(replica, tid, state)
        current = replica.transactions.get(tid)
        if current is None or current["state"] in PREPARED:
            raise BrokerError(Code.CONCURRENT_TRANSACTIONS, f"the previous transaction of "
                              f"{tid!r} is still completing; retry shortly", retriable=True)
        return current

    async def _await_completion(self, replica: TxnStateReplica, tid: str, state: dict
                                ) -> None:
        """Rules 4 and 7: the completion task of ``state`` (started if none runs) has
        ended; CONCURRENT_TRANSACTIONS after COMPLETION_WAIT_S."""
        task = self._complete_later(replica, tid, state)
        try:
            await asyncio.wait_for(asyncio.shield(task), COMPLETION_WAIT_S)
        except asyncio.TimeoutError:
            raise _still_completing(tid) from None

    def _ordinary(self, topic: str) -> bool:
        meta = self.broker.controller.state.topic(topic)
        return meta is not None and not meta.internal

    async def _lapse(self, replica: TxnStateReplica, tid: str, state: dict,
                     why: str = "timed out") -> dict:
        """Rule 9: a reopened transaction timed out (or an operator aborts it: the
        producer may be merely idle, so it is not fenced either). Its markers carry the
        epoch after its own (a batch of its epoch that comes later is refused, not taken
        for a new transaction), and the producer goes on at the one after (EndTxn of the
        lapsed epoch answers it)."""
        epoch = state["epoch"]
        # a timeout is routine: every producer that stops for longer than it gets one
        log.log(logging.DEBUG if why == "timed out" else logging.WARNING,
                "transactional id %s: its transaction reopened at epoch %d %s; aborted, "
                "the producer goes on at epoch %d", tid, epoch, why, epoch + 2)
        return await self._end(replica, tid, dict(state, epoch=epoch + 1), commit=False,
                               next_epoch=True, lapsed=epoch)

    async def _abort_fencing(self, replica: TxnStateReplica, tid: str, state: dict,
                             why: str) -> dict:
        """Rule 5: abort an open transaction with a bumped epoch."""
        epoch = state["epoch"] + 1
        if epoch > EPOCH_MAX:
            epoch = state["epoch"]  # cannot bump: abort without fencing
        log.warning("transactional id %s: aborting its transaction (%s), producer id %d "
                    "fenced at epoch %d", tid, why, state["pid"], epoch)
        return await self._end(replica, tid, dict(state, epoch=epoch), commit=False)

    async def _finish(self, replica: TxnStateReplica, tid: str, state: dict) -> dict:
        """Rule 4: write the markers of a prepared transaction until all are written, then
        its completion. Raises NOT_COORDINATOR if this node stops coordinating it (the next
        coordinator finishes it)."""
        prepared = state["state"] in PREPARED
        if prepared:
            marking = {"epoch": state.get("marker_epoch", state["epoch"]),
                       "commit": state["state"] == PREPARE_COMMIT,
                       "partitions": state["partitions"]}
        else:  # rule 7: the previous transaction's, under the next one's state
            marking = state["previous"]
        commit = marking["commit"]
        # rule 9: the markers of the transaction that reopened this one pre-join its
        # partitions at their leaders (_txn_join.py rule 5)
        reopened = state.get("reopened")
        joined_epoch = state["epoch"] if not prepared and reopened \
            and reopened[0] == marking["epoch"] else 0
        remaining = sorted((t, p) for t, p in marking["partitions"])
        term = replica.group.node.term if replica.group else 0
        coordinator_epoch = min(term, 2**31 - 1)
        rounds = 0
        while remaining:
            remaining = await self._markers(state["pid"], marking["epoch"], commit,
                                            coordinator_epoch, remaining, joined_epoch)
            rounds += 1
            if not remaining:
                break
            # A task of an earlier term must end even if this node leads again by now: its
            # markers carry the old coordinator epoch, which the partitions refuse for
            # good once a newer coordinator's marker landed (TRANSACTION_COORDINATOR_FENCED),
            # and while it runs the resume task starts no task of the current term.
            if not replica.leader_ready() or (replica.group and replica.group.node.term != term):
                raise BrokerError(Code.NOT_COORDINATOR, f"this node stopped coordinating "
                                  f"{tid!r} in term {term}; its coordinator of the current "
                                  "term completes the transaction", retriable=True)
            if rounds % 50 == 0:
                log.info("transactional id %s: markers of epoch %d still missing on %s "
                         "after %d rounds; retrying", tid, marking["epoch"], remaining, rounds)
            await asyncio.sleep(MARKER_BACKOFF_S)
        self._marked[tid] = (state["pid"], marking["epoch"])
        if not prepared:
            return state
        successor = self._successors.pop(tid, None)
        if successor is not None:  # rule 4: the next transaction's state says it all
            next_state, future = successor
            try:
                written = await self._write(replica, tid, next_state)
            except BaseException as exc:
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # retrieved: the waiter reads the state instead
                raise
            if not future.done():
                future.set_result(written)
            return written
        current = replica.transactions.get(tid)
        if self._writing.get(tid) or current is None or any(
                current.get(k) != state.get(k) for k in ("state", "epoch", "update_ms")):
            return state  # rule 7: the next transaction began; its state says it all
        return await self._write(replica, tid, dict(
            state, state=COMPLETE_COMMIT if commit else COMPLETE_ABORT))

    async def _markers(self, pid: int, epoch: int, commit: bool, coordinator_epoch: int,
                       partitions: list[tuple[str, int]], joined_epoch: int = 0
                       ) -> list[tuple[str, int]]:
        """One round: a marker to each partition at its leader; the ones still missing."""
        by_leader: dict[int, list[tuple[str, int]]] = {}
        state = self.broker.controller.state
        missing: list[tuple[str, int]] = []
        caught_up = self.broker.metadata_caught_up()
        for t, p in partitions:
            meta = state.topic(t)
            if meta is None or p >= len(meta.partitions):
                if caught_up:
                    continue  # the topic was deleted: nothing left to mark
                missing.append((t, p))  # or created after what this node applied so far
                continue
            leader = self._marker_targets.pop((t, p), 0) or \
                self.broker.leader_of(meta, meta.partitions[p])
            if not leader:
                missing.append((t, p))
            else:
                by_leader.setdefault(leader, []).append((t, p))
        rounds = await asyncio.gather(*(
            self._markers_at(leader, tps, pid, epoch, commit, coordinator_epoch, joined_epoch)
            for leader, tps in by_leader.items()))
        for tried, failed in zip(by_leader, rounds):
            for tp, named in failed:
                missing.append(tp)
                meta = self.broker.controller.state.topic(tp[0])
                replicas = meta.partitions[tp[1]].replicas \
                    if meta is not None and tp[1] < len(meta.partitions) else []
                if named:
                    self._marker_targets[tp] = named
                elif tried in replicas:
                    self._marker_targets[tp] = replicas[
                        (replicas.index(tried) + 1) % len(replicas)]
        return missing

    async def _markers_at(self, leader: int, tps: list[tuple[str, int]], pid: int,
                          epoch: int, commit: bool, coordinator_epoch: int,
                          joined_epoch: int = 0) -> list[tuple[tuple[str, int], int]]:
        """The markers to ``leader``: those not written, each with the leader its answer
        named (0: none)."""
        if leader == self.broker.node_id:
            async def one(tp: tuple[str, int]) -> tuple[tuple[str, int], int] | None:
                try:
                    replica = _require_leader(self.broker, *tp)
                    if joined_epoch > epoch and self._ordinary(tp[0]):
                        self.joins.prejoined(replica, pid, joined_epoch)  # rule 9
                    await replica.write_marker(pid, epoch, commit, coordinator_epoch,
                                               MARKER_TIMEOUT_S)
                except BrokerError as exc:
                    return None if exc.code in _MARKER_DONE else (tp, exc.leader_id)
                self.joins.marked(replica, pid, epoch)
                return None
            return [r for r in await asyncio.gather(*(one(tp) for tp in tps)) if r]
        request = txn_pb2.WriteTxnMarkersRequest(
            producer_id=pid, producer_epoch=epoch,
            result=txn_pb2.TXN_COMMIT if commit else txn_pb2.TXN_ABORT,
            coordinator_epoch=coordinator_epoch, timeout_ms=int(MARKER_TIMEOUT_S * 1000),
            partitions=[txn_pb2.TxnMarkerPartition(topic=t, partition=p) for t, p in tps],
            joined_epoch=joined_epoch)
        try:
            answer = await txn_pb2_grpc.TxnMarkersStub(self._channel(leader)).WriteTxnMarkers(
                request, timeout=MARKER_TIMEOUT_S + 2,
                metadata=((FORWARDED_BY_KEY, str(self.broker.node_id)),))  # our own call
        except (grpc.aio.AioRpcError, BrokerError):
            return [(tp, 0) for tp in tps]  # unreachable or timed out: another next round
        return [((r.topic, r.partition), r.error.leader_id) for r in answer.results
                if r.HasField("error") and r.error.code not in _MARKER_DONE]

    def _channel(self, node_id: int) -> grpc.aio.Channel:
        channel = self._channels.get(node_id)
        if channel is None:
            channel = self._channels[node_id] = self.broker.peer_channels.open(
                node_id, CHANNEL_OPTIONS)
        return channel

    # ------------------------------------------------------------------ joining (rule 8)
    async def _ask_join(self, tid: str, pid: int, epoch: int, topic: str, partition: int,
                        hints: list[int]) -> None:
        """``_txn_join.Ask``: JoinTxn at the id's coordinator (this node's own directly);
        with no id, at every node until one coordinates the producer id."""
        request = txn_pb2.JoinTxnRequest(
            transactional_id=tid, producer_id=pid, producer_epoch=epoch, topic=topic,
            partition=partition,
            topics=[txn_pb2.TxnTopicPartitions(topic=topic, partitions=hints)] if hints
            else [])
        meta = self.broker.controller.state.topic(TXN_TOPIC)
        if meta is None:
            if not tid:
                return  # no transactional id exists: nothing to settle it with (below)
            raise BrokerError(Code.COORDINATOR_LOADING, f"{TXN_TOPIC} does not exist yet",
                              retriable=True)
        if tid:
            pnum = txn_partition_for(tid, len(meta.partitions))
            leader = self.broker.leader_of(meta, meta.partitions[pnum])
            if leader == self.broker.node_id:
                _check_id(tid)
                await self.join(tid, pid, epoch, (topic, partition),
                                self._valid_partitions({(topic, p) for p in hints}
                                                       - {(topic, partition)}))
                return
            if not leader:
                raise BrokerError(Code.NOT_COORDINATOR, f"the coordinator of {tid!r} is "
                                  "being elected", retriable=True)
            await self._join_at(leader, request)
            return
        # settling with no transactional id: ask every node which one coordinates it
        covered: set[int] = set()
        for node_id in sorted(self.broker.config.peers):
            if node_id == self.broker.node_id:
                answer = await self._join_request(request)
            else:
                answer = await self._join_at(node_id, request)
            if answer.found:
                return
            covered.update(answer.coordinated)
        if covered >= set(range(len(meta.partitions))):
            # No transactional id has this producer id: written with the raw API (an
            # operator's tool writes its markers), or by a producer whose id moved on to
            # a new producer id, whose transactions all ended. Left to the partition's
            # transaction_max_timeout_ms backstop.
            return
        raise BrokerError(Code.NOT_COORDINATOR, f"some {TXN_TOPIC} partitions have no ready "
                          "coordinator; retry", retriable=True)

    async def _join_at(self, node_id: int, request: txn_pb2.JoinTxnRequest
                       ) -> txn_pb2.JoinTxnResponse:
        try:
            return await txn_pb2_grpc.TransactionCoordinatorStub(
                self._channel(node_id)).JoinTxn(
                    request, timeout=WRITE_TIMEOUT_S + 2,
                    metadata=((FORWARDED_BY_KEY, str(self.broker.node_id)),))
        except grpc.aio.AioRpcError as exc:
            details = error_details(exc.trailing_metadata())
            if details is not None and details.code:
                raise BrokerError(details.code, details.message, details.retriable) from None
            raise BrokerError(Code.LEADER_NOT_AVAILABLE, f"JoinTxn at node {node_id}: "
                              f"{exc.code().name if exc.code() else ''} {exc.details()}",
                              retriable=True) from None

    async def _settle_loop(self) -> None:
        await every(SETTLE_INTERVAL_S, self._settle, "transaction settle pass", log)

    def _settle(self) -> None:
        """``_txn_join.py`` rule 4 for the ordinary partitions this node hosts with a
        transaction open (the broker lists them: no walk over every partition)."""
        state = self.broker.controller.state
        partitions = self.broker.partitions

        def ordinary(key: tuple[str, int]):
            meta = state.topic(key[0])
            return partitions.get(key) if meta is not None and not meta.internal else None
        keys = [(r.topic, r.partition) for r in self.broker.replicas_with_open_transactions()]
        self.joins.settle(ordinary, [key for key in keys if ordinary(key) is not None])

    # ------------------------------------------------------------------ background
    async def _resume_loop(self) -> None:
        await every(RESUME_INTERVAL_S, self._resume, "transaction resume pass", log)

    def _resume(self) -> None:
        """Rules 4 and 5 for every id this node coordinates that no call holds."""
        now = _now_ms()
        for replica in self._led_replicas():
            for tid, state in list(replica.transactions.items()):
                kind = state["state"]
                if kind in PREPARED or (state.get("previous") and self._unmarked(
                        tid, state, state["previous"]) is not None):
                    if tid not in self._completing:
                        self._complete_later(replica, tid, state)
                    if kind in PREPARED:
                        continue
                if tid in self._finishing or self._locks[tid].locked():
                    continue
                if kind == ONGOING and now - state["start_ms"] > state["timeout_ms"]:
                    self._finishing.add(tid)
                    task = asyncio.ensure_future(self._background_end(replica, tid))
                    task.add_done_callback(lambda _t, tid=tid: self._finishing.discard(tid))

    async def _background_end(self, replica: TxnStateReplica, tid: str) -> None:
        try:
            async with self._locks[tid]:
                if not replica.leader_ready():
                    return
                state = replica.transactions.get(tid)
                if state is None:
                    return
                if state["state"] == ONGOING and \
                        _now_ms() - state["start_ms"] > state["timeout_ms"]:
                    if state.get("reopened") and state["epoch"] + 2 <= EPOCH_MAX:
                        await self._lapse(replica, tid, state)
                    else:
                        await self._abort_fencing(replica, tid, state, "timed out")
        except BrokerError as exc:
            log.info("transactional id %s: completing failed (%s); will retry", tid,
                     exc.message)


def _still_completing(tid: str) -> BrokerError:
    return BrokerError(Code.CONCURRENT_TRANSACTIONS, f"the previous transaction of {tid!r} "
                       "is still writing its markers; retry shortly", retriable=True)


def _next_transaction(state: dict) -> dict:
    """A new transaction's state from an ended or prepared one's (same producer id and
    epoch): ongoing, nothing in it yet."""
    fresh = {k: v for k, v in state.items() if k not in _DECISION_KEYS}
    return dict(fresh, state=ONGOING, partitions=[], groups=[])


def _check_id(tid: str) -> None:
    if not tid or len(tid.encode()) > TRANSACTIONAL_ID_MAX:
        raise BrokerError(Code.INVALID_REQUEST, f"transactional_id must be 1..{TRANSACTIONAL_ID_MAX} "
                          "bytes of UTF-8")

