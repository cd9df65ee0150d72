"""Fixtures for tests/kafka: a real 3-node cluster whose nodes serve the Kafka protocol,
driven by real Kafka clients (librdkafka through confluent-kafka, kafka-python, Debian's
kcat) and by our own gRPC client, which must see the same records and offsets."""

from __future__ import annotations

import os
import shutil
from typing import Iterator

import pytest

import grpc

from raftka.v1 import broker_pb2
from tests.harness import Cluster, module_cluster, wait_for


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="module")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory,
                  request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """One cluster for a module's tests (each test uses its own topics and groups); the
    nodes' logs are printed when a test of the module failed."""
    yield from module_cluster(tmp_path_factory.mktemp("kafka"), request,
                              settle=wait_group_coordinators_settled, kafka=True)


def wait_group_coordinators_settled(cluster: Cluster) -> None:
    """Wait until every ``__consumer_offsets`` partition is led by its preferred replica:
    a new cluster moves leaderships there in its first seconds. A classic group's
    membership survives a move once its first generation is written
    (node/_kafka/_classic.py rule 5a), but a move while it forms makes the members rejoin,
    which tests that count rebalances would see."""
    count = wait_for(lambda: _offsets_partitions(cluster), 30, "__consumer_offsets")
    for p in range(count):
        cluster.wait_preferred_leader("__consumer_offsets", p)


def _offsets_partitions(cluster: Cluster) -> int:
    for nid in cluster.responsive():
        try:
            md = cluster.broker(nid).Metadata(
                broker_pb2.MetadataRequest(topics=["__consumer_offsets"]), timeout=1)
        except grpc.RpcError:
            continue
        return len(md.topics[0].partitions)
    return 0


@pytest.fixture
def kcat() -> str:
    """Debian's kcat (make kafka-deps installs it as root); skipped without it unless root."""
    path = shutil.which("kcat")
    if path is None:
        if os.geteuid() == 0:
            pytest.fail("kcat is missing: make kafka-deps installs it (apt-get install kcat)")
        pytest.skip("kcat is not installed (make kafka-deps as root installs it)")
    return path
