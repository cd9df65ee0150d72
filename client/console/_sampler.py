"""The console's in-memory samples: high watermarks per topic (throughput) and consumer-group
lag per partition, taken every ``interval_s`` by one background thread over gRPC.

Nothing is stored on disk and nothing is asked of the nodes beyond what ``raftka topic
describe`` / ``group describe`` ask: one ``Metadata`` request for every topic's high
watermarks, one ``ListGroups`` per node and one ``DescribeGroup`` per group (at most
``groups_max`` groups) per sample. The console's pages read the samples; they never wait
for a sample to be taken.

Bounds: ``window_s / interval_s`` samples are kept per series (10 minutes at 2 s: 300);
at most ``groups_max`` groups (the first by id) and ``series_max`` partitions per group are
charted; a topic or group that disappears is dropped with its samples.

Latency: each sample also asks every node for its request statistics (one
``DescribeNodeStats`` per node: cumulative latency histograms, as in its metrics); the
p50 and p99 of the acks=all produce requests between two samples come from the difference
of the two histograms, interpolated within a bucket as Prometheus' ``histogram_quantile``
does (so they are as coarse as the node's buckets: 1, 2.5, 5, 10, 25 ms...).

Throughput of a topic is the sum of its partitions' high-watermark deltas divided by the
time between two samples: records made visible (committed) per second. The high watermarks
come from one node's metadata, which may trail a partition's leader by a moment, so a delta
can come out negative when the answering node changes: it counts as 0.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from raftka.client._admin import Admin
from raftka.client._types import NodeStats
from raftka.v1.errors import RaftkaError

__all__ = ["Sampler"]

log = logging.getLogger("raftka.console")


@dataclass(frozen=True, slots=True)
class _TopicSample:
    at: float  # time.time() of the sample
    high_watermarks: tuple[int, ...]  # by partition number


@dataclass(frozen=True, slots=True)
class _LagSample:
    at: float
    lag: dict[str, int]  # "topic/partition" -> lag in records (known lags only)


class Sampler:
    """Takes samples in a daemon thread (``start``/``stop``); every read method may be
    called from any thread (one lock guards the series)."""

    def __init__(self, admin: Admin, *, interval_s: float = 2.0, window_s: float = 600.0,
                 groups_max: int = 50, series_max: int = 64) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self._admin = admin
        self.interval_s = interval_s
        self._points_max = max(2, int(window_s / interval_s) + 1)
        self._groups_max = groups_max
        self._series_max = series_max
        self._lock = threading.Lock()
        self._topics: dict[str, deque[_TopicSample]] = {}
        self._lags: dict[str, deque[_LagSample]] = {}
        self._stats: dict[int, deque[tuple[float, NodeStats]]] = {}
        self.last_error: str = ""  # the last sample's failure, "" after a good one
        self.last_sample_at: float = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raftka-console-sampler",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.interval_s + 15)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.sample_once()
                self.last_error = ""
            except RaftkaError as e:
                self.last_error = str(e)
            except Exception as e:  # noqa: BLE001 - a bug must not end the sampling
                log.exception("console sampler failed")
                self.last_error = f"{type(e).__name__}: {e}"
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    # ------------------------------------------------------------------ sampling

    def sample_once(self) -> None:
        timeout = max(self.interval_s * 2, 3.0)
        topics = self._admin.describe_topics(timeout=timeout)
        now = time.time()
        with self._lock:
            for t in topics:
                hws = tuple(p.high_watermark for p in t.partitions)
                series = self._topics.setdefault(t.name, deque(maxlen=self._points_max))
                series.append(_TopicSample(now, hws))
            for gone in set(self._topics) - {t.name for t in topics}:
                del self._topics[gone]
        stats = self._admin.describe_node_stats(timeout=timeout)
        now = time.time()
        with self._lock:
            for node_id, node_stats in stats.items():
                self._stats.setdefault(node_id, deque(maxlen=self._points_max)).append(
                    (now, node_stats))
        groups = self._admin.list_groups(timeout=timeout)[:self._groups_max]
        lags: dict[str, _LagSample] = {}
        for g in groups:
            try:
                desc = self._admin.describe_group(g.group_id, timeout=timeout)
            except RaftkaError:
                continue  # deleted meanwhile or its coordinator moving: next sample
            lag = {f"{p.topic}/{p.partition}": p.lag for p in desc.partitions
                   if p.lag is not None}
            lags[g.group_id] = _LagSample(time.time(), dict(list(lag.items())[:self._series_max]))
        with self._lock:
            for group_id, sample in lags.items():
                self._lags.setdefault(group_id, deque(maxlen=self._points_max)).append(sample)
            for gone in set(self._lags) - {g.group_id for g in groups}:
                del self._lags[gone]
        self.last_sample_at = time.time()

    # ------------------------------------------------------------------ reading

    def throughput(self, topic: str | None = None) -> dict[str, Any]:
        """Records/s per topic (or of ``topic`` only) between consecutive samples:
        ``{"times": [ms, ...], "series": {topic: [rate or None, ...]}}`` on one time axis
        (a topic with no sample at a time has None there)."""
        with self._lock:
            chosen = {name: list(s) for name, s in self._topics.items()
                      if topic is None or name == topic}
        rates: dict[str, dict[float, float]] = {}
        for name, samples in chosen.items():
            per_time: dict[float, float] = {}
            for before, after in zip(samples, samples[1:]):
                dt = after.at - before.at
                if dt <= 0:
                    continue
                # partitions added between samples count from 0
                delta = sum(after.high_watermarks) - sum(
                    before.high_watermarks[:len(after.high_watermarks)])
                per_time[after.at] = max(delta, 0) / dt
            rates[name] = per_time
        return _on_one_axis(rates)

    def latency(self) -> dict[str, Any]:
        """Produce latency (acks=all) per node between consecutive samples, in ms:
        ``{"times": [...], "series": {"node 1 p50": [...], "node 1 p99": [...], ...}}``
        (None where a node answered no produce request in the interval). A node that
        restarted between two samples (its counts went down) has no point there."""
        with self._lock:
            chosen = {node_id: list(s) for node_id, s in self._stats.items()}
        series: dict[str, dict[float, float]] = {}
        for node_id, samples in sorted(chosen.items()):
            for name, q in ((f"node {node_id} p50", 0.5), (f"node {node_id} p99", 0.99)):
                points = series.setdefault(name, {})
                for (_, before), (at, after) in zip(samples, samples[1:]):
                    if after.produce_acks_all.count < before.produce_acks_all.count:
                        continue
                    value = after.produce_acks_all.quantile_since(before.produce_acks_all, q)
                    if value is not None:
                        points[at] = round(value * 1000, 3)
        return _on_one_axis(series)

    def lag(self, group_id: str) -> dict[str, Any]:
        """Lag per partition of ``group_id`` over the window:
        ``{"times": [...], "series": {"topic/partition": [lag or None, ...]}}``."""
        with self._lock:
            samples = list(self._lags.get(group_id, ()))
        per_series: dict[str, dict[float, float]] = {}
        for s in samples:
            for key, value in s.lag.items():
                per_series.setdefault(key, {})[s.at] = value
        return _on_one_axis(per_series)

    def status(self) -> dict[str, Any]:
        return {"interval_s": self.interval_s, "last_sample_at": self.last_sample_at,
                "last_error": self.last_error}


def _on_one_axis(series: dict[str, dict[float, float]]) -> dict[str, Any]:
    times = sorted({t for points in series.values() for t in points})
    return {
        "times": [int(t * 1000) for t in times],
        "series": {name: [points.get(t) for t in times] for name, points in sorted(series.items())},
    }
