"""The coordinator's side of a partition joining a transaction (``_txn_service.py`` rule 8)
over a real single-voter ``__transaction_state`` replica: the joins of one transaction that
arrive together make one write, hinted partitions join in it, a decided transaction whose
markers are still to come covers its partitions, an older epoch is refused, and an abort
with nothing open moves the epoch on so a late join of that epoch is refused."""

from __future__ import annotations

import asyncio
import types

import pytest

from raftka.node._errors import BrokerError, Code
from raftka.node._txn_service import TransactionCoordinatorService
from raftka.node._txn_state import TXN_TOPIC, TxnStateReplica, encode_state, txn_partition_for
from raftka.raft import ConfState, MemoryStorage, Role
from raftka.v1 import txn_pb2
from tests.node.test_txn_state import _drive, _start

TID = "shop"
PID = 42
TOPIC = "orders"


class _Meta:
    def __init__(self, name: str, partitions: int, internal: bool = False) -> None:
        self.name, self.internal = name, internal
        self.partitions = [types.SimpleNamespace(partition=p, replicas=[2, 3, 1])
                           for p in range(partitions)]


def _service() -> tuple[TransactionCoordinatorService, TxnStateReplica, list[dict]]:
    storage = MemoryStorage(ConfState(frozenset({1})))
    replica, node = _start(TxnStateReplica, storage)
    node.campaign()
    _drive(replica, node, storage)
    assert node.role == Role.LEADER
    topics = {TXN_TOPIC: _Meta(TXN_TOPIC, 1, internal=True), TOPIC: _Meta(TOPIC, 4),
              "__internal": _Meta("__internal", 1, internal=True)}
    assert txn_partition_for(TID, 1) == 0
    broker = types.SimpleNamespace(
        node_id=1, partitions={(TXN_TOPIC, 0): replica},
        controller=types.SimpleNamespace(state=types.SimpleNamespace(topic=topics.get)),
        config=types.SimpleNamespace(transaction_max_partitions=3),
        leader_of=lambda meta, p: 1, metadata_caught_up=lambda: True)
    service = TransactionCoordinatorService(broker, None, None, None)  # type: ignore[arg-type]
    writes: list[dict] = []
    write = service._write

    async def counted(replica, tid, state):
        writes.append(state)
        return await write(replica, tid, state)
    service._write = counted  # type: ignore[method-assign]

    async def drive_forever() -> None:
        while True:
            _drive(replica, node, storage)
            await asyncio.sleep(0.001)
    service._driver = asyncio.get_running_loop().create_task(drive_forever())  # type: ignore
    return service, replica, writes


async def _initialized(service, replica, epoch: int, state: str = "empty", **extra) -> None:
    record = {"pid": PID, "epoch": epoch, "state": state, "timeout_ms": 60000,
              "start_ms": 0, "partitions": [], "groups": [], **extra}
    await replica.produce(encode_state(TID, record, 1), -1, 5)


def test_joins_arriving_together_make_one_write_with_the_hinted_partitions() -> None:
    async def scenario() -> None:
        service, replica, writes = _service()
        await _initialized(service, replica, 5)
        async with service._locks[TID]:  # a write of the id under way: they wait together
            joins = [asyncio.ensure_future(service.join(TID, PID, 5, (TOPIC, p),
                                                        {(TOPIC, q) for q in hints}))
                     for p, hints in ((0, (1, 2)), (1, ()), (2, (0,)))]
            await asyncio.sleep(0.01)
            assert not any(j.done() for j in joins)
        await asyncio.gather(*joins)
        assert len(writes) == 1, "one write for the three joins"
        state = replica.transactions[TID]
        assert state["state"] == "ongoing" and state["epoch"] == 5
        assert state["partitions"] == [[TOPIC, 0], [TOPIC, 1], [TOPIC, 2]]
        # a partition hinted by the first join is covered: no write for its own join
        await service.join(TID, PID, 5, (TOPIC, 1), set())
        assert len(writes) == 1
        # beyond transaction_max_partitions: hints are dropped, the join itself refused
        await service.join(TID, PID, 5, (TOPIC, 0), {(TOPIC, 3)})
        assert len(writes) == 1, "the hint did not fit: nothing written"
        with pytest.raises(BrokerError) as exc:
            await service.join(TID, PID, 5, (TOPIC, 3), set())
        assert exc.value.code == Code.INVALID_REQUEST
        service._driver.cancel()
    asyncio.run(scenario())


