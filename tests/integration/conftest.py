"""Fixtures for real-process integration tests (the harness is tests/harness.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.harness import Cluster, module_cluster


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "shared_cluster: the test's `cluster` is its module's one 3-node cluster "
        "(for tests that stop, kill or pause no node and change no cluster-wide setting; "
        "each uses topics and groups of its own)")


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory,
                   request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The cluster of a module's ``shared_cluster`` tests: a cluster start (2-5 s on 2
    loaded cores) once per module instead of once per test."""
    yield from module_cluster(tmp_path_factory.mktemp("shared"), request)


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    if request.node.get_closest_marker("shared_cluster") is not None:
        yield request.getfixturevalue("shared_cluster")
        return
    size = getattr(request, "param", 3)
    c = Cluster(tmp_path, size)
    try:
        c.start_all()
        yield c
    finally:
        c.stop_all()
        failed = getattr(request.node, "rep_call", None)
        if failed is None or failed.failed:
            print(c.logs())  # shown by pytest for the failing test only
