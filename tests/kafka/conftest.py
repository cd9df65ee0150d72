"""Fixtures for tests/kafka: a real 3-node cluster whose nodes serve the Kafka protocol,
driven by real Kafka clients (librdkafka through confluent-kafka, kafka-python, Debian's
kcat) and by our own gRPC client, which must see the same records and offsets."""

from __future__ import annotations

import os
import shutil
from typing import Iterator

import pytest

from tests.harness import Cluster


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
    c = Cluster(tmp_path_factory.mktemp("kafka"), 3, kafka=True)
    try:
        c.start_all()
        yield c
    finally:
        c.stop_all()
        if any(getattr(item, "rep_call", None) is not None and item.rep_call.failed
               for item in request.session.items if item.module is request.module):
            print(c.logs())


@pytest.fixture
def kcat() -> str:
    """Debian's kcat (make kafka-deps installs it as root); skipped without it unless root."""
    path = shutil.which("kcat")
    if path is None:
        if os.geteuid() == 0:
            pytest.fail("kcat is missing: make kafka-deps installs it (apt-get install kcat)")
        pytest.skip("kcat is not installed (make kafka-deps as root installs it)")
    return path
