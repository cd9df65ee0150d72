"""Queues on a real 3-node cluster (one cluster for the module): queue topics whose
finished records retention deletes (``retention.share.groups``), the classic Consumer's
retry and dead-letter topics, dead letters through ``Admin``, and bad share-group input."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from raftka.client import ShareConsumer
from raftka.v1.recordbatch import Record, build_batch
from tests.harness import Cluster, wait_for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(Path(tmp_path_factory.mktemp("queues")), 3)
    try:
        c.start_all()
        yield c
    finally:
        c.stop_all()


def bootstrap(cluster: Cluster) -> str:
    return ",".join(cluster.peers[i] for i in sorted(cluster.peers))


def produce_entries(cluster: Cluster, topic: str, count: int) -> None:
    """``count`` records, one Raft entry each, so that retention can drop them one by one."""
    for i in range(count):
        cluster.produce(topic, 0, build_batch([Record(None, b"%s-%d" % (topic.encode(), i))],
                                              compression="none"))


def settle(consumer: ShareConsumer, count: int, accept: bool = True) -> list:
    """Poll until ``count`` records came; accept them (or release them all)."""
    got: list = []
    wait_for(lambda: got.extend(consumer.poll(0.5)) or len(got) >= count, 30,
             f"{count} records for {consumer.group_id}")
    for r in got:
        (consumer.accept if accept else consumer.release)(r)
    consumer.flush()
    return got


def log_start(cluster: Cluster, node: int, topic: str) -> int:
    return cluster.replica_position(node, topic, 0).log_start_offset


def test_a_queue_topic_deletes_what_every_share_group_finished(cluster: Cluster):
    queue = {"retention.share.groups": "true"}
    # created in this order, each node's retention visits jobs and idle before ctl
    cluster.create_topic("jobs", configs=queue)
    cluster.create_topic("idle", configs=queue)
    cluster.create_topic("ctl", configs=queue)
    leader = cluster.wait_preferred_leader("jobs", 0)
    for topic in ("jobs", "idle", "ctl"):
        produce_entries(cluster, topic, 10)
    b = bootstrap(cluster)
    with ShareConsumer(b, "slow", ["jobs"], auto_accept=False, max_records=4) as slow:
        # "slow" joined (its state starts at the log start) but has read nothing yet
        with ShareConsumer(b, "fast", ["jobs"], auto_accept=False) as fast:
            assert len(settle(fast, 10)) == 10
        with ShareConsumer(b, "ctl-group", ["ctl"], auto_accept=False) as ctl:
            assert len(settle(ctl, 10)) == 10
        # a retention pass on jobs' leader ran after "fast" finished everything (it moved
        # ctl's log start, and visits jobs first): jobs keeps what "slow" did not read,
        # and idle, which no share group reads, keeps everything
        wait_for(lambda: log_start(cluster, leader, "ctl") == 10, 30,
                 "retention to drop ctl's finished records")
        assert log_start(cluster, leader, "jobs") == 0
        assert log_start(cluster, leader, "idle") == 0
        first = settle(slow, 4)  # max_records=4: offsets 0-3
        assert sorted(r.offset for r in first) == [0, 1, 2, 3]
        wait_for(lambda: log_start(cluster, leader, "jobs") == 4, 30,
                 "retention to drop what both groups finished")
        released = settle(slow, 1, accept=False)  # released records are not finished
        assert released[0].offset == 4
        rest = settle(slow, 6)
        assert sorted(r.offset for r in rest) == list(range(4, 10))
    # every replica drops them (each from its own copy of the replicated share state)
    for node in cluster.live():
        wait_for(lambda: log_start(cluster, node, "jobs") == 10, 30,
                 f"node {node} to drop every finished record")
    assert log_start(cluster, leader, "idle") == 0
    # a group that joins now starts at the log start: nothing of the old records is left
    with ShareConsumer(b, "late", ["jobs"], auto_accept=False) as late:
        assert late.poll(1.0) == []
