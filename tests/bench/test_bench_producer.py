"""The client ``Producer`` end to end: a real 3-node cluster, one partition, acks=all,
100-byte records, lz4 batches built by the client (``send_many``), idempotence on and off.

Unlike test_bench_node.py this includes the client's batch encoding and its pipelining
(``max_in_flight`` batches per partition over one ``ProduceStream``), i.e. what a user of
the Python client gets. Reported as records_per_second."""

from __future__ import annotations

import inspect
from typing import Iterator

import pytest

from raftka.client import Producer
from tests.harness import Cluster

RECORDS = 200_000
CHUNK = 1000
RECORD = b'{"order": 123456, "sku": "ABC-123", "qty": 2, "price": 1999, "note": "benchmark"}' \
    .ljust(100, b" ")
_IDEMPOTENCE = "enable_idempotence" in inspect.signature(Producer).parameters


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("bench-producer"), 3)
    try:
        c.start_all()
        yield c
    finally:
        c.stop_all()


@pytest.mark.parametrize("idempotent", [False, True])
def test_producer_throughput_acks_all(benchmark, cluster: Cluster, idempotent: bool) -> None:
    if idempotent and not _IDEMPOTENCE:
        pytest.skip("this Producer has no enable_idempotence")
    topic = f"bench-producer-{int(idempotent)}"
    cluster.create_topic(topic)
    cluster.wait_leader(topic, 0)
    values = [RECORD] * CHUNK
    kwargs = {"enable_idempotence": idempotent} if _IDEMPOTENCE else {}
    producer = Producer(",".join(cluster.peers.values()), acks="all", linger_ms=5,
                        batch_size=128 * 1024, **kwargs)

    def run() -> None:
        futures = [producer.send_many(topic, values, partition=0)
                   for _ in range(RECORDS // CHUNK)]
        producer.flush()
        for f in futures:
            f.result()

    try:
        run()  # warm up: connections, metadata, producer id
        benchmark.pedantic(run, rounds=3, iterations=1)
    finally:
        producer.close()
    benchmark.extra_info["records_per_second"] = round(RECORDS / benchmark.stats.stats.median)
