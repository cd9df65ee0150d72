"""Real Kafka clients against the Kafka listener of a real 3-node cluster, and one truth:
what goes in through one door (Kafka or gRPC) comes out of the other with the same offsets,
keys, headers and timestamps, and a group's committed offsets are the same through both."""

from __future__ import annotations

import subprocess
import time

import kafka as kafka_python
import grpc
from confluent_kafka import Consumer, Producer, ShareConsumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

from raftka.client import Admin, Consumer as RaftkaConsumer, PartitionReader
from raftka.client import Producer as RaftkaProducer
from raftka.v1 import broker_pb2, share_pb2, share_pb2_grpc
from raftka.v1.recordbatch import parse_header, split_batches
from tests.harness import Cluster, wait_for

from ._clients import consume, quiet


def _bootstrap(cluster: Cluster) -> str:
    return ",".join(cluster.peers.values())  # the gRPC door


def test_confluent_kafka_admin_idempotent_producer_and_group_consumer(
        kafka_cluster: Cluster) -> None:
    b = kafka_cluster.kafka_bootstrap
    admin = AdminClient(quiet({"bootstrap.servers": b}))
    admin.create_topics([NewTopic("ck-orders", 3, 3, config={"retention.ms": "3600000"})]
                        )["ck-orders"].result(30)

    def described() -> dict | None:  # by any node: once it applied the new topic
        [future] = admin.describe_configs([ConfigResource("topic", "ck-orders")]).values()
        try:
            return future.result(30)
        except Exception:  # noqa: BLE001 - UNKNOWN_TOPIC_OR_PARTITION until then
            return None

    entries = wait_for(described, 30, "the new topic's configs")
    assert entries["retention.ms"].value == "3600000"
    assert entries["cleanup.policy"].value == "delete" and entries["cleanup.policy"].is_default

    producer = Producer(quiet({"bootstrap.servers": b, "enable.idempotence": True,
                               "acks": "all", "compression.type": "lz4", "linger.ms": 5}))
    delivered = []
    for i in range(60):
        producer.produce("ck-orders", key=f"order-{i % 10}", value=f"v{i}",
                         headers=[("source", b"ck"), ("n", str(i).encode())],
                         on_delivery=lambda err, msg: delivered.append((err, msg)))
    assert producer.flush(30) == 0
    assert [err for err, _ in delivered if err is not None] == []
    # Kafka's murmur2 partitioner, like ours: one key always lands on one partition
    by_key = {}
    for _, msg in delivered:
        by_key.setdefault(msg.key(), set()).add(msg.partition())
    assert all(len(ps) == 1 for ps in by_key.values())

    def member() -> Consumer:
        c = Consumer(quiet({"bootstrap.servers": b, "group.id": "ck-billing",
                            "auto.offset.reset": "earliest", "enable.auto.commit": False,
                            "partition.assignment.strategy": "cooperative-sticky"}))
        c.subscribe(["ck-orders"])
        return c

    consumer = member()
    got = consume(consumer, 60)
    assert sorted(m.value() for m in got) == sorted(f"v{i}".encode() for i in range(60))
    assert all(dict(m.headers())["source"] == b"ck" for m in got)
    consumer.commit(asynchronous=False)
    committed = {tp.partition: tp.offset for tp in consumer.committed(
        [TopicPartition("ck-orders", p) for p in range(3)], timeout=30)}
    consumer.close()
    ends = {}
    for _, msg in delivered:
        ends[msg.partition()] = max(ends.get(msg.partition(), 0), msg.offset() + 1)
    assert committed == ends

    # the same offsets through the gRPC door
    with Admin(_bootstrap(kafka_cluster)) as grpc_admin:
        assert {tp.partition: o for tp, o in
                grpc_admin.committed_offsets("ck-billing").items()} == ends

    # a restarted member resumes after the commit
    for i in range(60, 70):
        producer.produce("ck-orders", key=f"order-{i % 10}", value=f"v{i}")
    assert producer.flush(30) == 0
    consumer = member()
    got = consume(consumer, 10)
    assert sorted(m.value() for m in got) == sorted(f"v{i}".encode() for i in range(60, 70))
    groups = admin.list_consumer_groups().result(30)
    assert "ck-billing" in {g.group_id for g in groups.valid}
    consumer.close()

    admin.create_partitions([NewPartitions("ck-orders", 5)])["ck-orders"].result(30)
    wait_for(lambda: len(admin.list_topics("ck-orders", timeout=10).topics["ck-orders"]
                         .partitions) == 5, 30, "5 partitions")
    admin.delete_topics(["ck-orders"])["ck-orders"].result(30)
    wait_for(lambda: "ck-orders" not in admin.list_topics(timeout=10).topics, 30,
             "the topic gone")


