"""The controller's cluster-operation commands (issue 19): partition reassignment, its
cancel and completion, replication-factor changes, node decommission and removal, the
reassignment throttle; bad input refused with nothing changed; snapshots keep moves."""

from __future__ import annotations

import pytest

from raftka.v1 import errors_pb2
from raftka.node._controller_commands import (
    decode_command,
    encode_alter_replication_factor,
    encode_cancel_decommission,
    encode_cancel_reassignment,
    encode_complete_reassignment,
    encode_create_topic,
    encode_decommission_node,
    encode_reassign_partition,
    encode_remove_node,
    encode_set_reassignment_throttle,
)
from raftka.node._controller_snapshot import decode_snapshot, encode_snapshot
from raftka.node._controller_state import ControllerState
from tests.node.test_controller import Log, content


@pytest.fixture
def log() -> Log:
    log = Log(ControllerState([1, 2, 3, 4]))
    assert log.create("t", partitions=2, rf=3).ok
    return log


def part(log: Log, p: int = 0):
    return log.state.topic("t").partitions[p]


def test_a_move_records_its_target_and_the_leader_records_completion(log: Log) -> None:
    before = part(log)
    target = tuple(n for n in (1, 2, 3, 4) if n != before.replicas[0])
    result = log.apply(encode_reassign_partition("t", 0, target))
    assert result.ok, result.message
    moving = part(log)
    assert moving.replicas == before.replicas and moving.target == target
    assert moving.desired == target and moving.hosts == (1, 2, 3, 4)
    # every node of either set hosts the partition during the move
    for node in (1, 2, 3, 4):
        assert any(p.partition == 0 for _, p in log.state.partitions_on(node))
    assert [p.partition for _, p in log.state.reassignments()] == [0]
    done = log.apply(encode_complete_reassignment("t", 0, before.group_id, target))
    assert done.ok, done.message
    after = part(log)
    assert after.replicas == target and after.target == () and not after.cancelled
    assert not any(p.partition == 0 for _, p in log.state.partitions_on(before.replicas[0]))
    assert sum(log.state.replica_counts().values()) == 6
    assert log.state.reassignments() == []


def test_cancel_goes_back_to_the_old_set_and_keeps_every_host_until_completion(log: Log) -> None:
    before = part(log)
    target = tuple(n for n in (1, 2, 3, 4) if n != before.replicas[0])
    log.apply(encode_reassign_partition("t", 0, target))
    assert log.apply(encode_cancel_reassignment("t", 0)).ok
    moving = part(log)
    assert moving.cancelled and moving.desired == before.replicas
    assert moving.hosts == (1, 2, 3, 4)  # the new node keeps its copy until the group shrinks
    stale = log.apply(encode_complete_reassignment("t", 0, before.group_id, target))
    assert not stale.ok and stale.code == errors_pb2.INVALID_REQUEST
    assert log.apply(encode_complete_reassignment("t", 0, before.group_id,
                                                  before.replicas)).ok
    assert part(log) == before


BAD_MOVES = [
    (("nope", 0, (1, 2, 3)), errors_pb2.UNKNOWN_TOPIC, "unknown topic"),
    (("t", 5, (1, 2, 3)), errors_pb2.UNKNOWN_PARTITION, "partitions 0..1"),
    (("t", 0, ()), errors_pb2.INVALID_REQUEST, "empty"),
    (("t", 0, (1, 1, 2)), errors_pb2.INVALID_REQUEST, "twice"),
    (("t", 0, (1, 2, 9)), errors_pb2.INVALID_REQUEST, "unknown node 9"),
    (("t", 0, (1, 2)), errors_pb2.INVALID_REQUEST, "replication factor 3"),
]


@pytest.mark.parametrize("args, code, words", BAD_MOVES)
def test_bad_moves_are_refused_and_change_nothing(log: Log, args, code, words) -> None:
    before = content(log.state)
    result = log.apply(encode_reassign_partition(*args))
    assert (result.ok, result.code) == (False, code) and words in result.message
    assert content(log.state) == before


def test_a_second_move_of_a_moving_partition_and_a_no_op_move_are_refused(log: Log) -> None:
    current = part(log).replicas
    same = log.apply(encode_reassign_partition("t", 0, current))
    assert not same.ok and "already has replicas" in same.message
    other = tuple(n for n in (1, 2, 3, 4) if n != current[0])
    assert log.apply(encode_reassign_partition("t", 0, other)).ok
    before = content(log.state)
    second = log.apply(encode_reassign_partition("t", 0, current))
    assert not second.ok and "already moving" in second.message
    assert content(log.state) == before
    assert not log.apply(encode_cancel_reassignment("t", 1)).ok  # partition 1 is not moving
    assert log.apply(encode_cancel_reassignment("t", 0)).ok
    assert not log.apply(encode_cancel_reassignment("t", 0)).ok  # already cancelled


