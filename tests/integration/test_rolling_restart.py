"""``raftka cluster restart --rolling`` against a real 3-node cluster (README, Rolling restart
and upgrade; client/_rolling.py).

The CLI runs as a real process with ``--exec``: its command (``restart_request.py``) asks
this test to restart a node, and the test does, by SIGTERM and a new process on the same data
directory (as systemd's ``restart`` would). Meanwhile an idempotent acks=all producer writes
to every partition: no produce fails, and every partition holds exactly the acknowledged
records, once each, in order, on every replica. Whenever the CLI asks for the next restart,
the node restarted before has caught up: its high watermark of every partition reached the
leader's as it was when that node was started again.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import grpc
import pytest

from raftka import Producer

from tests.harness import REPO, Cluster

TOPIC = "rolling"
PARTITIONS = 3
REQUEST = Path(__file__).with_name("restart_request.py")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("rolling"), 3)
    try:
        c.start_all()
        yield c
    finally:
        c.stop_all()


def _raftka(cluster: Cluster, *args: str, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, RAFTKA_BOOTSTRAP=",".join(cluster.peers.values()))
    return subprocess.Popen([sys.executable, "-m", "raftka.client", *args], env=env, cwd=REPO,
                            text=True, **kwargs)


def _exec_command(requests: Path, timeout_s: int) -> str:
    return f"{sys.executable} {REQUEST} {requests} {{id}} {timeout_s}"


def test_rolling_restart_of_every_node_under_produce_fails_and_loses_nothing(
        cluster: Cluster, tmp_path: Path) -> None:
    cluster.create_topic(TOPIC, partitions=PARTITIONS)
    bootstrap = ",".join(cluster.peers.values())

    stop = threading.Event()
    sent: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
    futures: list[tuple[int, bytes, object]] = []
    latencies: list[float] = []

    def produce() -> None:
        # 60 s instead of 120 s: an outage of a minute fails a produce
        with Producer(bootstrap, acks="all", linger_ms=2,
                      delivery_timeout_ms=60_000) as producer:
            i = 0
            while not stop.is_set():
                partition, value = i % PARTITIONS, b"r%07d" % i
                started = time.monotonic()
                future = producer.send(TOPIC, value, partition=partition)
                future.add_done_callback(
                    lambda f, started=started: latencies.append(time.monotonic() - started))
                sent[partition].append(value)
                futures.append((partition, value, future))
                i += 1
                time.sleep(0.002)
            producer.flush()

    producer = threading.Thread(target=produce, name="rolling-producer")
    producer.start()
    requests = tmp_path / "requests"
    requests.mkdir()
    out_path = tmp_path / "cli.out"
    restarted: list[int] = []
    behind: dict[int, int] = {}  # partition -> the leader's high watermark at the last start

    def high_watermarks(node_id: int) -> dict[int, int]:
        return {p: cluster.replica_position(node_id, TOPIC, p).high_watermark
                for p in range(PARTITIONS)}

    def assert_caught_up(node_id: int) -> None:
        try:
            now = high_watermarks(node_id)
        except grpc.RpcError as exc:
            raise AssertionError(f"the next restart came while node {node_id} did not "
                                 f"answer: {exc.code().name}") from None
        assert all(now[p] >= behind[p] for p in behind), (
            f"the next restart came before node {node_id} caught up: {now} < {behind}")

    try:
        with open(out_path, "w") as out:
            cli = _raftka(cluster, "cluster", "restart", "--rolling", "--node-timeout", "120",
                          "--exec", _exec_command(requests, 150), stdout=out,
                          stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 280
        while cli.poll() is None:
            for request in sorted(requests.glob("restart-*")):
                node_id = int(request.name.rpartition("-")[2])
                if restarted:
                    assert_caught_up(restarted[-1])
                assert cluster.terminate(node_id) == 0, f"node {node_id} stopped uncleanly"
                behind = {p: cluster.replica_position(cluster.wait_leader(TOPIC, p), TOPIC, p)
                          .high_watermark for p in range(PARTITIONS)}
                cluster.start(node_id)
                restarted.append(node_id)
                request.unlink()
            if time.monotonic() > deadline:
                cli.kill()
                raise AssertionError("the rolling restart did not finish")
            time.sleep(0.05)
    finally:
        stop.set()
        producer.join(60)
    output = out_path.read_text()
    print(output)
    assert cli.returncode == 0, output
    assert "rolling restart done: 3 node(s)" in output
    # the controller leader as the CLI saw it when it began (it may have moved since the
    # test asked, on a loaded machine) goes last
    controller = int(re.search(r"\(controller: node (\d+)\)", output).group(1))
    assert sorted(restarted) == [1, 2, 3] and restarted[-1] == controller, restarted
    assert_caught_up(restarted[-1])
    for node_id in (1, 2, 3):
        assert f"node {node_id}: back and caught up on " in output

    failed = [(p, v, f.exception()) for p, v, f in futures if f.exception() is not None]
    assert not failed, f"{len(failed)} produce(s) failed, first: {failed[:3]}"
    assert len(futures) > 300, "the producer wrote throughout the restart"
    latencies.sort()
    print(f"{len(futures)} records acknowledged during the rolling restart; produce latency "
          f"p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, p99 "
          f"{latencies[int(len(latencies) * 0.99)] * 1000:.0f} ms, max "
          f"{latencies[-1] * 1000:.0f} ms")
    acked: dict[int, dict[bytes, int]] = {p: {} for p in range(PARTITIONS)}
    for partition, value, future in futures:
        acked[partition][value] = future.result()[1]
    for p in range(PARTITIONS):
        cluster.assert_acknowledged(TOPIC, p, sent[p], acked[p])
        cluster.assert_replicas_agree(TOPIC, p)


def test_without_exec_the_operator_is_told_which_node_to_restart_and_it_waits(
        cluster: Cluster) -> None:
    """Node 2 only: the CLI names it, waits while the "operator" (this test) has not restarted
    it yet, and finishes once it went down, came back and caught up."""
    cli = _raftka(cluster, "cluster", "restart", "--rolling", "--nodes", "2",
                  "--node-timeout", "120", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[str] = []
    told = threading.Event()

    def read() -> None:
        for line in cli.stdout:
            lines.append(line)
            if "restart it now" in line:
                told.set()
    reader = threading.Thread(target=read, name="cli-output")
    reader.start()
    try:
        assert told.wait(60), "".join(lines)
        assert "node 2 (" in lines[-1], lines
        assert cli.poll() is None, "it waits for the restart"
        assert cluster.terminate(2) == 0
        cluster.start(2)
        assert cli.wait(150) == 0, "".join(lines)
    finally:
        if cli.poll() is None:
            cli.kill()
        reader.join(10)
    output = "".join(lines)
    assert "node 2: back and caught up on " in output and "done: 1 node(s)" in output, output


def _run(cluster: Cluster, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    cli = _raftka(cluster, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = cli.communicate(timeout=timeout)
    return subprocess.CompletedProcess(cli.args, cli.returncode, out, err)


def test_dry_run_prints_the_order_with_the_controller_last(cluster: Cluster) -> None:
    r = _run(cluster, "cluster", "restart", "--rolling", "--dry-run")
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()[1:] if line.strip()]
    order = [int(row[1]) for row in rows]
    assert sorted(order) == [1, 2, 3], r.stdout
    assert rows[-1][3:] == ["controller"] and all(len(row) == 3 for row in rows[:-1]), r.stdout
    r = _run(cluster, "cluster", "restart", "--rolling", "--dry-run", "--nodes", "2,9")
    assert r.returncode == 1 and "unknown node 9" in r.stderr and "Traceback" not in r.stderr


def test_partitions_without_a_quorum_during_a_restart_are_refused(
        cluster: Cluster, tmp_path: Path) -> None:
    cluster.create_topic("two-replicas", partitions=1, replicas=2)
    requests = tmp_path / "requests"
    requests.mkdir()
    r = _run(cluster, "cluster", "restart", "--rolling", "--exec", _exec_command(requests, 5))
    assert r.returncode == 1, r.stdout
    assert "fewer than 3 replicas" in r.stderr and "two-replicas/0" in r.stderr, r.stderr
    assert "--allow-unavailable" in r.stderr
    assert not list(requests.iterdir()), "nothing was restarted"


def test_an_unhealthy_cluster_is_refused_before_any_restart(
        cluster: Cluster, tmp_path: Path) -> None:
    requests = tmp_path / "requests"
    requests.mkdir()
    cluster.kill(3)
    try:
        r = _run(cluster, "cluster", "restart", "--rolling", "--allow-unavailable",
                 "--node-timeout", "3", "--exec", _exec_command(requests, 5))
    finally:
        cluster.start(3)
    assert r.returncode == 1, r.stdout
    assert "not healthy before the rolling restart" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not list(requests.iterdir()), "nothing was restarted"
