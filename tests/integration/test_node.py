"""The broker node as users meet it: real processes on loopback, real kill -9 and SIGSTOP."""

from __future__ import annotations

import grpc
import pytest

from raftka.v1 import broker_pb2, errors_pb2
from raftka.v1.recordbatch import Record, build_batch, decode_batches

from tests.harness import Cluster, error_info, wait_for


def _batch(values: list[bytes]) -> bytes:
    return build_batch([Record(None, v) for v in values], compression="lz4")


@pytest.mark.shared_cluster
def test_create_produce_fetch_round_trip(cluster: Cluster) -> None:
    cluster.create_topic("orders", partitions=3)
    for p in range(3):
        first = cluster.produce("orders", p, _batch([b"a%d" % p, b"b%d" % p]))
        second = cluster.produce("orders", p, _batch([b"c%d" % p]))
        assert (first.base_offset, first.last_offset) == (0, 1)
        assert (second.base_offset, second.last_offset) == (2, 2)
    for p in range(3):
        records = decode_batches(cluster.fetch_all("orders", p))
        assert [(r.offset, r.value) for r in records] == [
            (0, b"a%d" % p), (1, b"b%d" % p), (2, b"c%d" % p)]
    # Preferred leaders are spread; under load a leadership may briefly move (an election
    # timeout on a starved node) and the brokers hand it back, so wait for that.
    leaders = {cluster.wait_preferred_leader("orders", p) for p in range(3)}
    assert len(leaders) == 3, "leaders of a new topic are spread over the nodes"


@pytest.mark.shared_cluster
def test_plain_records_in_and_decoded_records_out(cluster: Cluster) -> None:
    """gRPC clients in any language: no RecordBatch encoding needed on either side."""
    cluster.create_topic("plain")
    leader = cluster.wait_leader("plain", 0)
    stub = cluster.broker(leader)
    records = broker_pb2.RecordList(records=[
        broker_pb2.Record(key=b"k", value=b"v1", headers=[broker_pb2.Header(key="h", value=b"x")]),
        broker_pb2.Record(value=b"v2"),
    ])
    r = stub.Produce(broker_pb2.ProduceRequest(topic="plain", records=records), timeout=10)
    assert (r.base_offset, r.last_offset) == (0, 1)
    f = stub.Fetch(broker_pb2.FetchRequest(topic="plain", offset=1, decode_records=True),
                   timeout=10)
    assert [(x.offset, x.value, x.HasField("key")) for x in f.records] == [(1, b"v2", False)]
    f = stub.Fetch(broker_pb2.FetchRequest(topic="plain", offset=0, decode_records=True),
                   timeout=10)
    assert f.records[0].key == b"k" and f.records[0].headers[0].value == b"x"


def test_acknowledged_writes_survive_kill_of_the_leader(cluster: Cluster) -> None:
    cluster.create_topic("durable")
    sent = []
    for i in range(20):
        cluster.produce("durable", 0, _batch([b"before-%d" % i]))
        sent.append(b"before-%d" % i)
    old = cluster.wait_leader("durable", 0)
    cluster.kill(old)
    new = wait_for(lambda: cluster.partition_leader("durable", 0), 10, "a new leader")
    assert new != old
    for i in range(10):
        cluster.produce("durable", 0, _batch([b"after-%d" % i]))
        sent.append(b"after-%d" % i)
    cluster.assert_acknowledged("durable", 0, sent)  # all of them, in order, once each
    cluster.assert_replicas_agree("durable", 0)
    cluster.start(old)  # it rejoins as a follower and catches up
    cluster.assert_replicas_agree("durable", 0)


