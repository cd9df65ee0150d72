"""Transactions on the partitions of a real 3-node cluster, driven the way the transaction
coordinator will drive them (the coordinator itself is not built yet): transactional
batches from an InitProducerId producer, TxnMarkers.WriteTxnMarkers to each partition
leader, and read_committed fetches (gRPC and the client's readers). A commit across three
partitions is seen whole; an abort is invisible to read_committed but visible to
read_uncommitted; the state survives kill -9 of a partition leader; markers fence older
epochs; bad inputs are refused and change nothing."""

from __future__ import annotations

import grpc
import pytest

from raftka.client import PartitionReader, TopicReader
from raftka.v1 import broker_pb2, errors_pb2, txn_pb2, txn_pb2_grpc
from raftka.v1.recordbatch import Record, build_batch, build_control_batch, decode_batches

from tests.harness import Cluster, error_info, wait_for

TOPIC = "orders"


def _pid(cluster: Cluster) -> tuple[int, int]:
    def attempt():
        for node in cluster.live():
            try:
                r = cluster.broker(node).InitProducerId(broker_pb2.InitProducerIdRequest(),
                                                        timeout=5)
                return r.producer_id, r.producer_epoch
            except grpc.RpcError:
                continue
        return None
    return wait_for(attempt, 20, "a producer id")


def _txn_batch(pid: int, epoch: int, seq: int, *values: bytes) -> bytes:
    return build_batch([Record(None, v) for v in values], compression="lz4",
                       producer_id=pid, producer_epoch=epoch, base_sequence=seq,
                       transactional=True)


def _markers(cluster: Cluster, pid: int, epoch: int, commit: bool,
             partitions: list[int]) -> dict[int, txn_pb2.TxnMarkerResult]:
    """What a coordinator does: each partition's marker to its leader, retried (a retry
    after a lost answer is harmless) until every one is committed."""
    done: dict[int, txn_pb2.TxnMarkerResult] = {}

    def attempt():
        for p in [p for p in partitions if p not in done]:
            leader = cluster.partition_leader(TOPIC, p)
            if not leader:
                continue
            stub = txn_pb2_grpc.TxnMarkersStub(cluster.channel(leader))
            try:
                r = stub.WriteTxnMarkers(txn_pb2.WriteTxnMarkersRequest(
                    producer_id=pid, producer_epoch=epoch,
                    result=txn_pb2.TXN_COMMIT if commit else txn_pb2.TXN_ABORT,
                    partitions=[txn_pb2.TxnMarkerPartition(topic=TOPIC, partition=p)]),
                    timeout=10)
            except grpc.RpcError:
                continue
            if not r.results[0].HasField("error"):
                done[p] = r.results[0]
        return len(done) == len(partitions)
    wait_for(attempt, 30, f"markers on {partitions}")
    return done


def _committed(cluster: Cluster, partition: int, start: int = 0) -> tuple[list[bytes], int]:
    """read_committed values from ``start`` up to the last stable offset, and the LSO."""
    leader = cluster.wait_leader(TOPIC, partition)
    values, offset = [], start
    while True:
        r = cluster.broker(leader).Fetch(broker_pb2.FetchRequest(
            topic=TOPIC, partition=partition, offset=offset, max_bytes=1 << 20,
            isolation_level=broker_pb2.READ_COMMITTED), timeout=10)
        values += [x.value for x in decode_batches(r.record_batches)]
        assert r.next_offset >= offset
        if r.next_offset == offset or r.next_offset >= r.last_stable_offset:
            return values, r.last_stable_offset
        offset = r.next_offset


def _uncommitted(cluster: Cluster, partition: int) -> list[bytes]:
    return [v for _, v in cluster.values(TOPIC, partition)]


def test_commit_is_seen_whole_and_abort_never_under_read_committed(cluster: Cluster) -> None:
    cluster.wait_healthy()
    cluster.create_topic(TOPIC, partitions=3)
    pid, epoch = _pid(cluster)
    for p in range(3):
        cluster.produce(TOPIC, p, build_batch([Record(None, b"before-%d" % p)]))
        cluster.produce(TOPIC, p, _txn_batch(pid, epoch, 0, b"t1-%d-a" % p, b"t1-%d-b" % p))
    for p in range(3):  # open: nothing of it, nor anything after its first offset
        values, lso = _committed(cluster, p)
        assert values == [b"before-%d" % p] and lso == 1
    results = _markers(cluster, pid, epoch, True, [0, 1, 2])
    assert all(r.offset == 3 for r in results.values())
    for p in range(3):
        values, lso = _committed(cluster, p)
        assert values == [b"before-%d" % p, b"t1-%d-a" % p, b"t1-%d-b" % p] and lso == 4

    # the next transaction of the same producer aborts
    for p in range(3):
        cluster.produce(TOPIC, p, _txn_batch(pid, epoch, 2, b"t2-%d" % p))
        cluster.produce(TOPIC, p, build_batch([Record(None, b"plain-%d" % p)]))
    _markers(cluster, pid, epoch, False, [0, 1, 2])
    for p in range(3):
        values, lso = _committed(cluster, p)
        assert b"t2-%d" % p not in values and values[-1] == b"plain-%d" % p
        assert b"t2-%d" % p in _uncommitted(cluster, p), "read_uncommitted sees it (Kafka)"

    # the client's readers: read_committed by name, the default unchanged
    with TopicReader(",".join(cluster.peers.values()), TOPIC, isolation_level="read_committed") as reader:
        seen: list[bytes] = []
        wait_for(lambda: seen.extend(r.value for r in reader.poll(0.5)) or len(seen) >= 12,
                 30, "every committed record")
        assert sorted(seen) == sorted(
            [b"before-%d" % p for p in range(3)] + [b"plain-%d" % p for p in range(3)]
            + [b"t1-%d-%s" % (p, s) for p in range(3) for s in (b"a", b"b")])
    with PartitionReader(",".join(cluster.peers.values()), TOPIC, 0) as reader:
        got: list[bytes] = []
        wait_for(lambda: got.extend(r.value for r in reader.poll(0.5)) or len(got) >= 5,
                 30, "every record of partition 0")
        assert b"t2-0" in got
    with pytest.raises(ValueError):
        PartitionReader(",".join(cluster.peers.values()), TOPIC, 0, isolation_level="serializable")