def test_a_decided_transaction_covers_its_partitions_and_older_epochs_are_refused() -> None:
    async def scenario() -> None:
        service, replica, writes = _service()
        # the epoch moved on with the decision (rule 7): 6 is the next transaction's
        await _initialized(service, replica, 6, state="prepare_commit", marker_epoch=5,
                           partitions=[[TOPIC, 0], [TOPIC, 1]])
        await service.join(TID, PID, 5, (TOPIC, 1), set())  # its marker is on its way
        assert writes == []
        with pytest.raises(BrokerError) as exc:  # not in it: a zombie's, fenced
            await service.join(TID, PID, 5, (TOPIC, 2), set())
        assert exc.value.code == Code.PRODUCER_FENCED
        service._marked[TID] = (PID, 5)  # once every marker is written, nothing covers it
        with pytest.raises(BrokerError):
            await service.join(TID, PID, 5, (TOPIC, 1), set())
        service._driver.cancel()
    asyncio.run(scenario())


def test_an_abort_with_nothing_open_moves_the_epoch_on() -> None:
    async def scenario() -> None:
        service, replica, writes = _service()
        await _initialized(service, replica, 8)
        end = TransactionCoordinatorService.EndTxn.__wrapped__  # type: ignore[attr-defined]
        request = txn_pb2.EndTxnRequest(transactional_id=TID, producer_id=PID,
                                        producer_epoch=8, result=txn_pb2.TXN_ABORT,
                                        next_epoch=True)
        assert (await end(service, request, None)).producer_epoch == 9
        assert (await end(service, request, None)).producer_epoch == 9, "a retry"
        assert replica.transactions[TID]["state"] == "complete_abort"
        with pytest.raises(BrokerError) as exc:  # a join of epoch 8 still on its way
            await service.join(TID, PID, 8, (TOPIC, 0), set())
        assert exc.value.code == Code.PRODUCER_FENCED
        await service.join(TID, PID, 9, (TOPIC, 0), set())  # the next transaction's
        assert replica.transactions[TID]["state"] == "ongoing"
        service._driver.cancel()
    asyncio.run(scenario())


def _end_txn(service, epoch: int, commit: bool = True, reopen: bool = True):
    end = TransactionCoordinatorService.EndTxn.__wrapped__  # type: ignore[attr-defined]
    return end(service, txn_pb2.EndTxnRequest(
        transactional_id=TID, producer_id=PID, producer_epoch=epoch, next_epoch=True,
        reopen=reopen, result=txn_pb2.TXN_COMMIT if commit else txn_pb2.TXN_ABORT), None)


def _marking_instantly(service) -> list[tuple[int, bool, list, int]]:
    """Markers written at once (the partitions are not part of this test): the rounds."""
    rounds: list[tuple[int, bool, list, int]] = []

    async def markers(pid, epoch, commit, coordinator_epoch, partitions, joined_epoch=0):
        rounds.append((epoch, commit, sorted(partitions), joined_epoch))
        return []
    service._markers = markers  # type: ignore[method-assign]
    return rounds


def test_a_commit_reopens_the_next_transaction_with_its_ordinary_partitions() -> None:
    """Rule 9: one write per transaction. The decision is the next transaction's state
    (ongoing at the next epoch, the ordinary partitions already in it, the previous
    transaction's markers to write); its joins make no write; a retry of the EndTxn is
    answered the same, the other result refused."""
    async def scenario() -> None:
        service, replica, writes = _service()
        rounds = _marking_instantly(service)
        await _initialized(service, replica, 5, state="ongoing",
                           partitions=[[TOPIC, 0], [TOPIC, 1], ["__internal", 0]])
        answer = await _end_txn(service, 5)
        assert (answer.producer_epoch, answer.reopened) == (6, True)
        assert len(writes) == 1
        state = replica.transactions[TID]
        assert (state["state"], state["epoch"], state["partitions"]) == (
            "ongoing", 6, [[TOPIC, 0], [TOPIC, 1]]), "internal partitions are not reopened"
        assert state["previous"]["epoch"] == 5 and state["previous"]["commit"]
        await asyncio.sleep(0.05)  # the completion task writes the markers, nothing else
        # they pre-join the reopened epoch at the partition leaders (_txn_join.py rule 5)
        assert rounds == [(5, True, [("__internal", 0), (TOPIC, 0), (TOPIC, 1)], 6)]
        assert len(writes) == 1
        for p in (0, 1):
            await service.join(TID, PID, 6, (TOPIC, p), set())
        assert len(writes) == 1, "the reopened partitions join without a write"
        retry = await _end_txn(service, 5)
        assert (retry.producer_epoch, retry.reopened) == (6, True) and len(writes) == 1
        with pytest.raises(BrokerError) as exc:
            await _end_txn(service, 5, commit=False)
        assert exc.value.code == Code.INVALID_TXN_STATE
        await service.join(TID, PID, 6, (TOPIC, 2), set())  # a new partition: a write
        assert len(writes) == 2
        answer = await _end_txn(service, 6, reopen=False)
        assert (answer.producer_epoch, answer.reopened) == (7, False)
        assert replica.transactions[TID]["state"] == "prepare_commit"
        assert "reopened" not in replica.transactions[TID]
        service._driver.cancel()
    asyncio.run(scenario())


