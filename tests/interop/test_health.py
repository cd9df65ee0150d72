"""grpc.health.v1 per service name (issue 12), against real node processes: NOT_SERVING
while a node starts without a quorum (RaftPeer SERVING already), SERVING for every
client-facing service once it caught up on metadata, NOT_SERVING again as soon as a
graceful stop begins, NOT_FOUND for a name the node does not serve."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.harness import Cluster, wait_for

CLIENT_SERVICES = ["", "raftka.v1.Broker", "raftka.v1.Admin", "raftka.v1.GroupCoordinator",
                   "raftka.v1.Share"]
RAFT = "raftka.v1.RaftPeer"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _status(cluster: Cluster, node_id: int, service: str) -> int | None:
    try:
        return health_pb2_grpc.HealthStub(cluster.channel(node_id)).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2).status
    except grpc.RpcError:
        return None  # not listening yet


def test_health_follows_start_quorum_and_graceful_stop(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 3)
    try:
        cluster.start(1)  # alone: no controller quorum, so no metadata
        wait_for(lambda: _status(cluster, 1, RAFT) == SERVING, 30, "node 1's RaftPeer")
        for service in CLIENT_SERVICES:
            assert _status(cluster, 1, service) == NOT_SERVING, service

        cluster.start(2)
        cluster.start(3)
        for nid in (1, 2, 3):
            for service in (*CLIENT_SERVICES, RAFT):
                wait_for(lambda: _status(cluster, nid, service) == SERVING, 30,
                         f"node {nid} {service or '(whole node)'} SERVING")
        try:
            health_pb2_grpc.HealthStub(cluster.channel(1)).Check(
                health_pb2.HealthCheckRequest(service="raftka.v1.Nope"), timeout=2)
            raise AssertionError("an unknown service name must be NOT_FOUND")
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND

        # A graceful stop: a watcher sees NOT_SERVING before the server goes away.
        updates: queue.Queue = queue.Queue()
        watch = health_pb2_grpc.HealthStub(cluster.channel(2)).Watch(
            health_pb2.HealthCheckRequest(service="raftka.v1.Broker"), timeout=60)

        def read() -> None:
            try:
                for response in watch:
                    updates.put(response.status)
            except grpc.RpcError as exc:
                updates.put(exc.code())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert updates.get(timeout=10) == SERVING
        assert cluster.terminate(2) == 0
        assert updates.get(timeout=10) == NOT_SERVING
        watch.cancel()
        reader.join(10)
    finally:
        cluster.stop_all()
