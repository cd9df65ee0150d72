"""Admin against a real cluster: add partitions (new replicas start from the committed
metadata and take writes), ListOffsets through the client, and the merged cluster status
(leaders per node, under-replicated partitions after a node dies)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from raftka.client import (
    Admin,
    InvalidRequestError,
    PartitionReader,
    Producer,
    TopicReader,
    UnknownTopicError,
    default_partition,
)
from tests.harness import REPO, Cluster, wait_for


def _bootstrap(cluster: Cluster) -> str:
    return ",".join(cluster.peers.values())


def _raftka(cluster: Cluster, *args: str, timeout: float = 60):
    env = dict(os.environ, RAFTKA_BOOTSTRAP=_bootstrap(cluster))
    return subprocess.run([sys.executable, "-m", "raftka.client", *args], text=True,
                          capture_output=True, env=env, cwd=REPO, timeout=timeout)


@pytest.mark.shared_cluster
def test_added_partitions_start_and_take_writes(cluster: Cluster) -> None:
    bootstrap = _bootstrap(cluster)
    with Admin(bootstrap) as admin:
        admin.create_topic("grow", partitions=2, replication_factor=3)
        admin.wait_for_topic_ready("grow", timeout=20)
        desc = admin.add_partitions("grow", 5)
        assert desc.partition_count == 5
        assert [p.partition for p in desc.partitions] == [0, 1, 2, 3, 4]
        admin.wait_for_topic_ready("grow", timeout=20)
        with pytest.raises(InvalidRequestError, match="never removed"):
            admin.add_partitions("grow", 5)
        with pytest.raises(UnknownTopicError):
            admin.add_partitions("missing", 3)
        # the placement spreads preferred leaders of the 5 partitions over the 3 nodes
        preferred = [p.replicas[0] for p in admin.describe_topic("grow").partitions]
        assert sorted(preferred.count(n) for n in (1, 2, 3)) == [1, 2, 2]
    with Producer(bootstrap, acks="all") as producer:
        results = [producer.send("grow", b"new-%d" % p, partition=p).result(timeout=30)
                   for p in (2, 3, 4)]
    assert results == [(2, 0), (3, 0), (4, 0)]
    with PartitionReader(bootstrap, "grow", 4, offset="earliest") as reader:
        seen: list[bytes] = []
        wait_for(lambda: seen.extend(r.value for r in reader.poll(timeout=1.0)) or seen,
                 30, "the record on the new partition")
    assert seen == [b"new-4"]
    with Admin(bootstrap) as admin:
        assert admin.list_offsets("grow", 4, "latest").offset == 1
        assert admin.list_offsets("grow", 4, "earliest").offset == 0


@pytest.mark.shared_cluster
def test_cli_add_partitions(cluster: Cluster) -> None:
    r = _raftka(cluster, "topic", "create", "cligrow", "-p", "1")
    assert r.returncode == 0, r.stderr
    r = _raftka(cluster, "topic", "add-partitions", "cligrow", "-p", "3", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["name"] == "cligrow"
    assert len(json.loads(r.stdout)["partitions"]) == 3
    r = _raftka(cluster, "topic", "add-partitions", "cligrow", "-p", "2")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "has 3 partitions" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.shared_cluster
def test_list_offsets_by_time(cluster: Cluster) -> None:
    bootstrap = _bootstrap(cluster)
    with Admin(bootstrap) as admin:
        admin.create_topic("times", partitions=1, replication_factor=3)
        admin.wait_for_topic_ready("times", timeout=20)
        with Producer(bootstrap, acks="all", linger_ms=0) as producer:
            producer.send("times", b"a", partition=0).result(timeout=30)
            between = int(time.time() * 1000) + 1
            # the next batch must be appended strictly later than `between`
            wait_for(lambda: int(time.time() * 1000) > between + 1, 5, "the clock to move")
            producer.send("times", b"b", partition=0).result(timeout=30)
        assert admin.list_offsets("times", 0, 0).offset == 0
        assert admin.list_offsets("times", 0, between).offset == 1
        assert admin.list_offsets("times", 0, int(time.time() * 1000) + 60_000).offset == 2


def test_cluster_status_merges_every_node(cluster: Cluster) -> None:
    bootstrap = _bootstrap(cluster)
    with Admin(bootstrap) as admin:
        admin.create_topic("status", partitions=3, replication_factor=3)
        admin.wait_for_topic_ready("status", timeout=20)
        for p in range(3):
            cluster.wait_preferred_leader("status", p)
        status = wait_for(lambda: (lambda s: s if not s.under_replicated else None)(
            admin.cluster_status()), 20, "every replica running")
        assert [n.id for n in status.nodes] == [1, 2, 3]
        assert all(n.reachable and not n.seen_down_by for n in status.nodes)
        # every partition (ours and any internal ones) has exactly one leader
        assert status.partition_count >= 3 and status.leaderless == ()
        assert sum(n.leader_count for n in status.nodes) == status.partition_count
        assert all(n.leader_count >= 1 for n in status.nodes)  # each leads a "status" one
        assert status.controller_id in (1, 2, 3)
        victim = 3
        cluster.kill(victim)

        def degraded():
            s = admin.cluster_status(timeout=10)
            ok = (not s.nodes[victim - 1].reachable and s.leaderless == ()
                  and len(s.under_replicated) == s.partition_count
                  and sum(n.leader_count for n in s.nodes) == s.partition_count)
            return s if ok else None

        status = wait_for(degraded, 30, "every partition under-replicated, all led")
        assert all(p.missing == (victim,) for p in status.under_replicated)
        assert status.nodes[victim - 1].leader_count == 0
        count = status.partition_count
    r = _raftka(cluster, "cluster", "status")
    assert r.returncode == 0, r.stderr
    assert f"under-replicated partitions: {count}" in r.stdout
    r = _raftka(cluster, "cluster", "status", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["under_replicated_partitions"] == count
    assert [n["reachable"] for n in data["nodes"]] == [True, True, False]


@pytest.mark.shared_cluster
def test_cli_produce_with_a_key_separator(cluster: Cluster) -> None:
    r = _raftka(cluster, "topic", "create", "keyed", "-p", "3")
    assert r.returncode == 0, r.stderr
    env = dict(os.environ, RAFTKA_BOOTSTRAP=_bootstrap(cluster))
    r = subprocess.run([sys.executable, "-m", "raftka.client", "produce", "keyed",
                        "--key-separator", ":"], input="k1:v1\nk2:v2\nk1:v3\nno key\n",
                       text=True, capture_output=True, env=env, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    seen = []
    with TopicReader(_bootstrap(cluster), "keyed", None, "earliest") as reader:
        wait_for(lambda: seen.extend(reader.poll(1.0)) or len(seen) >= 4, 30, "4 records")
    by_value = {r.value: r for r in seen}
    assert by_value[b"v1"].key == b"k1" and by_value[b"v3"].key == b"k1"
    assert by_value[b"v1"].partition == by_value[b"v3"].partition == default_partition(b"k1", 3)
    assert by_value[b"v1"].offset < by_value[b"v3"].offset
    assert by_value[b"v2"].key == b"k2" and by_value[b"no key"].key is None
