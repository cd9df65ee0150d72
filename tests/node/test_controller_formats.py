"""The controller's on-disk formats stay readable: command and snapshot bytes written by
earlier versions (literals below, produced before the codec, state and snapshot were split
into modules) decode to the same state, and today's encoders write the same bytes."""

from __future__ import annotations

import pytest

from raftka.node._controller_commands import (
    AddPartitions,
    AllocateProducerIds,
    CreateTopic,
    DeleteTopic,
    MalformedCommand,
    decode_command,
    encode_add_partitions,
    encode_allocate_producer_ids,
    encode_create_topic,
    encode_delete_topic,
)
from raftka.node._controller_snapshot import decode_snapshot, encode_snapshot
from raftka.node._controller_state import ControllerState, PartitionMeta, TopicMeta

# (command as written to the controller log, today's encoder call, the apply message)
V1_LOG = [
    (
        b'{"configs":{"retention.ms":"-1"},"internal":false,"name":"orders","op":"create_topic",'
        b'"partitions":2,"replication_factor":2,"v":1}',
        encode_create_topic("orders", 2, 2, {"retention.ms": "-1"}),
        "created topic 'orders': 2 partition(s), replication factor 2, groups 2..3",
    ),
    (
        b'{"count":1000,"op":"allocate_producer_ids","v":1}',
        encode_allocate_producer_ids(1000),
        "allocated producer ids 1..1000",
    ),
    (
        b'{"name":"orders","op":"add_partitions","partitions":3,"v":1}',
        encode_add_partitions("orders", 3),
        "topic 'orders' grew from 2 to 3 partitions, groups 4..4",
    ),
    (
        b'{"configs":{},"internal":true,"name":"__consumer_offsets","op":"create_topic",'
        b'"partitions":1,"replication_factor":3,"v":1}',
        encode_create_topic("__consumer_offsets", 1, 3, {}, internal=True),
        "created topic '__consumer_offsets': 1 partition(s), replication factor 3, groups 5..5",
    ),
    (
        b'{"configs":{},"internal":false,"name":"gone","op":"create_topic","partitions":1,'
        b'"replication_factor":1,"v":1}',
        encode_create_topic("gone", 1, 1),
        "created topic 'gone': 1 partition(s), replication factor 1, groups 6..6",
    ),
    (
        b'{"name":"gone","op":"delete_topic","v":1}',
        encode_delete_topic("gone"),
        "deleted topic 'gone'",
    ),
]

# The snapshot of ControllerState([1, 2, 3]) after V1_LOG at indexes 1..6.
V1_SNAPSHOT = (
    b'{"format":"raftka.controller.snapshot","next_group_id":7,"next_producer_id":1001,'
    b'"node_ids":[1,2,3],"topics":[{"configs":{"max.message.bytes":"1048576",'
    b'"retention.bytes":"-1","retention.ms":"604800000"},"internal":true,'
    b'"name":"__consumer_offsets","partitions":[[5,[1,2,3]]],"replication_factor":3,'
    b'"topic_id":"48042970-c8e5-57fa-9d44-f0ef6df97d2f"},{"configs":{"max.message.bytes":'
    b'"1048576","retention.bytes":"-1","retention.ms":"-1"},"internal":false,"name":"orders",'
    b'"partitions":[[2,[1,2]],[3,[3,1]],[4,[2,3]]],"replication_factor":2,'
    b'"topic_id":"dc254c29-1977-5b17-880b-bb838dc4bd1f"}],"v":1,"version":6}'
)

# The same state in snapshot format 2 (written since topics keep only the configs set on
# them): a v1 snapshot's configs equal to their defaults read as not set.
V2_SNAPSHOT = (
    b'{"format":"raftka.controller.snapshot","next_group_id":7,"next_producer_id":1001,'
    b'"node_ids":[1,2,3],"topics":[{"configs":{},"internal":true,'
    b'"name":"__consumer_offsets","partitions":[[5,[1,2,3]]],"replication_factor":3,'
    b'"topic_id":"48042970-c8e5-57fa-9d44-f0ef6df97d2f"},{"configs":{"retention.ms":"-1"},'
    b'"internal":false,"name":"orders",'
    b'"partitions":[[2,[1,2]],[3,[3,1]],[4,[2,3]]],"replication_factor":2,'
    b'"topic_id":"dc254c29-1977-5b17-880b-bb838dc4bd1f"}],"v":2,"version":6}'
)


# Format 3 (users and ACLs added): the same state has none of either.
V3_SNAPSHOT = (
    b'{"acls":[],' + V2_SNAPSHOT[1:].replace(b'"node_ids"', b'"node_ids"').replace(
        b'"topics":', b'"quotas":[],"topics":').replace(b'"v":2,', b'"users":[],"v":3,')
)

