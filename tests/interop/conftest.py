"""Fixtures for the cross-language contract tests: real 3-node clusters (tests/harness.py)."""

from __future__ import annotations

from tests.integration.conftest import cluster, pytest_runtest_makereport  # noqa: F401
