"""The minimal client and the `raftka` CLI against a real cluster, including a leader kill."""

from __future__ import annotations

import pytest

import json
import os
import subprocess
import sys

from raftka.client import Admin, PartitionReader, Producer
from tests.harness import REPO, Cluster, wait_for
from tests.safety import assert_log_matches_acks


def _bootstrap(cluster: Cluster) -> str:
    return ",".join(cluster.peers.values())


def _raftka(cluster: Cluster, *args: str, stdin: str = "", timeout: float = 60):
    env = dict(os.environ, RAFTKA_BOOTSTRAP=_bootstrap(cluster))
    return subprocess.run([sys.executable, "-m", "raftka.client", *args], input=stdin, text=True,
                          capture_output=True, env=env, cwd=REPO, timeout=timeout)


@pytest.mark.shared_cluster
def test_cli_topic_produce_consume(cluster: Cluster) -> None:
    r = _raftka(cluster, "topic", "create", "lines", "-p", "2")
    assert r.returncode == 0, r.stderr
    lines = [f"line-{i}" for i in range(50)]
    r = _raftka(cluster, "produce", "lines", "--partition", "1", stdin="\n".join(lines) + "\n")
    assert r.returncode == 0, r.stderr
    r = _raftka(cluster, "consume", "lines", "--partition", "1", "--from-beginning",
                "--exit-at-end")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == lines
    r = _raftka(cluster, "topic", "list", "--json")
    assert r.returncode == 0 and "lines" in r.stdout
    r = _raftka(cluster, "topic", "create", "lines")
    assert r.returncode == 1 and "already exists" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.shared_cluster
def test_cli_reports_unknown_topic_without_a_traceback(cluster: Cluster) -> None:
    r = _raftka(cluster, "produce", "missing", stdin="x\n")
    assert r.returncode == 1
    assert "missing" in r.stderr and "Traceback" not in r.stderr


def test_producer_and_reader_follow_a_leader_change(cluster: Cluster) -> None:
    bootstrap = _bootstrap(cluster)
    with Admin(bootstrap) as admin:
        admin.create_topic("follow", partitions=1, replication_factor=3)
        admin.wait_for_topic_ready("follow", timeout=20)
    first_values = [b"a%d" % i for i in range(100)]
    second_values = [b"b%d" % i for i in range(100)]
    with Producer(bootstrap, acks="all") as producer:  # idempotent: no duplicates on retry
        first = [producer.send("follow", v, partition=0) for v in first_values]
        producer.flush()
        assert [f.result(timeout=30)[1] for f in first] == list(range(100))
        killed = cluster.wait_leader("follow", 0)
        cluster.kill(killed)
        second = [producer.send("follow", v, partition=0) for v in second_values]
        producer.flush()
        acked = {v: f.result(timeout=30)[1] for v, f in zip(second_values, second)}
    acked.update(zip(first_values, range(100)))
    sent = first_values + second_values
    with PartitionReader(bootstrap, "follow", 0, offset="earliest") as reader:
        seen: list[tuple[int, bytes]] = []
        wait_for(lambda: seen.extend((r.offset, r.value) for r in reader.poll(timeout=1.0))
                 or len(seen) >= 200, 30, "all 200 records")
    # Exactly the acknowledged records, in send order, once each, at their offsets.
    assert_log_matches_acks(seen, sent, acked, where="follow/0 as the reader saw it")
    cluster.assert_acknowledged("follow", 0, sent, acked)
    cluster.assert_replicas_agree("follow", 0)
    cluster.start(killed)
    cluster.assert_replicas_agree("follow", 0)


@pytest.mark.shared_cluster
def test_cli_alter_and_describe_topic_configs(cluster: Cluster) -> None:
    assert _raftka(cluster, "topic", "create", "conf", "-c", "retention.ms=60000").returncode == 0
    r = _raftka(cluster, "topic", "alter-config", "conf", "--set", "retention.bytes=1000",
                "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "dry run" in r.stdout
    with Admin(_bootstrap(cluster)) as admin:
        by_name = {e.name: e for e in admin.describe_topic_configs("conf")}
    assert (by_name["retention.bytes"].value, by_name["retention.bytes"].source) == (
        "-1", "DEFAULT")  # the dry run changed nothing
    r = _raftka(cluster, "topic", "alter-config", "conf", "--set", "retention.bytes=1000",
                "--delete", "retention.ms")
    assert r.returncode == 0, r.stderr
    r = _raftka(cluster, "topic", "describe-configs", "conf", "--json")
    assert r.returncode == 0, r.stderr
    entries = {e["name"]: e for e in json.loads(r.stdout)}
    assert (entries["retention.bytes"]["value"], entries["retention.bytes"]["source"]) == (
        "1000", "TOPIC")
    assert (entries["retention.ms"]["value"], entries["retention.ms"]["source"]) == (
        entries["retention.ms"]["default"], "DEFAULT")
    r = _raftka(cluster, "topic", "alter-config", "conf", "--set", "retention.ms=soon")
    assert r.returncode == 1 and "retention.ms" in r.stderr and "Traceback" not in r.stderr
    r = _raftka(cluster, "topic", "alter-config", "conf")
    assert r.returncode != 0 and "nothing to change" in r.stderr