# Format 4 (cluster operations, issue 19): no node drained, no throttle, nothing moving.
V4_SNAPSHOT = (
    b'{"acls":[],"decommissioning":[],' + V3_SNAPSHOT[len(b'{"acls":[],'):].replace(
        b'"quotas":[],', b'"quotas":[],"reassign_throttle_bytes_per_s":0,"removed_nodes":[],'
    ).replace(b'"v":3,', b'"v":4,')
)


@pytest.mark.parametrize("written, encoded, _message", V1_LOG)
def test_encoders_write_the_v1_bytes(written: bytes, encoded: bytes, _message: str) -> None:
    assert encoded == written


def test_a_v1_log_applies_to_the_v4_snapshot() -> None:
    state = ControllerState([1, 2, 3])
    for index, (written, _, message) in enumerate(V1_LOG, start=1):
        result = state.apply(index, written)
        assert (result.ok, result.message) == (True, message)
    assert encode_snapshot(state) == V4_SNAPSHOT


@pytest.mark.parametrize("snapshot", [V1_SNAPSHOT, V2_SNAPSHOT, V3_SNAPSHOT, V4_SNAPSHOT])
def test_v1_to_v4_snapshots_decode_to_the_state_the_log_builds(snapshot: bytes) -> None:
    state = decode_snapshot(snapshot)
    assert encode_snapshot(state) == V4_SNAPSHOT
    assert (state.version, state.next_group_id, state.next_producer_id) == (6, 7, 1001)
    orders = state.topic("orders")
    assert orders is not None and orders.partitions == (
        PartitionMeta(0, 2, (1, 2)),
        PartitionMeta(1, 3, (3, 1)),
        PartitionMeta(2, 4, (2, 3)),
    )
    assert dict(orders.configs) == {"retention.ms": "-1"}
    assert orders.effective_configs()["retention.ms"] == "-1"
    assert state.replica_counts() == {1: 3, 2: 3, 3: 3}
    assert state.partition_by_group(5)[1].replicas == (1, 2, 3)


def test_decode_command_gives_each_op_its_typed_command() -> None:
    assert decode_command(V1_LOG[0][0]) == CreateTopic(
        "orders", 2, 2, {"retention.ms": "-1"}, False
    )
    assert decode_command(V1_LOG[1][0]) == AllocateProducerIds(1000)
    assert decode_command(V1_LOG[2][0]) == AddPartitions("orders", 3)
    assert decode_command(encode_delete_topic("__x", internal=True)) == DeleteTopic("__x", True)
    assert decode_command(V1_LOG[5][0]) == DeleteTopic("gone", False)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b'{"v":2,"op":"delete_topic","name":"t"}', "unsupported command version 2"),
        (b'{"v":true,"op":"delete_topic","name":"t"}', "unsupported command version True"),
        (b'{"v":1,"op":"rename_topic","name":"t"}', "unknown op 'rename_topic'"),
        (b'{"v":1,"op":"delete_topic"}', "delete_topic: missing field 'name'"),
        (b'{"v":1,"op":"delete_topic","name":"t","x":1}', "delete_topic: unknown field 'x'"),
        (b'{"v":1,"op":"delete_topic","name":7}', "field 'name' must be a string"),
        (b'{"v":1,"op":"allocate_producer_ids","count":1.0}', "floats are not allowed"),
        (b'{"v":1,"v":1}', "duplicate key 'v'"),
        (b'{"v":1', "not a JSON command"),
        (b"[1]", "a command is a JSON object"),
    ],
)
def test_decode_command_names_what_is_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(MalformedCommand) as raised:
        decode_command(data)
    assert str(raised.value).startswith(reason)


def test_restored_checks_invariants_that_the_layout_cannot_express() -> None:
    """A state built from parts (what a snapshot decodes to) is checked like a snapshot."""
    good = decode_snapshot(V1_SNAPSHOT).topic("orders")
    assert good is not None
    misnumbered = good._replace(partitions=(good.partitions[1], good.partitions[0]))
    with pytest.raises(ValueError, match="partition 0: numbered 1"):
        ControllerState.restored(
            [1, 2, 3], version=6, next_group_id=7, next_producer_id=1, topics=[misnumbered]
        )
    unnormalized: TopicMeta = good._replace(configs={"retention.ms": "-01"})
    with pytest.raises(ValueError, match="configs are not normalized"):
        ControllerState.restored(
            [1, 2, 3], version=6, next_group_id=7, next_producer_id=1, topics=[unnormalized]
        )
