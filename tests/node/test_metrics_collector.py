"""The node's metrics (node/_metrics.py): the metric families built from a snapshot, the
instruments, and the collector against a real single-node broker (RocksDB, Raft host,
controller and partition replica) on an event loop, read from another thread as a scrape
does."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from raftka.v1 import errors_pb2
from raftka.v1.recordbatch import build_batch
from raftka.raft import Role
from raftka.node._broker import Broker
from raftka.node._config import NodeConfig
from raftka.node._controller_commands import encode_create_topic
from raftka.node._metrics import (
    GroupView,
    NodeCollector,
    NodeMetrics,
    PartitionView,
    Snapshot,
    families,
    parse_listen,
)


class _Fixed(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self):
        return families(self.snapshot)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple], float]:
    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _labels(**kv: str) -> tuple:
    return tuple(sorted(kv.items()))


def test_families_of_a_snapshot_follow_prometheus_conventions() -> None:
    leader = PartitionView("orders", 0, Role.LEADER, 1, 3, 10, 50, 48, 20, 19, 4096, True,
                           [(2, 0, 0.0), (3, 5, None)])
    follower = PartitionView("orders", 1, Role.FOLLOWER, 2, 4, 0, 7, 7, 9, 9, 100, False)
    group = GroupView("billing", "stable", 2, 6, [("orders", 0, 40, 8, 1.5),
                                                  ("orders", 1, 7, None, None)])
    snapshot = Snapshot(1, 3, [leader, follower], [group], (5, 4, 2, 1))
    registry = CollectorRegistry()
    registry.register(_Fixed(snapshot))
    s = _samples(registry)
    tp0, tp1 = _labels(topic="orders", partition="0"), _labels(topic="orders", partition="1")
    assert s[("raftka_partition_leader", tp0)] == 1
    assert s[("raftka_partition_leader", tp1)] == 0
    assert s[("raftka_partition_role", _labels(topic="orders", partition="0", role="leader"))] == 1
    assert s[("raftka_partition_role", _labels(topic="orders", partition="1",
                                                role="follower"))] == 1
    assert s[("raftka_partition_leader_id", tp1)] == 2
    assert s[("raftka_partition_term", tp0)] == 3
    assert s[("raftka_partition_log_start_offset", tp0)] == 10
    assert s[("raftka_partition_log_end_offset", tp0)] == 50
    assert s[("raftka_partition_high_watermark", tp0)] == 48
    assert s[("raftka_partition_commit_index", tp0)] == 20
    assert s[("raftka_partition_applied_index", tp0)] == 19
    assert s[("raftka_partition_stored_bytes", tp0)] == 4096
    assert s[("raftka_partition_under_replicated", tp0)] == 1
    assert s[("raftka_under_replicated_partitions", ())] == 1
    assert s[("raftka_partition_leaders", ())] == 1
    assert s[("raftka_partition_replicas", ())] == 2
    lag = "raftka_partition_follower_lag_entries"
    assert s[(lag, _labels(topic="orders", partition="0", follower="3"))] == 5
    # a lag in seconds that could not be dated is left out, not reported as 0
    assert ("raftka_partition_follower_lag_seconds",
            _labels(topic="orders", partition="0", follower="3")) not in s
    assert s[("raftka_partition_follower_lag_seconds",
              _labels(topic="orders", partition="0", follower="2"))] == 0
    assert s[("raftka_raft_elections_started_total", ())] == 5
    assert s[("raftka_raft_elections_won_total", ())] == 4
    assert s[("raftka_raft_leadership_transfers_total", ())] == 2
    assert s[("raftka_raft_proposals_dropped_total", ())] == 1
    g = _labels(group="billing")
    assert s[("raftka_group_members", g)] == 2
    assert s[("raftka_group_epoch", g)] == 6
    assert s[("raftka_group_rebalances_total", g)] == 6
    assert [st for st in ("empty", "reconciling", "stable")
            if s[("raftka_group_state", _labels(group="billing", state=st))] == 1] == ["stable"]
    gp0 = _labels(group="billing", topic="orders", partition="0")
    gp1 = _labels(group="billing", topic="orders", partition="1")
    assert s[("raftka_group_committed_offset", gp0)] == 40
    assert s[("raftka_group_lag_records", gp0)] == 8
    assert s[("raftka_group_lag_seconds", gp0)] == 1.5
    assert s[("raftka_group_committed_offset", gp1)] == 7
    assert ("raftka_group_lag_records", gp1) not in s  # no local replica: unknown here
    # every name carries the prefix (or is the process collector's standard one)
    assert all(name.startswith("raftka_") for name, _ in s)


def test_errors_are_counted_by_method_and_code_name() -> None:
    metrics = NodeMetrics(1)
    metrics.error("Produce", errors_pb2.NOT_LEADER)
    metrics.error("Produce", errors_pb2.NOT_LEADER)
    metrics.error("Fetch", 9999)
    s = _samples(metrics.registry)
    assert s[("raftka_request_errors_total", _labels(method="Produce", code="NOT_LEADER"))] == 2
    assert s[("raftka_request_errors_total", _labels(method="Fetch", code="ERROR_CODE_9999"))] == 1
    # counters have no _created series (disabled: they doubled the series for nothing)
    assert not any(name.endswith("_created") for name, _ in s)


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9301") == ("127.0.0.1", 9301)
    assert parse_listen("[::1]:0") == ("::1", 0)
    for bad in ("9301", ":9301", "host:", "host:x", "host:70000"):
        with pytest.raises(ValueError):
            parse_listen(bad)


# What the exporter does with a payload, in a process of its own: every sample as JSON.
_DECODE = """
import json, sys
from raftka.node._metrics import decode_payload
print(json.dumps([(s.name, s.labels, s.value)
                  for f in decode_payload(sys.stdin.buffer.read()) for s in f.samples]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_collector_payload_of_a_real_broker_decodes_in_another_process(tmp_path: Path) -> None:
    async def scenario() -> None:
        address = f"127.0.0.1:{_free_port()}"
        config = NodeConfig(node_id=1, listen=address, data_dir=tmp_path,
                            peers={1: address})
        config.validate()
        broker = Broker(config)
        await broker.start()
        try:
            deadline = time.monotonic() + 10
            while not broker.metadata_caught_up():
                assert time.monotonic() < deadline, "no controller leader"
                await asyncio.sleep(0.02)
            result = await broker.controller.propose(
                encode_create_topic("t", 1, 1, {}), 5.0)
            assert result.ok, result.message
            while ("t", 0) not in broker.partitions or \
                    broker.partitions[("t", 0)].group.node.role != Role.LEADER:
                assert time.monotonic() < deadline, "no leader of t/0"
                await asyncio.sleep(0.02)
            replica = broker.partitions[("t", 0)]
            payloads = [build_batch([(None, b"v%d" % i) for i in range(n)]) for n in (3, 4)]
            for payload in payloads:
                await replica.produce(payload, -1, 5.0)
            await broker._maintenance_pass()  # one pass now, not in 2 s: its steps' timings
            collector = NodeCollector(broker, None, broker.metrics)
            # the exporter process unpickles the payload and builds the families
            payload = await collector.payload()
            found = await asyncio.to_thread(
                lambda: json.loads(subprocess.run(
                    [sys.executable, "-c", _DECODE], input=payload, capture_output=True,
                    check=True).stdout))
            s = {(name, tuple(sorted(labels.items()))): value
                 for name, labels, value in found}
            t0 = _labels(topic="t", partition="0")
            assert s[("raftka_partition_high_watermark", t0)] == 7
            assert s[("raftka_partition_stored_bytes", t0)] == sum(map(len, payloads))
            assert s[("raftka_node_id", ())] == 1
            assert ("raftka_rocksdb_sst_files_bytes", ()) in s
            assert s[("raftka_data_dir_free_bytes", ())] > 0
            assert s[("raftka_raft_elections_won_total", ())] >= 2
            # the node's own registry travels in the payload too
            assert s[("raftka_produce_records_total", ())] == 7
            assert s[("raftka_produce_bytes_total", ())] == sum(map(len, payloads))
            assert s[("raftka_wal_syncs_total", ())] >= 1
            assert s[("raftka_ready_pass_duration_seconds_count", ())] >= 1
            for step in ("retention", "tombstones", "transaction_expiry",
                         "controller_snapshot", "preferred_leaders"):
                key = ("raftka_maintenance_step_duration_seconds_count", (("step", step),))
                assert s[key] >= 1, step
        finally:
            await broker.stop(graceful=False)

    asyncio.run(scenario())


def test_compaction_series_only_for_compacted_partitions() -> None:
    compacted = PartitionView("users", 0, Role.LEADER, 1, 2, 0, 90, 90, 30, 30, 2048, False,
                              compaction=(0.25, 3, 120, 9000, 1_700_000_000_000))
    fresh = PartitionView("users", 1, Role.FOLLOWER, 2, 2, 0, 5, 5, 5, 5, 10, False,
                          compaction=(1.0, 0, 0, 0, 0))
    plain = PartitionView("orders", 0, Role.LEADER, 1, 2, 0, 9, 9, 9, 9, 10, False)
    registry = CollectorRegistry()
    registry.register(_Fixed(Snapshot(1, 1, [compacted, fresh, plain], [], (0, 0, 0, 0))))
    s = _samples(registry)
    u0, u1 = _labels(topic="users", partition="0"), _labels(topic="users", partition="1")
    assert s[("raftka_partition_compaction_dirty_ratio", u0)] == 0.25
    assert s[("raftka_partition_compaction_runs_total", u0)] == 3
    assert s[("raftka_partition_compaction_removed_records_total", u0)] == 120
    assert s[("raftka_partition_compaction_removed_bytes_total", u0)] == 9000
    assert s[("raftka_partition_compaction_last_run_timestamp_seconds", u0)] == 1_700_000_000
    assert s[("raftka_partition_compaction_dirty_ratio", u1)] == 1.0
    assert ("raftka_partition_compaction_last_run_timestamp_seconds", u1) not in s  # no pass
    assert not [k for k in s if k[0].startswith("raftka_partition_compaction")
                and dict(k[1]).get("topic") == "orders"]  # delete-only topics: no series
