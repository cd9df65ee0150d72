"""Partition reassignment and node decommission on a real 4-node cluster (issue 19): a move
while a producer with acks=all writes loses no acknowledged record, the new replicas agree
record for record (Debug ReplicaDigest), the old replica is gone; a move under a throttle
delays its catch-up messages and drops none (the catch-up pacer's metrics); a decommission
drains a node and removes it; bad input is refused with nothing changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from typing import Iterator

import grpc
import pytest

from raftka.client import Admin
from raftka.v1 import debug_pb2, debug_pb2_grpc, errors_pb2
from raftka.v1.errors import InvalidRequestError, NotEnoughReplicasError
from raftka.v1.recordbatch import Record, build_batch

from tests.harness import REPO, Cluster, error_info, wait_for
from tests.safety import check_replicas


@pytest.fixture(scope="module")
def cluster4(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("reassign"), 4, metrics=True)  # the pacer's counters
    try:
        c.start_all()
        yield c
    finally:
        c.stop_all()


@pytest.fixture
def admin(cluster4: Cluster) -> Iterator[Admin]:
    with Admin(",".join(cluster4.peers.values())) as a:
        yield a


class Writer:
    """Produces unique values with acks=all to one partition in a thread, following leader
    changes; a failed send is never retried with the same value (so no duplicates), it
    only counts as sent."""

    def __init__(self, cluster: Cluster, topic: str) -> None:
        self.cluster, self.topic = cluster, topic
        self.sent: list[bytes] = []
        self.acked: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self.stop.is_set():
            value = b"%s-%d-" % (self.topic.encode(), i) + bytes(1024)
            i += 1
            self.sent.append(value)
            try:
                self.cluster.produce(self.topic, 0, build_batch([Record(None, value)],
                                                                compression="lz4"), timeout=5)
            except grpc.RpcError:
                continue  # not acknowledged: may or may not be in the log, never twice
            self.acked.append(value)

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(30)


def _replicas(admin: Admin, topic: str) -> tuple[int, ...]:
    return tuple(admin.describe_topic(topic).partitions[0].replicas)


def _has_replica(cluster: Cluster, node: int, topic: str) -> bool:
    try:
        debug_pb2_grpc.DebugStub(cluster.channel(node)).ReplicaDigest(
            debug_pb2.ReplicaDigestRequest(topic=topic, partition=0, positions_only=True),
            timeout=5)
        return True
    except grpc.RpcError as exc:
        info = error_info(exc)
        assert info is not None and info.code in (errors_pb2.NOT_LEADER,
                                                  errors_pb2.UNKNOWN_PARTITION), exc
        return False


def _assert_new_replicas_hold_every_ack(cluster: Cluster, topic: str, writer: Writer,
                                        replicas: tuple[int, ...]) -> None:
    cluster.assert_acknowledged(topic, 0, writer.sent, writer.acked)
    check = check_replicas({n: cluster.peers[n] for n in replicas}, topic, 0, timeout=30)
    assert not check.problem, check.problem


def test_move_while_producing_keeps_every_acknowledged_write(cluster4: Cluster,
                                                             admin: Admin) -> None:
    cluster4.create_topic("moving", replicas=3)
    before = _replicas(admin, "moving")
    newcomer = next(n for n in cluster4.peers if n not in before)
    # the preferred leader leaves: leadership must be handed over first
    target = before[1:] + (newcomer,)
    with Writer(cluster4, "moving") as writer:
        wait_for(lambda: len(writer.acked) >= 50, 30, "writes before the move")
        admin.reassign_partition("moving", 0, target)
        moves = admin.list_reassignments()
        assert [(m.topic, m.partition, m.target) for m in moves] in (
            [("moving", 0, target)], [])  # [] if it already finished
        wait_for(lambda: _replicas(admin, "moving") == target, 60, "the move to finish")
        count = len(writer.acked)
        wait_for(lambda: len(writer.acked) >= count + 20, 30, "writes after the move")
    assert admin.list_reassignments() == []
    assert len(writer.acked) > 70
    _assert_new_replicas_hold_every_ack(cluster4, "moving", writer, target)
    leaving = before[0]
    wait_for(lambda: not _has_replica(cluster4, leaving, "moving"), 30,
             f"node {leaving} to delete its replica")
    assert f"stopped replica of moving/0" in (
        cluster4.root / f"node-{leaving}.log").read_text(errors="replace")


def test_bad_reassignments_are_refused_and_change_nothing(cluster4: Cluster,
                                                          admin: Admin) -> None:
    cluster4.create_topic("fixed", replicas=3)
    before = _replicas(admin, "fixed")
    spare = next(n for n in cluster4.peers if n not in before)
    for replicas, words in [((before[0], before[0], before[1]), "twice"),
                            ((before[0], before[1], 9), "unknown node 9"),
                            ((), "empty"),
                            (before, "already has replicas")]:
        with pytest.raises(InvalidRequestError, match=words):
            admin.reassign_partition("fixed", 0, replicas)
    assert _replicas(admin, "fixed") == before and admin.list_reassignments("fixed") == []
    # a second, conflicting move of a moving partition: refused; cancel goes back
    admin.set_reassignment_throttle(64 << 10)  # slow catch-up keeps the move in flight
    try:
        cluster4.produce("fixed", 0, build_batch([Record(None, bytes(200_000))] * 5))
        target = (before[0], before[1], spare)
        admin.reassign_partition("fixed", 0, target)
        with pytest.raises(InvalidRequestError, match="already moving"):
            admin.reassign_partition("fixed", 0, (before[1], before[2], spare))
        admin.cancel_reassignment("fixed", 0)
    finally:
        admin.set_reassignment_throttle(0)
    wait_for(lambda: admin.list_reassignments("fixed") == [], 60, "the cancel to finish")
    assert _replicas(admin, "fixed") == before
    wait_for(lambda: not _has_replica(cluster4, spare, "fixed"), 30,
             f"node {spare} to drop the copy it got for the cancelled move")


def test_alter_replication_factor_grows_and_shrinks(cluster4: Cluster, admin: Admin) -> None:
    cluster4.create_topic("grow", replicas=2)
    cluster4.produce("grow", 0, build_batch([Record(None, b"before")]))
    admin.alter_replication_factor("grow", 4)
    wait_for(lambda: len(_replicas(admin, "grow")) == 4, 60, "replication factor 4")
    admin.alter_replication_factor("grow", 1)
    wait_for(lambda: len(_replicas(admin, "grow")) == 1, 60, "replication factor 1")
    assert [v for _, v in cluster4.values("grow", 0)] == [b"before"]


def _raftka(cluster: Cluster, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, RAFTKA_BOOTSTRAP=",".join(cluster.peers.values()))
    return subprocess.run([sys.executable, "-m", "raftka.client", *args], text=True,
                          capture_output=True, env=env, cwd=REPO, timeout=120)


def test_throttled_move_shows_a_learner_catching_up_and_cancels(cluster4: Cluster,
                                                                 admin: Admin) -> None:
    cluster4.create_topic("slow", replicas=3)
    before = _replicas(admin, "slow")
    spare = next(n for n in cluster4.peers if n not in before and
                 {x.id: x.state for x in admin.list_nodes()}[n] == "active")
    for _ in range(8):  # 8 x 256 KiB: at 64 KiB/s the catch-up takes half a minute
        cluster4.produce("slow", 0, build_batch([Record(None, os.urandom(256 << 10))]))
    hw = cluster4.replica_position(before[0], "slow", 0).high_watermark
    admin.set_reassignment_throttle(64 << 10)
    try:
        admin.reassign_partition("slow", 0, (before[0], before[1], spare))

        def learner_behind():
            for move in admin.list_reassignments("slow"):
                for p in move.progress:
                    if p.node_id == spare and p.role == "learner" and \
                            p.caught_up_offset < move.high_watermark == hw:
                        return move
            return None
        move = wait_for(learner_behind, 30, f"node {spare} to be a learner catching up")
        assert {p.node_id: p.role for p in move.progress}[before[0]] == "voter"
        r = _raftka(cluster4, "topic", "reassign", "--status")
        assert r.returncode == 0, r.stderr
        assert f"{spare}:learner@" in r.stdout, r.stdout
        r = _raftka(cluster4, "topic", "reassign", "slow", "-p", "0", "--cancel")
        assert r.returncode == 0, r.stderr
    finally:
        admin.set_reassignment_throttle(0)
    wait_for(lambda: admin.list_reassignments("slow") == [], 60, "the cancel to finish")
    assert _replicas(admin, "slow") == before
    wait_for(lambda: not _has_replica(cluster4, spare, "slow"), 30,
             f"node {spare} to drop its copy")
    assert len(cluster4.values("slow", 0)) == 8


def _catchup_counters(cluster: Cluster) -> dict[str, float]:
    """The catch-up pacer's counters summed over the nodes (README, Monitoring)."""
    return cluster.counter_sums(r"^raftka_catchup_(\w+_total) (\S+)$")


