"""Consumer-group benchmarks on a real 3-node cluster (issue 5's performance figures).

    .venv/bin/python -m tests.bench.groups [--records 1000000] [--rebalances 10]

1. drain: a group of 3 consumer *processes* reads a backlog of 100-byte records from a
   6-partition topic with auto-commit (Kafka's default, every 5 s); reports records/s from the first member
   joining to the last record consumed (every record is counted once per group).
2. rebalance: two members own two partitions each; one ``close()``s (leaves); the time until
   the other owns all four and has fetched from them (median and max over N runs).

Not part of ``make test``; numbers go into the closing notes / BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from raftka.client import Consumer, Producer
from tests.harness import Cluster, wait_for

TOPIC = "drain"
PARTITIONS = 6
VALUE = b"x" * 100


def _member(bootstrap: str, group: str, total: int, counts, index: int, started) -> None:
    with Consumer(bootstrap, group, [TOPIC], max_poll_records=5000,
                  enable_auto_commit=True) as consumer:
        started.set()
        while sum(counts) < total:
            records = consumer.poll(0.5)
            if records:
                counts[index] += len(records)


def _prefill(bootstrap: str, records: int) -> float:
    t0 = time.perf_counter()
    with Producer(bootstrap, linger_ms=5, batch_size=256 * 1024) as producer:
        per = records // PARTITIONS
        futures = [producer.send_many(TOPIC, [VALUE] * per, partition=p)
                   for p in range(PARTITIONS)]
        for f in futures:
            f.result(timeout=600)
    return per * PARTITIONS / (time.perf_counter() - t0)


def drain(cluster: Cluster, bootstrap: str, records: int) -> dict:
    cluster.create_topic(TOPIC, partitions=PARTITIONS)
    produce_rate = _prefill(bootstrap, records)
    total = records // PARTITIONS * PARTITIONS
    ctx = mp.get_context("spawn")
    counts = ctx.Array("q", 3)
    starts = [ctx.Event() for _ in range(3)]
    procs = [ctx.Process(target=_member, args=(bootstrap, "drainers", total, counts, i, s))
             for i, s in enumerate(starts)]
    for p in procs:
        p.start()
    for s in starts:
        s.wait(60)
    t0 = time.perf_counter()
    wait_for(lambda: sum(counts) >= total, 900, "the backlog to be drained", interval=0.01)
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join(30)
        if p.is_alive():
            p.kill()
    return {"records": total, "produce_rec_s": round(produce_rate),
            "drain_rec_s": round(total / elapsed), "drain_s": round(elapsed, 2),
            "per_member": list(counts)}


def rebalance(cluster: Cluster, bootstrap: str, runs: int) -> dict:
    cluster.create_topic("rebalance", partitions=4)
    with Producer(bootstrap) as producer:
        for p in range(4):
            producer.send("rebalance", b"x", partition=p).result(timeout=30)
    times = []
    for i in range(runs):
        group = f"rebalance-{i}"
        a = Consumer(bootstrap, group, ["rebalance"], auto_offset_reset="earliest")
        b = Consumer(bootstrap, group, ["rebalance"], auto_offset_reset="earliest")
        try:
            def split():
                a.poll(0.02)
                b.poll(0.02)
                return len(a.assignment()) == 2 and len(b.assignment()) == 2
            wait_for(split, 60, "two members with two partitions each", interval=0)
            moving = {tp.partition for tp in a.assignment()}
            t0 = time.perf_counter()
            a.close()  # a committed nothing: b reads the moved partitions from the start
            got: set[int] = set()
            while len(b.assignment()) < 4 or not moving <= got:
                for r in b.poll(0.01):
                    got.add(r.partition)
                if time.perf_counter() - t0 > 30:
                    raise AssertionError("rebalance did not finish in 30 s")
            times.append(time.perf_counter() - t0)
        finally:
            a.close()
            b.close()
    return {"runs": runs, "median_s": round(statistics.median(times), 3),
            "max_s": round(max(times), 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--rebalances", type=int, default=10)
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="raftka-bench-groups-"))
    cluster = Cluster(root, 3)
    try:
        cluster.start_all()
        cluster.wait_healthy()
        bootstrap = ",".join(cluster.peers[i] for i in sorted(cluster.peers))
        print("drain:", drain(cluster, bootstrap, args.records), flush=True)
        print("rebalance after leave:", rebalance(cluster, bootstrap, args.rebalances),
              flush=True)
    finally:
        cluster.stop_all()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
