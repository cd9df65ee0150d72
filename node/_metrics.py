"""Prometheus metrics of a node: the instruments the data path increments, the collector
that reads replica and group state at scrape time, and the HTTP endpoint.

Everything is written with ``prometheus_client`` (no hand-made exposition) into a registry
of this node's own (``NodeMetrics.registry``), served by ``MetricsServer`` on
``--metrics-listen HOST:PORT`` (``metrics_listen`` in the TOML file; off unless given;
``raftka dev`` turns it on). Names follow Prometheus conventions: prefix ``raftka_``, base
units (``_seconds``, ``_bytes``), counters end in ``_total``. README.md, "Monitoring",
lists every series and the label-cardinality bound.

Three kinds of numbers, three ways of getting them:

1. Request counters and histograms (``NodeMetrics``): incremented by the gRPC handlers and
   the partition, once per request or per batch, never per record (records of a produce
   request are the sum of its batch headers' record counts; of a fetch, the offsets it
   spans). prometheus_client's instruments are thread-safe, so the scrape thread reads
   them directly.
2. Host timings: the ready loop observes each pass's duration, the sync thread each WAL
   sync (``_host.HostObserver``); a lag probe task (``probe_event_loop``) measures how late
   the loop wakes up: a wake-up later than ``STALL_S`` counts as a stall.
3. State owned by the event loop (partition replicas, Raft groups, consumer groups):
   read by ``NodeCollector`` at scrape time, so the data path pays nothing for it.

Processes, the choice: the HTTP endpoint is a child process of the node
(``_metrics_exporter.py``: prometheus_client's WSGI app and server, no HTTP parsing of
ours). At each scrape it asks the node, over a private socket, for a *payload*: the node
takes a snapshot of the replica and group state on its event loop (plain numbers; in
slices of ``SNAPSHOT_SLICE`` replicas with the loop free to run between them, so each
replica's numbers are consistent and thousands of replicas never stall the loop at once), collects its own
registry (kinds 1 and 2: a few hundred samples) and pickles both; RocksDB properties and the
data directory's free space are read in a worker thread (RocksDB properties are
thread-safe; ``RocksLogDB.int_property`` takes its read lock). Building the families and
formatting the text, the expensive part, happens in the exporter, on its own core: done
in a thread of the node, it held the GIL in 5 ms slices while produce requests waited
(the produce p99 at 1,000/s doubled with a scrape a second). A node whose loop does not
answer in time (stalled, or stopped by SIGSTOP) gets a scrape with only the process series
and ``raftka_scrape_snapshot_timeouts_total`` counts it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from raftka.v1 import admin_pb2, errors_pb2
from raftka.raft import Role

from ._coordinator import ConsumerGroup
from ._offsets import OFFSETS_TOPIC, OffsetsReplica, offsets_partition_for

if TYPE_CHECKING:
    from ._broker import Broker

log = logging.getLogger("raftka.metrics")

# Created series (``*_created``) double every counter's series for a number nobody graphs.
prometheus_client.disable_created_metrics()

SNAPSHOT_TIMEOUT_S = 5.0  # a scrape waits this long for the event loop's snapshot
PROBE_INTERVAL_S = 0.25  # the event-loop lag probe sleeps this long, then measures lateness
STALL_S = 0.1  # a wake-up this late is an event-loop stall
UNDER_REPLICATED_LAG_S = 10.0  # a follower missing an entry this old makes it under-replicated
FOLLOWER_LAG_SCAN = 4  # entries looked at to date a follower's oldest missing record
APPEND_TIME_CACHE_MAX = 100_000
SNAPSHOT_SLICE = 256  # replicas read per event-loop callback at a scrape
EXPORTER_START_S = 30.0  # the exporter process binds its port within this
EXPORTER_RESTART_S = 1.0  # a dead exporter is started again after this

# Request latencies: 0.5 ms .. 10 s (a produce waits for a majority's fsync; a long-poll
# fetch up to its max_wait).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)
# Disk and loop timings: 50 µs .. 5 s.
SHORT_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
ACKS_LABELS = {-1: "all", 1: "leader", 0: "none"}
ROLE_LABELS = {Role.FOLLOWER: "follower", Role.PRE_CANDIDATE: "pre_candidate",
               Role.CANDIDATE: "candidate", Role.LEADER: "leader"}
GROUP_STATES = ("empty", "reconciling", "stable")
STREAM_KINDS = ("produce", "fetch")
# the steps of Broker._maintenance_pass, in order
MAINTENANCE_STEPS = ("retention", "tombstones", "transaction_expiry", "controller_snapshot",
                     "preferred_leaders")
ROCKSDB_PROPERTIES = {  # metric suffix -> RocksDB property
    "rocksdb_sst_files_bytes": ("rocksdb.total-sst-files-size",
                                "Size of every SST file of the node's RocksDB (the Raft log "
                                "of every group), including files awaiting deletion."),
    "rocksdb_live_sst_files_bytes": ("rocksdb.live-sst-files-size",
                                     "Size of the SST files of the current version."),
    "rocksdb_memtable_bytes": ("rocksdb.cur-size-all-mem-tables",
                               "Bytes in the RocksDB memtables (not yet flushed to SST)."),
    "rocksdb_pending_compaction_bytes": ("rocksdb.estimate-pending-compaction-bytes",
                                         "RocksDB's estimate of the bytes compaction must "
                                         "rewrite to bring every level within its target."),
}


class NodeMetrics:
    """The node's instruments (kind 1 and 2 of the module docstring) and its registry.
    Also the Raft host's ``HostObserver``. Cheap enough to exist on every node; only
    served when ``--metrics-listen`` is given."""

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        r = self.registry = CollectorRegistry(auto_describe=False)
        self._produce_requests = Counter(
            "raftka_produce_requests", "Produce requests received by this node (unary calls "
            "and ProduceStream requests), by acks level.", ["acks"], registry=r)
        self._produce_latency = Histogram(
            "raftka_produce_request_duration_seconds", "Time from receiving a produce request "
            "to answering it, by acks level (failed requests included).", ["acks"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.produce_records = Counter(
            "raftka_produce_records", "Records accepted for append by the partitions this node "
            "leads (the record counts of the batch headers).", registry=r)
        self.produce_bytes = Counter(
            "raftka_produce_bytes", "Record-batch bytes accepted for append by the partitions "
            "this node leads.", registry=r)
        self.fetch_requests = Counter(
            "raftka_fetch_requests", "Fetch requests answered (a FetchStream response counts "
            "as one).", registry=r)
        self.fetch_records = Counter(
            "raftka_fetch_records", "Records returned by fetches (the offsets each read "
            "spans).", registry=r)
        self.fetch_bytes = Counter(
            "raftka_fetch_bytes", "Record-batch bytes returned by fetches.", registry=r)
        self.follower_fetch_requests = Counter(
            "raftka_fetch_follower_requests", "Fetch requests this node answered for "
            "partitions it does not lead (follower fetching; counted in "
            "raftka_fetch_requests too).", registry=r)
        self.follower_fetch_records = Counter(
            "raftka_fetch_follower_records", "Records returned by those fetches.",
            registry=r)
        self.fetch_latency = Histogram(
            "raftka_fetch_request_duration_seconds", "Time to answer a unary Fetch, its "
            "long-poll wait (max_wait_ms) included.", buckets=LATENCY_BUCKETS, registry=r)
        self._errors = Counter(
            "raftka_request_errors", "Requests answered with an error, by RPC method and "
            "error code (the ErrorCode names of raftka.v1.errors).", ["method", "code"],
            registry=r)
        self._streams = Gauge(
            "raftka_client_streams", "Client streams open on this node, by kind.", ["kind"],
            registry=r)
        self.wal_syncs = Counter(
            "raftka_wal_syncs", "Synced writes of the Raft log (one WAL fsync each; one per "
            "ready-loop pass that must sync, for every group of the pass).", registry=r)
        self.wal_sync_latency = Histogram(
            "raftka_wal_sync_duration_seconds", "Duration of a synced write of the Raft log "
            "(write plus WAL fsync, on the sync thread).", buckets=SHORT_BUCKETS, registry=r)
        self.pass_latency = Histogram(
            "raftka_ready_pass_duration_seconds", "Duration of one pass of the Raft ready loop "
            "(proposals, sends, its synced write, applies).", buckets=SHORT_BUCKETS,
            registry=r)
        self.loop_lag = Histogram(
            "raftka_event_loop_lag_seconds", f"How late the event loop woke a task that slept "
            f"{PROBE_INTERVAL_S} s (measured every {PROBE_INTERVAL_S} s while metrics are "
            "served).", buckets=SHORT_BUCKETS, registry=r)
        self.loop_stalls = Counter(
            "raftka_event_loop_stalls", f"Event-loop wake-ups later than {STALL_S} s (the "
            "loop was busy or blocked that long).", registry=r)
        self._maintenance_seconds = Histogram(
            "raftka_maintenance_step_duration_seconds", "Duration of each step of the "
            "broker's maintenance pass (every 2 s: retention, tombstones, transaction "
            "expiry, controller snapshot, preferred leaders). Steps run on the event loop; "
            "a step that hands storage work to a thread (a retention cut, a snapshot) "
            "includes that wait.", ["step"], buckets=SHORT_BUCKETS, registry=r)
        self.scrape_loop_seconds = Histogram(
            "raftka_scrape_loop_duration_seconds", "Event-loop time one scrape costs the node "
            "(snapshot of replica and group state, its own registry, pickling; the text is "
            "formatted by the exporter process).", buckets=SHORT_BUCKETS, registry=r)
        # process_* and python_info come from the exporter (it reads the node's /proc)
        # Children bound once: the data path does one dict lookup and one increment.
        self.produce_requests = {a: self._produce_requests.labels(acks=n)
                                 for a, n in ACKS_LABELS.items()}
        self.produce_latency = {a: self._produce_latency.labels(acks=n)
                                for a, n in ACKS_LABELS.items()}
        self.streams = {k: self._streams.labels(kind=k) for k in STREAM_KINDS}
        self.maintenance_seconds = {k: self._maintenance_seconds.labels(step=k)
                                    for k in MAINTENANCE_STEPS}
        self._error_children: dict[tuple[str, int], Any] = {}

    def error(self, method: str, code: int) -> None:
        """One request of ``method`` answered with error ``code``."""
        child = self._error_children.get((method, code))
        if child is None:
            try:
                name = errors_pb2.ErrorCode.Name(code)
            except ValueError:
                name = f"ERROR_CODE_{code}"
            child = self._errors.labels(method=method, code=name)
            self._error_children[(method, code)] = child
        child.inc()

    def node_stats(self) -> admin_pb2.DescribeNodeStatsResponse:
        """The request statistics of ``Admin.DescribeNodeStats`` (the web console's latency
        and rate charts), read from these instruments."""
        response = admin_pb2.DescribeNodeStatsResponse(
            node_id=self.node_id,
            produce_records=_counter_value(self.produce_records),
            produce_bytes=_counter_value(self.produce_bytes),
            fetch_records=_counter_value(self.fetch_records),
            fetch_bytes=_counter_value(self.fetch_bytes),
            follower_fetch_requests=_counter_value(self.follower_fetch_requests),
            follower_fetch_records=_counter_value(self.follower_fetch_records))
        for target, family, labels in (
                (response.produce_acks_all, self._produce_latency, {"acks": "all"}),
                (response.produce_acks_leader, self._produce_latency, {"acks": "leader"}),
                (response.fetch, self.fetch_latency, {})):
            _fill_histogram(target, family, labels)
        return response

    def produce_accepted(self, records: int, size_bytes: int) -> None:
        self.produce_records.inc(records)
        self.produce_bytes.inc(size_bytes)

    def fetched(self, records: int, size_bytes: int, follower: bool = False) -> None:
        self.fetch_requests.inc()
        if follower:
            self.follower_fetch_requests.inc()
            if records > 0:
                self.follower_fetch_records.inc(records)
        if records > 0:
            self.fetch_records.inc(records)
        if size_bytes:
            self.fetch_bytes.inc(size_bytes)

    # HostObserver
    def pass_seconds(self, seconds: float) -> None:
        self.pass_latency.observe(seconds)

    def sync_seconds(self, seconds: float) -> None:
        self.wal_syncs.inc()
        self.wal_sync_latency.observe(seconds)

    async def probe_event_loop(self) -> None:
        """Sleep ``PROBE_INTERVAL_S`` again and again; how late each wake-up is measures
        what kept the loop busy (a long pass, a slow handler, a blocking call)."""
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(PROBE_INTERVAL_S)
            late = max(loop.time() - before - PROBE_INTERVAL_S, 0.0)
            self.loop_lag.observe(late)
            if late >= STALL_S:
                self.loop_stalls.inc()


def _counter_value(counter: Counter) -> int:
    return int(sum(sample.value for metric in counter.collect() for sample in metric.samples
                   if sample.name.endswith("_total")))


def _fill_histogram(target: admin_pb2.LatencyHistogram, histogram: Histogram,
                    labels: dict[str, str]) -> None:
    for metric in histogram.collect():
        for sample in metric.samples:
            if any(sample.labels.get(k) != v for k, v in labels.items()):
                continue
            if sample.name.endswith("_bucket"):
                target.upper_bounds_seconds.append(float(sample.labels["le"]))
                target.cumulative_counts.append(int(sample.value))
            elif sample.name.endswith("_sum"):
                target.sum_seconds = sample.value
            elif sample.name.endswith("_count"):
                target.count = int(sample.value)


# ------------------------------------------------------------------------------ snapshot
@dataclass(slots=True)
class PartitionView:
    topic: str
    partition: int
    role: Role
    leader_id: int
    term: int
    log_start_offset: int
    log_end_offset: int
    high_watermark: int
    commit_index: int
    applied_index: int
    stored_bytes: int
    under_replicated: bool
    # on the leader: (follower node id, lag in entries, lag in seconds or None if unknown)
    followers: list[tuple[int, int, float | None]] = field(default_factory=list)
    # compacted topics only (cleanup.policy has compact): (dirty ratio, passes, records
    # removed, bytes removed, last pass end in ms or 0)
    compaction: tuple[float, int, int, int, int] | None = None
    # delayed delivery: scheduled produce requests not released yet (_delayed.py)
    delayed_pending: int = 0


@dataclass(slots=True)
class GroupView:
    group_id: str
    state: str
    members: int
    epoch: int
    # (topic, partition, committed offset, lag in records or None, lag in seconds or None)
    partitions: list[tuple[str, int, int, int | None, float | None]] = field(
        default_factory=list)


@dataclass(slots=True)
class Snapshot:
    node_id: int
    controller_leader: int
    partitions: list[PartitionView]
    groups: list[GroupView]
    # elections started, won, leadership transfers, proposals dropped (every group)
    raft_events: tuple[int, int, int, int]


class NodeCollector:
    """Replica, Raft and group state at scrape time (kind 3 of the module docstring), for
    the exporter process: ``payload`` runs on the event loop."""

    def __init__(self, broker: Broker, groups: Any, metrics: NodeMetrics) -> None:
        """``groups``: the node's GroupCoordinatorService (its in-memory groups)."""
        self.broker = broker
        self.groups = groups
        self.metrics = metrics
        self._append_times: dict[tuple[str, int, int], int] = {}  # loop thread only

    async def payload(self) -> bytes:
        """What one scrape needs from this process, pickled (``decode_payload``). The
        replicas are read in slices of ``SNAPSHOT_SLICE``, letting the loop run between
        them, so a node with thousands of replicas never stalls for the whole snapshot;
        each replica's numbers are still read together (one view is consistent)."""
        broker = self.broker
        now_ms = int(time.time() * 1000)
        items = list(broker.partitions.items())
        partitions: list[PartitionView] = []
        on_loop = 0.0
        for start in range(0, len(items), SNAPSHOT_SLICE):
            if start:
                await asyncio.sleep(0)
            began = time.perf_counter()
            partitions += self._partition_views(items[start:start + SNAPSHOT_SLICE], now_ms)
            on_loop += time.perf_counter() - began
        began = time.perf_counter()
        events = list(broker.host.retired_event_counts)
        for group in broker.host.groups.values():
            for i, n in enumerate(group.node.event_counts()):
                events[i] += n
        snapshot = Snapshot(broker.node_id, broker.controller.leader_id(), partitions,
                            self._group_views(now_ms), tuple(events))  # type: ignore[arg-type]
        own = list(self.metrics.registry.collect()) + self.catchup_families()
        on_loop += time.perf_counter() - began
        storage = await asyncio.to_thread(lambda: list(self.storage_families()))
        began = time.perf_counter()
        payload = pickle.dumps((snapshot, own, storage), protocol=pickle.HIGHEST_PROTOCOL)
        self.metrics.scrape_loop_seconds.observe(on_loop + time.perf_counter() - began)
        return payload

    def catchup_families(self) -> list[Metric]:
        """The catch-up pacer of partition moves (``_catchup_pacer.py``)."""
        pacer = self.broker.reassignments.pacer
        return [
            CounterMetricFamily(
                "raftka_catchup_delayed_messages", "Appends and snapshots to learners of "
                "moving partitions that waited for the catch-up pace.", value=pacer.delayed),
            CounterMetricFamily(
                "raftka_catchup_delayed_bytes", "Bytes of those messages.",
                value=pacer.delayed_bytes),
            CounterMetricFamily(
                "raftka_catchup_overflowed_messages", "Catch-up messages dropped because "
                "their destination's pacing queue was full (Raft sends them again).",
                value=pacer.overflowed),
            GaugeMetricFamily(
                "raftka_catchup_queued_messages", "Catch-up messages waiting for the pace "
                "now.", value=pacer.queued),
            GaugeMetricFamily(
                "raftka_catchup_rate_bytes_per_second", "The catch-up pace of this node: "
                "the reassignment throttle, or the default when none is set.",
                value=self.broker.reassignments.catchup_rate()),
        ]

    def storage_families(self) -> Iterable[Metric]:
        db = self.broker.db
        for suffix, (prop, doc) in ROCKSDB_PROPERTIES.items():
            value = db.int_property(prop)
            if value is not None:
                yield GaugeMetricFamily(f"raftka_{suffix}", doc, value=value)
        try:
            st = os.statvfs(self.broker.config.data_dir)
        except OSError:
            return
        yield GaugeMetricFamily(
            "raftka_data_dir_capacity_bytes", "Size of the file system holding the node's "
            "data directory.", value=st.f_blocks * st.f_frsize)
        yield GaugeMetricFamily(
            "raftka_data_dir_free_bytes", "Bytes of that file system available to the node "
            "(not reserved for root).", value=st.f_bavail * st.f_frsize)

    # -------------------------------------------------------------- event loop
    def _partition_views(self, items: list[tuple[tuple[str, int], Any]],
                         now_ms: int) -> list[PartitionView]:
        """Plain numbers of these replicas, no references into live state. Cost: a few
        attribute reads per replica, plus one entry read per lagging follower."""
        reachable = self.broker.host.transport.is_reachable
        partitions: list[PartitionView] = []
        for (topic, pnum), replica in items:
            group = replica.group
            if group is None or group.closed:
                continue
            node = group.node
            role = node.role
            view = PartitionView(
                topic, pnum, role, node.leader_id, node.term, replica.log_start_offset,
                replica.log_end_offset, replica.high_watermark, node.commit_index,
                node.applied_index, replica.stored_bytes(), False)
            view.delayed_pending = getattr(replica, "delayed_pending", 0)
            if replica.config.compact:
                view.compaction = (replica.dirty_ratio, replica.compaction_runs,
                                   replica.compacted_records_removed,
                                   replica.compacted_bytes_removed,
                                   replica.compaction_last_run_ms)
            if role == Role.LEADER:
                voters = node.conf_state.voters
                last = node.last_index
                for peer, match in sorted(node.follower_matches().items()):
                    lag = max(last - match, 0)
                    seconds: float | None = 0.0
                    if lag:
                        at = replica.append_time_ms_after(match + 1, FOLLOWER_LAG_SCAN)
                        seconds = max(now_ms - at, 0) / 1000 if at is not None else None
                    view.followers.append((peer, lag, seconds))
                    if peer in voters and (not reachable(peer) or (
                            seconds is not None and seconds > UNDER_REPLICATED_LAG_S)):
                        view.under_replicated = True
            partitions.append(view)
        return partitions

    def _group_views(self, now_ms: int) -> list[GroupView]:
        """Groups this node coordinates: those whose offsets partition it leads (and has
        caught up on, like the coordinator itself)."""
        broker = self.broker
        in_memory = getattr(self.groups, "_groups", {}) if self.groups is not None else {}
        now = time.monotonic()
        cache, used = self._append_times, {}
        views: list[GroupView] = []
        for (topic, pnum), replica in list(broker.partitions.items()):
            if topic != OFFSETS_TOPIC or not isinstance(replica, OffsetsReplica):
                continue
            group = replica.group
            if group is None or group.closed or group.node.role != Role.LEADER \
                    or not replica.leader_ready():
                continue
            term = group.node.term
            count = len(broker.controller.state.topic(OFFSETS_TOPIC).partitions) \
                if broker.controller.state.topic(OFFSETS_TOPIC) is not None else 0
            ids = set(replica.offsets) | set(replica.members) | set(replica.groups)
            ids.update(g for g, c in in_memory.items()
                       if c.term == term and count and offsets_partition_for(g, count) == pnum)
            for group_id in sorted(ids):
                c = in_memory.get(group_id)
                if c is not None and c.term == term:
                    cg = c.group
                else:
                    cg = ConsumerGroup.restore(group_id, replica.groups.get(group_id),
                                               replica.members.get(group_id, {}), now)
                view = GroupView(group_id, cg.state, len(cg.members), cg.group_epoch)
                for (t, p), committed in sorted(replica.offsets.get(group_id, {}).items()):
                    offset = committed.offset
                    local = broker.partitions.get((t, p))
                    lag: int | None = None
                    seconds: float | None = None
                    if local is not None and local.group is not None:
                        lag = max(local.high_watermark - offset, 0)
                        seconds = 0.0
                        if lag:
                            oldest = max(offset, local.log_start_offset)
                            key = (t, p, oldest)
                            at = cache.get(key)
                            if at is None:
                                at = local.append_time_ms_at(oldest)
                            if at is not None:
                                used[key] = at
                                seconds = max(now_ms - at, 0) / 1000
                            else:
                                seconds = None
                    view.partitions.append((t, p, offset, lag, seconds))
                views.append(view)
        if len(used) <= APPEND_TIME_CACHE_MAX:
            self._append_times = used
        return views


