"""The controller's ``register_node`` command (issue 19: nodes join a running cluster): a
joining node gets its id (or the next unused one), an id in use is refused with nothing
changed, registering again with the same addresses is a no-op (a restart); the new node takes
replicas; snapshots carry node addresses (v5) and stay v4 while nothing joined."""

from __future__ import annotations

import json

import pytest

from raftka.v1 import errors_pb2
from raftka.node._config import ConfigError, NodeConfig, from_args
from raftka.node._controller_commands import (
    RegisterNode,
    decode_command,
    encode_decommission_node,
    encode_reassign_partition,
    encode_register_node,
    encode_remove_node,
)
from raftka.node._controller_snapshot import decode_snapshot, encode_snapshot
from raftka.node._controller_state import ControllerState, NodeAddress
from tests.node.test_controller import Log, content


@pytest.fixture
def log() -> Log:
    log = Log(ControllerState([1, 2, 3]))
    assert log.create("t", partitions=1, rf=3).ok
    return log


def join(log: Log, node_id: int, address: str, **kw):
    return log.apply(encode_register_node(node_id, address, **kw))


def test_the_command_round_trips() -> None:
    data = encode_register_node(4, "h:1", "h:2", "h:3", "rack-a")
    assert decode_command(data) == RegisterNode(4, "h:1", "h:2", "h:3", "rack-a")


def test_a_node_joins_with_its_id_and_can_take_replicas(log: Log) -> None:
    result = join(log, 4, "10.0.0.4:7001", kafka_address="10.0.0.4:9092", rack="b")
    assert result.ok and result.value == 4
    assert log.state.node_ids == (1, 2, 3, 4) and log.state.initial_node_ids == (1, 2, 3)
    assert log.state.node_addresses[4] == NodeAddress("10.0.0.4:7001", "", "10.0.0.4:9092",
                                                      "b")
    assert log.apply(encode_reassign_partition("t", 0, (1, 2, 4))).ok
    assert log.create("wide", partitions=4, rf=3).ok
    assert any(4 in p.replicas for p in log.state.topic("wide").partitions)


def test_id_zero_gets_the_next_unused_id_and_the_same_node_asking_again_gets_it_again(
        log: Log) -> None:
    assert join(log, 0, "h:4").value == 4
    assert join(log, 9, "h:9").value == 9
    assert join(log, 0, "h:10").value == 10
    again = join(log, 0, "h:4")  # its answer was lost: the same id, nothing new
    assert again.ok and again.value == 4 and log.state.node_ids == (1, 2, 3, 4, 9, 10)


@pytest.mark.parametrize("node_id,address,words", [
    (2, "h:9", "node id 2 is in use by one of the cluster's first nodes"),
    (4, "h:5", "node id 4 is in use by the node at h:4"),
    (5, "h:4", "address h:4 is node 4's"),
    (5, "no-port", "address must be HOST:PORT"),
    (-1, "h:5", "a node id is from 1"),
])
def test_bad_or_conflicting_joins_are_refused_and_change_nothing(
        log: Log, node_id: int, address: str, words: str) -> None:
    assert join(log, 4, "h:4").ok
    before = content(log.state)
    result = join(log, node_id, address)
    assert not result.ok and result.code == errors_pb2.INVALID_REQUEST
    assert words in result.message
    assert content(log.state) == before


def test_a_restart_re_registers_idempotently_and_may_change_its_rack(log: Log) -> None:
    assert join(log, 4, "h:4", rack="a").ok
    before = log.state.node_ids
    result = join(log, 4, "h:4", rack="b")
    assert result.ok and log.state.node_ids == before
    assert log.state.node_addresses[4].rack == "b"


def test_a_removed_nodes_id_is_never_reused(log: Log) -> None:
    assert join(log, 4, "h:4").ok
    assert log.apply(encode_decommission_node(4)).ok
    assert log.apply(encode_remove_node(4)).ok
    result = join(log, 4, "h:4")
    assert not result.ok and "ids are never reused" in result.message
    assert join(log, 0, "h:5").value == 5


def test_snapshots_carry_joined_nodes_and_stay_v4_until_one_joins(log: Log) -> None:
    assert json.loads(encode_snapshot(log.state))["v"] == 4
    assert join(log, 4, "h:4", peer_address="h:8004", kafka_address="h:9", rack="r").ok
    data = encode_snapshot(log.state)
    assert json.loads(data)["v"] == 5
    restored = decode_snapshot(data)
    assert encode_snapshot(restored) == data
    assert restored.node_ids == (1, 2, 3, 4) and restored.initial_node_ids == (1, 2, 3)
    # the restored state goes on like the original: the next picked id is the same
    assert Log(restored).apply(encode_register_node(0, "h:5")).value == 5


def test_a_snapshot_whose_joined_node_has_no_address_is_refused(log: Log) -> None:
    assert join(log, 4, "h:4").ok
    obj = json.loads(encode_snapshot(log.state))
    obj["nodes"] = []
    with pytest.raises(ValueError, match="invalid controller snapshot"):
        decode_snapshot(json.dumps(obj).encode())


def test_join_flags_need_no_peers_and_exclude_them(tmp_path) -> None:
    cfg = from_args(["--join", "h:1,h:2", "--listen", "127.0.0.1:7009",
                     "--data-dir", str(tmp_path)])
    assert cfg.join_pending and cfg.node_id == 0 and cfg.advertise == "127.0.0.1:7009"
    with pytest.raises(ConfigError, match="exclude each other"):
        NodeConfig(node_id=4, listen="h:4", data_dir=tmp_path, peers={4: "h:4"},
                   join=["h:1"]).validate()


def test_a_joined_node_restarts_from_its_membership_file(tmp_path) -> None:
    cfg = from_args(["--id", "7", "--join", "h:1", "--listen", "127.0.0.1:7007",
                     "--data-dir", str(tmp_path)])
    cfg.joined_as(7, {1: "h:1", 2: "h:2"}, {1: "h:9092"}, (1, 2))
    again = from_args(["--listen", "127.0.0.1:7007", "--data-dir", str(tmp_path)])
    assert (again.node_id, again.initial_node_ids, again.joined) == (7, (1, 2), True)
    assert again.peers == {1: "h:1", 2: "h:2", 7: "127.0.0.1:7007"}
    assert again.kafka_peers == {}  # no Kafka listener here: the members' are not needed
    with_kafka = from_args(["--listen", "127.0.0.1:7007", "--data-dir", str(tmp_path),
                            "--kafka-listen", "127.0.0.1:9097"])
    assert with_kafka.kafka_peers[1] == "h:9092"
    assert with_kafka.kafka_peers[7] == "127.0.0.1:9097"
    with pytest.raises(ConfigError, match="differs from the id this node joined with"):
        from_args(["--id", "8", "--listen", "127.0.0.1:7007", "--data-dir", str(tmp_path)])