def test_throttled_move_delays_catch_up_and_drops_nothing(cluster4: Cluster,
                                                          admin: Admin) -> None:
    cluster4.create_topic("paced", replicas=3)
    before = _replicas(admin, "paced")
    newcomer = next(n for n in cluster4.peers if n not in before)
    target = before[1:] + (newcomer,)
    fill = [os.urandom(256 << 10) for _ in range(24)]  # at 1 MiB/s they must wait the pace
    for value in fill:
        cluster4.produce("paced", 0, build_batch([Record(None, value)]))
    counted = _catchup_counters(cluster4)
    admin.set_reassignment_throttle(1 << 20)
    try:
        with Writer(cluster4, "paced") as writer:
            wait_for(lambda: len(writer.acked) >= 20, 30, "writes before the move")
            admin.reassign_partition("paced", 0, target)
            wait_for(lambda: _replicas(admin, "paced") == target, 120, "the move to finish")
            count = len(writer.acked)
            wait_for(lambda: len(writer.acked) >= count + 20, 30, "writes after the move")
    finally:
        admin.set_reassignment_throttle(0)
    after = _catchup_counters(cluster4)
    delayed = after["delayed_messages_total"] - counted.get("delayed_messages_total", 0)
    delayed_bytes = after["delayed_bytes_total"] - counted.get("delayed_bytes_total", 0)
    assert delayed > 0 and delayed_bytes >= 1 << 20, after  # waited for the pace...
    assert after["overflowed_messages_total"] == 0, after  # ... and none was dropped
    cluster4.assert_acknowledged("paced", 0, fill + writer.sent, fill + writer.acked)
    check = check_replicas({n: cluster4.peers[n] for n in target}, "paced", 0, timeout=30)
    assert not check.problem, check.problem


