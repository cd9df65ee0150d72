"""The Kafka listener's message building (node/_kafka/_codec.py) and error table: one
answer, described once, fits every version of its API; every error code we have maps to
a Kafka code."""

from __future__ import annotations

import datetime

import pytest
from kio.index import load_response_schema
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader

from raftka.node._errors import Code
from raftka.v1 import errors_pb2
from raftka.node._kafka import SUPPORTED
from raftka.node._kafka._codec import build, encode_response
from raftka.node._kafka._errors import kafka_code

METADATA = {
    "brokers": [{"node_id": 1, "host": "h", "port": 9092}], "cluster_id": "raftka",
    "controller_id": 1, "topics": [{
        "error_code": 0, "name": "t", "topic_id": "3534fad7-44ec-5bfc-a53d-f3b40e2cff5b",
        "partitions": [{"error_code": 0, "partition_index": 0, "leader_id": 1,
                        "replica_nodes": [1], "isr_nodes": [1], "offline_replicas": []}]}],
}


@pytest.mark.parametrize("version", range(SUPPORTED[3][1], SUPPORTED[3][2] + 1))
def test_one_metadata_answer_encodes_at_every_served_version(version: int) -> None:
    cls = load_response_schema(3, version)
    frame = b"".join(encode_response(cls, 42, METADATA))
    header, used = entity_reader(cls.__header_schema__)(frame, 4)
    body, size = entity_reader(cls)(frame, 4 + used)
    assert header.correlation_id == 42 and 4 + used + size == len(frame)
    assert body.topics[0].name == "t" and body.topics[0].partitions[0].leader_id == 1
    assert body.brokers[0].port == 9092


def test_build_fills_defaults_drops_unknown_fields_and_nulls_where_allowed() -> None:
    old = load_response_schema(11, 2)  # JoinGroup v2: protocol_name is not nullable
    answer = build(old, {"error_code": 25, "generation_id": -1, "protocol_name": None,
                         "leader": "", "member_id": "m", "members": [],
                         "skip_assignment": True})  # a v9 field, dropped
    assert answer.protocol_name == "" and answer.error_code == ErrorCode.unknown_member_id
    assert answer.throttle_time == datetime.timedelta(0)
    new = load_response_schema(11, 9)
    assert build(new, {"protocol_name": None}).protocol_name is None


def test_every_error_code_maps_to_a_kafka_code() -> None:
    for code in errors_pb2.ErrorCode.values():
        if code:
            assert kafka_code(code) != ErrorCode.none
    assert kafka_code(Code.NOT_LEADER) == ErrorCode.not_leader_or_follower
    assert kafka_code(Code.NOT_COORDINATOR) == ErrorCode.not_coordinator
    assert kafka_code(Code.OFFSET_OUT_OF_RANGE) == ErrorCode.offset_out_of_range


def test_a_length_prefix_beyond_the_frame_is_malformed_before_kio_reads_it() -> None:
    """DescribeGroups v5 whose groups array claims ~2^34 elements in a 20-byte frame: kio's
    compiled reader would try to allocate them and abort the process (tests/fuzz)."""
    import pytest

    from raftka.node._kafka._codec import MalformedRequest, parse_request

    frame = (b"\x00\x0f\x00\x05" + b"\x00\x00\x00\x07" + b"\x00\x00"  # header v2, client ""
             + b"\x00" + b"\xff\xff\xff\xff\x40" + b"\x00")  # tags; groups: huge count
    with pytest.raises(MalformedRequest, match="claims"):
        parse_request(frame, 15, 5)
