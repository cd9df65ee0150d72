"""End-to-end benchmarks of a real 3-node cluster on loopback (issue 4's targets).

- produce: one partition, acks=all, 100-byte records in lz4 batches of 1,000, several
  requests in flight; records/s (target >= 150,000).
- latency: acks=all single-record produce paced at 1,000 records/s; p50/p99 ms (target
  p99 < 10 ms).
- fetch: read a filled partition from offset 0 with 1 MiB fetches; records/s (target
  >= 500,000).
- failover: kill -9 of the partition leader until the first acks=all write succeeds
  through a new leader; median of 10 trials (target < 1 s).

Batches are built before timing (the client's encoder has its own benchmark); the node
does not decode records, so the batch contents do not change its work.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Iterator

import grpc
import pytest

from raftka.v1 import broker_pb2, broker_pb2_grpc
from raftka.v1.recordbatch import BatchBuilder, Record, build_batch
from tests.harness import Cluster, wait_for

RECORDS_PER_BATCH = 1000
RECORD = b'{"order": 123456, "sku": "ABC-123", "qty": 2, "price": 1999, "note": "benchmark"}' \
    .ljust(100, b" ")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("bench-cluster"), 3)
    try:
        c.start_all()
        yield c
    finally:
        c.stop_all()


def _batches(count: int) -> list[bytes]:
    out = []
    for i in range(count):
        b = BatchBuilder(compression="lz4", max_bytes=8 << 20)
        now = int(time.time() * 1000)
        for j in range(RECORDS_PER_BATCH):
            b.append(None, RECORD[:-8] + b"%08d" % ((i * RECORDS_PER_BATCH + j) % 10**8), (), now)
        out.append(b.build())
    return out


async def _produce_all(address: str, topic: str, batches: list[bytes], in_flight: int) -> float:
    async with grpc.aio.insecure_channel(address, options=[
            ("grpc.max_send_message_length", 64 << 20)]) as channel:
        stub = broker_pb2_grpc.BrokerStub(channel)
        queue = list(reversed(batches))

        async def worker() -> None:
            while queue:
                batch = queue.pop()
                await stub.Produce(broker_pb2.ProduceRequest(
                    topic=topic, partition=0, acks=broker_pb2.ACKS_ALL, record_batches=batch),
                    timeout=30)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        return time.perf_counter() - started


@pytest.mark.parametrize("in_flight", [1, 8])
def test_produce_throughput_acks_all(benchmark, cluster: Cluster, in_flight: int) -> None:
    topic = f"bench-produce-{in_flight}"
    cluster.create_topic(topic)
    leader = cluster.wait_leader(topic, 0)
    batches = _batches(200)
    asyncio.run(_produce_all(cluster.peers[leader], topic, batches[:10], in_flight))  # warm up

    def run() -> float:
        return asyncio.run(_produce_all(cluster.peers[leader], topic, batches, in_flight))

    elapsed = benchmark.pedantic(run, rounds=3, iterations=1)
    records = len(batches) * RECORDS_PER_BATCH
    benchmark.extra_info["records_per_second"] = round(records / benchmark.stats.stats.median)
    benchmark.extra_info["mib_per_second_uncompressed"] = round(
        records * len(RECORD) / benchmark.stats.stats.median / 2**20, 1)
    assert elapsed > 0


def test_produce_latency_at_1000_records_per_second(benchmark, cluster: Cluster) -> None:
    """What a user sees: the client Producer (linger 1 ms, acks=all) sending 1,000 records/s
    paced one by one; latency from send() to the acknowledgement of that record."""
    from raftka.client import Producer

    topic = "bench-latency"
    cluster.create_topic(topic)
    latencies: list[float] = []
    errors: list[str] = []

    def paced(seconds: float, rate: int) -> None:
        with Producer(",".join(cluster.peers.values()), acks="all", linger_ms=1) as producer:
            start = time.perf_counter()
            futures = []
            for i in range(int(seconds * rate)):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                t0 = time.perf_counter()
                future = producer.send(topic, RECORD, partition=0)
                future.add_done_callback(
                    lambda f, t0=t0: errors.append(repr(f.exception())) if f.exception()
                    else latencies.append(time.perf_counter() - t0))
                futures.append(future)
            producer.flush()

    paced(1.0, 1000)  # warm up
    latencies.clear()
    benchmark.pedantic(lambda: paced(5.0, 1000), rounds=1, iterations=1)
    latencies.sort()
    benchmark.extra_info["records"] = len(latencies)
    benchmark.extra_info["p50_ms"] = round(latencies[len(latencies) // 2] * 1000, 2)
    benchmark.extra_info["p99_ms"] = round(latencies[int(len(latencies) * 0.99)] * 1000, 2)
    benchmark.extra_info["max_ms"] = round(latencies[-1] * 1000, 2)
    benchmark.extra_info["errors"] = len(errors)


def test_fetch_throughput(benchmark, cluster: Cluster) -> None:
    topic = "bench-fetch"
    cluster.create_topic(topic)
    leader = cluster.wait_leader(topic, 0)
    batches = _batches(300)
    asyncio.run(_produce_all(cluster.peers[leader], topic, batches, 8))
    total = len(batches) * RECORDS_PER_BATCH
    stub = cluster.broker(leader)

    def read_all() -> int:
        offset = 0
        while offset < total:
            r = stub.Fetch(broker_pb2.FetchRequest(topic=topic, offset=offset,
                                                   max_bytes=1 << 20), timeout=10)
            offset = r.next_offset
        return offset

    benchmark.pedantic(read_all, rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info["records_per_second"] = round(total / benchmark.stats.stats.median)


def test_failover_time_after_kill_of_the_leader(benchmark, cluster: Cluster) -> None:
    topic = "bench-failover"
    cluster.create_topic(topic)
    batch = build_batch([Record(None, b"x")], compression="none")
    trials: list[float] = []

    def first_write_through_new_leader(old: int) -> float:
        started = time.perf_counter()
        cluster.kill(old)
        while True:
            for nid in cluster.live():
                try:
                    cluster.broker(nid).Produce(broker_pb2.ProduceRequest(
                        topic=topic, acks=broker_pb2.ACKS_ALL, record_batches=batch,
                        timeout_ms=2000), timeout=3)
                    return time.perf_counter() - started
                except grpc.RpcError:
                    continue
            time.sleep(0.01)

    def run() -> None:
        for _ in range(10):
            old = cluster.wait_leader(topic, 0)
            cluster.produce(topic, 0, batch)
            trials.append(first_write_through_new_leader(old))
            cluster.start(old)
            wait_for(lambda: all(cluster.partition_leader(topic, 0) for _ in range(1)), 20,
                     "a leader")
            cluster.wait_healthy()

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info["failover_median_s"] = round(statistics.median(trials), 3)
    benchmark.extra_info["failover_max_s"] = round(max(trials), 3)