def test_alter_replication_factor_moves_every_partition(log: Log) -> None:
    result = log.apply(encode_alter_replication_factor("t", 4))
    assert result.ok, result.message
    meta = log.state.topic("t")
    assert meta.replication_factor == 4
    assert all(sorted(p.target) == [1, 2, 3, 4] and p.target[:3] == p.replicas
               for p in meta.partitions)
    again = log.apply(encode_alter_replication_factor("t", 2))
    assert not again.ok and "moving" in again.message
    for p in meta.partitions:
        assert log.apply(encode_complete_reassignment("t", p.partition, p.group_id,
                                                      p.target)).ok
    shrink = log.apply(encode_alter_replication_factor("t", 2))
    assert shrink.ok
    assert all(len(p.target) == 2 and p.target[0] == p.replicas[0]
               for p in log.state.topic("t").partitions)
    too_many = log.apply(encode_alter_replication_factor("t", 5))
    assert not too_many.ok


def test_decommission_plans_moves_off_the_node_then_removes_it(log: Log) -> None:
    assert log.apply(encode_decommission_node(1)).ok
    assert log.state.node_state(1) == "decommissioning"
    assert log.state.active_node_ids == (2, 3, 4)
    # no new replica goes to a draining node
    created = log.create("u", partitions=3, rf=3).value
    assert all(1 not in p.replicas for p in created.partitions)
    refused = log.apply(encode_remove_node(1))
    assert not refused.ok and "still hosts" in refused.message
    rounds = 0
    while log.state.hosts_anything(1):
        rounds += 1
        assert rounds < 10
        moves = log.state.plan_moves_off(1, limit=2)
        assert moves and len(moves) <= 2
        for topic, p, replicas in moves:
            assert 1 not in replicas and len(set(replicas)) == len(replicas)
            assert log.apply(encode_reassign_partition(topic, p, replicas)).ok
        assert log.state.plan_moves_off(1, limit=2) == []  # the limit counts moves running
        for meta, moving in log.state.reassignments():
            assert log.apply(encode_complete_reassignment(
                meta.name, moving.partition, moving.group_id, moving.target)).ok
    assert log.apply(encode_remove_node(1)).ok
    assert log.state.node_state(1) == "removed" and 1 in log.state.removed_nodes
    assert log.state.replica_counts()[1] == 0
    restored = decode_snapshot(encode_snapshot(log.state))
    assert content(restored) == content(log.state)


def test_decommission_refuses_when_no_node_could_take_the_replicas(log: Log) -> None:
    assert log.apply(encode_decommission_node(4)).ok
    before = content(log.state)
    refused = log.apply(encode_decommission_node(3))  # 2 active nodes left for rf 3
    assert (refused.ok, refused.code) == (False, errors_pb2.NOT_ENOUGH_REPLICAS)
    assert "no node could take" in refused.message
    assert content(log.state) == before
    assert not log.apply(encode_decommission_node(4)).ok  # already
    assert not log.apply(encode_decommission_node(9)).ok  # unknown
    assert log.apply(encode_cancel_decommission(4)).ok
    assert log.state.node_state(4) == "active"
    assert not log.apply(encode_cancel_decommission(4)).ok


def test_moves_to_a_draining_node_are_refused(log: Log) -> None:
    log.apply(encode_decommission_node(4))
    current = part(log).replicas
    target = tuple(n for n in (1, 2, 3, 4) if n != current[0])
    assert 4 in target
    result = log.apply(encode_reassign_partition("t", 0, target))
    assert not result.ok and "decommissioning" in result.message


def test_throttle_is_recorded_and_bounded(log: Log) -> None:
    assert log.apply(encode_set_reassignment_throttle(1 << 20)).ok
    assert log.state.reassign_throttle_bytes_per_s == 1 << 20
    assert not log.apply(encode_set_reassignment_throttle(-1)).ok
    assert log.state.reassign_throttle_bytes_per_s == 1 << 20


def test_a_snapshot_keeps_moves_in_progress(log: Log) -> None:
    current = part(log).replicas
    target = tuple(n for n in (1, 2, 3, 4) if n != current[0])
    log.apply(encode_reassign_partition("t", 0, target))
    log.apply(encode_cancel_reassignment("t", 0))
    log.apply(encode_set_reassignment_throttle(1000))
    data = encode_snapshot(log.state)
    restored = decode_snapshot(data)
    assert encode_snapshot(restored) == data
    assert restored.topic("t").partitions[0].cancelled


def test_commands_decode_strictly() -> None:
    command = encode_reassign_partition("t", 0, [1, 2])
    assert decode_command(command).replicas == (1, 2)
    with pytest.raises(ValueError):
        decode_command(command.replace(b"[1,2]", b'["1",2]'))
    assert ControllerState([1]).apply(1, encode_create_topic("x", 1, 1)).ok