def test_killed_minority_node_restarts_and_catches_up(cluster: Cluster) -> None:
    cluster.create_topic("catchup")
    leader = cluster.wait_leader("catchup", 0)
    follower = next(n for n in cluster.live() if n != leader)
    cluster.kill(follower)
    sent = [b"m%d" % i for i in range(30)]
    for value in sent:
        cluster.produce("catchup", 0, _batch([value]))
    cluster.start(follower)
    cluster.assert_acknowledged("catchup", 0, sent)
    # The restarted replica reaches the leader's high watermark and holds the same records
    # at the same offsets (its own content, read through the Debug service).
    cluster.assert_replicas_agree("catchup", 0)


def test_paused_follower_does_not_block_commits(cluster: Cluster) -> None:
    cluster.create_topic("paused")
    leader = cluster.wait_leader("paused", 0)
    follower = next(n for n in cluster.live() if n != leader)
    sent = [b"p%d" % i for i in range(10)]
    cluster.pause(follower)
    try:
        for value in sent:  # acks=all: the leader and the other follower are a majority
            cluster.produce("paused", 0, _batch([value]))
        cluster.assert_acknowledged("paused", 0, sent)
    finally:
        cluster.resume(follower)
    cluster.assert_replicas_agree("paused", 0)


def test_produce_without_quorum_fails_within_its_timeout_with_a_retriable_status(
        cluster: Cluster) -> None:
    cluster.create_topic("noquorum")
    leader = cluster.wait_leader("noquorum", 0)
    followers = [n for n in cluster.live() if n != leader]
    for n in followers:
        cluster.pause(n)
    try:
        # The broker answers at its own 2 s timeout, not the client's 10 s deadline:
        # DEADLINE_EXCEEDED (a hang) is not among the statuses accepted here.
        with pytest.raises(grpc.RpcError) as err:
            cluster.broker(leader).Produce(broker_pb2.ProduceRequest(
                topic="noquorum", record_batches=_batch([b"x"]), timeout_ms=2000),
                timeout=10)
    finally:
        for n in followers:
            cluster.resume(n)
    assert err.value.code() in (grpc.StatusCode.UNAVAILABLE,
                                grpc.StatusCode.FAILED_PRECONDITION), err.value
    info = error_info(err.value)
    assert info is not None and info.retriable
    # The write may still commit once the followers are back (the error says so); either
    # way every replica ends up with the same log.
    cluster.assert_acknowledged("noquorum", 0, [b"x"], acked={})
    cluster.assert_replicas_agree("noquorum", 0)


@pytest.mark.shared_cluster
@pytest.mark.parametrize("case", ["bad_crc", "wrong_magic", "unknown_topic", "too_large"])
def test_bad_input_is_refused_and_the_node_keeps_serving(cluster: Cluster, case: str) -> None:
    name = f"input-{case}"  # a topic per case: the module's tests share one cluster
    cluster.create_topic(name)
    leader = cluster.wait_leader(name, 0)
    good = _batch([b"ok"])
    topic, payload = name, good
    if case == "bad_crc":
        payload = good[:-1] + bytes([good[-1] ^ 0xFF])
        expected = (grpc.StatusCode.INVALID_ARGUMENT, errors_pb2.CORRUPT_BATCH)
    elif case == "wrong_magic":
        payload = good[:16] + b"\x01" + good[17:]
        expected = (grpc.StatusCode.INVALID_ARGUMENT, errors_pb2.CORRUPT_BATCH)
    elif case == "unknown_topic":
        topic = "nope"
        expected = (grpc.StatusCode.NOT_FOUND, errors_pb2.UNKNOWN_TOPIC)
    else:
        payload = build_batch([Record(None, b"x" * (20 << 20))], compression="none")
        expected = (grpc.StatusCode.RESOURCE_EXHAUSTED, errors_pb2.REQUEST_TOO_LARGE)
    with pytest.raises(grpc.RpcError) as err:
        cluster.broker(leader).Produce(
            broker_pb2.ProduceRequest(topic=topic, record_batches=payload), timeout=10)
    info = error_info(err.value)
    assert (err.value.code(), info.code if info else None) == expected, err.value.details()
    assert info.message
    assert cluster.produce(name, 0, good).base_offset == 0  # nothing was written, still serving


