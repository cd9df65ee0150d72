"""The minimal client and the `raftka` CLI against a real cluster, including a leader kill."""

from __future__ import annotations

import os
import subprocess
import sys

from raftka.client import Admin, PartitionReader, Producer
from tests.harness import REPO, Cluster, wait_for


def _bootstrap(cluster: Cluster) -> str:
    return ",".join(cluster.peers.values())


def _raftka(cluster: Cluster, *args: str, stdin: str = "", timeout: float = 60):
    env = dict(os.environ, RAFTKA_BOOTSTRAP=_bootstrap(cluster))
    return subprocess.run([sys.executable, "-m", "raftka.client", *args], input=stdin, text=True,
                          capture_output=True, env=env, cwd=REPO, timeout=timeout)


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


def test_cli_reports_unknown_topic_without_a_traceback(cluster: Cluster) -> None:
    r = _raftka(cluster, "produce", "missing", stdin="x\n")
    assert r.returncode == 1
    assert "missing" in r.stderr and "Traceback" not in r.stderr


def test_producer_and_reader_follow_a_leader_change(cluster: Cluster) -> None:
    bootstrap = _bootstrap(cluster)
    with Admin(bootstrap) as admin:
        admin.create_topic("follow", partitions=1, replication_factor=3)
        admin.wait_for_topic_ready("follow", timeout=20)
    with Producer(bootstrap, acks="all") as producer:
        first = [producer.send("follow", b"a%d" % i, partition=0) for i in range(100)]
        producer.flush()
        assert [f.result(timeout=30)[1] for f in first] == list(range(100))
        cluster.kill(cluster.wait_leader("follow", 0))
        second = [producer.send("follow", b"b%d" % i, partition=0) for i in range(100)]
        producer.flush()
        offsets = [f.result(timeout=30)[1] for f in second]
    assert offsets == sorted(offsets) and len(set(offsets)) == 100
    with PartitionReader(bootstrap, "follow", 0, offset="earliest") as reader:
        seen: list[bytes] = []
        wait_for(lambda: seen.extend(r.value for r in reader.poll(timeout=1.0)) or
                 len(seen) >= 200, 30, "all 200 records")
    assert seen[:100] == [b"a%d" % i for i in range(100)]
    assert sorted(set(seen[100:])) == sorted(b"b%d" % i for i in range(100))
