"""Transactions (issue 15's figures): transactions of 100 records of 100 B over 3
partitions against the same records sent without transactions, and the cost of
read_committed against read_uncommitted on one consume.

    .venv/bin/python -m bench.transactions [--transactions 400] [--producers 4]
                                          [--consume 1000000] [--records 100] [--aio]
                                          [--ab N]

A 3-node cluster on this machine (loopback, tick 50 ms), 3-partition topics, replication
factor 3, acks=all, idempotent producers (``linger_ms=5``). One unit of work is a *group*
of 100 records of 100 B (``--records``: larger transactions), partition ``i % 3``. Five runs, each ``--transactions`` groups in
total, records/s = records acknowledged (committed) / elapsed:

1. ``best case``: one producer sends every record, one flush at the end (w1's shape: as
   many batches in flight as the window allows, nothing waits for anything);
2. ``groups x1``: one producer, each group followed by ``flush()`` (the group is durable
   before the next one starts);
3. ``txn x1``: one transactional producer, each group one transaction
   (``begin_transaction``, 100 ``send``, ``commit_transaction``, which returns once the
   decision is durable);
4. ``groups xN`` / 5. ``txn xN``: the same with ``--producers`` producers at once (one
   thread each, transactional ids ``bench-0..N-1``), the groups split evenly;
6. with ``--aio``, ``aio groups xN`` / ``aio txn xN``: the same with ``raftka.aio``
   producers, all on one event loop (no thread per producer, so less GIL hand-off in the
   client process than N threads).

**The target (>= 60%) is ``txn xN`` against ``groups xN``**: the same work (groups of
100 records, each durable before its producer goes on) by the same number of producers,
differing only in being transactions. That is how transactional throughput scales in
Kafka too (many transactional producers, each one transaction at a time, since a
producer's transactions are serial by definition). The best case is printed for scale: it
keeps whole windows of batches in flight, which no transactional producer can (a
transaction must end before the next begins), so its ratio mostly measures commit
latency, not the cost of transactions. Commit latency is ``commit_transaction``'s
duration, p50/p99, per transactional run.

``--ab N``: only ``groups xN`` and ``txn xN``, alternately, N times each (an A/B of the
target alone, no consume), each line with the CPU per group of the nodes (user+system
time of the three node processes, ``/proc/<pid>/stat``, over the run, divided by the
groups) and of the clients (this process).

Consume: ``--consume`` records of 100 B in a 1-partition topic, half of them in committed
transactions of 1,000 (so read_committed works per batch), read once from the start by a
PartitionReader (4 MiB fetches) with each isolation level, alternately, twice each;
records/s of the best run of each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench._common import PAYLOAD_100

GROUP = 100  # records per group / transaction (--records)


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _in_threads(clients: list, work: Callable[[object], None]) -> float:
    """Run ``work(client)`` in one thread per client, all at once; the elapsed seconds."""
    errors: list[BaseException] = []

    def run(client: object) -> None:
        try:
            work(client)
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return elapsed


def _nodes_cpu_s(cluster) -> float:
    """User+system CPU seconds the cluster's node processes used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for proc in cluster.procs.values():
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def _ab(cluster, bootstrap: str, producers: int, groups: int, rounds: int) -> None:
    """``--ab``: groups xN against txn xN, alternately, with the CPU per group of the
    nodes and of this (the clients') process."""
    ratios: list[float] = []

    def measured(run):
        nodes, client = _nodes_cpu_s(cluster), time.process_time()
        result = run()
        return (result, (_nodes_cpu_s(cluster) - nodes) * 1000 / groups,
                (time.process_time() - client) * 1000 / groups)

    for r in range(rounds):
        grouped, grouped_cpu, grouped_client = measured(
            lambda: _grouped(bootstrap, producers, groups))
        (txn, lat), txn_cpu, txn_client = measured(
            lambda: _transactional(bootstrap, producers, groups))
        ratios.append(txn / grouped)
        print(f"round {r + 1}: groups x{producers} {grouped:,.0f} records/s (CPU per group: "
              f"nodes {grouped_cpu:.1f} ms, client {grouped_client:.1f} ms); txn "
              f"x{producers} {txn:,.0f} records/s (nodes {txn_cpu:.1f} ms, client "
              f"{txn_client:.1f} ms) = {txn / grouped:.0%}; {_latency(lat)}", flush=True)
    print(f"txn x{producers} / groups x{producers}: median {statistics.median(ratios):.0%} "
          f"(min {min(ratios):.0%}, max {max(ratios):.0%}) over {rounds} rounds")


def _best_case(bootstrap: str, groups: int) -> float:
    from raftka.client import Producer
    n = groups * GROUP
    with Producer(bootstrap, linger_ms=5) as producer:
        producer.send("plain", PAYLOAD_100, partition=0).result(30)  # warm
        started = time.perf_counter()
        for i in range(n):
            producer.send("plain", PAYLOAD_100, partition=i % 3)
        producer.flush()
        return n / (time.perf_counter() - started)


