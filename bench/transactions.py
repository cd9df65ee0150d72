"""Transactions (issue 15's figures): transactions of 100 records of 100 B over 3
partitions against the same records sent without transactions, and the cost of
read_committed against read_uncommitted on one consume.

    .venv/bin/python -m bench.transactions [--transactions 300] [--consume 1000000]
                                          [--producers 1]

A 3-node cluster on this machine (loopback, tick 50 ms), a 3-partition topic, replication
factor 3, acks=all. Non-transactional: the idempotent Producer, one send() per record
(partition i % 3), one flush at the end; records/s = records / elapsed. Transactional:
begin, 100 send()s (partition i % 3), commit_transaction (returns once every partition has
its commit marker), one transaction after the other; records/s = committed records /
elapsed; commit latency = commit_transaction's duration. With ``--producers N`` (> 1) the
transactions are also run by N transactional producers at once (ids ``bench-0..N-1``, one
thread each, the same number of transactions in all): each transaction still waits on its
commits one after the other, so throughput comes from transactions in flight together, as
with Kafka. Consume: ``--consume`` records of
100 B produced into a 1-partition topic, half of them in committed transactions of 1,000
(so read_committed works per batch), then read once from the start by a PartitionReader
(4 MiB fetches) with each isolation level, alternately, twice each; records/s of the best
run of each.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench._common import PAYLOAD_100


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _concurrent(bootstrap: str, producers: int, transactions: int) -> float:
    """Committed records/s of ``transactions`` transactions run by ``producers``
    transactional producers at once (one thread each)."""
    import threading

    from raftka.client import Producer
    each = max(1, transactions // producers)
    clients = [Producer(bootstrap, linger_ms=5, transactional_id=f"bench-{k}")
               for k in range(producers)]
    try:
        for producer in clients:
            producer.init_transactions()
            producer.begin_transaction()  # warm
            for p in range(3):
                producer.send("txn", PAYLOAD_100, partition=p)
            producer.commit_transaction()
        errors: list[BaseException] = []

        def run(producer) -> None:
            try:
                for _ in range(each):
                    producer.begin_transaction()
                    for i in range(100):
                        producer.send("txn", PAYLOAD_100, partition=i % 3)
                    producer.commit_transaction()
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(p,)) for p in clients]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        if errors:
            raise errors[0]
        return each * producers * 100 / elapsed
    finally:
        for producer in clients:
            producer.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transactions", type=int, default=300)
    parser.add_argument("--consume", type=int, default=1_000_000)
    parser.add_argument("--producers", type=int, default=1)
    args = parser.parse_args()
    from raftka.client import PartitionReader, Producer
    from tests.harness import Cluster
    with tempfile.TemporaryDirectory(prefix="raftka-txn-bench-") as root:
        cluster = Cluster(Path(root), 3)
        try:
            cluster.start_all()
            cluster.wait_healthy()
            cluster.create_topic("plain", partitions=3)
            cluster.create_topic("txn", partitions=3)
            cluster.create_topic("consume", partitions=1)
            bootstrap = ",".join(cluster.peers[i] for i in sorted(cluster.peers))
            n = args.transactions * 100
            with Producer(bootstrap, linger_ms=5) as producer:
                producer.send("plain", PAYLOAD_100, partition=0).result(30)  # warm
                started = time.perf_counter()
                for i in range(n):
                    producer.send("plain", PAYLOAD_100, partition=i % 3)
                producer.flush()
                plain_rate = n / (time.perf_counter() - started)
            latencies: list[float] = []
            with Producer(bootstrap, linger_ms=5, transactional_id="bench") as producer:
                producer.init_transactions()
                producer.begin_transaction()  # warm: the coordinator and the partitions
                for p in range(3):
                    producer.send("txn", PAYLOAD_100, partition=p)
                producer.commit_transaction()
                started = time.perf_counter()
                for _ in range(args.transactions):
                    producer.begin_transaction()
                    for i in range(100):
                        producer.send("txn", PAYLOAD_100, partition=i % 3)
                    t0 = time.perf_counter()
                    producer.commit_transaction()
                    latencies.append(time.perf_counter() - t0)
                txn_rate = n / (time.perf_counter() - started)
            concurrent_rate = 0.0
            if args.producers > 1:
                concurrent_rate = _concurrent(bootstrap, args.producers, args.transactions)
            print(f"non-transactional: {plain_rate:,.0f} records/s")
            print(f"transactional (100 x 100 B over 3 partitions): {txn_rate:,.0f} records/s "
                  f"= {txn_rate / plain_rate:.0%} of non-transactional")
            print(f"commit_transaction latency: p50 {_pct(latencies, 0.5) * 1000:.1f} ms, "
                  f"p99 {_pct(latencies, 0.99) * 1000:.1f} ms, mean "
                  f"{statistics.mean(latencies) * 1000:.1f} ms")
            if concurrent_rate:
                print(f"transactional, {args.producers} producers at once: "
                      f"{concurrent_rate:,.0f} records/s = "
                      f"{concurrent_rate / plain_rate:.0%} of non-transactional")

            total = args.consume
            half = total // 2
            with Producer(bootstrap) as producer:
                producer.send_many("consume", [PAYLOAD_100] * half, partition=0).result(120)
            with Producer(bootstrap, transactional_id="bench-consume") as producer:
                producer.init_transactions()
                for _ in range(half // 1000):
                    producer.begin_transaction()
                    producer.send_many("consume", [PAYLOAD_100] * 1000, partition=0)
                    producer.commit_transaction()
            rates: dict[str, float] = {"read_uncommitted": 0.0, "read_committed": 0.0}
            for _ in range(2):
                for level in rates:
                    with PartitionReader(bootstrap, "consume", 0, max_bytes=4 << 20,
                                         isolation_level=level) as reader:
                        count, t0 = 0, time.perf_counter()
                        while count < total:
                            count += len(reader.poll(1.0))
                        rates[level] = max(rates[level], count / (time.perf_counter() - t0))
            print(f"consume {total:,} records: read_uncommitted "
                  f"{rates['read_uncommitted']:,.0f}/s, read_committed "
                  f"{rates['read_committed']:,.0f}/s "
                  f"({1 - rates['read_committed'] / rates['read_uncommitted']:+.1%} cost)")
        finally:
            cluster.stop_all()


if __name__ == "__main__":
    main()
