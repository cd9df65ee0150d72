"""Broker.ListOffsets over the raw gRPC stub: earliest, latest and by append time."""

from __future__ import annotations

import time

import grpc
import pytest

from raftka.v1 import broker_pb2, errors_pb2
from raftka.v1.recordbatch import Record, build_batch

from tests.harness import Cluster, error_info, wait_for


def _batch(*values: bytes) -> bytes:
    return build_batch([Record(None, v) for v in values], compression="lz4")


def _list(stub, topic: str, ts: int) -> broker_pb2.ListOffsetsResponse:
    return stub.ListOffsets(broker_pb2.ListOffsetsRequest(topic=topic, partition=0,
                                                          timestamp_ms=ts), timeout=10)


def _now_ms() -> int:
    return int(time.time() * 1000)


def test_list_offsets_earliest_latest_and_by_time(cluster: Cluster) -> None:
    cluster.create_topic("times")
    leader = cluster.wait_leader("times", 0)
    stub = cluster.broker(leader)
    assert _list(stub, "times", -2).offset == 0
    assert _list(stub, "times", -1).offset == 0
    assert _list(stub, "times", _now_ms()).offset == 0, "empty partition: the high watermark"

    start_ms = _now_ms()
    cluster.produce("times", 0, _batch(b"a", b"b"))          # offsets 0, 1
    middle_ms = _now_ms() + 1
    wait_for(lambda: _now_ms() > middle_ms, 5, "the clock to pass the middle time")
    cluster.produce("times", 0, _batch(b"c"))                # offset 2
    cluster.produce("times", 0, _batch(b"d", b"e"))          # offsets 3, 4

    r = _list(stub, "times", -2)
    assert (r.offset, r.high_watermark, r.log_start_offset) == (0, 5, 0)
    assert _list(stub, "times", -1).offset == 5
    assert _list(stub, "times", 0).offset == 0
    assert _list(stub, "times", start_ms).offset == 0
    assert _list(stub, "times", middle_ms).offset == 2
    assert _list(stub, "times", _now_ms() + 60_000).offset == 5, "none that late: the end"


def test_list_offsets_errors(cluster: Cluster) -> None:
    cluster.create_topic("errs")
    leader = cluster.wait_leader("errs", 0)
    with pytest.raises(grpc.RpcError) as bad:
        _list(cluster.broker(leader), "errs", -7)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(bad.value).code == errors_pb2.INVALID_REQUEST

    follower = next(n for n in cluster.live() if n != leader)

    def leader_known_to_follower() -> bool:
        """The follower may not have applied the topic's creation yet (UNKNOWN_TOPIC)."""
        try:
            md = cluster.broker(follower).Metadata(
                broker_pb2.MetadataRequest(topics=["errs"]), timeout=5)
        except grpc.RpcError as exc:
            assert error_info(exc).code == errors_pb2.UNKNOWN_TOPIC, exc
            return False
        return md.topics[0].partitions[0].leader_id == leader
    wait_for(leader_known_to_follower, 10, "the follower to know the leader")
    with pytest.raises(grpc.RpcError) as not_leader:
        _list(cluster.broker(follower), "errs", -1)
    info = error_info(not_leader.value)
    assert info.code == errors_pb2.NOT_LEADER and info.retriable and info.leader_id == leader

    with pytest.raises(grpc.RpcError) as unknown:
        _list(cluster.broker(leader), "no-such-topic", -1)
    assert error_info(unknown.value).code in (errors_pb2.UNKNOWN_TOPIC,
                                              errors_pb2.UNKNOWN_PARTITION)
