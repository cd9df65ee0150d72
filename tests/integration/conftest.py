"""Fixtures for real-process integration tests (the harness is tests/harness.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.harness import Cluster


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
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
