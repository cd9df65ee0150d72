"""Prometheus metrics of real node processes (node/_metrics.py): a 3-node cluster with
``--metrics-listen`` on every node, scraped over HTTP and parsed with prometheus_client's
own parser."""

from __future__ import annotations

import os
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from raftka import Admin, Consumer, PartitionReader, Producer
from raftka.v1 import broker_pb2
from tests.harness import Cluster, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def metered(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    c = Cluster(tmp_path, 3, metrics=True)
    try:
        c.start_all()
        yield c
    finally:
        c.stop_all()
        failed = getattr(request.node, "rep_call", None)
        if failed is None or failed.failed:
            print(c.logs())


def scrape_text(cluster: Cluster, node_id: int) -> str:
    with urllib.request.urlopen(cluster.metrics_url(node_id), timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return response.read().decode()


def scrape(cluster: Cluster, node_id: int) -> Samples:
    """Every sample of a node's /metrics: (name, sorted labels) -> value."""
    samples: Samples = {}
    for family in text_string_to_metric_families(scrape_text(cluster, node_id)):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def partition_value(cluster: Cluster, node_id: int, name: str, topic: str,
                    partition: int = 0) -> float | None:
    return value(scrape(cluster, node_id), name, topic=topic, partition=str(partition))


def test_partition_series_show_roles_offsets_and_request_counters(metered: Cluster) -> None:
    cluster = metered
    cluster.create_topic("metered", partitions=1, replicas=3)
    leader = cluster.wait_leader("metered", 0)
    bootstrap = ",".join(cluster.peers.values())
    records = 120
    with Producer(bootstrap, acks="all", linger_ms=0) as producer:
        for i in range(records):
            producer.send("metered", f"v{i}".encode(), partition=0)
        producer.flush()

    # every replica applies the records: its high watermark reaches N
    for nid in cluster.peers:
        wait_for(lambda nid=nid: partition_value(cluster, nid, "raftka_partition_high_watermark",
                                                 "metered") == records,
                 20, f"node {nid}'s high watermark of metered/0 at {records}")
    views = {nid: scrape(cluster, nid) for nid in cluster.peers}
    tp = {"topic": "metered", "partition": "0"}
    # exactly one replica says it leads, and every replica names the same leader
    assert sum(value(v, "raftka_partition_leader", **tp) for v in views.values()) == 1
    assert value(views[leader], "raftka_partition_leader", **tp) == 1
    assert value(views[leader], "raftka_partition_role", role="leader", **tp) == 1
    for nid, v in views.items():
        assert value(v, "raftka_partition_leader_id", **tp) == leader, nid
        assert value(v, "raftka_partition_log_end_offset", **tp) == records, nid
        assert value(v, "raftka_partition_log_start_offset", **tp) == 0, nid
        assert value(v, "raftka_partition_stored_bytes", **tp) > records, nid
        applied = value(v, "raftka_partition_applied_index", **tp)
        assert applied >= 2, nid  # the leader's empty entry, then at least one batch
        assert value(v, "raftka_partition_commit_index", **tp) >= applied, nid
        assert value(v, "raftka_partition_term", **tp) >= 1, nid
        assert value(v, "raftka_node_id") == nid
    # on the leader: one lag series per follower, and replication is complete
    followers = [n for n in cluster.peers if n != leader]
    lv = views[leader]
    wait_for(lambda: all(value(scrape(cluster, leader), "raftka_partition_follower_lag_entries",
                               follower=str(f), **tp) == 0 for f in followers),
             20, "followers caught up in the leader's metrics")
    assert value(lv, "raftka_partition_under_replicated", **tp) == 0
    assert value(lv, "raftka_under_replicated_partitions") == 0
    # the request counters of the leader moved: one request and batch at a time
    assert value(lv, "raftka_produce_records_total") >= records
    assert value(lv, "raftka_produce_bytes_total") > records
    assert value(lv, "raftka_produce_requests_total", acks="all") >= 1
    assert value(lv, "raftka_produce_request_duration_seconds_count", acks="all") >= 1
    assert value(lv, "raftka_wal_syncs_total") >= 1
    assert value(lv, "raftka_raft_elections_won_total") >= 1
    assert value(lv, "process_resident_memory_bytes") > 0
    assert value(lv, "raftka_rocksdb_sst_files_bytes") is not None
    assert value(lv, "raftka_data_dir_free_bytes") > 0

    fetched_before = value(lv, "raftka_fetch_records_total")
    with PartitionReader(bootstrap, "metered", 0, offset="earliest") as reader:
        got = 0
        while got < records:
            got += len(reader.poll(timeout=5.0))
    after = scrape(cluster, leader)
    assert value(after, "raftka_fetch_records_total") - fetched_before >= records
    assert value(after, "raftka_fetch_requests_total") >= 1
    assert value(after, "raftka_fetch_bytes_total") > 0

    # an error is counted under its code name
    with pytest.raises(grpc.RpcError):
        cluster.broker(leader).Produce(broker_pb2.ProduceRequest(
            topic="no-such-topic", partition=0, records=broker_pb2.RecordList(
                records=[broker_pb2.Record(value=b"x")])), timeout=5)
    errors = scrape(cluster, leader)
    assert value(errors, "raftka_request_errors_total", method="Produce",
                 code="UNKNOWN_TOPIC") == 1


def test_group_lag_appears_and_drops_to_zero_after_consuming(metered: Cluster) -> None:
    cluster = metered
    cluster.create_topic("lagged", partitions=1, replicas=3)
    cluster.wait_leader("lagged", 0)
    bootstrap = ",".join(cluster.peers.values())
    records = 40
    with Producer(bootstrap, acks="all") as producer:
        for i in range(records):
            producer.send("lagged", f"r{i}".encode(), partition=0)
        producer.flush()
    with Admin(bootstrap) as admin:
        admin.reset_group_offsets("watchers", "lagged", to="earliest")
    labels = {"group": "watchers", "topic": "lagged", "partition": "0"}
    coordinator = 0

    def lag() -> float | None:
        """The lag as the coordinator reports it (the coordinator may move right after
        start: a preferred-leader handoff of its offsets partition)."""
        nonlocal coordinator
        for nid in cluster.peers:
            found = value(scrape(cluster, nid), "raftka_group_lag_records", **labels)
            if found is not None:
                coordinator = nid
                return found
        return None

    wait_for(lambda: lag() == records, 20, f"group lag of {records} on the coordinator")
    samples = scrape(cluster, coordinator)
    assert value(samples, "raftka_group_committed_offset", **labels) == 0
    assert value(samples, "raftka_group_lag_seconds", **labels) >= 0
    assert value(samples, "raftka_group_members", group="watchers") == 0
    assert value(samples, "raftka_group_state", group="watchers", state="empty") == 1
    # only the coordinator reports the group
    for nid in cluster.peers:
        if nid != coordinator:
            assert value(scrape(cluster, nid), "raftka_group_members", group="watchers") is None

    with Consumer(bootstrap, "watchers", ["lagged"], auto_offset_reset="earliest") as consumer:
        seen = 0
        while seen < records:
            seen += len(consumer.poll(timeout=2.0))
        consumer.commit()
        wait_for(lambda: lag() == 0, 20, "group lag back to 0 once consumed")
        samples = scrape(cluster, coordinator)
        assert value(samples, "raftka_group_committed_offset", **labels) == records
        assert value(samples, "raftka_group_lag_seconds", **labels) == 0
        assert value(samples, "raftka_group_members", group="watchers") == 1
        assert value(samples, "raftka_group_epoch", group="watchers") >= 1


def test_the_metrics_endpoint_answers_other_methods_with_405_and_paths_with_404(
        metered: Cluster) -> None:
    request = urllib.request.Request(metered.metrics_url(1), data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 405
    # only /metrics (and /) serve metrics
    request = urllib.request.Request(metered.metrics_url(1).replace("/metrics", "/other"))
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 404
    assert b"/metrics" in info.value.read()


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_the_exporter_process_is_restarted_and_ends_with_its_node(metered: Cluster) -> None:
    """The metrics are served by a child process of the node (node/_metrics_exporter.py):
    killed, the node starts it again on the same port; the node killed -9, it goes too."""
    node_pid = metered.procs[1].pid
    exporters = wait_for(lambda: _children(node_pid), 10, "the exporter process")
    assert len(exporters) == 1
    assert value(scrape(metered, 1), "raftka_node_id") == 1
    assert value(scrape(metered, 1), "process_resident_memory_bytes") > 0  # the node's
    os.kill(exporters[0], signal.SIGKILL)
    wait_for(lambda: [p for p in _children(node_pid) if p != exporters[0]], 15,
             "a new exporter process")

    def serves() -> bool:
        try:
            return value(scrape(metered, 1), "raftka_node_id") == 1
        except (OSError, urllib.error.URLError):
            return False
    wait_for(serves, 15, "metrics served again on the same port")
    exporter = [p for p in _children(node_pid) if p != exporters[0]][0]
    metered.kill(1)
    wait_for(lambda: not _alive(exporter), 10, "the exporter to exit with its node")