def test_a_reopened_transaction_that_times_out_lapses_without_fencing_the_producer() -> None:
    """Rule 9: the coordinator aborts a reopened transaction past its timeout with markers
    of the epoch after it (a late batch of its epoch is refused, not taken for a new
    transaction), and answers the producer's EndTxn abort of the lapsed epoch with the
    epoch to go on with; its commit is refused as fenced."""
    async def scenario() -> None:
        service, replica, writes = _service()
        rounds = _marking_instantly(service)
        await _initialized(service, replica, 6, state="ongoing", start_ms=1,
                           partitions=[[TOPIC, 0]], reopened=[5, True])
        service._resume()  # past its timeout: lapses in the background
        for _ in range(100):
            if replica.transactions[TID]["state"] != "ongoing":
                break
            await asyncio.sleep(0.01)
        state = replica.transactions[TID]
        assert state["state"] in ("prepare_abort", "complete_abort")
        assert (state["marker_epoch"], state["epoch"], state["lapsed"]) == (7, 8, 6)
        await asyncio.sleep(0.05)
        assert rounds == [(7, False, [(TOPIC, 0)], 0)]
        with pytest.raises(BrokerError) as exc:
            await _end_txn(service, 6)
        assert exc.value.code == Code.PRODUCER_FENCED and "timed out" in exc.value.message
        answer = await _end_txn(service, 6, commit=False)
        assert (answer.producer_epoch, answer.reopened) == (8, False)
        with pytest.raises(BrokerError) as exc:  # a late batch's join of the lapsed epoch
            service._marked[TID] = (PID, 7)
            await service.join(TID, PID, 6, (TOPIC, 0), set())
        assert exc.value.code == Code.PRODUCER_FENCED
        await service.join(TID, PID, 8, (TOPIC, 0), set())  # the producer goes on
        assert replica.transactions[TID]["state"] == "ongoing"
        service._driver.cancel()
    asyncio.run(scenario())


def test_an_operators_abort_of_a_reopened_transaction_does_not_fence_the_producer() -> None:
    """Rule 9: ``raftka txn abort`` of a reopened transaction (its producer may be merely
    idle) lapses it as the timeout does: the producer's EndTxn abort of that epoch is
    answered with the epoch to go on with."""
    async def scenario() -> None:
        service, replica, writes = _service()
        _marking_instantly(service)
        await _initialized(service, replica, 9, state="ongoing", start_ms=10**15,
                           partitions=[[TOPIC, 1]], reopened=[8, True])
        abort = TransactionCoordinatorService.AbortTransaction.__wrapped__  # type: ignore
        await abort(service, txn_pb2.AbortTransactionRequest(transactional_id=TID), None)
        state = replica.transactions[TID]
        assert (state["marker_epoch"], state["epoch"], state["lapsed"]) == (10, 11, 9)
        answer = await _end_txn(service, 9, commit=False)
        assert answer.producer_epoch == 11
        service._driver.cancel()
    asyncio.run(scenario())


