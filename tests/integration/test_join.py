"""Nodes join a running cluster (issue 19), on a real 3-node cluster: a node started with
only ``--join`` (and ``--id``) is registered through the controller, shows in Metadata,
follows the controller group as a learner, takes a partition moved onto it under an acks=all
producer, and restarts without ``--join``; a node without ``--id`` gets one from the
controller and may get replicas of a new topic; a joined learner takes a decommissioned
controller voter's place; a join with an id in use is refused and changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import grpc
import pytest

from raftka.client import Admin
from raftka.v1 import broker_pb2

from tests.harness import REPO, Cluster, free_ports, wait_for
from tests.kafka.test_wire import _answer, _connect, _read_frame, _request
from tests.integration.test_reassignment import Writer, _assert_new_replicas_hold_every_ack


@pytest.fixture(scope="module")
def cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("join"), 3, kafka=True)
    try:
        c.start_all()
        yield c
    finally:
        c.stop_all()


@pytest.fixture
def admin(cluster3: Cluster) -> Iterator[Admin]:
    with Admin(",".join(cluster3.peers.values())) as a:
        yield a


def _node_command(cluster: Cluster, data_dir: Path, address: str, node_id: int | None,
                  join: bool, kafka: str = "") -> list[str]:
    cmd = [sys.executable, "-m", "raftka.node", "--listen", address, "--data-dir",
           str(data_dir), "--tick-ms", str(cluster.tick_ms), "--log-level", "info",
           "--no-balancer"]  # like the harness's nodes: nothing moves unless a test moves it
    if kafka:
        cmd += ["--kafka-listen", kafka]
    if node_id is not None:
        cmd += ["--id", str(node_id)]
    if join:  # any member will do; two given, tried in turn
        cmd += ["--join", f"{cluster.peers[2]},{cluster.peers[1]}"]
    return cmd


def _start_joiner(cluster: Cluster, name: str, node_id: int | None, join: bool = True,
                  address: str | None = None, kafka: str = ""
                  ) -> tuple[subprocess.Popen, str]:
    """Start a node outside the harness's --peers (it joins, or restarts after joining);
    the cluster's stop_all stops it like the others."""
    address = address or f"127.0.0.1:{free_ports(1)[0]}"
    with open(cluster.root / f"node-{name}.log", "ab") as log:
        proc = subprocess.Popen(
            _node_command(cluster, cluster.root / f"node-{name}", address, node_id, join,
                          kafka),
            cwd=REPO, stdout=log, stderr=log, start_new_session=True)
    cluster._started.append(proc)
    return proc, address


def _joined_id(cluster: Cluster, name: str) -> int:
    path = cluster.root / f"node-{name}" / "membership.json"
    wait_for(path.exists, 30, f"node {name} to join and write {path.name}")
    return json.loads(path.read_text())["node_id"]


def _brokers(cluster: Cluster, node: int) -> dict[int, str]:
    try:
        md = cluster.broker(node).Metadata(broker_pb2.MetadataRequest(), timeout=5)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.UNAVAILABLE:  # not caught up with the metadata yet
            raise
        return {}
    return {b.id: b.address for b in md.brokers}


def _kafka_brokers(cluster: Cluster, node: int) -> dict[int, str]:
    """Node id -> host:port in a Kafka Metadata (v12) answer of ``node``'s Kafka listener."""
    with _connect(cluster, node) as s:
        s.sendall(_request(3, 12, 1, {"topics": None}))
        _, body = _answer(_read_frame(s), 3, 12)
    return {b.node_id: f"{b.host}:{b.port}" for b in body.brokers}


def _wait_member(cluster: Cluster, admin: Admin, node_id: int, address: str) -> None:
    for n in (1, 2, 3):
        wait_for(lambda n=n: _brokers(cluster, n).get(node_id) == address, 30,
                 f"node {n}'s Metadata to list node {node_id}")
    wait_for(lambda: {x.id: x for x in admin.list_nodes()}.get(node_id), 30,
             f"ListNodes to show node {node_id}")
    cluster.peers[node_id] = address  # the harness's channels and helpers reach it now


def test_a_node_joins_takes_a_moved_partition_and_restarts_without_join(
        cluster3: Cluster, admin: Admin) -> None:
    kafka = f"127.0.0.1:{free_ports(1)[0]}"
    proc, address = _start_joiner(cluster3, "4", 4, kafka=kafka)
    assert _joined_id(cluster3, "4") == 4
    _wait_member(cluster3, admin, 4, address)
    cluster3.procs[4] = proc
    # Kafka clients see it too, at the Kafka address it advertised
    wait_for(lambda: _kafka_brokers(cluster3, 1).get(4) == kafka, 30,
             "the Kafka listener's Metadata to list node 4")
    # learner-first: it follows the controller group without voting (3 voters stay)
    nodes = {x.id: x for x in admin.list_nodes()}
    assert nodes[4].state == "active" and not nodes[4].controller_voter
    assert sum(x.controller_voter for x in nodes.values()) == 3
    # it has the metadata: it answers Metadata naming every node
    wait_for(lambda: set(_brokers(cluster3, 4)) == {1, 2, 3, 4}, 30,
             "the new node to answer Metadata")
    wait_for(lambda: {n.id: n.reachable for n in admin.describe_cluster().nodes}.get(4), 30,
             "DescribeCluster to show node 4 reachable")
    env = dict(os.environ, RAFTKA_BOOTSTRAP=cluster3.peers[1])
    shown = subprocess.run([sys.executable, "-m", "raftka.client", "cluster", "nodes"],
                           text=True, capture_output=True, env=env, cwd=REPO, timeout=60)
    assert shown.returncode == 0 and address in shown.stdout, shown.stdout + shown.stderr

    cluster3.create_topic("onto-new", replicas=3)
    before = tuple(admin.describe_topic("onto-new").partitions[0].replicas)
    target = before[1:] + (4,)
    with Writer(cluster3, "onto-new") as writer:
        wait_for(lambda: len(writer.acked) >= 30, 30, "writes before the move")
        admin.reassign_partition("onto-new", 0, target)
        wait_for(lambda: tuple(admin.describe_topic("onto-new").partitions[0].replicas)
                 == target, 60, "the move onto the new node")
        count = len(writer.acked)
        wait_for(lambda: len(writer.acked) >= count + 10, 30, "writes after the move")
    _assert_new_replicas_hold_every_ack(cluster3, "onto-new", writer, target)

    # restart without --join: it starts from what it persisted, with its replica
    cluster3.terminate(4)
    proc, _ = _start_joiner(cluster3, "4", None, join=False, address=address, kafka=kafka)
    cluster3.procs[4] = proc
    cluster3.produce("onto-new", 0, _batch(b"after the restart"))
    writer.sent.append(b"after the restart")
    writer.acked.append(b"after the restart")
    # every replica, the restarted one too, holds every acknowledged record
    _assert_new_replicas_hold_every_ack(cluster3, "onto-new", writer, target)