def test_state_survives_leader_kill_and_markers_fence_old_epochs(cluster: Cluster) -> None:
    cluster.wait_healthy()
    cluster.create_topic(TOPIC, partitions=1)
    pid, epoch = _pid(cluster)
    cluster.produce(TOPIC, 0, _txn_batch(pid, epoch, 0, b"aborted"))
    _markers(cluster, pid, epoch, False, [0])
    cluster.produce(TOPIC, 0, _txn_batch(pid, epoch, 1, b"open"))
    assert _committed(cluster, 0) == ([], 2)

    old = cluster.wait_leader(TOPIC, 0)
    cluster.kill(old)
    wait_for(lambda: cluster.partition_leader(TOPIC, 0) not in (0, old), 30, "a new leader")
    # the new leader rebuilt the aborted index and the open transaction from the log
    assert _committed(cluster, 0) == ([], 2)
    # a coordinator aborting a timed-out transaction bumps the epoch: the old one is fenced
    _markers(cluster, pid, epoch + 1, False, [0])
    with pytest.raises(grpc.RpcError) as exc:
        cluster.produce(TOPIC, 0, _txn_batch(pid, epoch, 2, b"zombie"))
    assert error_info(exc.value).code == errors_pb2.PRODUCER_FENCED
    cluster.produce(TOPIC, 0, _txn_batch(pid, epoch + 1, 0, b"new"))
    _markers(cluster, pid, epoch + 1, True, [0])
    cluster.start(old)
    values, _ = _committed(cluster, 0)
    assert values == [b"new"]
    assert b"zombie" not in _uncommitted(cluster, 0)
    cluster.assert_replicas_agree(TOPIC, 0)


