"""A node that is a learner of the controller group (the fourth and fifth nodes of a
five-node cluster: the controller has three voters) comes back ready after a kill -9 on an
idle cluster. It used to answer "has just started and has not caught up with the cluster
metadata" until the next metadata change: a learner never campaigns, and the controller's
leader, quiesced, sent it nothing (Raft core rule 9, ``report_peer_up``)."""

from __future__ import annotations

import time

import grpc
import pytest

from raftka.v1 import broker_pb2

from tests.harness import Cluster, wait_for


def _answers_metadata(cluster: Cluster, node_id: int) -> bool:
    try:
        cluster.broker(node_id).Metadata(broker_pb2.MetadataRequest(), timeout=2)
        return True
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            return False  # not listening yet
        if "has not caught up with the cluster metadata" not in (exc.details() or ""):
            raise
        return False


@pytest.mark.parametrize("cluster", [5], indirect=True)
def test_a_restarted_controller_learner_is_ready_on_an_idle_cluster(cluster: Cluster) -> None:
    cluster.create_topic("idle")
    cluster.wait_leader("idle", 0)
    learner = 5  # a cluster started with nodes 1-5: voters 1-3 (controller_conf)
    time.sleep(2.0)  # idle: the controller group quiesces
    cluster.kill(learner)
    time.sleep(1.0)  # reported down by the other nodes
    cluster.start(learner)
    wait_for(lambda: _answers_metadata(cluster, learner), 20,
             f"node {learner} (a controller learner) to answer Metadata after its restart")
