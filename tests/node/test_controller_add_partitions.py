"""The controller's add_partitions command: validation, balanced placement of the new
partitions, fresh group ids, determinism and snapshots."""

from __future__ import annotations

import json

import pytest

from raftka.v1 import errors_pb2
from raftka.node._controller_commands import (
    encode_add_partitions,
    encode_create_topic,
    encode_delete_topic,
)
from raftka.node._controller_snapshot import decode_snapshot, encode_snapshot
from raftka.node._controller_state import PARTITION_COUNT_MAX, ControllerState, TopicMeta
from tests.node.test_controller import Log, content, spread


@pytest.fixture
def log() -> Log:
    return Log(ControllerState([1, 2, 3]))


def test_add_partitions_keeps_the_old_ones_and_gives_fresh_group_ids(log: Log) -> None:
    before = log.create("orders", partitions=2, rf=3, configs={"retention.ms": "1000"}).value
    log.create("other", partitions=1, rf=1)  # takes group 4
    result = log.apply(encode_add_partitions("orders", 5))
    assert result.ok, result.message
    meta = result.value
    assert isinstance(meta, TopicMeta) and log.state.topic("orders") == meta
    assert [p.partition for p in meta.partitions] == [0, 1, 2, 3, 4]
    assert meta.partitions[:2] == before.partitions  # untouched
    assert [p.group_id for p in meta.partitions] == [2, 3, 5, 6, 7]
    assert log.state.next_group_id == 8
    assert meta.topic_id == before.topic_id and meta.configs == before.configs
    assert all(len(set(p.replicas)) == 3 for p in meta.partitions)
    for p in meta.partitions[2:]:
        assert log.state.partition_by_group(p.group_id) == (meta, p)
    assert "2 to 5" in result.message


def test_new_partitions_are_placed_like_a_create(log: Log) -> None:
    # growing 3 -> 6 places exactly what creating 6 at once would
    log.create("t", partitions=3, rf=2)
    grown = log.apply(encode_add_partitions("t", 6)).value
    fresh = Log(ControllerState([1, 2, 3]))
    created = fresh.create("t", partitions=6, rf=2).value
    assert [p.replicas for p in grown.partitions] == [p.replicas for p in created.partitions]
    assert spread(log.state.replica_counts()) <= 1
    assert spread(log.state.leader_counts()) <= 1


def test_new_partitions_balance_against_every_topic() -> None:
    log = Log(ControllerState([1, 2, 3, 4, 5]))
    log.create("a", partitions=3, rf=3)
    log.create("b", partitions=2, rf=1)
    log.apply(encode_add_partitions("b", 9))
    assert spread(log.state.replica_counts()) <= 1
    assert spread(log.state.leader_counts()) <= 1


@pytest.mark.parametrize("total", [3, 2, 1, 0, -1])
def test_partition_count_only_grows(log: Log, total: int) -> None:
    log.create("t", partitions=3)
    before = content(log.state)
    result = log.apply(encode_add_partitions("t", total))
    assert not result.ok and result.code == errors_pb2.INVALID_REQUEST
    assert "has 3 partitions" in result.message and "never removed" in result.message
    assert content(log.state) == before


def test_partition_count_is_bounded(log: Log) -> None:
    log.create("t", partitions=3)
    result = log.apply(encode_add_partitions("t", PARTITION_COUNT_MAX + 1))
    assert not result.ok and result.code == errors_pb2.INVALID_REQUEST
    assert str(PARTITION_COUNT_MAX) in result.message
    assert log.apply(encode_add_partitions("t", PARTITION_COUNT_MAX)).ok


def test_unknown_topic(log: Log) -> None:
    result = log.apply(encode_add_partitions("nope", 3))
    assert not result.ok and result.code == errors_pb2.UNKNOWN_TOPIC


def test_internal_topics_cannot_grow(log: Log) -> None:
    # the group coordinator maps group ids to __consumer_offsets partitions by count
    log.create("__consumer_offsets", partitions=3, internal=True)
    result = log.apply(encode_add_partitions("__consumer_offsets", 6))
    assert not result.ok and result.code == errors_pb2.INVALID_REQUEST
    assert "internal" in result.message


@pytest.mark.parametrize("command", [
    b'{"name":"t","op":"add_partitions","v":1}',
    b'{"name":"t","op":"add_partitions","partitions":"6","v":1}',
    b'{"name":"t","op":"add_partitions","partitions":6,"replication_factor":3,"v":1}',
    b'{"name":7,"op":"add_partitions","partitions":6,"v":1}',
    b'{"name":"t","op":"add_partitions","partitions":true,"v":1}',
])
def test_malformed_add_partitions_is_rejected(log: Log, command: bytes) -> None:
    log.create("t", partitions=3)
    before = content(log.state)
    result = log.apply(command)
    assert not result.ok and result.code == errors_pb2.INVALID_REQUEST
    assert content(log.state) == before


def test_check_does_not_apply(log: Log) -> None:
    log.create("t", partitions=3)
    assert log.state.check(encode_add_partitions("t", 4)).ok
    assert len(log.state.topic("t").partitions) == 3


def test_grown_topic_survives_snapshot_restore_and_delete(log: Log) -> None:
    log.create("t", partitions=2)
    log.create("u", partitions=1)
    log.apply(encode_add_partitions("t", 4))
    restored = decode_snapshot(encode_snapshot(log.state))
    assert encode_snapshot(restored) == encode_snapshot(log.state)
    assert restored.replica_counts() == log.state.replica_counts()
    assert restored.leader_counts() == log.state.leader_counts()
    snap = json.loads(encode_snapshot(log.state))
    groups = [g for g, _ in next(t for t in snap["topics"] if t["name"] == "t")["partitions"]]
    assert groups == [2, 3, 5, 6]
    assert log.apply(encode_delete_topic("t")).ok
    assert log.state.replica_counts() == {1: 1, 2: 1, 3: 1}
    assert log.apply(encode_create_topic("t", 1, 3, {})).value.partitions[0].group_id == 7


def test_partitions_on_lists_new_partitions_for_their_replicas(log: Log) -> None:
    log.create("t", partitions=1, rf=1)
    meta = log.apply(encode_add_partitions("t", 3)).value
    for p in meta.partitions:
        node = p.replicas[0]
        assert ("t", p.partition) in {(m.name, q.partition) for m, q in
                                      log.state.partitions_on(node)}
