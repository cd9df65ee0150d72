"""Automatic balancing (issue 19) on a real cluster: three nodes with topics are balanced;
a fourth joins while the balancer is paused and nothing moves (the dry-run plan shows the
moves it would make); resumed, the balancer moves replicas and preferred leaders onto the
new node a few at a time, under acks=all producers, with every acknowledged record kept on
the final replicas."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from typing import Iterator

import pytest

from raftka.client import Admin
from raftka.client.aio import Admin as AsyncAdmin

from tests.harness import REPO, Cluster, wait_for
from tests.integration.test_join import _joined_id, _start_joiner, _wait_member
from tests.integration.test_reassignment import Writer, _assert_new_replicas_hold_every_ack

WRITTEN = ("bal-w1", "bal-w2", "bal-w3", "bal-w4")  # one partition each, each written


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("balance"), 3, balancer=True,
                extra_args=("--balance-delay-s", "0"))
    try:
        c.start_all()
        yield c
    finally:
        c.stop_all()


def _cli(cluster: Cluster, *args: str) -> str:
    env = dict(os.environ, RAFTKA_BOOTSTRAP=cluster.peers[1])
    done = subprocess.run([sys.executable, "-m", "raftka.client", "cluster", "balance", *args],
                          text=True, capture_output=True, env=env, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _spread(admin: Admin) -> tuple[dict[int, int], dict[int, int]]:
    """Replicas and preferred leaderships per node, from the metadata (every topic, the
    internal ones too: the balancer spreads them all)."""
    replicas: dict[int, int] = {}
    leaders: dict[int, int] = {}
    for name in admin.list_topics():
        for p in admin.describe_topic(name).partitions:
            leaders[p.replicas[0]] = leaders.get(p.replicas[0], 0) + 1
            for n in p.replicas:
                replicas[n] = replicas.get(n, 0) + 1
    return replicas, leaders


def test_a_joined_node_gets_replicas_and_leaders_and_pause_stops_new_moves(
        cluster: Cluster) -> None:
    for name in WRITTEN:
        cluster.create_topic(name, replicas=3)
    cluster.create_topic("bal-many", partitions=4, replicas=3)
    with Admin(",".join(cluster.peers.values())) as admin:
        wait_for(lambda: admin.describe_balancer().status == "balanced", 30,
                 "the balancer to find three nodes balanced")
        assert admin.describe_balancer().plan == ()

        # paused, a joining node gets nothing
        admin.pause_balancer()
        proc, address = _start_joiner(cluster, "4", 4)
        assert _joined_id(cluster, "4") == 4
        _wait_member(cluster, admin, 4, address)
        cluster.procs[4] = proc
        wait_for(lambda: {n.id: n.reachable for n in admin.list_nodes()}.get(4), 30,
                 "node 4 reachable")
        status = wait_for(lambda: (lambda s: s if s.plan else None)(admin.describe_balancer()),
                          30, "a plan that moves replicas onto node 4")
        assert status.paused and status.status == "paused"
        assert all(4 in m.target for m in status.plan if m.kind == "replicas")
        shown = _cli(cluster, "--dry-run")
        assert "balancer: paused" in shown and "replicas" in shown, shown
        deadline = time.monotonic() + 2  # two balancer steps (1 s each): it proposes nothing
        while time.monotonic() < deadline:
            assert admin.list_reassignments() == []
            assert _spread(admin)[0].get(4, 0) == 0
            time.sleep(0.2)

        with ExitStack() as stack:
            writers = [stack.enter_context(Writer(cluster, name)) for name in WRITTEN]
            wait_for(lambda: all(len(w.acked) >= 10 for w in writers), 30,
                     "writes before balancing")
            asyncio.run(_resume_async(cluster))

            def balanced() -> bool:
                replicas, leaders = _spread(admin)
                return (admin.describe_balancer().status == "balanced"
                        and max(replicas.values()) - min(replicas.values()) <= 1
                        and max(leaders.values()) - min(leaders.values()) <= 1
                        and len(replicas) == 4 and leaders.get(4, 0) >= 1)
            wait_for(balanced, 90, "the balancer to spread replicas and leaders over 4 nodes")
            # the preferred leadership it got is taken up: node 4 leads a partition
            wait_for(lambda: any(p.leader_id == 4 for name in admin.list_topics()
                                 for p in admin.describe_topic(name).partitions), 30,
                     "node 4 to lead a partition")
            counts = [len(w.acked) for w in writers]
            wait_for(lambda: all(len(w.acked) >= c + 5 for w, c in zip(writers, counts)), 30,
                     "writes after balancing")
        for name, writer in zip(WRITTEN, writers):
            replicas = tuple(admin.describe_topic(name).partitions[0].replicas)
            _assert_new_replicas_hold_every_ack(cluster, name, writer, replicas)


async def _resume_async(cluster: Cluster) -> None:
    async with AsyncAdmin(cluster.peers[1]) as admin:
        await admin.resume_balancer()
        assert not (await admin.describe_balancer()).paused