def test_cli_reassign_and_nodes(cluster4: Cluster, admin: Admin) -> None:
    cluster4.create_topic("viacli", replicas=2)
    before = _replicas(admin, "viacli")
    active = [n.id for n in admin.list_nodes() if n.state == "active"]
    target = [n for n in active if n not in before][:1] + [before[0]]
    r = _raftka(cluster4, "topic", "reassign", "viacli", "-p", "0", "--replicas",
                ",".join(map(str, target)), "--wait")
    assert r.returncode == 0, r.stderr
    assert _replicas(admin, "viacli") == tuple(target)
    r = _raftka(cluster4, "topic", "reassign", "viacli", "-p", "0", "--replicas", "1,1")
    assert r.returncode == 1 and "twice" in r.stderr and "Traceback" not in r.stderr
    r = _raftka(cluster4, "cluster", "nodes", "--json")
    assert r.returncode == 0, r.stderr
    assert sorted(n["id"] for n in json.loads(r.stdout)) == sorted(cluster4.peers)
    r = _raftka(cluster4, "cluster", "decommission", "77")
    assert r.returncode == 1 and "unknown node 77" in r.stderr


# last: it leaves the cluster with three active nodes
def test_decommission_drains_a_node_while_producing(cluster4: Cluster, admin: Admin) -> None:
    cluster4.create_topic("drain", replicas=3)
    victim = _replicas(admin, "drain")[0]
    with pytest.raises(InvalidRequestError, match="unknown node"):
        admin.decommission_node(9)
    with Writer(cluster4, "drain") as writer:
        wait_for(lambda: len(writer.acked) >= 30, 30, "writes before the decommission")
        admin.decommission_node(victim)
        def removed() -> bool:
            return {n.id: n.state for n in admin.list_nodes()}[victim] == "removed"
        wait_for(removed, 120, f"node {victim} to be drained and removed")
        count = len(writer.acked)
        wait_for(lambda: len(writer.acked) >= count + 20, 30, "writes after the drain")
    nodes = {n.id: n for n in admin.list_nodes()}
    assert nodes[victim].replica_count == 0
    replicas = _replicas(admin, "drain")
    assert victim not in replicas
    _assert_new_replicas_hold_every_ack(cluster4, "drain", writer, replicas)
    # no node could take the replicas of one more: 2 active nodes for rf 3
    other = next(n for n in replicas)
    with pytest.raises(NotEnoughReplicasError, match="no node could take"):
        admin.decommission_node(other)
    # a removed node gets no new replica
    cluster4.create_topic("after", partitions=3, replicas=3)
    assert all(victim not in p.replicas for p in admin.describe_topic("after").partitions)


