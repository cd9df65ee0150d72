"""LatencyHistogram.quantile_since (the console's latency chart) and human_bytes."""

from __future__ import annotations

import math

from raftka.client import LatencyHistogram
from raftka.client._units import human_bytes

BOUNDS = (0.001, 0.0025, 0.005, 0.01, math.inf)


def _h(*cumulative: int) -> LatencyHistogram:
    return LatencyHistogram(BOUNDS, cumulative, 0.0, cumulative[-1])


def test_quantiles_interpolate_within_the_bucket_like_histogram_quantile() -> None:
    h = _h(0, 50, 100, 100, 100)  # 50 in (1, 2.5] ms, 50 in (2.5, 5] ms
    assert math.isclose(h.quantile_since(None, 0.5), 0.0025)
    assert math.isclose(h.quantile_since(None, 0.25), 0.00175)
    assert math.isclose(h.quantile_since(None, 0.99), 0.0025 + 0.0025 * 0.98)


def test_quantiles_of_the_requests_between_two_answers_only() -> None:
    before = _h(100, 100, 100, 100, 100)  # 100 fast requests earlier
    after = _h(100, 100, 100, 110, 110)  # then 10 in (5, 10] ms
    assert after.quantile_since(before, 0.5) > 0.005
    assert after.quantile_since(None, 0.5) <= 0.001
    assert before.quantile_since(before, 0.5) is None  # nothing in between


def test_beyond_the_last_finite_bound_says_that_bound() -> None:
    assert _h(0, 0, 0, 0, 7).quantile_since(None, 0.99) == 0.01


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1024, 1536, 5 * 2**30)] == [
        "0 B", "1023 B", "1.0 KiB", "1.5 KiB", "5.0 GiB"]
