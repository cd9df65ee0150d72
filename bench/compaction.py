"""Does log compaction hurt the produce p99? ``python -m bench.compaction [--seconds N]``

A fresh 3-node cluster (tests/harness.py). Twice, with a background load topic of each
cleanup policy, ``delete`` (no compaction) then ``compact`` (min.cleanable.dirty.ratio
0.01, so the nodes propose and run a compaction pass about every second): a raw-Produce
thread writes 5,000 keyed records/s (batches of 500 records over 1,000 keys, 100-byte
values) to the background topic, and a ``Producer`` (acks=all, linger_ms=0) sends 1,000
records/s, paced, to a separate topic; its send-to-ack latency percentiles are printed
with the background topic's dirty ratio (compaction keeps it low) and how many records
a read from the beginning returns (at most 1,000 once compacted). The only difference
between the two runs is the background topic's cleanup policy, so the p99 difference is
compaction's cost. Not part of ``make test``; results quoted in README.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path

from raftka.client import Admin, Producer
from raftka.v1 import broker_pb2
from raftka.v1.recordbatch import build_batch, decode_batches
from bench._common import pace, percentiles_ms
from tests.harness import Cluster

KEYS = 1000
BATCH_RECORDS = 500
BATCHES_PER_S = 10
RATE = 1000.0


def _background(cluster: Cluster, topic: str, stop: threading.Event) -> None:
    value = b"x" * 100
    n = 0
    next_at = time.monotonic()
    while not stop.is_set():
        records = [(b"key-%04d" % ((n + i) % KEYS), value) for i in range(BATCH_RECORDS)]
        n += BATCH_RECORDS
        try:
            cluster.produce(topic, 0, build_batch(records, compression="lz4"))
        except Exception:  # noqa: BLE001 - a slow moment; the load goes on
            pass
        next_at += 1 / BATCHES_PER_S
        time.sleep(max(0.0, next_at - time.monotonic()))


def run(policy: str, cluster: Cluster, seconds: float, name: str) -> dict:
    bootstrap = ",".join(cluster.peers.values())
    background, measured = f"bg-{name}", f"lat-{name}"
    configs = {"cleanup.policy": policy}
    if policy == "compact":
        configs.update({"min.cleanable.dirty.ratio": "0.01", "min.compaction.lag.ms": "0"})
    with Admin(bootstrap) as admin:
        admin.create_topic(background, partitions=1, replication_factor=3, configs=configs)
        admin.create_topic(measured, partitions=1, replication_factor=3)
        admin.wait_for_topic_ready(background, timeout=60)
        admin.wait_for_topic_ready(measured, timeout=60)
    cluster.wait_preferred_leader(background, 0)
    cluster.wait_preferred_leader(measured, 0)
    stop = threading.Event()
    loader = threading.Thread(target=_background, args=(cluster, background, stop))
    loader.start()
    samples: list[float] = []
    try:
        time.sleep(5)  # the background load and, for compact, the first passes
        with Producer(bootstrap, acks="all", linger_ms=0) as producer:
            value = b"y" * 100
            producer.send(measured, value, partition=0).result(10)

            def send(n: int, t0: float) -> None:
                fut: Future = (producer.send(measured, value, partition=0) if n == 1 else
                               producer.send_many(measured, [value] * n, partition=0))
                fut.add_done_callback(lambda f: samples.extend([time.perf_counter() - t0] * n)
                                      if f.exception() is None else None)
            sent, elapsed = pace(RATE, seconds, send)
            producer.flush(30)
    finally:
        stop.set()
        loader.join()
    leader = cluster.wait_leader(background, 0)
    md = cluster.broker(leader).Metadata(broker_pb2.MetadataRequest(topics=[background]))
    part = md.topics[0].partitions[0]
    kept = len(decode_batches(cluster.fetch_all(background, 0)))
    return {"policy": policy, **percentiles_ms(samples), "rate": round(sent / elapsed),
            "background_records_written": part.high_watermark,
            "background_records_read_back": kept, "dirty_ratio": round(part.dirty_ratio, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per run")
    parser.add_argument("--policies", default="delete,compact,compact,delete",
                        help="the runs, in order (alternating shows the machine's drift)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="raftka-bench-compaction-") as tmp:
        cluster = Cluster(Path(tmp), 3)
        try:
            cluster.start_all()
            cluster.wait_healthy(60)
            for i, policy in enumerate(args.policies.split(",")):
                print(json.dumps(run(policy, cluster, args.seconds, f"{policy}{i}")),
                      flush=True)
        finally:
            cluster.stop_all()


if __name__ == "__main__":
    main()
