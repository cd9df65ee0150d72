"""A Kafka classic group (librdkafka's client-side assignment) keeps its membership when
its coordinator dies: the generation and assignment are in ``__consumer_offsets``
(node/_kafka/_classic.py rule 5a), so the next leader of the group's offsets partition
serves the same member id and generation, and the member's commit is accepted without a
rebalance. Then the dead node comes back and takes the coordination back (a later term on
the same node, rebuilt from the log too)."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from raftka.v1 import group_pb2, group_pb2_grpc
from tests.harness import Cluster, running_cluster, wait_for

from ._clients import consume, quiet
from .conftest import wait_group_coordinators_settled

GROUP = "classic-move"
TOPIC = "classic-move-t"


def _coordinator(cluster: Cluster) -> int:
    """The node coordinating GROUP once one is elected and loaded (0 while none is)."""
    for nid in cluster.live():
        try:
            r = group_pb2_grpc.GroupCoordinatorStub(cluster.channel(nid)).FindCoordinator(
                group_pb2.FindCoordinatorRequest(group_id=GROUP), timeout=2)
        except grpc.RpcError:
            continue
        if r.node_id in cluster.live():
            try:  # answers only once it has applied its own term's first entry
                group_pb2_grpc.GroupCoordinatorStub(cluster.channel(r.node_id)).FetchOffsets(
                    group_pb2.OffsetFetchRequest(group_id=GROUP), timeout=2)
            except grpc.RpcError:
                return 0
            return r.node_id
    return 0


def _commit(consumer: Consumer, offsets: list[TopicPartition]) -> None:
    """Commit, riding out the coordinator's move (retriable errors); a fenced member
    (UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS) fails the test."""
    fenced = (KafkaError.UNKNOWN_MEMBER_ID, KafkaError.ILLEGAL_GENERATION,
              KafkaError.REBALANCE_IN_PROGRESS)
    deadline = time.monotonic() + 30
    while True:
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
            return
        except KafkaException as exc:
            error = exc.args[0]
            assert error.code() not in fenced, f"the member was fenced: {error}"
            assert time.monotonic() < deadline, f"no commit within 30 s: {error}"
            consumer.poll(0.2)


def test_a_classic_member_keeps_its_id_generation_and_partitions_across_coordinator_moves(
        tmp_path: Path) -> None:
    with running_cluster(tmp_path, kafka=True) as cluster:
        wait_group_coordinators_settled(cluster)
        cluster.create_topic(TOPIC, partitions=2)
        producer = Producer(quiet({"bootstrap.servers": cluster.kafka_bootstrap}))
        for i in range(10):
            producer.produce(TOPIC, f"v{i}".encode(), partition=i % 2)
        assert producer.flush(30) == 0

        rebalances: list[str] = []
        consumer = Consumer(quiet({"bootstrap.servers": cluster.kafka_bootstrap,
                                   "group.id": GROUP, "auto.offset.reset": "earliest",
                                   "enable.auto.commit": False,
                                   "session.timeout.ms": 10000,
                                   "heartbeat.interval.ms": 500}))
        consumer.subscribe([TOPIC], on_assign=lambda c, ps: rebalances.append("assign"),
                           on_revoke=lambda c, ps: rebalances.append("revoke"),
                           on_lost=lambda c, ps: rebalances.append("lost"))
        try:
            got = consume(consumer, 10)
            member = consumer.memberid()
            assert rebalances == ["assign"] and len(consumer.assignment()) == 2
            last = {}
            for m in got:
                last[m.partition()] = m.offset()
            offsets = [TopicPartition(TOPIC, p, o + 1) for p, o in sorted(last.items())]
            _commit(consumer, offsets)

            old = wait_for(lambda: _coordinator(cluster), 30, "the group's coordinator")
            cluster.kill(old)  # kill -9: the offsets partition elects a new leader
            new = wait_for(lambda: _coordinator(cluster), 30, "a new coordinator")
            assert new != old
            for _ in range(10):  # heartbeats go to the new coordinator meanwhile
                assert consumer.poll(0.2) is None
            _commit(consumer, offsets)
            assert consumer.memberid() == member and rebalances == ["assign"]

            cluster.start(old)  # the preferred replica takes its leadership back
            cluster.wait_preferred_leader("__consumer_offsets",
                                          _offsets_partition(cluster))
            wait_for(lambda: _coordinator(cluster) == old, 30, "the old coordinator back")
            for _ in range(10):
                assert consumer.poll(0.2) is None
            _commit(consumer, offsets)
            assert consumer.memberid() == member and rebalances == ["assign"]
        finally:
            consumer.close()


def _offsets_partition(cluster: Cluster) -> int:
    for nid in cluster.live():
        try:
            return group_pb2_grpc.GroupCoordinatorStub(cluster.channel(nid)).FindCoordinator(
                group_pb2.FindCoordinatorRequest(group_id=GROUP), timeout=2).offsets_partition
        except grpc.RpcError:
            continue
    raise AssertionError("no node answers FindCoordinator")