def test_bad_inputs_are_refused_and_write_nothing(cluster: Cluster) -> None:
    cluster.wait_healthy()
    cluster.create_topic(TOPIC, partitions=1)
    pid, epoch = _pid(cluster)
    cluster.produce(TOPIC, 0, build_batch([Record(None, b"x")]))
    leader = cluster.wait_leader(TOPIC, 0)

    def refused(batch: bytes) -> int:
        with pytest.raises(grpc.RpcError) as exc:
            cluster.produce(TOPIC, 0, batch)
        return error_info(exc.value).code

    assert refused(build_control_batch(pid, epoch, True, 0, 1)) == errors_pb2.INVALID_REQUEST
    cluster.produce(TOPIC, 0, _txn_batch(pid, epoch, 0, b"t"))
    idempotent = build_batch([Record(None, b"i")], producer_id=pid, producer_epoch=epoch,
                             base_sequence=1)
    assert refused(idempotent) == errors_pb2.INVALID_TXN_STATE
    stub = txn_pb2_grpc.TxnMarkersStub(cluster.channel(leader))
    with pytest.raises(grpc.RpcError) as exc:
        stub.WriteTxnMarkers(txn_pb2.WriteTxnMarkersRequest(
            producer_id=pid, producer_epoch=epoch,
            partitions=[txn_pb2.TxnMarkerPartition(topic=TOPIC, partition=0)]), timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    follower = next(n for n in cluster.live() if n != leader)
    r = txn_pb2_grpc.TxnMarkersStub(cluster.channel(follower)).WriteTxnMarkers(
        txn_pb2.WriteTxnMarkersRequest(
            producer_id=pid, producer_epoch=epoch, result=txn_pb2.TXN_COMMIT,
            partitions=[txn_pb2.TxnMarkerPartition(topic=TOPIC, partition=0),
                        txn_pb2.TxnMarkerPartition(topic="nope", partition=0)]), timeout=10)
    assert [x.error.code for x in r.results] == [errors_pb2.NOT_LEADER,
                                                  errors_pb2.UNKNOWN_TOPIC]
    with pytest.raises(grpc.RpcError) as exc:
        cluster.broker(leader).Fetch(broker_pb2.FetchRequest(
            topic=TOPIC, partition=0, offset=0, isolation_level=7), timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _uncommitted(cluster, 0) == [b"x", b"t"], "nothing else was written"
    assert _committed(cluster, 0) == ([b"x"], 1)


def test_a_transaction_nobody_ends_is_aborted_after_the_max_timeout(tmp_path) -> None:
    cluster = Cluster(tmp_path, 3, extra_args=("--transaction-max-timeout-ms", "1000",
                                               "--transaction-max-partitions", "2"))
    try:
        cluster.start_all()
        cluster.wait_healthy()
        cluster.create_topic(TOPIC, partitions=3)
        pid, epoch = _pid(cluster)
        cluster.produce(TOPIC, 0, build_batch([Record(None, b"a")]))
        cluster.produce(TOPIC, 0, _txn_batch(pid, epoch, 0, b"forgotten"))
        cluster.produce(TOPIC, 0, build_batch([Record(None, b"b")]))
        # the leader aborts it (maintenance pass): the LSO moves past the marker
        wait_for(lambda: _committed(cluster, 0)[1] == 4, 30, "the expired transaction aborted")
        assert _committed(cluster, 0) == ([b"a", b"b"], 4)
        assert b"forgotten" in _uncommitted(cluster, 0)

        # a transaction may touch at most transaction_max_partitions partitions: more is
        # refused with a clear error and nothing is added
        tid = "wide"
        pid, epoch = _init(cluster, tid, timeout_ms=1000)
        with pytest.raises(grpc.RpcError) as exc:
            _add(cluster, tid, pid, epoch, [0, 1, 2])
        info = error_info(exc.value)
        assert info is not None and info.code == errors_pb2.INVALID_REQUEST
        assert "maximum 2" in exc.value.details() and "transaction_max_partitions" in \
            exc.value.details()
        assert _describe(cluster, tid).state == "empty"
        _add(cluster, tid, pid, epoch, [0, 1])
        with pytest.raises(grpc.RpcError) as exc:
            _add(cluster, tid, pid, epoch, [2])
        assert error_info(exc.value).code == errors_pb2.INVALID_REQUEST
        d = _describe(cluster, tid)
        # (ongoing, or aborted by now: its 1 s timeout; the partitions stay on record)
        assert [tuple(t.partitions) for t in d.topics] == [(0, 1)], d
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop_all()


# ---------------------------------------------------------------- the coordinator


def _coordinator(cluster: Cluster, tid: str, timeout: float = 30) -> int:
    def attempt():
        for node in cluster.live():
            if node in cluster.paused:
                continue
            try:
                r = txn_pb2_grpc.TransactionCoordinatorStub(cluster.channel(node)) \
                    .FindCoordinator(txn_pb2.FindTxnCoordinatorRequest(transactional_id=tid),
                                     timeout=5)
            except grpc.RpcError:
                continue
            if r.node_id and r.node_id in cluster.live() and r.node_id not in cluster.paused:
                return r.node_id
        return None
    return wait_for(attempt, timeout, f"the coordinator of {tid}")


def _settled_coordinator(cluster: Cluster, tid: str) -> int:
    """The coordinator once leadership of the id's __transaction_state partition settled
    on its preferred replica (a new partition may first elect another one, and the nodes
    then hand it over): tests that call one coordinator directly start from there."""
    from raftka.node._txn_state import TXN_TOPIC, TXN_TOPIC_PARTITIONS, txn_partition_for

    _coordinator(cluster, tid)  # the topic exists
    return cluster.wait_preferred_leader(TXN_TOPIC,
                                         txn_partition_for(tid, TXN_TOPIC_PARTITIONS), 30)


def _call(cluster: Cluster, tid: str, method: str, request, timeout: float = 60):
    """A coordinator call, following NOT_COORDINATOR / COORDINATOR_LOADING as a client
    does; other errors are raised."""
    last: list = []

    def attempt():
        node = _coordinator(cluster, tid)
        stub = txn_pb2_grpc.TransactionCoordinatorStub(cluster.channel(node))
        try:
            return getattr(stub, method)(request, timeout=15)
        except grpc.RpcError as exc:
            info = error_info(exc)
            if info is None or info.code in (errors_pb2.NOT_COORDINATOR,
                                             errors_pb2.COORDINATOR_LOADING,
                                             errors_pb2.CONCURRENT_TRANSACTIONS):
                last[:] = [exc]
                return None
            raise
    return wait_for(attempt, timeout, f"{method} of {tid}")


def _init(cluster: Cluster, tid: str, timeout_ms: int = 60_000) -> tuple[int, int]:
    r = _call(cluster, tid, "InitTransactions", txn_pb2.InitTransactionsRequest(
        transactional_id=tid, transaction_timeout_ms=timeout_ms))
    return r.producer_id, r.producer_epoch


def _add(cluster: Cluster, tid: str, pid: int, epoch: int, partitions: list[int]) -> None:
    _call(cluster, tid, "AddPartitionsToTxn", txn_pb2.AddPartitionsToTxnRequest(
        transactional_id=tid, producer_id=pid, producer_epoch=epoch,
        topics=[txn_pb2.TxnTopicPartitions(topic=TOPIC, partitions=partitions)]))


def _end(cluster: Cluster, tid: str, pid: int, epoch: int, commit: bool) -> None:
    _call(cluster, tid, "EndTxn", txn_pb2.EndTxnRequest(
        transactional_id=tid, producer_id=pid, producer_epoch=epoch,
        result=txn_pb2.TXN_COMMIT if commit else txn_pb2.TXN_ABORT))


def _describe(cluster: Cluster, tid: str) -> txn_pb2.TransactionState:
    return _call(cluster, tid, "DescribeTransactions", txn_pb2.DescribeTransactionsRequest(
        transactional_ids=[tid])).transactions[0]


def _code(call) -> int:
    with pytest.raises(grpc.RpcError) as exc:
        call()
    info = error_info(exc.value)
    assert info is not None, exc.value
    return info.code


def test_coordinator_commit_abort_fencing_and_bad_inputs(cluster: Cluster) -> None:
    cluster.wait_healthy()
    cluster.create_topic(TOPIC, partitions=3)
    tid = "orders-service"
    pid, epoch = _init(cluster, tid)
    assert _describe(cluster, tid).state == "empty"
    _add(cluster, tid, pid, epoch, [0, 1, 2])
    seqs = [0, 0, 0]
    for p in range(3):
        cluster.produce(TOPIC, p, _txn_batch(pid, epoch, 0, b"c-%d" % p))
        seqs[p] = 1
    d = _describe(cluster, tid)
    assert d.state == "ongoing" and [tuple(t.partitions) for t in d.topics] == [(0, 1, 2)]
    assert all(_committed(cluster, p)[0] == [] for p in range(3))
    _end(cluster, tid, pid, epoch, commit=True)
    # EndTxn answers once the decision is durable; the markers follow
    assert _describe(cluster, tid).state in ("prepare_commit", "complete_commit")
    wait_for(lambda: _describe(cluster, tid).state == "complete_commit", 30, "the markers")
    assert [_committed(cluster, p)[0] for p in range(3)] == [[b"c-%d" % p] for p in range(3)]
    _end(cluster, tid, pid, epoch, commit=True)  # a retried commit is answered OK

    # the next transaction aborts
    _add(cluster, tid, pid, epoch, [1])
    cluster.produce(TOPIC, 1, _txn_batch(pid, epoch, 1, b"a-1"))
    _end(cluster, tid, pid, epoch, commit=False)
    assert _committed(cluster, 1)[0] == [b"c-1"]

    # a new incarnation fences the old one, aborting its open transaction
    _add(cluster, tid, pid, epoch, [2])
    cluster.produce(TOPIC, 2, _txn_batch(pid, epoch, 1, b"zombie-1"))
    pid2, epoch2 = _init(cluster, tid)
    assert (pid2, epoch2) == (pid, epoch + 1)
    assert _describe(cluster, tid).state == "empty"
    coordinator = txn_pb2_grpc.TransactionCoordinatorStub(
        cluster.channel(_settled_coordinator(cluster, tid)))
    assert _code(lambda: coordinator.EndTxn(txn_pb2.EndTxnRequest(
        transactional_id=tid, producer_id=pid, producer_epoch=epoch,
        result=txn_pb2.TXN_COMMIT), timeout=10)) == errors_pb2.PRODUCER_FENCED
    assert _code(lambda: cluster.produce(TOPIC, 2, _txn_batch(pid, epoch, 2, b"zombie-2"))) \
        == errors_pb2.PRODUCER_FENCED
    assert _committed(cluster, 2)[0] == [b"c-2"]

    # bad inputs: clear errors, nothing changes
    assert _code(lambda: coordinator.EndTxn(txn_pb2.EndTxnRequest(
        transactional_id=tid, producer_id=pid2, producer_epoch=epoch2,
        result=txn_pb2.TXN_COMMIT), timeout=10)) == errors_pb2.INVALID_TXN_STATE
    any_node = txn_pb2_grpc.TransactionCoordinatorStub(cluster.channel(cluster.live()[0]))
    assert _code(lambda: _call(cluster, "nobody", "EndTxn", txn_pb2.EndTxnRequest(
        transactional_id="nobody", producer_id=1, producer_epoch=0,
        result=txn_pb2.TXN_COMMIT))) == errors_pb2.TRANSACTIONAL_ID_NOT_FOUND
    assert _code(lambda: any_node.InitTransactions(txn_pb2.InitTransactionsRequest(
        transactional_id=tid, transaction_timeout_ms=0), timeout=10)) \
        == errors_pb2.INVALID_TRANSACTION_TIMEOUT
    assert _code(lambda: coordinator.AddPartitionsToTxn(txn_pb2.AddPartitionsToTxnRequest(
        transactional_id=tid, producer_id=pid2, producer_epoch=epoch2,
        topics=[txn_pb2.TxnTopicPartitions(topic=TOPIC, partitions=[7])]), timeout=10)) \
        == errors_pb2.UNKNOWN_PARTITION
    assert _describe(cluster, tid).state == "empty"
    listed = [t for node in cluster.live() for t in txn_pb2_grpc.TransactionCoordinatorStub(
        cluster.channel(node)).ListTransactions(txn_pb2.ListTransactionsRequest(),
                                                timeout=10).transactions]
    assert [(t.transactional_id, t.producer_epoch) for t in listed] == [(tid, epoch2)]


def test_coordinator_kill_between_prepare_and_complete_finishes_the_commit(
        cluster: Cluster) -> None:
    """Also the next epoch (EndTxn.next_epoch): the next transaction begins while the
    previous one's markers cannot land, across a coordinator failover."""
    cluster.wait_healthy()
    tid = "pipeline"
    pid, epoch = _init(cluster, tid)
    coordinator = _settled_coordinator(cluster, tid)
    # single-replica partitions: pausing a node stops its partitions' markers for sure
    cluster.create_topic(TOPIC, partitions=3, replicas=1)
    leaders = {p: cluster.wait_leader(TOPIC, p) for p in range(3)}
    # the transaction's partitions: those the coordinator does not host (it is killed)
    parts = [p for p in range(3) if leaders[p] != coordinator]
    if not parts:
        pytest.skip("placement put every partition on the coordinator")  # not with 3 nodes
    held = leaders[parts[0]]
    _add(cluster, tid, pid, epoch, parts)
    for p in parts:
        cluster.produce(TOPIC, p, _txn_batch(pid, epoch, 0, b"r-%d" % p))
    cluster.pause(held)
    stub = txn_pb2_grpc.TransactionCoordinatorStub(cluster.channel(coordinator))
    # answered once the decision is durable; a marker cannot land (its leader is paused).
    # The epoch moves on with the decision (next_epoch, as our producers ask)
    request = txn_pb2.EndTxnRequest(transactional_id=tid, producer_id=pid,
                                    producer_epoch=epoch, result=txn_pb2.TXN_COMMIT,
                                    next_epoch=True)
    assert stub.EndTxn(request, timeout=10).producer_epoch == epoch + 1
    assert stub.EndTxn(request, timeout=10).producer_epoch == epoch + 1, "a retry"
    assert stub.DescribeTransactions(txn_pb2.DescribeTransactionsRequest(
        transactional_ids=[tid]), timeout=10).transactions[0].state == "prepare_commit"
    # so the next transaction begins before the markers are written
    stub.AddPartitionsToTxn(txn_pb2.AddPartitionsToTxnRequest(
        transactional_id=tid, producer_id=pid, producer_epoch=epoch + 1,
        topics=[txn_pb2.TxnTopicPartitions(topic=TOPIC, partitions=parts)]), timeout=10)
    assert stub.DescribeTransactions(txn_pb2.DescribeTransactionsRequest(
        transactional_ids=[tid]), timeout=10).transactions[0].state == "ongoing"
    cluster.kill(coordinator)
    cluster.resume(held)
    # the next coordinator writes the previous transaction's markers from the next one's
    # state; the next epoch's batches land after them, and its abort hides only them
    wait_for(lambda: all(_committed(cluster, p)[0] == [b"r-%d" % p] for p in parts), 60,
             "the commit completed by the new coordinator")
    for p in parts:
        cluster.produce(TOPIC, p, _txn_batch(pid, epoch + 1, 0, b"next-%d" % p))
    assert _call(cluster, tid, "EndTxn", txn_pb2.EndTxnRequest(
        transactional_id=tid, producer_id=pid, producer_epoch=epoch + 1,
        result=txn_pb2.TXN_ABORT, next_epoch=True)).producer_epoch == epoch + 2
    wait_for(lambda: _describe(cluster, tid).state == "complete_abort", 60, "the abort")
    for p in parts:
        values, lso = _committed(cluster, p)
        hw = cluster.broker(cluster.wait_leader(TOPIC, p)).Fetch(broker_pb2.FetchRequest(
            topic=TOPIC, partition=p, offset=0, max_bytes=1), timeout=10).high_watermark
        assert values == [b"r-%d" % p] and lso == hw >= 4
    cluster.start(coordinator)


def test_coordinator_aborts_a_timed_out_transaction_and_fences_it(cluster: Cluster) -> None:
    cluster.wait_healthy()
    cluster.create_topic(TOPIC, partitions=1)
    tid = "slow"
    pid, epoch = _init(cluster, tid, timeout_ms=1000)
    _add(cluster, tid, pid, epoch, [0])
    cluster.produce(TOPIC, 0, _txn_batch(pid, epoch, 0, b"late"))
    wait_for(lambda: _describe(cluster, tid).state == "complete_abort", 30, "the abort")
    assert _describe(cluster, tid).producer_epoch == epoch + 1
    assert _code(lambda: _call(cluster, tid, "EndTxn", txn_pb2.EndTxnRequest(
        transactional_id=tid, producer_id=pid, producer_epoch=epoch,
        result=txn_pb2.TXN_COMMIT))) == errors_pb2.PRODUCER_FENCED
    assert _committed(cluster, 0)[0] == []


# ---------------------------------------------------------------- the Producer


def test_producer_transactions_commit_abort_and_fencing(cluster: Cluster) -> None:
    from raftka.client import InvalidTxnStateError, Producer, ProducerFencedError, RaftkaError

    cluster.wait_healthy()
    cluster.create_topic(TOPIC, partitions=3)
    bootstrap = ",".join(cluster.peers.values())
    with Producer(bootstrap, transactional_id="shop") as producer:
        with pytest.raises(InvalidTxnStateError):
            producer.send(TOPIC, b"no-begin")  # send without begin_transaction
        producer.init_transactions()
        with pytest.raises(InvalidTxnStateError):
            producer.send(TOPIC, b"no-begin")
        producer.begin_transaction()
        for i in range(30):
            producer.send(TOPIC, b"c%d" % i, partition=i % 3)
        producer.commit_transaction()
        producer.begin_transaction()
        for i in range(9):
            producer.send(TOPIC, b"a%d" % i, key=b"k%d" % i)
        producer.abort_transaction()
        # the coordinator refuses to add a partition (an internal topic): the records
        # waiting for it fail, the transaction can only be aborted
        producer.begin_transaction()
        ok = producer.send(TOPIC, b"with-refused", partition=0)
        refused = producer.send("__consumer_offsets", b"x", partition=0)
        with pytest.raises(RaftkaError, match="internal"):
            refused.result(30)
        with pytest.raises(InvalidTxnStateError):
            producer.commit_transaction()
        producer.abort_transaction()
        assert ok.done()
        producer.begin_transaction()
        producer.send(TOPIC, b"keyless-1")
        producer.send(TOPIC, b"keyless-2")
        producer.commit_transaction()
        with pytest.raises(InvalidTxnStateError):
            producer.commit_transaction()  # none open
        producer.begin_transaction()
        producer.send(TOPIC, b"zombie", partition=0).result(10)
        with Producer(bootstrap, transactional_id="shop") as newer:
            newer.init_transactions()  # fences `producer`, aborts its open transaction
            with pytest.raises(ProducerFencedError):
                producer.commit_transaction()
            with pytest.raises(ProducerFencedError):
                producer.begin_transaction()
            newer.begin_transaction()
            newer.send(TOPIC, b"newer", partition=1)
            newer.commit_transaction()

    committed = sorted([b"c%d" % i for i in range(30)]
                       + [b"keyless-1", b"keyless-2", b"newer"])
    # commit_transaction returned once the decision was durable; the markers follow
    wait_for(lambda: sorted(v for p in range(3) for v in _committed(cluster, p)[0])
             == committed, 30, "the last commit's markers")
    assert committed == sorted([b"c%d" % i for i in range(30)]
                               + [b"keyless-1", b"keyless-2", b"newer"])
    everything = [v for p in range(3) for v in _uncommitted(cluster, p)]
    assert b"a0" in everything and b"zombie" in everything
    # the whole of transaction 1 is on the three partitions, in order, under read_committed
    with TopicReader(bootstrap, TOPIC, isolation_level="read_committed") as reader:
        seen: list[bytes] = []
        wait_for(lambda: seen.extend(r.value for r in reader.poll(0.5)) or len(seen) >= 33,
                 30, "the committed records")
        assert sorted(seen) == committed


def test_a_producer_idle_past_its_reopened_transactions_timeout_goes_on(
        cluster: Cluster) -> None:
    """A commit reopens the next transaction (txn.proto EndTxnRequest.reopen), whose
    timeout counts from that commit. A producer that begins its next one later than half
    the timeout ends the reopened one first; one idle past the whole timeout finds it
    aborted by the coordinator (lapsed, not fenced) and goes on all the same. Nothing of
    the idle periods is lost or doubled."""
    import time

    from raftka.client import Producer

    cluster.wait_healthy()
    cluster.create_topic(TOPIC, partitions=2)
    bootstrap = ",".join(cluster.peers.values())
    with Producer(bootstrap, transactional_id="idle",
                  transaction_timeout_ms=2000) as producer:
        producer.init_transactions()
        for n, idle_s in enumerate((0.0, 1.3, 3.5, 0.0)):
            time.sleep(idle_s)
            if idle_s > 2:
                wait_for(lambda: _describe(cluster, "idle").state != "ongoing", 30,
                         "the coordinator's abort of the reopened transaction")
            producer.begin_transaction()
            for p in range(2):
                producer.send(TOPIC, b"t%d-%d" % (n, p), partition=p)
            producer.commit_transaction()
        assert _describe(cluster, "idle").state == "ongoing", "reopened by the last commit"

    async def aio_producer() -> None:  # raftka.aio ends the reopened one at its first send
        import asyncio

        import raftka.aio
        async with raftka.aio.Producer(bootstrap, transactional_id="idle-aio",
                                       transaction_timeout_ms=2000) as producer:
            await producer.init_transactions()
            for n, idle_s in enumerate((0.0, 3.5)):
                await asyncio.sleep(idle_s)
                producer.begin_transaction()
                for p in range(2):
                    await producer.send(TOPIC, b"aio%d-%d" % (n, p), partition=p)
                await producer.commit_transaction()
    from tests.aio_loop import run_unblocked
    run_unblocked(aio_producer)
    expected = [[b"t%d-%d" % (n, p) for n in range(4)] + [b"aio0-%d" % p, b"aio1-%d" % p]
                for p in range(2)]
    wait_for(lambda: [_committed(cluster, p)[0] for p in range(2)] == expected, 30,
             "every transaction committed once, in order")


def test_admin_and_cli_list_describe_abort(cluster: Cluster) -> None:
    import json
    import os
    import subprocess
    import sys

    from raftka.client import Admin, InvalidTxnStateError, Producer, TransactionalIdNotFoundError

    cluster.wait_healthy()
    cluster.create_topic(TOPIC, partitions=2)
    bootstrap = ",".join(cluster.peers.values())

    def raftka(*args: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, RAFTKA_BOOTSTRAP=bootstrap)
        return subprocess.run([sys.executable, "-m", "raftka.client", *args], text=True,
                              capture_output=True, env=env, timeout=60)

    with Producer(bootstrap, transactional_id="stuck") as producer, \
            Admin(bootstrap) as admin:
        producer.init_transactions()
        producer.begin_transaction()
        producer.send(TOPIC, b"left-open", partition=1).result(10)
        d = admin.describe_transaction("stuck")
        assert (d.state, d.partitions) == ("ongoing", ((TOPIC, 1),)) and d.start_time_ms > 0
        r = raftka("txn", "list")
        assert r.returncode == 0, r.stderr
        assert "stuck" in r.stdout and "ongoing" in r.stdout and f"{TOPIC}/1" in r.stdout
        r = raftka("txn", "describe", "stuck", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["state"] == "ongoing"
        assert _committed(cluster, 1) == ([], 0)
        r = raftka("txn", "abort", "stuck")  # the operator clears it
        assert r.returncode == 0, r.stderr
        assert admin.describe_transaction("stuck").state == "complete_abort"
        assert _committed(cluster, 1)[0] == []
        assert _committed(cluster, 1)[1] == 2, "the LSO moved past the abort marker"
        with pytest.raises(InvalidTxnStateError):
            admin.abort_transaction("stuck")  # nothing open any more
        with pytest.raises(TransactionalIdNotFoundError):
            admin.describe_transaction("nobody")
        r = raftka("txn", "describe", "nobody")
        assert r.returncode != 0 and "nobody" in r.stderr and "Traceback" not in r.stderr
        assert [t.transactional_id for t in admin.list_transactions(
            states=["complete_abort"])] == ["stuck"]


def _unstable_code(cluster: Cluster, group: str, tp: tuple[str, int]) -> int:
    """FetchOffsets(require_stable) of ``tp`` at the group's coordinator: its error code
    (0 when answered), within one attempt's short deadline (no server-side wait)."""
    from raftka.v1 import group_pb2, group_pb2_grpc

    def attempt():
        for node in cluster.live():
            stub = group_pb2_grpc.GroupCoordinatorStub(cluster.channel(node))
            try:
                stub.FetchOffsets(group_pb2.OffsetFetchRequest(
                    group_id=group, require_stable=True, partitions=[
                        group_pb2.TopicPartitions(topic=tp[0], partitions=[tp[1]])]),
                    timeout=4)  # below the 5 s the node waits without require_stable
                return 0
            except grpc.RpcError as exc:
                info = error_info(exc)
                if info is not None and info.code not in (errors_pb2.NOT_COORDINATOR,
                                                          errors_pb2.COORDINATOR_LOADING):
                    return info.code
        return None
    return wait_for(attempt, 30, "an answer of the group's coordinator")


def test_offsets_in_a_transaction_count_iff_it_commits(cluster: Cluster) -> None:
    from raftka.client import (
        Admin,
        Consumer,
        ConsumerGroupMetadata,
        InvalidTxnStateError,
        Producer,
        TopicPartition,
        UnknownMemberIdError,
    )

    cluster.wait_healthy()
    cluster.create_topic("in", partitions=1)
    cluster.create_topic(TOPIC, partitions=1)
    bootstrap = ",".join(cluster.peers.values())
    for i in range(10):
        cluster.produce("in", 0, build_batch([Record(None, b"in-%d" % i)]))
    tp = TopicPartition("in", 0)
    with Producer(bootstrap, transactional_id="etl") as producer, Admin(bootstrap) as admin:
        producer.init_transactions()
        # a standalone consumer's offsets (a group without members)
        producer.begin_transaction()
        producer.send(TOPIC, b"out-0-4", partition=0)
        producer.send_offsets_to_transaction({("in", 0): 5}, "solo")
        assert admin.committed_offsets("solo") == {}, "pending until the commit"
        # KIP-447 require_stable: answered at once, retriable, nothing older is answered
        assert _unstable_code(cluster, "solo", ("in", 0)) == errors_pb2.CONCURRENT_TRANSACTIONS
        producer.commit_transaction()
        # the marker reaches the offsets partition moments after; a fetch of the partition
        # meanwhile waits for it (KIP-447 stable offsets), never answers the older offset
        assert admin.committed_offsets("solo", [("in", 0)]) == {tp: 5}
        producer.begin_transaction()
        producer.send(TOPIC, b"out-5-9", partition=0)
        producer.send_offsets_to_transaction({("in", 0): 10}, "solo")
        producer.abort_transaction()
        assert admin.committed_offsets("solo") == {tp: 5}, "an aborted commit never counts"
        assert _committed(cluster, 0)[0] == [b"out-0-4"]

        # a group member: consume, transform, produce, commit its position, exactly once
        with Consumer(bootstrap, "members", ["in"], auto_offset_reset="earliest",
                      enable_auto_commit=False,
                      isolation_level="read_committed") as consumer:
            got: list = []
            wait_for(lambda: got.extend(consumer.poll(0.5)) or len(got) >= 10, 30,
                     "the input")
            meta = consumer.group_metadata()
            assert meta.member_id and meta.member_epoch > 0
            producer.begin_transaction()
            for r in got:
                producer.send(TOPIC, r.value.upper(), partition=0)
            producer.send_offsets_to_transaction({("in", 0): got[-1].offset + 1}, meta)
            producer.commit_transaction()
            assert admin.committed_offsets("members", [("in", 0)]) == {tp: 10}
            # lag of a read_committed group: against the last stable offset, so records
            # of an open transaction (which its members cannot read yet) are no lag
            with Producer(bootstrap, transactional_id="etl-open") as other:
                other.init_transactions()
                other.begin_transaction()
                other.send_many("in", [b"open-%d" % i for i in range(5)], partition=0).result(10)
                desc = admin.describe_group("members")
                (lag,) = [p for p in desc.partitions if (p.topic, p.partition) == ("in", 0)]
                assert desc.isolation_level == "read_committed"
                assert (lag.committed_offset, lag.log_end_offset, lag.last_stable_offset,
                        lag.lag) == (10, 15, 10, 0)
                other.abort_transaction()
            # KIP-447 fencing: a member the group does not know cannot commit
            producer.begin_transaction()
            with pytest.raises(UnknownMemberIdError):
                producer.send_offsets_to_transaction(
                    {("in", 0): 3}, ConsumerGroupMetadata("members", "not-a-member", 1))
            with pytest.raises(InvalidTxnStateError):
                producer.commit_transaction()  # the failure made it abortable
            producer.abort_transaction()
            assert admin.committed_offsets("members") == {tp: 10}
    wait_for(lambda: len(_committed(cluster, 0)[0]) == 11, 30, "the last markers")


def test_aio_producer_commit_abort_offsets_and_fencing(cluster: Cluster) -> None:
    """raftka.aio.Producer's transactions: the threaded producer's TransactionManager
    operations, awaited; the event loop never blocks (run_unblocked)."""
    import asyncio

    import raftka.aio
    from raftka.client import Admin, InvalidTxnStateError, ProducerFencedError, TopicPartition

    from tests.aio_loop import run_unblocked

    cluster.wait_healthy()
    cluster.create_topic(TOPIC, partitions=3)
    cluster.create_topic("in", partitions=1)
    bootstrap = ",".join(cluster.peers.values())

    async def main() -> None:
        async with raftka.aio.Producer(bootstrap, transactional_id="aio-shop") as producer:
            with pytest.raises(InvalidTxnStateError):
                await producer.send(TOPIC, b"no-init")
            await producer.init_transactions()
            with pytest.raises(InvalidTxnStateError):
                await producer.send(TOPIC, b"no-begin")
            producer.begin_transaction()
            futures = [await producer.send(TOPIC, b"c%d" % i, partition=i % 3)
                       for i in range(30)]
            many = await producer.send_many(TOPIC, [b"m0", b"m1"], partition=2)
            await producer.send_offsets_to_transaction({("in", 0): 7}, "aio-etl")
            await producer.commit_transaction()
            assert all(f.done() for f in futures) and len(many.result()) == 2
            producer.begin_transaction()
            for i in range(6):
                await producer.send(TOPIC, b"a%d" % i, partition=i % 3)
            await producer.send_offsets_to_transaction({("in", 0): 99}, "aio-etl")
            await producer.abort_transaction()
            with pytest.raises(InvalidTxnStateError):
                await producer.commit_transaction()  # none open
            producer.begin_transaction()
            await (await producer.send(TOPIC, b"zombie", partition=0))
            async with raftka.aio.Producer(bootstrap, transactional_id="aio-shop") as newer:
                await newer.init_transactions()  # fences `producer`, aborts its transaction
                with pytest.raises(ProducerFencedError):
                    await producer.commit_transaction()
                with pytest.raises(ProducerFencedError):
                    producer.begin_transaction()
                newer.begin_transaction()
                await newer.send(TOPIC, b"newer", partition=1)
                await newer.commit_transaction()
        await asyncio.sleep(0)

    run_unblocked(main)
    committed = sorted([b"c%d" % i for i in range(30)] + [b"m0", b"m1", b"newer"])
    wait_for(lambda: sorted(v for p in range(3) for v in _committed(cluster, p)[0])
             == committed, 30, "the committed records, and nothing aborted")
    everything = [v for p in range(3) for v in _uncommitted(cluster, p)]
    assert b"a0" in everything and b"zombie" in everything
    with Admin(bootstrap) as admin:  # offsets of the commit count, of the abort never
        assert admin.committed_offsets("aio-etl", [("in", 0)]) == {TopicPartition("in", 0): 7}


def test_a_partition_leader_killed_between_append_and_commit(cluster: Cluster) -> None:
    """A partition joins the transaction with its first batch (node/_txn_join.py). A kill -9
    of a partition's leader (a) once the producer's batches were answered and before the
    commit: the commit is not lost, every partition gets its marker; (b) once a batch was
    appended but before its leader joined the partition to the transaction (a raw produce
    that names no transactional id stands for that moment): the next leader settles it
    with the coordinator, which adds the partition, so the transaction's timeout aborts
    it there too and nothing hangs (before, only transaction_max_timeout_ms would)."""
    from raftka.client import Producer

    cluster.wait_healthy()
    cluster.create_topic(TOPIC, partitions=3)
    bootstrap = ",".join(cluster.peers.values())
    with Producer(bootstrap, transactional_id="killed") as producer:
        producer.init_transactions()
        producer.begin_transaction()
        for p in range(3):
            producer.send(TOPIC, b"one-%d" % p, partition=p)
        producer.commit_transaction()
        producer.begin_transaction()
        for p in range(3):
            producer.send(TOPIC, b"two-%d" % p, partition=p)
        producer.flush()  # every batch answered: appended and its partition joined
        victim = cluster.wait_leader(TOPIC, 0)
        cluster.kill(victim)
        producer.commit_transaction()
    # the commit reopened the next transaction (txn.proto EndTxnRequest.reopen): its
    # state is ongoing, so the markers show in the partitions, not in the state
    wait_for(lambda: all(_committed(cluster, p)[0] == [b"one-%d" % p, b"two-%d" % p]
                         for p in range(3)), 60,
             "every marker of the commit, partition 0's at its new leader")
    cluster.start(victim)
    cluster.wait_healthy()

    tid = "orphan"
    pid, epoch = _init(cluster, tid, timeout_ms=2000)
    leader = cluster.wait_leader(TOPIC, 1)
    orphan = cluster.produce(TOPIC, 1, _txn_batch(pid, epoch, 0, b"orphan"))
    cluster.kill(leader)
    wait_for(lambda: cluster.partition_leader(TOPIC, 1) not in (0, leader), 30,
             "a new leader of partition 1")

    def settled() -> bool:
        node = cluster.wait_leader(TOPIC, 1)
        r = cluster.broker(node).Fetch(broker_pb2.FetchRequest(
            topic=TOPIC, partition=1, offset=0, max_bytes=1,
            isolation_level=broker_pb2.READ_COMMITTED), timeout=10)
        # a new leader that has not committed its term's first entry yet still shows the
        # high watermark below the orphan batch, with nothing open below it
        return r.high_watermark > orphan.last_offset and \
            r.last_stable_offset == r.high_watermark
    wait_for(settled, 30, "the transaction left open on partition 1 settled")
    assert _describe(cluster, tid).state == "complete_abort"
    for p in range(3):
        assert _committed(cluster, p)[0] == [b"one-%d" % p, b"two-%d" % p]
    cluster.start(leader)
    for p in range(3):
        cluster.assert_replicas_agree(TOPIC, p)
