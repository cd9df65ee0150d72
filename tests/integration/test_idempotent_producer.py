"""Idempotent producing against real processes: no duplicates and no gaps across kill -9 of
partition leaders with many batches in flight; duplicate retries answered with the original
offsets (also by a new leader); out-of-order sequences and fenced epochs rejected."""

from __future__ import annotations

import os
import threading

import grpc
import pytest

from raftka.client import Producer
from raftka.v1 import broker_pb2, errors_pb2
from raftka.v1.recordbatch import Record, build_batch, decode_batches

from tests.harness import Cluster, error_info, wait_for


def _idempotent_batch(pid: int, epoch: int, seq: int, *values: bytes) -> bytes:
    return build_batch([Record(None, v) for v in values], compression="lz4",
                       producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def _init_producer_id(cluster: Cluster) -> tuple[int, int]:
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


def _produce(cluster: Cluster, topic: str, batch: bytes) -> tuple[int, int]:
    r = cluster.produce(topic, 0, batch)
    return r.base_offset, r.last_offset


def _rejection(cluster: Cluster, topic: str, batch: bytes) -> errors_pb2.ErrorInfo:
    with pytest.raises(grpc.RpcError) as exc:
        cluster.produce(topic, 0, batch)
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(exc.value)
    assert info is not None
    return info


def _values(cluster: Cluster, topic: str, partition: int = 0) -> list[tuple[int, bytes]]:
    return [(r.offset, r.value) for r in decode_batches(cluster.fetch_all(topic, partition))]


@pytest.mark.shared_cluster
def test_producer_ids_are_unique_across_nodes(cluster: Cluster) -> None:
    cluster.wait_healthy()
    ids = set()
    for node in cluster.live():
        for _ in range(3):
            r = wait_for(lambda n=node: _try_init(cluster, n), 20, "InitProducerId")
            assert r.producer_epoch == 0
            ids.add(r.producer_id)
    assert len(ids) == 3 * len(cluster.live())


def _try_init(cluster: Cluster, node: int):
    """InitProducerId at ``node``, following a NOT_LEADER to the controller leader it
    names; None (ask again) while a node is still starting or no leader is known."""
    try:
        return cluster.broker(node).InitProducerId(broker_pb2.InitProducerIdRequest(), timeout=5)
    except grpc.RpcError as e:
        info = error_info(e)
        if info is not None and info.code == errors_pb2.NOT_LEADER and info.leader_id:
            # only the controller leader reserves blocks; it is named in the error
            return _try_init(cluster, info.leader_id) if info.leader_id != node else None
        if e.code() == grpc.StatusCode.UNAVAILABLE or (info is not None and info.retriable):
            return None
        raise


@pytest.mark.shared_cluster
def test_a_duplicate_retry_is_answered_with_the_original_offsets(cluster: Cluster) -> None:
    cluster.create_topic("dups")
    pid, epoch = _init_producer_id(cluster)
    first = _idempotent_batch(pid, epoch, 0, b"a", b"b", b"c")
    assert _produce(cluster, "dups", first) == (0, 2)
    assert _produce(cluster, "dups", first) == (0, 2), "a retry is not written again"
    second = _idempotent_batch(pid, epoch, 3, b"d")
    assert _produce(cluster, "dups", second) == (3, 3)
    assert _produce(cluster, "dups", first) == (0, 2), "still among the last 5 batches"
    assert _produce(cluster, "dups", second) == (3, 3)
    assert _values(cluster, "dups") == [(0, b"a"), (1, b"b"), (2, b"c"), (3, b"d")]


def test_a_retry_after_a_leader_change_is_not_written_twice(cluster: Cluster) -> None:
    """The new leader rebuilt the producer state from its log (batch headers only)."""
    cluster.create_topic("failover")
    pid, epoch = _init_producer_id(cluster)
    batches = [_idempotent_batch(pid, epoch, i * 2, b"%d-a" % i, b"%d-b" % i) for i in range(4)]
    for i, b in enumerate(batches):
        assert _produce(cluster, "failover", b) == (i * 2, i * 2 + 1)
    old = cluster.wait_leader("failover", 0)
    cluster.kill(old)
    wait_for(lambda: cluster.partition_leader("failover", 0) not in (0, old), 20,
             "a new leader")
    for i, b in enumerate(batches[1:], start=1):  # retries of acknowledged batches
        # (LEADER_NOT_AVAILABLE, retriable, until the new leader applied its term start)
        assert wait_for(lambda b=b: _try_produce(cluster, "failover", b), 30,
                        "the new leader to answer") == (i * 2, i * 2 + 1)
    assert _produce(cluster, "failover", _idempotent_batch(pid, epoch, 8, b"next")) == (8, 8)
    cluster.start(old)  # it rejoins as a follower and rebuilds its state too
    expected = [(i * 2 + j, b"%d-%s" % (i, x)) for i in range(4) for j, x in enumerate(
        (b"a", b"b"))] + [(8, b"next")]
    cluster.assert_acknowledged("failover", 0, [v for _, v in expected], dict(
        (v, o) for o, v in expected))
    cluster.assert_replicas_agree("failover", 0)


@pytest.mark.shared_cluster
def test_an_out_of_order_sequence_is_rejected_with_a_clear_error(cluster: Cluster) -> None:
    cluster.create_topic("ooo")
    pid, epoch = _init_producer_id(cluster)
    assert _produce(cluster, "ooo", _idempotent_batch(pid, epoch, 0, b"x", b"y")) == (0, 1)
    info = _rejection(cluster, "ooo", _idempotent_batch(pid, epoch, 5, b"z"))
    assert info.code == errors_pb2.OUT_OF_ORDER_SEQUENCE
    assert "expected sequence 2, got 5" in info.message
    info = _rejection(cluster, "ooo", _idempotent_batch(pid + 1000, 0, 7, b"z"))
    assert info.code == errors_pb2.UNKNOWN_PRODUCER_ID, "no state: must start at 0"
    assert _values(cluster, "ooo") == [(0, b"x"), (1, b"y")]


@pytest.mark.shared_cluster
def test_an_older_epoch_is_fenced(cluster: Cluster) -> None:
    cluster.create_topic("fence")
    pid, _ = _init_producer_id(cluster)
    assert _produce(cluster, "fence", _idempotent_batch(pid, 0, 0, b"old")) == (0, 0)
    assert _produce(cluster, "fence", _idempotent_batch(pid, 1, 0, b"new")) == (1, 1)
    info = _rejection(cluster, "fence", _idempotent_batch(pid, 0, 1, b"zombie"))
    assert info.code == errors_pb2.PRODUCER_FENCED and not info.retriable
    assert "fenced" in info.message
    assert [v for _, v in _values(cluster, "fence")] == [b"old", b"new"]


@pytest.mark.shared_cluster
def test_produce_stream_keeps_pipelined_batches_in_order(cluster: Cluster) -> None:
    cluster.create_topic("stream")
    pid, epoch = _init_producer_id(cluster)
    leader = cluster.wait_leader("stream", 0)
    requests = [broker_pb2.ProduceStreamRequest(
        correlation_id=100 + i, request=broker_pb2.ProduceRequest(
            topic="stream", partition=0,
            record_batches=_idempotent_batch(pid, epoch, i, b"%03d" % i)))
        for i in range(50)]
    requests.append(broker_pb2.ProduceStreamRequest(  # a bad one does not end the stream
        correlation_id=7, request=broker_pb2.ProduceRequest(topic="stream", partition=0,
                                                            record_batches=b"junk")))
    answers = {a.correlation_id: a for a in cluster.broker(leader).ProduceStream(
        iter(requests), timeout=30)}
    assert answers[7].error.code == errors_pb2.CORRUPT_BATCH
    for i in range(50):
        a = answers[100 + i]
        assert not a.HasField("error"), a.error
        assert a.response.base_offset == i
    assert [v for _, v in _values(cluster, "stream")] == [b"%03d" % i for i in range(50)]


class _Background:
    """A Producer sending value-<i> to partition 0 in a thread until stopped. With
    ``wait_every`` it waits for every n-th record's acknowledgement, so that few records
    are in flight: with linger_ms=0 these go from the sending thread, alone, as unary
    calls (the low-rate path, rules 4 and 5 of client/_sender.py)."""

    def __init__(self, cluster: Cluster, topic: str, linger_ms: int = 1,
                 wait_every: int = 0) -> None:
        self.topic = topic
        self.wait_every = wait_every
        self.producer = Producer(",".join(cluster.peers.values()), acks="all",
                                 linger_ms=linger_ms, batch_size=4096,
                                 buffer_memory=256 * 1024, enable_idempotence=True,
                                 request_timeout_ms=3000)
        self.futures: list = []
        self.failures: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        try:
            i = 0
            while not self._stop.is_set():
                future = self.producer.send(self.topic, b"value-%08d" % i, partition=0)
                self.futures.append(future)
                i += 1
                if self.wait_every and i % self.wait_every == 0:
                    future.exception(120)  # failures are reported by _check_every_offset
        except BaseException as e:  # noqa: BLE001
            self.failures.append(e)

    def wait_progress(self, records: int) -> None:
        """``records`` more sent; a quarter of them when every 4th waits for its answer
        (each a round trip: the low-rate path needs fewer to cross a fault)."""
        if self.wait_every:
            records //= self.wait_every
        mark = len(self.futures) + records
        wait_for(lambda: len(self.futures) >= mark or self.failures, 60, "records to be sent")
        assert not self.failures

    def finish(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join(30)
        self.producer.flush(120)
        self.producer.close()
        assert not self.failures
        return self.producer.statistics()


def _check_every_offset(cluster: Cluster, run: _Background) -> None:
    """Every record acknowledged, at offsets that follow the send order without gaps; the
    log holds exactly them (no duplicate, no loss, no reordering); every replica agrees."""
    sent = [b"value-%08d" % i for i in range(len(run.futures))]
    offsets = [f.result(0)[1] for f in run.futures]
    assert offsets == list(range(len(run.futures))), "offsets follow send order, no gaps"
    cluster.assert_acknowledged(run.topic, 0, sent, dict(zip(sent, offsets)))
    cluster.assert_replicas_agree(run.topic, 0)


_PACES = [pytest.param(1, 0, id="linger1-flat-out"),
          pytest.param(0, 0, id="linger0-flat-out"),
          pytest.param(0, 4, id="linger0-few-in-flight")]


@pytest.mark.parametrize(("linger_ms", "wait_every"), _PACES)
def test_idempotent_producer_under_leader_kills_has_no_duplicates_and_no_gaps(
        cluster: Cluster, linger_ms: int, wait_every: int) -> None:
    """kill -9 of the partition leader three times while a Producer keeps up to 5 batches
    in flight; then every offset holds exactly the value sent in that position."""
    cluster.create_topic("chaos", partitions=1)
    cluster.wait_leader("chaos", 0)
    run = _Background(cluster, "chaos", linger_ms, wait_every)
    try:
        for _ in range(3):
            run.wait_progress(3000)
            leader = cluster.wait_leader("chaos", 0)
            cluster.kill(leader)
            wait_for(lambda: cluster.partition_leader("chaos", 0) not in (0, leader), 30,
                     "a new leader")
            cluster.start(leader)
        run.wait_progress(3000)
    finally:
        stats = run.finish()
    assert stats["retries"] > 0, "the kills did interrupt writes"
    _check_every_offset(cluster, run)


@pytest.mark.parametrize(("linger_ms", "wait_every"), _PACES)
def test_idempotent_producer_across_a_paused_leader_has_no_duplicates_and_no_gaps(
        cluster: Cluster, linger_ms: int, wait_every: int) -> None:
    """SIGSTOP of the leader: its stream goes silent with batches in flight (maybe
    written, maybe not); the producer gives up on the stream and retries elsewhere."""
    cluster.create_topic("paused", partitions=1)
    cluster.wait_leader("paused", 0)
    run = _Background(cluster, "paused", linger_ms, wait_every)
    try:
        run.wait_progress(3000)
        leader = cluster.wait_leader("paused", 0)
        cluster.pause(leader)
        try:
            wait_for(lambda: cluster.partition_leader("paused", 0) not in (0, leader), 30,
                     "a new leader")
            run.wait_progress(3000)
        finally:
            cluster.resume(leader)
        run.wait_progress(3000)
    finally:
        stats = run.finish()
    assert stats["retries"] > 0
    _check_every_offset(cluster, run)


def test_a_new_producer_does_not_wait_on_a_paused_controller_leader(cluster: Cluster) -> None:
    """SIGSTOP of the controller leader: a producer created then gets its producer id from
    the new controller leader. Its request timeout (20 s) outlasts its delivery timeout
    (10 s), so a producer that waited for the paused node's answer, or a node that waited on
    its forwarded call, would fail the record instead of delivering it."""
    cluster.create_topic("paused-controller", partitions=1)
    cluster.wait_leader("paused-controller", 0)
    controller = cluster.controller_leader()
    cluster.pause(controller)
    try:
        others = [n for n in cluster.live() if n != controller]
        producer = Producer(",".join(cluster.peers[n] for n in others),
                            enable_idempotence=True, acks="all", request_timeout_ms=20_000,
                            delivery_timeout_ms=10_000)
        try:
            partition, offset = producer.send("paused-controller", b"first",
                                              partition=0).result(30)
        finally:
            producer.close()
    finally:
        cluster.resume(controller)
    assert (partition, offset) == (0, 0)


def test_producer_state_survives_retention_and_a_restart_of_every_node(cluster: Cluster) -> None:
    """The batches are gone from the log (retention) and every process restarts: the
    table comes back from the partition snapshot, so retries are still recognised."""
    cluster.create_topic("kept", configs={"retention.bytes": "1"})
    pid, epoch = _init_producer_id(cluster)
    batches = [_idempotent_batch(pid, epoch, i, b"r%d" % i) for i in range(4)]
    for i, b in enumerate(batches):
        assert _produce(cluster, "kept", b) == (i, i)

    def log_start() -> int:
        leader = cluster.wait_leader("kept", 0)
        r = cluster.broker(leader).ListOffsets(broker_pb2.ListOffsetsRequest(
            topic="kept", timestamp_ms=-2), timeout=5)
        return r.offset if r.offset >= 3 else 0
    wait_for(log_start, 20, "retention to drop the first batches", interval=0.2)
    for node in list(cluster.live()):
        cluster.kill(node)
    for node in cluster.peers:
        cluster.start(node)
    cluster.wait_healthy()
    for i, b in enumerate(batches[:3]):  # their entries were compacted away
        assert wait_for(lambda b=b: _try_produce(cluster, "kept", b), 30,
                        "a leader that answers") == (i, i)
    assert _produce(cluster, "kept", _idempotent_batch(pid, epoch, 4, b"r4")) == (4, 4)
    info = _rejection(cluster, "kept", _idempotent_batch(pid, epoch, 9, b"gap"))
    assert info.code == errors_pb2.OUT_OF_ORDER_SEQUENCE
    cluster.assert_replicas_agree("kept", 0)


def _try_produce(cluster: Cluster, topic: str, batch: bytes) -> tuple[int, int] | None:
    try:
        return _produce(cluster, topic, batch)
    except grpc.RpcError as e:
        info = error_info(e)
        if info is not None and info.retriable:
            return None
        raise


@pytest.mark.shared_cluster
def test_a_batch_that_fails_for_good_does_not_block_or_duplicate_the_ones_behind_it(
        cluster: Cluster) -> None:
    """The too-large batch leaves a permanent sequence gap; the batches pipelined behind
    it get OUT_OF_ORDER_SEQUENCE, then a new epoch from sequence 0 (rule 4 of
    client/_idempotence.py), once each."""
    cluster.create_topic("gap", configs={"max.message.bytes": "2000"})
    cluster.wait_leader("gap", 0)
    with Producer(",".join(cluster.peers.values()), linger_ms=50, batch_size=1000,
                  enable_idempotence=True) as producer:
        a = producer.send("gap", b"a", partition=0)
        big = producer.send("gap", os.urandom(5000), partition=0)  # incompressible, alone
        rest = [producer.send("gap", b"c%d" % i, partition=0) for i in range(3)]
        producer.flush(60)
        assert a.result(0) == (0, 0)
        with pytest.raises(Exception) as too_large:
            big.result(0)
        assert "REQUEST_TOO_LARGE" in str(too_large.value)
        assert [f.result(0) for f in rest] == [(0, 1), (0, 2), (0, 3)]
        stats = producer.statistics()
    assert stats["sequence_resets"] == 1
    assert [v for _, v in _values(cluster, "gap")] == [b"a", b"c0", b"c1", b"c2"]