@pytest.mark.shared_cluster
def test_request_to_a_follower_names_the_leader(cluster: Cluster) -> None:
    cluster.create_topic("routing")
    leader = cluster.wait_leader("routing", 0)
    follower = next(n for n in cluster.live() if n != leader)

    def refusal() -> errors_pb2.ErrorInfo | None:
        """Right after an election a follower may not have heard from the new leader yet
        and answers NOT_LEADER without a name ("election in progress"); wait for the name."""
        try:
            cluster.broker(follower).Produce(broker_pb2.ProduceRequest(
                topic="routing", record_batches=_batch([b"x"])), timeout=5)
        except grpc.RpcError as exc:
            info = error_info(exc)
            if info is None and exc.code() in (grpc.StatusCode.UNAVAILABLE,
                                               grpc.StatusCode.DEADLINE_EXCEEDED):
                return None  # the connection, not the answer (a loaded clean-clone run)
            assert info is not None and info.code == errors_pb2.NOT_LEADER, \
                (exc.code(), exc.details(), info)
            return info if info.leader_id else None
        raise AssertionError("a follower accepted a produce request")
    info = wait_for(refusal, 15, "the follower to name the leader")
    assert info.leader_id == leader and info.leader_address == cluster.peers[leader]


def test_sigterm_transfers_leadership_before_exit(cluster: Cluster) -> None:
    cluster.create_topic("graceful")
    leader = cluster.wait_leader("graceful", 0)
    cluster.produce("graceful", 0, _batch([b"x"]))
    assert cluster.terminate(leader) == 0
    new = wait_for(lambda: cluster.partition_leader("graceful", 0), 5, "a new leader")
    assert new != leader
    cluster.assert_acknowledged("graceful", 0, [b"x"])
    cluster.assert_replicas_agree("graceful", 0)


def test_retention_by_size_advances_the_log_start(cluster: Cluster) -> None:
    cluster.create_topic("short", configs={"retention.bytes": "2000"})
    for i in range(30):
        cluster.produce("short", 0, build_batch([Record(None, b"%04d" % i + b"x" * 300)],
                                                 compression="none"))
    leader = cluster.wait_leader("short", 0)

    def log_start() -> int:
        f = cluster.broker(leader).Fetch(broker_pb2.FetchRequest(topic="short", offset=29),
                                         timeout=5)
        return f.log_start_offset
    start = wait_for(log_start, 15, "retention to drop old entries", interval=0.5)
    assert 0 < start < 30
    with pytest.raises(grpc.RpcError) as err:
        cluster.broker(leader).Fetch(broker_pb2.FetchRequest(topic="short", offset=0), timeout=5)
    assert error_info(err.value).code == errors_pb2.OFFSET_OUT_OF_RANGE
    remaining = [r.value[:4] for r in decode_batches(cluster.fetch_all("short", 0, start))]
    assert remaining == [b"%04d" % i for i in range(start, 30)]


def test_retention_by_time_drops_old_entries_whole(cluster: Cluster) -> None:
    cluster.create_topic("ephemeral", configs={"retention.ms": "1000"})
    for i in range(5):
        cluster.produce("ephemeral", 0, _batch([b"old-%d" % i]))
    leader = cluster.wait_leader("ephemeral", 0)

    def log_start() -> int:
        return cluster.broker(leader).Fetch(
            broker_pb2.FetchRequest(topic="ephemeral", offset=5), timeout=5).log_start_offset
    # entries expire by their own timestamps: under load the five may be written over more
    # than the retention, and retention may drop the first before the rest
    wait_for(lambda: log_start() == 5, 15, "time retention to drop the old entries",
             interval=0.5)
    assert cluster.produce("ephemeral", 0, _batch([b"new"])).base_offset == 5  # never reused
    records = decode_batches(cluster.fetch_all("ephemeral", 0, start=5))
    assert [(r.offset, r.value) for r in records] == [(5, b"new")]