def _batch(value: bytes) -> bytes:
    from raftka.v1.recordbatch import Record, build_batch
    return build_batch([Record(None, value)])


def test_the_controller_picks_an_unused_id(cluster3: Cluster, admin: Admin) -> None:
    proc, address = _start_joiner(cluster3, "auto", None)
    node_id = _joined_id(cluster3, "auto")
    assert node_id not in (1, 2, 3, 4)
    _wait_member(cluster3, admin, node_id, address)
    cluster3.procs[node_id] = proc
    # new topics may place replicas on it
    cluster3.create_topic("wide", partitions=5, replicas=3)
    placed = {r for p in admin.describe_topic("wide").partitions for r in p.replicas}
    assert node_id in placed


def test_a_joined_learner_replaces_a_decommissioned_controller_voter(
        cluster3: Cluster, admin: Admin) -> None:
    voters = {x.id for x in admin.list_nodes() if x.controller_voter}
    assert voters == {1, 2, 3}  # joined nodes are learners until a voter must be replaced
    admin.decommission_node(3)

    def replaced():
        nodes = {x.id: x for x in admin.list_nodes()}
        now = {n for n, x in nodes.items() if x.controller_voter}
        return nodes[3].state == "removed" and len(now) == 3 and 3 not in now and now
    now = wait_for(replaced, 60, "node 3 drained and a joined node voting in its place")
    assert now & {n for n in cluster3.peers if n > 3}
    wait_for(lambda: cluster3.broker(1).Metadata(broker_pb2.MetadataRequest(),
                                                 timeout=5).controller_id in now, 30,
             "a controller leader among the voters")
    # Removed for good: node 3, still running, applies its own removal (it does not keep
    # answering with its last metadata), then leaves the controller group, and no node
    # dials it any more.
    with Admin(cluster3.peers[3]) as own_view:
        wait_for(lambda: {x.id: x.state for x in own_view.list_nodes()}.get(3) == "removed",
                 30, "node 3 applies its own removal")
    running = [1, 2]  # the harness's other nodes (joined ones log under their names)

    def log_of(n: int) -> str:
        return (cluster3.root / f"node-{n}.log").read_text(errors="replace")
    wait_for(lambda: any("REMOVE_NODE node 3" in p.read_text(errors="replace")
                         for p in cluster3.root.glob("node-*.log")), 30,
             "the controller leader removes node 3 from the controller group")
    wait_for(lambda: all("node 3 was removed from the cluster" in log_of(n)
                         for n in running), 30, "every node drops node 3 from its transport")
    seen = {n: len(log_of(n)) for n in running}
    cluster3.kill(3)
    time.sleep(2.0)  # a node still dialing it would log it every 0.5 s (reconnect backoff)
    for n in running:
        assert "peer 3 at" not in log_of(n)[seen[n]:], log_of(n)[seen[n]:][-2000:]


def test_a_join_with_an_id_in_use_is_refused(cluster3: Cluster, admin: Admin) -> None:
    before = sorted((x.id, x.address) for x in admin.list_nodes())
    # a first node's id; a joined node's id with another address; a removed node's id
    for taken, words in ((2, "node id 2 is in use"), (4, "node id 4 is in use"),
                         (3, "ids are never reused")):
        address = f"127.0.0.1:{free_ports(1)[0]}"
        result = subprocess.run(
            _node_command(cluster3, cluster3.root / f"node-taken-{taken}", address, taken,
                          True), cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr[-2000:]
        assert words in result.stderr, result.stderr[-2000:]
        assert not (cluster3.root / f"node-taken-{taken}" / "membership.json").exists()
    assert sorted((x.id, x.address) for x in admin.list_nodes()) == before


def test_a_one_node_cluster_grows_to_three_controller_voters_by_joins(
        tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 1)
    try:
        cluster.start_all()
        cluster.peers[2] = cluster.peers[1]  # _node_command joins through "2,1"
        for name in ("a", "b"):
            _start_joiner(cluster, name, None)
            _joined_id(cluster, name)
        with Admin(cluster.peers[1]) as admin:
            def voters() -> list[int] | None:
                ids = [x.id for x in admin.list_nodes() if x.controller_voter]
                return ids if len(ids) == 3 else None
            assert wait_for(voters, 60, "three controller voters") == [1, 2, 3]
    finally:
        cluster.stop_all()
