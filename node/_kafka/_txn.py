"""Kafka's transaction APIs, served by the node's transaction coordinator
(``node/_txn_service.py``, the gRPC ``TransactionCoordinator``): the Kafka request becomes
that service's request and its method runs (its undecorated body), so the coordinator's
rules (fencing by epoch, durable partition sets, markers before the EndTxn answer) are
the same through both doors.

- InitProducerId with a transactional id: ``InitTransactions`` (a new id gets a producer
  id and epoch 0, a known one its epoch bumped; an open transaction is aborted).
- AddPartitionsToTxn v0-3 (the client's form; v4+ is between brokers): the partitions, one
  error code for all of them (the coordinator adds all or none).
- AddOffsetsToTxn, EndTxn (``committed``), TxnOffsetCommit (at the group's coordinator;
  a classic group's member is checked by its generation here, then the offsets are
  written pending like any other transactional commit).
- FindCoordinator key type 1 (TRANSACTION): the leader of the id's
  ``__transaction_state`` partition.

A transactional Produce writes its batches with the transactional bit (the partition
leader checks them against the producer's epoch and opens the transaction there); a
read_committed Fetch stops at the last stable offset (``_apis.py``).
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode as K

from raftka.v1 import txn_pb2

from .._errors import BrokerError, Code
from .._txn_service import TransactionCoordinatorService as Txns
from ._errors import kafka_code

_COORDINATOR_MOVED = (Code.NOT_LEADER, Code.LEADER_NOT_AVAILABLE, Code.NO_QUORUM,
                      Code.SHUTTING_DOWN)


def _code(exc: BrokerError) -> K:
    if exc.code in _COORDINATOR_MOVED:
        return K.coordinator_not_available  # the client finds the coordinator again
    return kafka_code(exc.code)


class KafkaTransactions:
    def __init__(self, txns: Txns, classic: Any) -> None:
        self.txns = txns
        self.classic = classic

    async def init_producer_id(self, request, ctx) -> dict:
        timeout_ms = int(request.transaction_timeout.total_seconds() * 1000)
        try:
            answer = await Txns.InitTransactions.__wrapped__(
                self.txns, txn_pb2.InitTransactionsRequest(
                    transactional_id=request.transactional_id,
                    transaction_timeout_ms=timeout_ms), ctx)
        except BrokerError as exc:
            return {"error_code": _code(exc), "producer_id": -1, "producer_epoch": -1}
        return {"error_code": K.none, "producer_id": answer.producer_id,
                "producer_epoch": answer.producer_epoch}

    async def find_coordinator(self, key: str, ctx) -> int:
        """The coordinator's node id; raises BrokerError (0 is never returned)."""
        answer = await Txns.FindCoordinator.__wrapped__(
            self.txns, txn_pb2.FindTxnCoordinatorRequest(transactional_id=key), ctx)
        if not answer.node_id:
            raise BrokerError(Code.LEADER_NOT_AVAILABLE, "the transaction coordinators are "
                              "being created; retry")
        return answer.node_id

    async def add_partitions(self, request, version, ctx, header) -> dict:
        tid = request.v3_and_below_transactional_id
        topics = request.v3_and_below_topics
        code = ctx.denied("WRITE", "TRANSACTIONAL_ID", tid, "AddPartitionsToTxn")
        refused: dict[str, K] = {}
        if code is None and ctx.security is not None:
            refused = {t.name: c for t in topics
                       if (c := ctx.denied("WRITE", "TOPIC", t.name, "AddPartitionsToTxn"))
                       is not None}
        if code is None and refused:
            code = K.operation_not_attempted  # Kafka: the others are not added either
        if code is None:
            try:
                await Txns.AddPartitionsToTxn.__wrapped__(
                    self.txns, txn_pb2.AddPartitionsToTxnRequest(
                        transactional_id=tid,
                        producer_id=request.v3_and_below_producer_id,
                        producer_epoch=request.v3_and_below_producer_epoch,
                        topics=[txn_pb2.TxnTopicPartitions(topic=t.name,
                                                           partitions=list(t.partitions))
                                for t in topics]), ctx)
                code = K.none
            except BrokerError as exc:
                code = _code(exc)
        return {"results_by_topic_v3_and_below": [
            {"name": t.name, "results_by_partition": [
                {"partition_index": p, "partition_error_code": refused.get(t.name, code)}
                for p in t.partitions]} for t in topics]}

    async def add_offsets(self, request, version, ctx, header) -> dict:
        try:
            await Txns.AddOffsetsToTxn.__wrapped__(self.txns, txn_pb2.AddOffsetsToTxnRequest(
                transactional_id=request.transactional_id, producer_id=request.producer_id,
                producer_epoch=request.producer_epoch, group_id=request.group_id), ctx)
        except BrokerError as exc:
            return {"error_code": _code(exc)}
        return {"error_code": K.none}

    async def end_txn(self, request, version, ctx, header) -> dict:
        try:
            await Txns.EndTxn.__wrapped__(self.txns, txn_pb2.EndTxnRequest(
                transactional_id=request.transactional_id, producer_id=request.producer_id,
                producer_epoch=request.producer_epoch,
                result=txn_pb2.TXN_COMMIT if request.committed else txn_pb2.TXN_ABORT), ctx)
        except BrokerError as exc:
            return {"error_code": _code(exc)}
        return {"error_code": K.none}

    async def txn_offset_commit(self, request, version, ctx, header) -> dict:
        def answer(codes: dict[str, K]) -> dict:
            return {"topics": [{"name": t.name, "partitions": [
                {"partition_index": p.partition_index, "error_code": codes[t.name]}
                for p in t.partitions]} for t in request.topics]}

        for op, rtype, name in (("WRITE", "TRANSACTIONAL_ID", request.transactional_id),
                                ("READ", "GROUP", request.group_id)):
            code = ctx.denied(op, rtype, name, "TxnOffsetCommit")
            if code is not None:
                return answer({t.name: code for t in request.topics})
        codes = {t.name: ctx.denied("READ", "TOPIC", t.name, "TxnOffsetCommit")
                 for t in request.topics}
        member_id = getattr(request, "member_id", "")
        generation = getattr(request, "generation_id", -1)
        try:
            group = self.classic._group(request.group_id, create=False)  # noqa: SLF001
        except BrokerError as exc:  # not the coordinator, or a bad group id
            code = K.not_coordinator if exc.code in (Code.NOT_COORDINATOR, Code.NOT_LEADER) \
                else K.invalid_group_id if exc.code == Code.INVALID_REQUEST else _code(exc)
            return answer({t.name: code for t in request.topics})
        if group is not None and member_id in group.members:
            if generation != group.generation:
                return answer({t.name: K.illegal_generation for t in request.topics})
            member_id, generation = "", -1  # checked here: the coordinator sees no member
        pb = txn_pb2.TxnOffsetCommitRequest(
            transactional_id=request.transactional_id, producer_id=request.producer_id,
            producer_epoch=request.producer_epoch, group_id=request.group_id,
            member_id=member_id, member_epoch=generation)
        for t in request.topics:
            if codes[t.name] is None:
                for p in t.partitions:
                    pb.offsets.add(topic=t.name, partition=p.partition_index,
                                   offset=p.committed_offset,
                                   metadata=p.committed_metadata or "")
        if pb.offsets:
            try:
                await Txns.TxnOffsetCommit.__wrapped__(self.txns, pb, ctx)
                ok = K.none
            except BrokerError as exc:
                ok = _code(exc)
                if exc.code == Code.NOT_LEADER:
                    ok = K.not_coordinator
            codes = {n: c if c is not None else ok for n, c in codes.items()}
        return answer(codes)
