"""Fixtures for the cross-language contract tests: real 3-node clusters (tests/harness.py),
handed over once every node reports SERVING on grpc.health.v1 (``Cluster.start_all`` only
waits for a controller leader, which two nodes suffice for: a third node still starting
would refuse connections)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.harness import Cluster, wait_for
from tests.integration.conftest import pytest_runtest_makereport  # noqa: F401

NODE_START_TIMEOUT_S = 30.0


def serving(cluster: Cluster, node_id: int, service: str = "") -> bool:
    try:
        return health_pb2_grpc.HealthStub(cluster.channel(node_id)).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2).status == \
            health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def wait_all_serving(cluster: Cluster) -> None:
    for nid in cluster.live():
        wait_for(lambda: serving(cluster, nid), NODE_START_TIMEOUT_S, f"node {nid} SERVING")


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    c = Cluster(tmp_path, 3)
    try:
        c.start_all()
        wait_all_serving(c)
        yield c
    finally:
        c.stop_all()
        failed = getattr(request.node, "rep_call", None)
        if failed is None or failed.failed:
            print(c.logs())  # shown by pytest for the failing test only
