"""Follower fetching against real node processes: racks in Metadata, reads served by a
follower (its node's counters say so), committed records only, positions that never go
backwards when a reader moves between replicas, fallback when the follower dies."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Iterator

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

import raftka.aio
from raftka.client import Admin, Consumer, PartitionReader, Producer
from raftka.v1 import admin_pb2, broker_pb2, errors_pb2
from tests.harness import REPO, Cluster, error_info, wait_for
from tests.safety import assert_log_matches_acks


def rack_of(node_id: int) -> str:
    return f"zone-{node_id}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("follower-fetch"), 3, metrics=True,
                node_args=lambda nid: ["--rack", rack_of(nid)])
    try:
        c.start_all()
        yield c
    finally:
        c.stop_all()


def bootstrap(cluster: Cluster) -> str:
    return ",".join(cluster.peers[i] for i in sorted(cluster.peers))


def follower_records(cluster: Cluster, node_id: int) -> int:
    """Records node ``node_id`` returned to fetches of partitions it does not lead."""
    stats = cluster.admin(node_id).DescribeNodeStats(admin_pb2.DescribeNodeStatsRequest(),
                                                     timeout=5)
    return stats.follower_fetch_records


def scraped_follower_records(cluster: Cluster, node_id: int) -> float:
    """The same count from the node's Prometheus endpoint."""
    with urllib.request.urlopen(cluster.metrics_url(node_id), timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "raftka_fetch_follower_records_total":
                return sample.value
    raise AssertionError(f"node {node_id} has no raftka_fetch_follower_records_total")


def _answers(cluster: Cluster, node_id: int) -> bool:
    try:
        cluster.replica_position(node_id, "switch", 0)
        return True
    except grpc.RpcError:
        return False


def new_topic(cluster: Cluster, name: str) -> tuple[int, int]:
    """A one-partition topic on the three nodes: (its leader, a follower)."""
    cluster.create_topic(name, partitions=1, replicas=3)
    leader = cluster.wait_leader(name, 0)
    follower = min(n for n in cluster.peers if n != leader)

    def follows() -> bool:  # else it refuses reads for now and the reader skips it a while
        try:
            cluster.replica_position(follower, name, 0)  # its replica runs
        except grpc.RpcError:
            return False
        md = cluster.broker(follower).Metadata(broker_pb2.MetadataRequest(topics=[name]),
                                               timeout=5)
        return md.topics[0].partitions[0].leader_id == leader
    wait_for(follows, 20, f"node {follower} to follow node {leader} for {name}")
    return leader, follower


def produce(cluster: Cluster, topic: str, values: list[bytes]) -> dict[bytes, int]:
    with Producer(bootstrap(cluster), linger_ms=0) as producer:
        futures = [producer.send(topic, v, partition=0) for v in values]
        return {v: f.result(timeout=30)[1] for v, f in zip(values, futures)}


def read_until(reader: PartitionReader, count: int, seen: list, timeout: float = 30) -> None:
    def more() -> bool:
        seen.extend(reader.poll(0.5))
        return len(seen) >= count
    wait_for(more, timeout, f"{count} records read")


def assert_read_in_order(seen: list, values: list[bytes], acked: dict[bytes, int],
                         where: str) -> None:
    """Each acknowledged record once, at its offset, positions strictly increasing."""
    offsets = [r.offset for r in seen]
    assert offsets == sorted(set(offsets)), f"{where}: offsets went backwards or repeated"
    assert_log_matches_acks([(r.offset, r.value) for r in seen], values, acked, where=where)


def test_metadata_and_describe_cluster_show_every_nodes_rack(cluster: Cluster):
    with Admin(bootstrap(cluster)) as admin:
        def racks() -> dict[int, str]:
            admin._cluster.refresh_metadata(5)
            return {b.id: b.rack for b in admin._cluster.brokers()}
        want = {n: rack_of(n) for n in cluster.peers}
        wait_for(lambda: racks() == want, 20, "every node's rack in Metadata")
        wait_for(lambda: {n.id: n.rack for n in admin.describe_cluster().nodes} == want, 20,
                 "every node's rack in DescribeCluster")


def test_nearest_reads_come_from_the_follower_in_the_readers_rack(cluster: Cluster):
    """The follower in the reader's rack serves the reads (its counter grows, the
    leader's does not); every record read is committed: below the leader's high watermark
    at the time it was read, and exactly the acknowledged ones."""
    leader, follower = new_topic(cluster, "near")
    values = [f"near-{i}".encode() for i in range(300)]
    before = {n: follower_records(cluster, n) for n in cluster.peers}
    acked: dict[bytes, int] = {}
    done = threading.Event()

    def write() -> None:
        try:
            for i in range(0, len(values), 30):
                acked.update(produce(cluster, "near", values[i:i + 30]))
        finally:
            done.set()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    seen: list = []
    with PartitionReader(bootstrap(cluster), "near", 0, "earliest", read_from="nearest",
                         rack=rack_of(follower)) as reader:
        def more() -> bool:
            records = reader.poll(0.3)
            if records:
                hw = cluster.broker(leader).ListOffsets(broker_pb2.ListOffsetsRequest(
                    topic="near", partition=0, timestamp_ms=-1), timeout=5).offset
                assert records[-1].offset < hw, (
                    f"read offset {records[-1].offset} beyond the leader's high watermark "
                    f"{hw}: an uncommitted record was served")
                seen.extend(records)
            return done.is_set() and len(seen) >= len(values)
        wait_for(more, 60, "every record read from the follower")
    writer.join(10)
    assert_read_in_order(seen, values, acked, "near/0 read from the follower")
    grown = {n: follower_records(cluster, n) - before[n] for n in cluster.peers}
    assert grown[follower] >= len(values), f"the follower served {grown}"
    assert grown[leader] == 0
    assert scraped_follower_records(cluster, follower) >= grown[follower]


def test_a_follower_behind_the_reader_answers_empty_not_out_of_range(cluster: Cluster):
    """A follower asked for an offset above its high watermark (a reader that read further
    at another replica) waits and answers nothing, where the leader says out of range."""
    leader, follower = new_topic(cluster, "behind")
    produce(cluster, "behind", [b"a", b"b", b"c"])
    wait_for(lambda: cluster.replica_position(follower, "behind", 0).high_watermark == 3, 20,
             "the follower to apply the three records")
    request = broker_pb2.FetchRequest(topic="behind", partition=0, offset=10,
                                      max_wait_ms=200, allow_follower=True)
    response = cluster.broker(follower).Fetch(request, timeout=10)
    assert (response.high_watermark, response.next_offset) == (3, 10)
    assert not response.record_batches
    with pytest.raises(grpc.RpcError) as refused:
        cluster.broker(leader).Fetch(request, timeout=10)
    assert error_info(refused.value).code == errors_pb2.OFFSET_OUT_OF_RANGE
    # without allow_follower a follower still refuses reads, naming the leader
    with pytest.raises(grpc.RpcError) as refused:
        cluster.broker(follower).Fetch(broker_pb2.FetchRequest(topic="behind", partition=0,
                                                               offset=0), timeout=10)
    info = error_info(refused.value)
    assert info.code == errors_pb2.NOT_LEADER
    # a follower serves from its own log, committed records only
    response = cluster.broker(follower).Fetch(broker_pb2.FetchRequest(
        topic="behind", partition=0, offset=0, allow_follower=True, decode_records=True),
        timeout=10)
    assert [r.value for r in response.records] == [b"a", b"b", b"c"]
    stream = cluster.broker(follower).FetchStream(broker_pb2.FetchRequest(
        topic="behind", partition=0, offset=1, allow_follower=True, decode_records=True),
        timeout=10)
    try:
        first = next(stream)
    finally:
        stream.cancel()
    assert [r.value for r in first.records] == [b"b", b"c"]


def test_offsets_never_go_backwards_when_the_follower_dies_and_comes_back(cluster: Cluster):
    """A reader of the follower in its rack: the follower is killed (kill -9) mid-read,
    the reader goes on at the leader without a gap or a repeat; the follower comes back
    (behind the reader until it catches up) and the reader returns to it, still moving
    only forward."""
    leader, follower = new_topic(cluster, "switch")
    values = [f"switch-{i}".encode() for i in range(600)]
    acked = produce(cluster, "switch", values[:200])
    seen: list = []
    with PartitionReader(bootstrap(cluster), "switch", 0, "earliest", read_from="nearest",
                         rack=rack_of(follower), max_bytes=4096,
                         request_timeout_ms=1000) as reader:
        before = follower_records(cluster, follower)
        read_until(reader, 100, seen)
        assert follower_records(cluster, follower) > before, "not read from the follower"
        cluster.kill(follower)
        acked.update(produce(cluster, "switch", values[200:400]))
        read_until(reader, 400, seen)  # from the leader now
        cluster.start(follower)
        wait_for(lambda: cluster.replica_position(follower, "switch", 0).high_watermark
                 if _answers(cluster, follower) else False, 30,
                 f"node {follower} back with its replica")
        acked.update(produce(cluster, "switch", values[400:]))
        read_until(reader, 600, seen)

        def back_at_the_follower() -> bool:
            value = f"more-{len(values)}".encode()
            acked.update(produce(cluster, "switch", [value]))
            values.append(value)
            read_until(reader, len(values), seen)
            return follower_records(cluster, follower) > 0
        wait_for(back_at_the_follower, 40, "the reader back at the restarted follower",
                 interval=0.5)
    assert_read_in_order(seen, values, acked, "switch/0 across replicas")


def test_a_reader_falls_back_to_the_leader_when_its_follower_stops_answering(
        cluster: Cluster):
    """The follower is paused (SIGSTOP: it neither answers nor closes connections, like a
    machine cut off): the reader's fetch times out and it goes on at the leader."""
    leader, follower = new_topic(cluster, "paused")
    values = [f"paused-{i}".encode() for i in range(200)]
    acked = produce(cluster, "paused", values[:100])
    seen: list = []
    with PartitionReader(bootstrap(cluster), "paused", 0, "earliest", read_from="nearest",
                         rack=rack_of(follower), request_timeout_ms=1000) as reader:
        read_until(reader, 100, seen)
        # the producer has its producer id before the pause: a paused node may be the
        # controller leader, and this test is about the reader
        with Producer(bootstrap(cluster), linger_ms=0) as producer:
            acked[b"warm-up"] = producer.send("paused", b"warm-up",
                                              partition=0).result(timeout=30)[1]
            values.insert(100, b"warm-up")
            cluster.pause(follower)
            try:
                futures = [producer.send("paused", v, partition=0) for v in values[101:]]
                acked.update({v: f.result(timeout=30)[1]
                              for v, f in zip(values[101:], futures)})
                read_until(reader, len(values), seen)
            finally:
                cluster.resume(follower)
    assert_read_in_order(seen, values, acked, "paused/0")


def test_any_spreads_a_consumer_group_over_the_replicas(cluster: Cluster):
    """Consumers with read_from="any" on a topic of six partitions: records come from
    followers too, and each record is consumed once, in order per partition."""
    cluster.create_topic("spread", partitions=6, replicas=3)
    values = [f"spread-{i}".encode() for i in range(600)]
    with Producer(bootstrap(cluster)) as producer:
        futures = [producer.send("spread", v, key=v) for v in values]
        acked = {v: f.result(timeout=30) for v, f in zip(values, futures)}
    before = sum(follower_records(cluster, n) for n in cluster.peers)
    seen: list = []
    with Consumer(bootstrap(cluster), "spreaders", ["spread"], read_from="any") as consumer:
        wait_for(lambda: seen.extend(consumer.poll(0.3)) or len(seen) >= len(values), 60,
                 "every record consumed")
    by_partition: dict[int, list] = {}
    for r in seen:
        by_partition.setdefault(r.partition, []).append(r)
    for p, records in by_partition.items():
        sent = [v for v in values if acked[v][0] == p]
        assert_read_in_order(records, sent, {v: acked[v][1] for v in sent}, f"spread/{p}")
    assert sum(follower_records(cluster, n) for n in cluster.peers) > before


def test_asyncio_reader_reads_from_the_nearest_follower(cluster: Cluster):
    leader, follower = new_topic(cluster, "aio-near")
    values = [f"aio-{i}".encode() for i in range(100)]
    acked = produce(cluster, "aio-near", values)
    before = follower_records(cluster, follower)

    async def read() -> list:
        seen: list = []
        async with raftka.aio.PartitionReader(bootstrap(cluster), "aio-near", 0, "earliest",
                                              read_from="nearest",
                                              rack=rack_of(follower)) as reader:
            while len(seen) < len(values):
                seen.extend(await reader.poll(1.0))
        return seen

    seen = asyncio.run(asyncio.wait_for(read(), 60))
    assert_read_in_order(seen, values, acked, "aio-near/0")
    assert follower_records(cluster, follower) - before >= len(values)


def test_asyncio_consumer_reads_from_the_nearest_follower(cluster: Cluster):
    leader, follower = new_topic(cluster, "aio-group")
    values = [f"aio-group-{i}".encode() for i in range(100)]
    acked = produce(cluster, "aio-group", values)
    before = follower_records(cluster, follower)

    async def consume() -> list:
        seen: list = []
        async with raftka.aio.Consumer(bootstrap(cluster), "aio-near", ["aio-group"],
                                       read_from="nearest", rack=rack_of(follower)) as c:
            while len(seen) < len(values):
                seen.extend(await c.poll(1.0))
        return seen

    seen = asyncio.run(asyncio.wait_for(consume(), 60))
    assert_read_in_order(seen, values, acked, "aio-group/0")
    assert follower_records(cluster, follower) - before >= len(values)


def test_bad_read_from_is_refused(cluster: Cluster):
    with pytest.raises(ValueError, match="read_from"):
        PartitionReader(bootstrap(cluster), "near", 0, read_from="closest")
    with pytest.raises(ValueError, match="rack"):
        PartitionReader(bootstrap(cluster), "near", 0, read_from="nearest")
    with pytest.raises(ValueError, match="read_from"):
        Consumer(bootstrap(cluster), "g", ["near"], read_from="followers")


def test_the_node_refuses_a_bad_rack(tmp_path: Path):
    from raftka.node._config import ConfigError, from_args
    base = ["--id", "1", "--listen", "127.0.0.1:1", "--peers", "1=127.0.0.1:1",
            "--data-dir", str(tmp_path)]
    assert from_args(base + ["--rack", "eu-1a"]).rack == "eu-1a"
    with pytest.raises(ConfigError, match="rack"):
        from_args(base + ["--rack", "x" * 65])
    config = tmp_path / "node.toml"
    config.write_text(f'id = 1\nlisten = "127.0.0.1:1"\ndata_dir = "{tmp_path}"\n'
                      'peers = {1 = "127.0.0.1:1"}\nrack = "eu-1b"\n')
    assert from_args(["--config", str(config)]).rack == "eu-1b"


def test_cli_consume_reads_from_the_nearest_follower(cluster: Cluster):
    leader, follower = new_topic(cluster, "cli-near")
    values = [f"cli-{i}" for i in range(50)]
    produce(cluster, "cli-near", [v.encode() for v in values])
    # the follower applies what its leader told it is committed; the CLI exits at the
    # watermark the follower reports, so wait for it to hold every record first
    wait_for(lambda: cluster.replica_position(follower, "cli-near", 0).high_watermark == 50,
             20, "the follower to apply the 50 records")
    before = follower_records(cluster, follower)
    env = dict(os.environ, RAFTKA_BOOTSTRAP=bootstrap(cluster))
    run = subprocess.run([sys.executable, "-m", "raftka.client", "consume", "cli-near",
                          "--from-beginning", "--exit-at-end", "--read-from", "nearest",
                          "--rack", rack_of(follower)], text=True, capture_output=True,
                         env=env, cwd=REPO, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == values
    assert follower_records(cluster, follower) - before >= len(values)
    run = subprocess.run([sys.executable, "-m", "raftka.client", "consume", "cli-near",
                          "--read-from", "nearest"], text=True, capture_output=True,
                         env=env, cwd=REPO, timeout=60)
    assert run.returncode == 1 and "--rack" in run.stderr and "Traceback" not in run.stderr