def test_two_confluent_consumers_share_a_group_and_rebalance(kafka_cluster: Cluster) -> None:
    b = kafka_cluster.kafka_bootstrap
    kafka_cluster.create_topic("ck-shared", partitions=4)  # preferred leaders

    def member(strategy: str) -> Consumer:
        c = Consumer(quiet({"bootstrap.servers": b, "group.id": "ck-shared-g",
                            "auto.offset.reset": "earliest",
                            "partition.assignment.strategy": strategy}))
        c.subscribe(["ck-shared"])
        return c

    first, second = member("range"), member("range")
    assigned: dict[str, set] = {}

    def both_assigned() -> bool:
        for name, c in (("a", first), ("b", second)):
            message = c.poll(0.2)
            assert message is None or message.error() is None
            assigned[name] = {tp.partition for tp in c.assignment()}
        return bool(assigned["a"]) and bool(assigned["b"]) \
            and assigned["a"] | assigned["b"] == {0, 1, 2, 3} \
            and not assigned["a"] & assigned["b"]

    wait_for(both_assigned, 60, "the 4 partitions split between the two members")
    second.close()  # LeaveGroup: the other member gets every partition
    wait_for(lambda: first.poll(0.2) is None and len(first.assignment()) == 4, 60,
             "the remaining member owns every partition")
    first.close()