# ------------------------------------------------------------------------------ families
def decode_payload(payload: bytes) -> list[Metric]:
    """The metric families of a ``NodeCollector.payload`` (in the exporter process)."""
    snapshot, own, storage = pickle.loads(payload)
    return (families(snapshot) if snapshot is not None else []) + own + storage


def families(s: Snapshot) -> list[Metric]:
    """The metric families of a snapshot (pure; unit-tested)."""
    out: list[Metric] = []
    tp = ["topic", "partition"]

    def gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, doc, labels=labels)
        out.append(family)
        return family

    node_id = GaugeMetricFamily("raftka_node_id", "This node's id.", value=s.node_id)
    controller = GaugeMetricFamily(
        "raftka_controller_leader_id", "The controller leader this node knows (0: none).",
        value=s.controller_leader)
    out += [node_id, controller]
    names = ("elections_started", "elections_won", "leadership_transfers",
             "proposals_dropped")
    docs = ("Raft elections started by this node's replicas (candidacies, not pre-votes).",
            "Raft elections won by this node's replicas (became leader).",
            "Leadership transfers begun by this node's leaders (graceful stop, preferred "
            "leader).",
            "Proposals refused by this node's leaders (transfer in progress, too many "
            "uncommitted bytes).")
    for name, doc, value in zip(names, docs, s.raft_events):
        out.append(CounterMetricFamily(f"raftka_raft_{name}", doc, value=value))

    leader = gauge("raftka_partition_leader", "1 if this replica is the partition's "
                   "leader, else 0.", tp)
    role = gauge("raftka_partition_role", "This replica's Raft role (the series with the "
                 "current role is 1).", tp + ["role"])
    leader_id = gauge("raftka_partition_leader_id", "The partition leader this replica knows "
                      "(node id; 0: none).", tp)
    term = gauge("raftka_partition_term", "Raft term of this replica.", tp)
    log_start = gauge("raftka_partition_log_start_offset", "First offset still stored "
                      "(retention moves it).", tp)
    log_end = gauge("raftka_partition_log_end_offset", "Offset after the last record in "
                    "this replica's durable log, committed or not.", tp)
    hw = gauge("raftka_partition_high_watermark", "Offset after the last committed record "
               "applied by this replica.", tp)
    commit = gauge("raftka_partition_commit_index", "Raft commit index of this replica.", tp)
    applied = gauge("raftka_partition_applied_index", "Raft index applied by this "
                    "replica.", tp)
    stored = gauge("raftka_partition_stored_bytes", "Record-batch bytes of the committed log "
                   "this replica stores.", tp)
    delayed = gauge("raftka_partition_delayed_pending", "Delayed produce requests (scheduled "
                    "entries) this replica holds that are not due or not released yet.", tp)
    under = gauge("raftka_partition_under_replicated", "On the leader: 1 if a replica is "
                  f"unreachable or misses an entry older than {UNDER_REPLICATED_LAG_S:.0f} s; "
                  "0 otherwise (and on followers).", tp)
    lag_entries = gauge("raftka_partition_follower_lag_entries", "On the leader: entries of "
                        "its log a follower has not acknowledged.", tp + ["follower"])
    lag_seconds = gauge("raftka_partition_follower_lag_seconds", "On the leader: age of the "
                        "oldest entry a follower has not acknowledged (its append time at the "
                        "leader; 0 when caught up).", tp + ["follower"])
    dirty = gauge("raftka_partition_compaction_dirty_ratio", "Compacted topics: share of "
                  "the log's bytes written since this replica's last compaction pass.", tp)
    runs = CounterMetricFamily("raftka_partition_compaction_runs", "Compacted topics: "
                               "compaction passes this replica completed since it started.",
                               labels=tp)
    removed_records = CounterMetricFamily(
        "raftka_partition_compaction_removed_records", "Compacted topics: records removed "
        "by this replica's compaction passes since it started.", labels=tp)
    removed_bytes = CounterMetricFamily(
        "raftka_partition_compaction_removed_bytes", "Compacted topics: batch bytes removed "
        "by this replica's compaction passes since it started.", labels=tp)
    last_run = gauge("raftka_partition_compaction_last_run_timestamp_seconds", "Compacted "
                     "topics: when this replica's last compaction pass ended (absent before "
                     "the first).", tp)
    out += [runs, removed_records, removed_bytes]
    leaders = under_count = 0
    for p in s.partitions:
        if p.compaction is not None:
            ratio, passes, records, size, last_ms = p.compaction
            clabels = [p.topic, str(p.partition)]
            dirty.add_metric(clabels, ratio)
            runs.add_metric(clabels, passes)
            removed_records.add_metric(clabels, records)
            removed_bytes.add_metric(clabels, size)
            if last_ms:
                last_run.add_metric(clabels, last_ms / 1000)
        labels = [p.topic, str(p.partition)]
        is_leader = p.role == Role.LEADER
        leaders += is_leader
        under_count += p.under_replicated
        leader.add_metric(labels, 1 if is_leader else 0)
        role.add_metric(labels + [ROLE_LABELS[p.role]], 1)
        leader_id.add_metric(labels, p.leader_id)
        term.add_metric(labels, p.term)
        log_start.add_metric(labels, p.log_start_offset)
        log_end.add_metric(labels, p.log_end_offset)
        hw.add_metric(labels, p.high_watermark)
        commit.add_metric(labels, p.commit_index)
        applied.add_metric(labels, p.applied_index)
        stored.add_metric(labels, p.stored_bytes)
        delayed.add_metric(labels, p.delayed_pending)
        under.add_metric(labels, 1 if p.under_replicated else 0)
        for follower, entries, seconds in p.followers:
            flabels = labels + [str(follower)]
            lag_entries.add_metric(flabels, entries)
            if seconds is not None:
                lag_seconds.add_metric(flabels, seconds)
    out.append(GaugeMetricFamily("raftka_partition_replicas", "Partition replicas hosted "
                                 "by this node.", value=len(s.partitions)))
    out.append(GaugeMetricFamily("raftka_partition_leaders", "Partitions this node leads.",
                                 value=leaders))
    out.append(GaugeMetricFamily("raftka_under_replicated_partitions", "Partitions led by "
                                 "this node that are under-replicated.", value=under_count))

    g = ["group"]
    members = gauge("raftka_group_members", "Members of a consumer group (on its "
                    "coordinator).", g)
    state = gauge("raftka_group_state", "Consumer group state (the series with the current "
                  "state is 1).", g + ["state"])
    epoch = gauge("raftka_group_epoch", "Group epoch: bumped at every change of membership, "
                  "subscriptions or partition counts.", g)
    rebalances = CounterMetricFamily("raftka_group_rebalances", "Rebalances of a consumer "
                                     "group (target assignments computed: the group epoch).",
                                     labels=g)
    out.append(rebalances)
    committed = gauge("raftka_group_committed_offset", "Committed offset of a consumer group "
                      "for a partition.", g + tp)
    lag = gauge("raftka_group_lag_records", "Records of a partition after the group's "
                "committed offset (the coordinator's replica's high watermark minus the "
                "commit; absent if the coordinator hosts no replica of the partition).", g + tp)
    lag_s = gauge("raftka_group_lag_seconds", "Age of the oldest record the group has not "
                  "consumed (committed) in a partition, by its append time; 0 when caught "
                  "up.", g + tp)
    for v in s.groups:
        members.add_metric([v.group_id], v.members)
        for name in GROUP_STATES:
            state.add_metric([v.group_id, name], 1 if v.state == name else 0)
        epoch.add_metric([v.group_id], v.epoch)
        rebalances.add_metric([v.group_id], v.epoch)
        for t, p, offset, records, seconds in v.partitions:
            labels = [v.group_id, t, str(p)]
            committed.add_metric(labels, offset)
            if records is not None:
                lag.add_metric(labels, records)
            if seconds is not None:
                lag_s.add_metric(labels, seconds)
    return out