def test_a_partition_leader_that_does_not_know_the_topic_has_not_written_the_marker(
        monkeypatch) -> None:
    """A node that has not replayed its controller log yet (restarted, or recreated empty
    after a damaged disk) answers UNKNOWN_TOPIC for topics that exist. The coordinator once
    took that for a deleted topic and counted the marker written: the partition's settling
    then found the committed transaction open, the coordinator refused it, and the
    partition aborted its part (the jepsen-like txn workload under disk faults: non-atomic
    reads). Only the coordinator's own caught-up metadata says a topic is gone; a stale
    marker (INVALID_PRODUCER_EPOCH) is still done."""
    import raftka.node._txn_service as txn_service

    answers: dict[int, int] = {}
    sent: list[list[int]] = []

    class _Stub:
        def __init__(self, channel) -> None:
            self.node = channel

        async def WriteTxnMarkers(self, request, **kwargs):  # noqa: N802
            sent.append((self.node, [p.partition for p in request.partitions]))
            results = []
            for p in request.partitions:
                r = txn_pb2.TxnMarkerResult(topic=p.topic, partition=p.partition, offset=7)
                if p.partition in answers:
                    r.offset = -1
                    r.error.code = answers[p.partition]
                results.append(r)
            return txn_pb2.WriteTxnMarkersResponse(results=results)

    monkeypatch.setattr(txn_service.txn_pb2_grpc, "TxnMarkersStub", _Stub)

    async def scenario() -> None:
        service, replica, _ = _service()
        caught_up = [True]
        broker = service.broker
        broker.leader_of = lambda meta, p: 2  # every partition led elsewhere
        broker.metadata_caught_up = lambda: caught_up[0]
        service._channel = lambda node_id: node_id  # type: ignore[method-assign]
        tps = [(TOPIC, 0), (TOPIC, 1), (TOPIC, 2)]
        answers.update({0: Code.UNKNOWN_TOPIC, 1: Code.UNKNOWN_PARTITION,
                        2: Code.INVALID_PRODUCER_EPOCH})
        missing = await service._markers(PID, 5, True, 1, tps)
        assert missing == [(TOPIC, 0), (TOPIC, 1)], "only the stale marker counts as done"
        answers.clear()
        assert await service._markers(PID, 5, True, 1, missing) == []
        # the coordinator's own metadata lacks the topic: deleted only once it is caught up
        gone = [("deleted", 0)]
        caught_up[0] = False
        assert await service._markers(PID, 5, True, 1, gone) == gone
        caught_up[0] = True
        assert await service._markers(PID, 5, True, 1, gone) == []
        # nothing sent for a topic it does not know; a failed marker goes to the next
        # replica (after 2: 3) next round, as the node that failed named no leader
        assert sent == [(2, [0, 1, 2]), (3, [0, 1])]
        # a replica that names the leader sends the next round there
        sent.clear()

        async def named(request, **kwargs):
            sent.append(("named", [p.partition for p in request.partitions]))
            return txn_pb2.WriteTxnMarkersResponse(results=[txn_pb2.TxnMarkerResult(
                topic=TOPIC, partition=3, offset=-1, error=dict(code=Code.NOT_LEADER,
                                                                leader_id=3))])
        stub_send = _Stub.WriteTxnMarkers
        _Stub.WriteTxnMarkers = lambda self, request, **kw: named(request)
        assert await service._markers(PID, 5, True, 1, [(TOPIC, 3)]) == [(TOPIC, 3)]
        _Stub.WriteTxnMarkers = stub_send
        assert await service._markers(PID, 5, True, 1, [(TOPIC, 3)]) == []
        assert sent == [("named", [3]), (3, [3])]
        service._driver.cancel()
    asyncio.run(scenario())


def test_a_join_of_a_topic_the_coordinator_does_not_know_yet_is_not_refused() -> None:
    """A refusal makes the partition leader abort what the producer wrote there, so a
    coordinator whose metadata is behind answers COORDINATOR_LOADING (retried), and
    UNKNOWN_TOPIC only once it is caught up."""
    async def scenario() -> None:
        service, replica, writes = _service()
        await _initialized(service, replica, 5)
        caught_up = [False]
        service.broker.metadata_caught_up = lambda: caught_up[0]
        with pytest.raises(BrokerError) as exc:
            await service._join_request(txn_pb2.JoinTxnRequest(
                transactional_id=TID, producer_id=PID, producer_epoch=5, topic="new",
                partition=0))
        assert exc.value.code == Code.COORDINATOR_LOADING and exc.value.retriable
        caught_up[0] = True
        with pytest.raises(BrokerError) as exc:
            await service._join_request(txn_pb2.JoinTxnRequest(
                transactional_id=TID, producer_id=PID, producer_epoch=5, topic="new",
                partition=0))
        assert exc.value.code == Code.UNKNOWN_TOPIC
        assert writes == []
        service._driver.cancel()
    asyncio.run(scenario())