def test_kcat_produces_consumes_and_lists(kafka_cluster: Cluster, kcat: str) -> None:
    b = kafka_cluster.kafka_bootstrap
    kafka_cluster.create_topic("kcat-t", partitions=2)  # preferred leaders
    lines = "".join(f"k{i}:value-{i}\n" for i in range(20))
    run = subprocess.run([kcat, "-b", b, "-t", "kcat-t", "-P", "-K:", "-H", "via=kcat",
                          "-X", "enable.idempotence=true"],
                         input=lines, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = subprocess.run([kcat, "-b", b, "-t", "kcat-t", "-C", "-e", "-q",
                          "-f", "%p %o %k %s %h\\n"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()]
    assert sorted(r[3] for r in rows) == sorted(f"value-{i}" for i in range(20))
    assert all(r[4] == "via=kcat" for r in rows)
    # the same records, offsets and headers through the gRPC door
    grpc_rows = []
    for p in (0, 1):
        with PartitionReader(_bootstrap(kafka_cluster), "kcat-t", p, offset="earliest") as r:
            while len([x for x in grpc_rows if x[0] == str(p)]) < \
                    len([x for x in rows if x[0] == str(p)]):
                for rec in r.poll(timeout=1.0):
                    grpc_rows.append([str(p), str(rec.offset), rec.key.decode(),
                                      rec.value.decode(),
                                      ",".join(f"{k}={v.decode()}" for k, v in rec.headers)])
    assert sorted(grpc_rows) == sorted(rows)
    listed = subprocess.run([kcat, "-b", b, "-L", "-t", "kcat-t"], capture_output=True,
                            text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    assert " 3 brokers:" in listed.stdout
    assert 'topic "kcat-t" with 2 partitions:' in listed.stdout
    assert listed.stdout.count("replicas: ") == 2


def test_kafka_python_producer_group_consumer_and_admin(kafka_cluster: Cluster) -> None:
    servers = kafka_cluster.kafka_bootstrap.split(",")
    admin = kafka_python.KafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=30000)
    admin.create_topics([kafka_python.admin.NewTopic("kp-t", 2, 3)])
    wait_for(lambda: "kp-t" in admin.list_topics(), 30, "kp-t listed")
    producer = kafka_python.KafkaProducer(bootstrap_servers=servers, acks="all",
                                          enable_idempotence=True)
    futures = [producer.send("kp-t", key=f"k{i}".encode(), value=f"v{i}".encode(),
                             headers=[("h", b"kp")]) for i in range(30)]
    producer.flush(30)
    sent = {(f.get(30).partition, f.get(30).offset) for f in futures}
    producer.close()
    consumer = kafka_python.KafkaConsumer(
        "kp-t", bootstrap_servers=servers, group_id="kp-g", auto_offset_reset="earliest",
        enable_auto_commit=False, consumer_timeout_ms=2000)
    got = []
    deadline = time.monotonic() + 60
    while len(got) < 30 and time.monotonic() < deadline:
        got.extend(consumer)
    assert {(m.partition, m.offset) for m in got} == sent
    assert all(m.headers == [("h", b"kp")] for m in got)
    consumer.commit()
    consumer.close()
    offsets = admin.list_group_offsets("kp-g")["kp-g"]
    assert sum(om.offset for om in offsets.values()) == 30
    listed = admin.list_groups()
    assert "kp-g" in {g["group_id"] if isinstance(g, dict) else g[0] for g in listed}, listed
    with Admin(_bootstrap(kafka_cluster)) as grpc_admin:
        assert {(tp.topic, tp.partition): o for tp, o in
                grpc_admin.committed_offsets("kp-g").items()} == \
            {(tp.topic, tp.partition): om.offset for tp, om in offsets.items()}
    admin.delete_topics(["kp-t"])
    admin.close()


def test_one_truth_records_cross_the_doors_unchanged(kafka_cluster: Cluster) -> None:
    b = kafka_cluster.kafka_bootstrap
    grpc_bootstrap = _bootstrap(kafka_cluster)
    kafka_cluster.create_topic("two-doors", partitions=1)  # preferred leaders
    # Kafka in, gRPC out
    producer = Producer(quiet({"bootstrap.servers": b, "enable.idempotence": True}))
    sent = [(f"key-{i}".encode() if i % 3 else None, f"value-{i}".encode(),
             [("a", b"1"), ("b", None)] if i % 2 else [], 1_700_000_000_000 + i)
            for i in range(12)]
    for key, value, headers, ts in sent:
        producer.produce("two-doors", key=key, value=value, headers=headers, timestamp=ts,
                         partition=0)
    assert producer.flush(30) == 0
    with PartitionReader(grpc_bootstrap, "two-doors", 0, offset="earliest") as reader:
        records = []
        while len(records) < 12:
            records.extend(reader.poll(timeout=1.0))
    assert [(r.offset, r.key, r.value, list(r.headers), r.timestamp_ms) for r in records] == \
        [(i, k, v, h, ts) for i, (k, v, h, ts) in enumerate(sent)]
    # gRPC in, Kafka out
    with RaftkaProducer(grpc_bootstrap) as ours:
        for i in range(12, 20):
            ours.send("two-doors", f"value-{i}".encode(), key=f"key-{i}".encode(),
                      headers=[("from", b"grpc")], partition=0,
                      timestamp_ms=1_700_000_000_000 + i).result(30)
    consumer = Consumer(quiet({"bootstrap.servers": b, "group.id": "two-doors-reader",
                               "enable.auto.commit": False}))
    consumer.assign([TopicPartition("two-doors", 0, 12)])
    got = consume(consumer, 8)
    assert [(m.offset(), m.key(), m.value(), m.headers(), m.timestamp()[1]) for m in got] == \
        [(i, f"key-{i}".encode(), f"value-{i}".encode(), [("from", b"grpc")],
          1_700_000_000_000 + i) for i in range(12, 20)]
    # ListOffsets through Kafka agrees with the partition
    low, high = consumer.get_watermark_offsets(TopicPartition("two-doors", 0), timeout=30)
    assert (low, high) == (0, 20)
    found = consumer.offsets_for_times([TopicPartition("two-doors", 0, 0)], timeout=30)
    assert found[0].offset == 0
    consumer.close()

    # a group's offsets committed by our consumer are the ones Kafka clients see
    with RaftkaConsumer(grpc_bootstrap, "two-doors-g", ["two-doors"]) as ours:
        seen = 0
        deadline = time.monotonic() + 60
        while seen < 20 and time.monotonic() < deadline:
            seen += len(ours.poll(1.0))
        assert seen == 20
        ours.commit()
    kafka_view = Consumer(quiet({"bootstrap.servers": b, "group.id": "two-doors-g"}))
    [tp] = kafka_view.committed([TopicPartition("two-doors", 0)], timeout=30)
    assert tp.offset == 20
    kafka_view.close()


def test_aiokafka_producer_and_group_consumer(kafka_cluster: Cluster) -> None:
    import asyncio

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    kafka_cluster.create_topic("aio-t", partitions=2)  # preferred leaders

    async def run() -> tuple[set, set, dict]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_cluster.kafka_bootstrap,
                                    enable_idempotence=True, acks="all")
        await producer.start()
        try:
            sent = set()
            for i in range(25):
                md = await producer.send_and_wait("aio-t", f"v{i}".encode(),
                                                  key=f"k{i}".encode(),
                                                  headers=[("h", b"aio")])
                sent.add((md.partition, md.offset))
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer("aio-t", bootstrap_servers=kafka_cluster.kafka_bootstrap,
                                    group_id="aio-g", auto_offset_reset="earliest",
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            got = set()
            async with asyncio.timeout(60):
                async for m in consumer:
                    assert m.headers == (("h", b"aio"),)
                    got.add((m.partition, m.offset))
                    if len(got) == 25:
                        break
            await consumer.commit()
            committed = {p: await consumer.committed(
                __import__("aiokafka").TopicPartition("aio-t", p)) for p in (0, 1)}
        finally:
            await consumer.stop()
        return sent, got, committed

    sent, got, committed = asyncio.run(run())
    assert got == sent
    with Admin(_bootstrap(kafka_cluster)) as admin:
        assert {tp.partition: o for tp, o in admin.committed_offsets("aio-g").items()} == \
            {p: o for p, o in committed.items() if o}


def test_kip848_kafka_consumer_and_our_consumer_share_one_group(kafka_cluster: Cluster) -> None:
    """librdkafka with group.protocol=consumer (KIP-848) joins the same broker-assigned
    group as our gRPC consumer: the partitions are split between them, each record is
    read once, and commits from both land in the one set of group offsets."""
    grpc_bootstrap = _bootstrap(kafka_cluster)
    kafka_cluster.create_topic("k848", partitions=4)  # preferred leaders
    kafka_member = Consumer(quiet({"bootstrap.servers": kafka_cluster.kafka_bootstrap,
                                   "group.id": "mixed", "group.protocol": "consumer",
                                   "auto.offset.reset": "earliest",
                                   "enable.auto.commit": False}))
    kafka_member.subscribe(["k848"])
    ours = RaftkaConsumer(grpc_bootstrap, "mixed", ["k848"])
    try:
        by_kafka: list[int] = []
        by_ours: list[int] = []

        def split() -> bool:  # polling drives both members' heartbeats
            for message in [kafka_member.poll(0.1)]:
                assert message is None or message.error() is None
            assert ours.poll(0.1) == []
            kafka_parts = {tp.partition for tp in kafka_member.assignment()}
            our_parts = {tp.partition for tp in ours.assignment()}
            return bool(kafka_parts) and bool(our_parts) and not kafka_parts & our_parts \
                and kafka_parts | our_parts == {0, 1, 2, 3}

        wait_for(split, 60, "the 4 partitions split between the Kafka member and ours")
        producer = Producer(quiet({"bootstrap.servers": kafka_cluster.kafka_bootstrap}))
        for i in range(200):
            producer.produce("k848", value=str(i).encode(), key=str(i).encode())
        assert producer.flush(30) == 0
        deadline = time.monotonic() + 60
        while len(by_kafka) + len(by_ours) < 200 and time.monotonic() < deadline:
            message = kafka_member.poll(0.2)
            if message is not None:
                assert message.error() is None, message.error()
                by_kafka.append(int(message.value()))
            by_ours.extend(int(r.value) for r in ours.poll(0.1))
        assert sorted(by_kafka + by_ours) == list(range(200))  # each read once
        assert by_kafka and by_ours, "both members own partitions"
        kafka_parts = {tp.partition for tp in kafka_member.assignment()}
        our_parts = {tp.partition for tp in ours.assignment()}
        assert kafka_parts | our_parts == {0, 1, 2, 3} and not kafka_parts & our_parts
        # Kafka's DescribeGroups shows both members, their assignments in the consumer
        # protocol's format (decoded here by confluent-kafka)
        admin = AdminClient(quiet({"bootstrap.servers": kafka_cluster.kafka_bootstrap}))
        [described] = [f.result(30) for f in
                       admin.describe_consumer_groups(["mixed"]).values()]
        owned = {tp.partition for m in described.members for tp in m.assignment.topic_partitions}
        assert len(described.members) == 2 and owned == {0, 1, 2, 3}
        kafka_member.commit(asynchronous=False)
        ours.commit()
        with Admin(grpc_bootstrap) as admin:
            committed = admin.committed_offsets("mixed")
        assert sum(committed.values()) == 200
        assert {tp.partition for tp in committed} == {0, 1, 2, 3}
    finally:
        kafka_member.close()
        ours.close()


def test_confluent_admin_alters_configs_and_deletes_a_group(kafka_cluster: Cluster) -> None:
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry

    b = kafka_cluster.kafka_bootstrap
    admin = AdminClient(quiet({"bootstrap.servers": b}))
    admin.create_topics([NewTopic("alter-t", 1, 3)])["alter-t"].result(30)
    resource = ConfigResource("topic", "alter-t", incremental_configs=[
        ConfigEntry("retention.ms", "120000", incremental_operation=AlterConfigOpType.SET)])
    [f.result(30) for f in admin.incremental_alter_configs([resource]).values()]
    with Admin(_bootstrap(kafka_cluster)) as grpc_admin:  # any node, once it applied it
        wait_for(lambda: grpc_admin.describe_topic("alter-t").configs["retention.ms"]
                 == "120000", 30, "the altered config through gRPC")
    bad = ConfigResource("topic", "alter-t", incremental_configs=[
        ConfigEntry("no.such.config", "1", incremental_operation=AlterConfigOpType.SET)])
    [future] = admin.incremental_alter_configs([bad]).values()
    try:
        future.result(30)
        raise AssertionError("an unknown config was accepted")
    except Exception as exc:  # noqa: BLE001 - KafkaException with INVALID_CONFIG
        assert "INVALID_CONFIG" in str(exc) or "no.such.config" in str(exc), exc
    # a group with committed offsets and no members can be deleted through Kafka's API
    producer = Producer(quiet({"bootstrap.servers": b}))
    producer.produce("alter-t", value=b"x")
    assert producer.flush(30) == 0
    consumer = Consumer(quiet({"bootstrap.servers": b, "group.id": "doomed-g",
                               "auto.offset.reset": "earliest", "enable.auto.commit": False}))
    consumer.subscribe(["alter-t"])
    consume(consumer, 1)
    consumer.commit(asynchronous=False)
    consumer.close()
    # OffsetDelete of one partition (kafka-python's admin: confluent-kafka's has no call
    # for it), then DeleteGroups
    kp_admin = kafka_python.KafkaAdminClient(bootstrap_servers=b.split(","),
                                             request_timeout_ms=30000)
    deleted = kp_admin.delete_group_offsets(
        "doomed-g", [kafka_python.TopicPartition("alter-t", 0)])
    kp_admin.close()
    assert [getattr(e, "errno", e) for e in deleted.values()] in ([0], [None]), deleted
    with Admin(_bootstrap(kafka_cluster)) as grpc_admin:
        assert grpc_admin.committed_offsets("doomed-g") == {}
    consumer = Consumer(quiet({"bootstrap.servers": b, "group.id": "doomed-g",
                               "enable.auto.commit": False}))
    consumer.commit(offsets=[TopicPartition("alter-t", 0, 1)], asynchronous=False)
    consumer.close()
    admin.delete_consumer_groups(["doomed-g"])["doomed-g"].result(30)
    with Admin(_bootstrap(kafka_cluster)) as grpc_admin:
        assert grpc_admin.committed_offsets("doomed-g") == {}


def test_compression_codecs_from_kafka_producers(kafka_cluster: Cluster) -> None:
    """Batches in every codec librdkafka writes (gzip, snappy, lz4, zstd, none) are
    stored as sent and read back through both doors, in order."""
    grpc_bootstrap = _bootstrap(kafka_cluster)
    kafka_cluster.create_topic("codecs", partitions=1)  # preferred leaders
    codecs = ("gzip", "snappy", "lz4", "zstd", "none")
    for codec in codecs:
        producer = Producer(quiet({"bootstrap.servers": kafka_cluster.kafka_bootstrap,
                                   "compression.type": codec, "linger.ms": 20}))
        for i in range(50):
            producer.produce("codecs", value=f"{codec}-{i}".encode() * 10, partition=0)
        assert producer.flush(30) == 0
    total = 50 * len(codecs)
    with PartitionReader(grpc_bootstrap, "codecs", 0, offset="earliest") as reader:
        values = []
        while len(values) < total:
            values.extend(r.value for r in reader.poll(timeout=2.0))
    assert values == [f"{c}-{i}".encode() * 10 for c in codecs for i in range(50)]
    stored = kafka_cluster.broker(kafka_cluster.wait_leader("codecs", 0)).Fetch(
        broker_pb2.FetchRequest(topic="codecs", partition=0, offset=0, max_bytes=1 << 20),
        timeout=10).record_batches
    assert {parse_header(stored, start).attributes & 7
            for start, _ in split_batches(stored)} == {0, 1, 2, 3, 4}, \
        "each codec's batches are stored as the producer compressed them"
    consumer = Consumer(quiet({"bootstrap.servers": kafka_cluster.kafka_bootstrap,
                               "group.id": "codecs-reader", "enable.auto.commit": False}))
    consumer.assign([TopicPartition("codecs", 0, 0)])
    assert [m.value() for m in consume(consumer, total)] == values
    consumer.close()


def test_confluent_kafka_transactions_commit_and_abort_read_committed_sees_only_committed(
        kafka_cluster: Cluster) -> None:
    """A transactional producer through the listener (FindCoordinator TRANSACTION,
    InitProducerId with a transactional id, AddPartitionsToTxn, EndTxn): a read_committed
    consumer gets the committed transactions and none of the aborted one, in order; a
    read_uncommitted one sees all three."""
    kafka_cluster.create_topic("ck-txn", partitions=2)
    b = kafka_cluster.kafka_bootstrap
    producer = Producer(quiet({"bootstrap.servers": b, "transactional.id": "ck-txn-1",
                               "transaction.timeout.ms": 60_000}))
    producer.init_transactions(30)
    for outcome in ("commit", "abort", "commit"):
        producer.begin_transaction()
        for i in range(5):
            producer.produce("ck-txn", key=f"k{i}", value=f"{outcome}-{i}", partition=i % 2)
        if outcome == "commit":
            producer.commit_transaction(30)
        else:
            producer.flush(30)  # written, then aborted
            producer.abort_transaction(30)

    def values(isolation: str, count: int) -> list[bytes]:
        consumer = Consumer(quiet({"bootstrap.servers": b, "group.id": f"ck-txn-{isolation}",
                                   "auto.offset.reset": "earliest",
                                   "isolation.level": isolation}))
        try:
            consumer.subscribe(["ck-txn"])
            return sorted(m.value() for m in consume(consumer, count))
        finally:
            consumer.close()

    committed = values("read_committed", 10)
    assert committed == sorted([f"commit-{i}".encode() for i in range(5)] * 2)
    assert sum(v.startswith(b"abort") for v in values("read_uncommitted", 15)) == 5


def test_confluent_kafka_consume_transform_produce_commits_offsets_in_the_transaction(
        kafka_cluster: Cluster) -> None:
    """send_offsets_to_transaction (AddOffsetsToTxn, TxnOffsetCommit at the group's
    coordinator, checked against the classic member's generation): the group's offsets
    become committed with the transaction, and only then."""
    kafka_cluster.create_topic("ck-ctp-in", partitions=1)
    kafka_cluster.create_topic("ck-ctp-out", partitions=1)
    b = kafka_cluster.kafka_bootstrap
    plain = Producer(quiet({"bootstrap.servers": b}))
    for i in range(4):
        plain.produce("ck-ctp-in", value=f"in-{i}")
    assert plain.flush(30) == 0
    consumer = Consumer(quiet({"bootstrap.servers": b, "group.id": "ck-ctp",
                               "auto.offset.reset": "earliest", "enable.auto.commit": False}))
    producer = Producer(quiet({"bootstrap.servers": b, "transactional.id": "ck-ctp-1"}))
    try:
        consumer.subscribe(["ck-ctp-in"])
        got = consume(consumer, 4)
        producer.init_transactions(30)
        for outcome in ("abort", "commit"):
            producer.begin_transaction()
            for m in got:
                producer.produce("ck-ctp-out", value=m.value().replace(b"in", b"out"))
            producer.send_offsets_to_transaction(
                [TopicPartition("ck-ctp-in", 0, got[-1].offset() + 1)],
                consumer.consumer_group_metadata(), 30)
            if outcome == "abort":
                producer.abort_transaction(30)
                [tp] = consumer.committed([TopicPartition("ck-ctp-in", 0)], timeout=30)
                assert tp.offset < 0  # nothing committed by the aborted transaction
            else:
                producer.commit_transaction(30)
        [tp] = consumer.committed([TopicPartition("ck-ctp-in", 0)], timeout=30)
        assert tp.offset == got[-1].offset() + 1
    finally:
        consumer.close()


def _accepted(cluster: Cluster, group: str, topic: str, partitions: int) -> int | None:
    """Records the group accepted on every partition (None: a leader did not answer), from
    the gRPC door's view of the same share state."""
    total = 0
    for p in range(partitions):
        leader = cluster.partition_leader(topic, p)
        try:
            d = share_pb2_grpc.ShareStub(cluster.channel(leader)).DescribeSharePartition(
                share_pb2.DescribeSharePartitionRequest(group_id=group, topic=topic,
                                                        partition=p), timeout=5)
        except grpc.RpcError:
            return None
        total += d.accepted
    return total


def _share_consumer(cluster: Cluster, group: str) -> ShareConsumer:
    return ShareConsumer(quiet({"bootstrap.servers": cluster.kafka_bootstrap,
                                "group.id": group}))


def _poll_values(consumer: ShareConsumer, want: int, timeout_s: float) -> list[bytes]:
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(values) < want and time.monotonic() < deadline:
        for m in consumer.poll(1.0) or []:
            assert m.error() is None, m.error()
            values.append(m.value())
    return values


def test_a_share_consumer_gets_every_record_and_accepted_ones_are_not_redelivered(
        kafka_cluster: Cluster) -> None:
    """KIP-932 through the listener (node/_kafka/_share.py): librdkafka's ShareConsumer
    in a share group of the node's own share groups, acknowledging in ShareFetch and in
    ShareAcknowledge; the gRPC door sees the same acceptances."""
    kafka_cluster.create_topic("share-q", partitions=2)  # preferred leaders
    producer = Producer(quiet({"bootstrap.servers": kafka_cluster.kafka_bootstrap}))
    sent = [f"v{i}".encode() for i in range(20)]
    for i, v in enumerate(sent):
        producer.produce("share-q", v, partition=i % 2)
    assert producer.flush(20) == 0
    consumer = _share_consumer(kafka_cluster, "sq")
    consumer.subscribe(["share-q"])
    try:
        got = _poll_values(consumer, len(sent), 60)
        assert sorted(got) == sorted(sent)
        consumer.poll(0.5)  # the last poll's implicit acknowledgement, in a ShareFetch
    finally:
        consumer.close()
    # every record accepted (ShareFetch/ShareAcknowledge acknowledgements), as the gRPC
    # door sees the group: none is left locked to come back
    wait_for(lambda: _accepted(kafka_cluster, "sq", "share-q", 2) == len(sent), 30,
             "the share consumer's acknowledgements")
    producer.produce("share-q", b"late", partition=0)
    assert producer.flush(20) == 0
    again = _share_consumer(kafka_cluster, "sq")
    again.subscribe(["share-q"])
    try:
        assert _poll_values(again, 1, 60) == [b"late"]
        # librdkafka sends an implicit acknowledgement with the next poll or a commit
        # (close() alone releases the record): ShareAcknowledge this time
        assert all(e is None for e in again.commit_sync(30).values())
    finally:
        again.close()
    wait_for(lambda: _accepted(kafka_cluster, "sq", "share-q", 2) == len(sent) + 1, 30,
             "the late record's acknowledgement")