# ------------------------------------------------------------------------------ server
def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) -> (host, port); raises ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


class MetricsServer:
    """Runs the exporter process (``_metrics_exporter.py``) and answers its requests for
    payloads; restarts it if it dies."""

    def __init__(self, listen: str, metrics: NodeMetrics, collector: NodeCollector) -> None:
        self.listen = listen
        self.metrics = metrics
        self.collector = collector
        self.address = ""
        self._tasks: list[asyncio.Task] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._stopping = False

    async def start(self) -> str:
        """Start the exporter; returns ``host:port`` it bound. Raises OSError or ValueError
        (bad address, port in use: the exporter's own words)."""
        parse_listen(self.listen)  # a bad address is a ValueError before any process
        reader, writer = await self._spawn(self.listen)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._supervise(reader, writer),
                                            name="metrics-exporter"))
        self._tasks.append(loop.create_task(self.metrics.probe_event_loop(),
                                            name="event-loop-probe"))
        return self.address

    async def _spawn(self, listen: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        ours, theirs = socket.socketpair()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "raftka.node._metrics_exporter", "--listen", listen,
                "--fd", str(theirs.fileno()), "--node-pid", str(os.getpid()),
                pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL)
        finally:
            theirs.close()
        reader, writer = await asyncio.open_connection(sock=ours)
        try:
            line = await asyncio.wait_for(reader.readline(), EXPORTER_START_S)
        except asyncio.TimeoutError:
            line = b""
        status, _, rest = line.decode(errors="replace").strip().partition(" ")
        if status != "ok":
            writer.close()
            await self._end_process()
            raise OSError(rest or f"the metrics exporter did not start within "
                          f"{EXPORTER_START_S:.0f} s")
        self.address = rest
        return reader, writer

    async def _supervise(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        while True:
            await self._answer(reader, writer)
            writer.close()
            code = await self._end_process()
            if self._stopping:
                return
            log.warning("the metrics exporter (listening on %s) exited with code %s; "
                        "restarting it", self.address, code)
            while True:
                await asyncio.sleep(EXPORTER_RESTART_S)
                try:
                    # the same port as before, so Prometheus finds it again
                    reader, writer = await self._spawn(self.address)
                    break
                except (OSError, ValueError) as exc:
                    log.warning("cannot restart the metrics exporter: %s; retrying in "
                                "%.0f s", exc, EXPORTER_RESTART_S)

    async def _answer(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        """Until the exporter goes: a payload per request number it sends."""
        try:
            while True:
                number = await reader.readexactly(4)
                try:
                    payload = await self.collector.payload()
                except Exception:  # noqa: BLE001 - a scrape must never take the node down
                    log.exception("metrics scrape: taking the snapshot failed")
                    payload = pickle.dumps((None, [], []))
                writer.write(number + struct.pack(">I", len(payload)) + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    async def _end_process(self) -> int | None:
        proc = self._proc
        if proc is None:
            return None
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        return proc.returncode

    async def stop(self) -> None:
        self._stopping = True
        await self._end_process()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