@pytest.mark.parametrize("cluster", [4], indirect=True)
def test_remove_dead_node_recreates_its_replicas(cluster: Cluster) -> None:
    with Admin(",".join(cluster.peers.values())) as admin:
        cluster.create_topic("orphaned", replicas=3)
        voters = {n.id for n in admin.list_nodes() if n.controller_voter}
        assert len(voters) == 3
        # a controller voter: the controller gets back to three healthy voters
        victim = next(n for n in _replicas(admin, "orphaned") if n in voters)
        values = [b"kept-%d" % i for i in range(20)]
        for value in values:
            cluster.produce("orphaned", 0, build_batch([Record(None, value)]))
        with pytest.raises(InvalidRequestError, match="is alive"):
            admin.decommission_node(victim, dead=True)
        assert {n.id: n.state for n in admin.list_nodes()}[victim] == "active"
        cluster.kill(victim)

        def accepted() -> bool:
            try:
                admin.decommission_node(victim, dead=True, timeout=5)
                return True
            except InvalidRequestError as exc:
                assert "is alive" in str(exc)
                return False
        wait_for(accepted, 30, f"the controller to see node {victim} dead", interval=0.5)

        def removed() -> bool:
            return {n.id: n.state for n in admin.list_nodes()}[victim] == "removed"
        wait_for(removed, 90, f"node {victim} to be removed")
        replicas = _replicas(admin, "orphaned")
        assert victim not in replicas and len(replicas) == 3

        def controller_voters() -> set[int]:
            return {n.id for n in admin.list_nodes() if n.controller_voter}
        wait_for(lambda: len(controller_voters()) == 3 and victim not in controller_voters(),
                 30, "a new controller voter in place of the dead one")
        admin.create_topic("after-loss", 1, 3)  # the controller still commits
        assert [v for _, v in cluster.values("orphaned", 0)] == values
        check = check_replicas({n: cluster.peers[n] for n in replicas}, "orphaned", 0,
                               timeout=30)
        assert not check.problem, check.problem
