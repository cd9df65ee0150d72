"""Admin calls at any node (issue 12, Kafka's KIP-590): a node that is not the controller
leader forwards controller writes to the leader, follows a leader change within the
call's deadline, and passes the leader's errors through unchanged. Real node processes."""

from __future__ import annotations

import grpc
from grpc_status import rpc_status

from raftka.v1 import admin_pb2, broker_pb2, errors_pb2
from tests.harness import Cluster, error_info, wait_for


def _follower(cluster: Cluster) -> tuple[int, int]:
    leader = cluster.wait_healthy()
    return leader, next(nid for nid in cluster.live() if nid != leader)


def test_topic_changes_at_a_follower_succeed_and_show_there_at_once(cluster: Cluster) -> None:
    leader, follower = _follower(cluster)
    admin = cluster.admin(follower)
    created = admin.CreateTopic(admin_pb2.CreateTopicRequest(
        name="fwd", partitions=2, replication_factor=3), timeout=15)
    assert created.topic.name == "fwd" and len(created.topic.partitions) == 2
    # answered once the follower applied it: its own reads show it right away
    assert admin.DescribeTopic(admin_pb2.DescribeTopicRequest(name="fwd"), timeout=5) \
        .topic.name == "fwd"
    grown = admin.AddPartitions(admin_pb2.AddPartitionsRequest(name="fwd", total_count=3),
                                timeout=15)
    assert len(grown.topic.partitions) == 3
    assert len(admin.DescribeTopic(admin_pb2.DescribeTopicRequest(name="fwd"), timeout=5)
               .topic.partitions) == 3
    admin.DeleteTopic(admin_pb2.DeleteTopicRequest(name="fwd"), timeout=15)
    assert "fwd" not in admin.ListTopics(admin_pb2.ListTopicsRequest(), timeout=5).names
    assert cluster.controller_leader() == leader, "no leader change: it was forwarded"


def test_the_leaders_errors_come_back_unchanged(cluster: Cluster) -> None:
    _, follower = _follower(cluster)
    admin = cluster.admin(follower)
    admin.CreateTopic(admin_pb2.CreateTopicRequest(name="twice"), timeout=15)
    try:
        admin.CreateTopic(admin_pb2.CreateTopicRequest(name="twice"), timeout=15)
        raise AssertionError("a second create must fail")
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.ALREADY_EXISTS
        info = error_info(exc)
        assert info is not None and info.code == errors_pb2.TOPIC_EXISTS
        assert rpc_status.from_call(exc).details, "standard details passed through"
    try:
        admin.CreateTopic(admin_pb2.CreateTopicRequest(name="bad", configs={"nope": "1"}),
                          timeout=15)
        raise AssertionError("an unknown config must fail")
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(exc).code == errors_pb2.INVALID_CONFIG


def test_init_producer_id_at_a_follower(cluster: Cluster) -> None:
    _, follower = _follower(cluster)
    ids = {cluster.broker(nid).InitProducerId(broker_pb2.InitProducerIdRequest(),
                                              timeout=15).producer_id
           for nid in cluster.live() for _ in range(3)}
    assert len(ids) == 3 * len(cluster.live()), "every id handed out once"


def test_a_forwarded_call_follows_a_controller_leader_change(cluster: Cluster) -> None:
    leader, follower = _follower(cluster)
    cluster.kill(leader)  # the follower still believes in it until an election
    created = cluster.admin(follower).CreateTopic(
        admin_pb2.CreateTopicRequest(name="after-kill", partitions=1, replication_factor=2),
        timeout=20)
    assert created.topic.name == "after-kill"
    new_leader = wait_for(cluster.controller_leader, 20, "a new controller leader")
    assert new_leader != leader