def _grouped(bootstrap: str, producers: int, groups: int) -> float:
    """Records/s of ``groups`` groups of 100 records, each flushed, by ``producers``
    non-transactional producers at once."""
    from raftka.client import Producer
    each = max(1, groups // producers)
    clients = [Producer(bootstrap, linger_ms=5) for _ in range(producers)]
    try:
        for producer in clients:
            producer.send("plain", PAYLOAD_100, partition=0).result(30)  # warm

        def work(producer) -> None:
            for _ in range(each):
                futures = [producer.send("plain", PAYLOAD_100, partition=i % 3)
                           for i in range(GROUP)]
                producer.flush()
                for f in futures:
                    f.result(30)  # raises a failed record's error (flush returns once the
                    # batches are done; their futures are resolved a moment later)
        return each * producers * GROUP / _in_threads(clients, work)
    finally:
        for producer in clients:
            producer.close()


def _transactional(bootstrap: str, producers: int, groups: int
                   ) -> tuple[float, list[float]]:
    """Committed records/s of ``groups`` transactions of 100 records by ``producers``
    transactional producers at once; commit_transaction's durations."""
    from raftka.client import Producer
    each = max(1, groups // producers)
    clients = [Producer(bootstrap, linger_ms=5, transactional_id=f"bench-{k}")
               for k in range(producers)]
    latencies: list[float] = []
    try:
        for producer in clients:
            producer.init_transactions()
            producer.begin_transaction()  # warm: the coordinator and the partitions
            for p in range(3):
                producer.send("txn", PAYLOAD_100, partition=p)
            producer.commit_transaction()

        def work(producer) -> None:
            for _ in range(each):
                producer.begin_transaction()
                for i in range(GROUP):
                    producer.send("txn", PAYLOAD_100, partition=i % 3)
                t0 = time.perf_counter()
                producer.commit_transaction()
                latencies.append(time.perf_counter() - t0)
        rate = each * producers * GROUP / _in_threads(clients, work)
        return rate, latencies
    finally:
        for producer in clients:
            producer.close()


def _aio(bootstrap: str, producers: int, groups: int, transactional: bool
         ) -> tuple[float, list[float]]:
    """``_grouped`` / ``_transactional`` with ``raftka.aio`` producers, all on one event
    loop (no thread per producer): records/s and commit durations."""
    import asyncio

    import raftka.aio

    async def main() -> tuple[float, list[float]]:
        each = max(1, groups // producers)
        topic = "txn" if transactional else "plain"
        clients = [raftka.aio.Producer(bootstrap, linger_ms=5, transactional_id=(
            f"bench-aio-{k}" if transactional else None)) for k in range(producers)]
        latencies: list[float] = []
        try:
            for producer in clients:
                if transactional:
                    await producer.init_transactions()
                    producer.begin_transaction()
                await producer.send_and_wait(topic, PAYLOAD_100, partition=0)  # warm
                if transactional:
                    await producer.commit_transaction()

            async def work(producer) -> None:
                for _ in range(each):
                    if transactional:
                        producer.begin_transaction()
                    futures = [await producer.send(topic, PAYLOAD_100, partition=i % 3)
                               for i in range(GROUP)]
                    t0 = time.perf_counter()
                    if transactional:
                        await producer.commit_transaction()
                        latencies.append(time.perf_counter() - t0)
                    else:
                        await producer.flush()
                        for f in futures:
                            f.result()  # raises a failed record's error
            started = time.perf_counter()
            await asyncio.gather(*(work(p) for p in clients))
            return each * producers * GROUP / (time.perf_counter() - started), latencies
        finally:
            for producer in clients:
                await producer.close()

    return asyncio.run(main())


def _latency(latencies: list[float]) -> str:
    return (f"commit p50 {_pct(latencies, 0.5) * 1000:.1f} ms, p99 "
            f"{_pct(latencies, 0.99) * 1000:.1f} ms, mean "
            f"{statistics.mean(latencies) * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transactions", type=int, default=400,
                        help="groups of 100 records per run (each a transaction in the "
                             "transactional runs)")
    parser.add_argument("--consume", type=int, default=1_000_000)
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--records", type=int, default=100,
                        help="records per group / transaction (the issue's figure: 100)")
    parser.add_argument("--aio", action="store_true",
                        help="also run groups/txn xN with raftka.aio producers on one loop")
    parser.add_argument("--ab", type=int, default=0, metavar="N",
                        help="only groups xN against txn xN, alternately, N rounds each, "
                             "with the nodes' CPU per group")
    args = parser.parse_args()
    global GROUP
    GROUP = args.records
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
            n, k = args.transactions, args.producers
            if args.ab:
                _ab(cluster, bootstrap, k, n, args.ab)
                return
            best = _best_case(bootstrap, n)
            grouped1 = _grouped(bootstrap, 1, n)
            txn1, lat1 = _transactional(bootstrap, 1, n)
            grouped_n = _grouped(bootstrap, k, n)
            txn_n, lat_n = _transactional(bootstrap, k, n)
            print(f"best case (one producer, one flush at the end): {best:,.0f} records/s")
            print(f"groups x1 ({GROUP} records, flush each):  {grouped1:,.0f} records/s")
            print(f"txn x1    ({GROUP} records per transaction): {txn1:,.0f} records/s = "
                  f"{txn1 / grouped1:.0%} of groups x1, {txn1 / best:.0%} of best case; "
                  f"{_latency(lat1)}")
            print(f"groups x{k}: {grouped_n:,.0f} records/s")
            print(f"txn x{k}:    {txn_n:,.0f} records/s = {txn_n / grouped_n:.0%} of groups "
                  f"x{k} (the target), {txn_n / best:.0%} of best case; {_latency(lat_n)}")
            if args.aio:
                grouped_a, _ = _aio(bootstrap, k, n, False)
                txn_a, lat_a = _aio(bootstrap, k, n, True)
                print(f"aio groups x{k}: {grouped_a:,.0f} records/s")
                print(f"aio txn x{k}:    {txn_a:,.0f} records/s = {txn_a / grouped_a:.0%} of "
                      f"aio groups x{k}; {_latency(lat_a)}")

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
