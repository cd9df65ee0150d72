"""A partition leader killed (kill -9) while a Kafka client produces to it with
idempotence and another consumes in a group: the producer follows NOT_LEADER_OR_FOLLOWER
to the new leader, every record is in the log exactly once and in order (read back
through the gRPC door), and the consumer group sees every record."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from raftka.client import Admin, PartitionReader
from tests.harness import Cluster, running_cluster, wait_for

from ._clients import quiet
from .conftest import wait_group_coordinators_settled

RECORDS = 1500


def test_leader_kill_mid_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    with running_cluster(tmp_path, kafka=True) as cluster:
        wait_group_coordinators_settled(cluster)
        _run(cluster)


def _run(cluster: Cluster) -> None:
    grpc_bootstrap = ",".join(cluster.peers.values())
    cluster.create_topic("failover", partitions=1)  # preferred leaders
    leader = cluster.wait_leader("failover", 0)
    producer = Producer(quiet({"bootstrap.servers": cluster.kafka_bootstrap,
                               "enable.idempotence": True, "acks": "all",
                               "linger.ms": 2, "message.timeout.ms": 60000}))
    errors: list = []
    delivered: list[int] = []

    def on_delivery(err, msg) -> None:
        if err is not None:
            errors.append(err)
        else:
            delivered.append(int(msg.value()))

    consumed: set[int] = set()
    stop = threading.Event()

    def consume() -> None:
        consumer = Consumer(quiet({"bootstrap.servers": cluster.kafka_bootstrap,
                                   "group.id": "failover-g", "auto.offset.reset": "earliest",
                                   "enable.auto.commit": True}))
        consumer.subscribe(["failover"])
        try:
            while not stop.is_set():
                message = consumer.poll(0.2)
                if message is not None and message.error() is None:
                    consumed.add(int(message.value()))
        finally:
            consumer.close()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    killed_at = None
    for i in range(RECORDS):
        while i - len(delivered) - len(errors) > 100:  # at most 100 records unacknowledged
            producer.poll(0.05)
        producer.produce("failover", value=str(i).encode(), key=b"k", partition=0,
                         on_delivery=on_delivery)
        producer.poll(0)
        if killed_at is None and len(delivered) >= RECORDS // 4:
            cluster.kill(leader)  # kill -9 in the middle of the run
            killed_at = len(delivered)
    # Metadata through Kafka: the killed node is an offline replica, out of the ISR
    admin = AdminClient(quiet({"bootstrap.servers": cluster.kafka_bootstrap}))

    def reported_offline() -> bool:
        [partition] = admin.list_topics("failover", timeout=10).topics["failover"] \
            .partitions.values()
        return leader not in partition.isrs and partition.leader not in (-1, leader)

    wait_for(reported_offline, 30, "Metadata to report the killed leader out of the ISR")
    assert producer.flush(90) == 0
    assert killed_at is not None, "the leader was never killed: the run ended too early"
    assert errors == []
    assert cluster.wait_leader("failover", 0) != leader
    # exactly once and in order in the log, read back through the gRPC door
    values = []
    with PartitionReader(grpc_bootstrap, "failover", 0, offset="earliest") as r:
        while len(values) < RECORDS:
            batch = r.poll(timeout=2.0)
            assert batch or len(values) >= RECORDS, f"the log ends at {len(values)} records"
            values.extend(int(rec.value) for rec in batch)
    assert values == list(range(RECORDS))
    assert sorted(delivered) == list(range(RECORDS))
    wait_for(lambda: len(consumed) == RECORDS, 60, "the group to consume every record")
    stop.set()
    reader.join(30)
    cluster.start(leader)  # the killed node rejoins and catches up
    cluster.assert_replicas_agree("failover", 0)


def test_a_node_stops_gracefully_with_kafka_clients_long_polling(tmp_path: Path) -> None:
    """SIGTERM while a Kafka consumer long-polls the node (Fetch max wait 30 s) and a
    producer is connected: the node drops the unanswered requests and exits 0 (the
    harness fails the test if it has not exited within 15 s); the clients carry on with
    the other nodes."""
    cluster = Cluster(tmp_path, 3, kafka=True)
    try:
        cluster.start_all()
        grpc_bootstrap = ",".join(cluster.peers.values())
        cluster.create_topic("stop-t", partitions=1)  # preferred leaders
        leader = cluster.wait_preferred_leader("stop-t", 0)
        consumer = Consumer(quiet({"bootstrap.servers": cluster.kafka[leader],
                                   "group.id": "stop-g", "auto.offset.reset": "earliest",
                                   "fetch.wait.max.ms": 30000}))
        consumer.subscribe(["stop-t"])
        wait_for(lambda: consumer.poll(0.2) is None and consumer.assignment(), 60,
                 "the consumer's assignment")
        consumer.poll(1.0)  # a long-poll Fetch is now waiting at the leader
        assert cluster.terminate(leader) == 0
        producer = Producer(quiet({"bootstrap.servers": cluster.kafka_bootstrap,
                                   "enable.idempotence": True}))
        producer.produce("stop-t", value=b"after", partition=0)
        assert producer.flush(60) == 0
        got = []
        wait_for(lambda: got.extend(m for m in [consumer.poll(0.5)]
                                    if m is not None and m.error() is None) or got, 60,
                 "the consumer to read from the new leader")
        assert got[0].value() == b"after"
        consumer.close()
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop_all()
