"""Delayed delivery: accuracy and memory. ``python -m bench.delayed [--seconds N]
[--pending N (0: no memory step)]``

A fresh 3-node cluster (tests/harness.py, metrics on).

1. Accuracy: a ``Producer`` sends ``10,000 x seconds`` records of 100 bytes (each value
   starts with its delivery time) with ``deliver_at`` spread evenly over ``seconds``
   seconds starting a few seconds later, 10 records per millisecond: 10,000 due
   records/s (1,000 scheduled produce requests/s, since records of one delivery time
   share a batch). Everything is acknowledged before the first is due. A
   ``PartitionReader`` reads the partition from the leader; a record's *lateness* is the
   wall-clock time the reader got it minus its delivery time (same machine, one clock).
   Printed: p50/p99/p99.9/max lateness and how many records were read early (must be 0)
   or twice (must be 0), and the machine's load while the records were due (the machine
   may be shared: ``load``: the 1-minute load average before and after, the share of
   all cores busy, and the share busy with processes other than this benchmark and its
   nodes).
2. Memory: ``--pending`` records (default 1,000,000) due in an hour, 10 per partition and
   delivery time (100,000 scheduled entries), are sent to a 6-partition topic; every
   node's RSS before and after, its ``raftka_partition_delayed_pending`` gauges (summed:
   every node holds a replica of every partition), and, for comparison, the RSS growth
   from the same number of ordinary records to another 6-partition topic.

Not part of ``make test``; results quoted in README.md ("Delayed delivery").
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from raftka.client import Admin, PartitionReader, Producer
from bench._common import percentiles_ms, proc_cpu_seconds, proc_rss_bytes
from tests.harness import Cluster

PER_MS = 10
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PARTITIONS = 6
_AT = struct.Struct(">q")


def _value(deliver_at_ms: int, i: int) -> bytes:
    return (_AT.pack(deliver_at_ms) + b"%08d" % i).ljust(100, b"x")


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # without guest time (already in user)
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def _loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


class Load:
    """The machine's load over a window: is the cluster alone on the machine?"""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.load_before = _loadavg()
        self.busy0, self.total0 = _machine_busy()
        self.ours0 = sum(proc_cpu_seconds(p) for p in pids)

    def result(self) -> dict:
        busy, total = _machine_busy()
        ours = sum(proc_cpu_seconds(p) for p in self.pids) - self.ours0
        span = max(total - self.total0, 1e-9)
        return {"loadavg_1m_before": self.load_before, "loadavg_1m_after": _loadavg(),
                "cpus": os.cpu_count(),
                "machine_busy_percent": round((busy - self.busy0) / span * 100, 1),
                "others_busy_percent": round(max(0.0, busy - self.busy0 - ours) / span * 100,
                                             1)}


def _create(cluster: Cluster, bootstrap: str, topic: str) -> int:
    with Admin(bootstrap) as admin:
        admin.create_topic(topic, partitions=1, replication_factor=3)
        admin.wait_for_topic_ready(topic, timeout=60)
    return cluster.wait_preferred_leader(topic, 0)


def accuracy(cluster: Cluster, bootstrap: str, seconds: float) -> dict:
    topic = "delay-accuracy"
    _create(cluster, bootstrap, topic)
    total_ms = int(seconds * 1000)
    count = total_ms * PER_MS
    # sending takes ~1 ms per delivery time here (one request each), more under load
    start_at = int(time.time() * 1000) + 5000 + count // 3
    sent_at = time.time()
    with Producer(bootstrap, linger_ms=5) as producer:
        for ms in range(total_ms):
            at = start_at + ms
            for j in range(PER_MS):
                producer.send(topic, _value(at, ms * PER_MS + j), partition=0, deliver_at=at)
        producer.flush()
        retries = producer.statistics().get("retries", 0)
    acked_ms = int(time.time() * 1000)
    lateness: list[float] = []
    seen: Counter[bytes] = Counter()
    offsets: Counter[int] = Counter()
    early = 0
    reader = PartitionReader(bootstrap, topic, 0, "earliest", max_wait_ms=200)
    load = None
    try:
        deadline = time.monotonic() + seconds + 60
        while len(lateness) < count and time.monotonic() < deadline:
            records = reader.poll(1.0)
            now_ms = time.time() * 1000
            if load is None and now_ms >= start_at:
                load = Load([os.getpid(), *(p.pid for p in cluster.procs.values())])
            for r in records:
                (at,) = _AT.unpack_from(r.value, 0)
                seen[r.value] += 1
                offsets[r.offset] += 1
                if now_ms < at:
                    early += 1
                lateness.append(max(0.0, now_ms - at) / 1000)
    finally:
        reader.close()
    return {"records": count, "due_per_s": PER_MS * 1000, "seconds": seconds,
            "all_acked_before_first_due": acked_ms < start_at,
            "sending_s": round(acked_ms / 1000 - sent_at, 2),
            "read": len(lateness), "read_early": early,
            "read_twice": sum(1 for n in seen.values() if n > 1),
            "offsets_read_twice": sum(1 for n in offsets.values() if n > 1),
            "producer_retries": retries,
            "lateness": percentiles_ms(lateness),
            "load": load.result() if load is not None else None}


def _pending_gauge(cluster: Cluster, node_id: int, topic: str) -> float:
    """The node's ``raftka_partition_delayed_pending`` summed over the topic's replicas."""
    with urllib.request.urlopen(cluster.metrics_url(node_id), timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name == "raftka_partition_delayed_pending"
                    and sample.labels.get("topic") == topic):
                total += sample.value
    return total


def _send_many(bootstrap: str, topic: str, pending: int, delayed: bool) -> tuple[float, int]:
    """(seconds, records that failed) for ``pending`` records over PARTITIONS partitions,
    PER_MS records per partition and delivery time."""
    base = int(time.time() * 1000) + 3_600_000
    failed = 0

    def count(f) -> None:
        nonlocal failed
        if f.exception() is not None:
            failed += 1

    started = time.time()
    with Producer(bootstrap, linger_ms=5, delivery_timeout_ms=600_000) as producer:
        for i in range(pending):
            at = base + i // (PER_MS * PARTITIONS)
            f = producer.send(topic, _value(at, i), partition=i % PARTITIONS,
                              deliver_at=at if delayed else None)
            f.add_done_callback(count)
        producer.flush()
    return round(time.time() - started, 1), failed


def memory(cluster: Cluster, bootstrap: str, pending: int) -> dict:
    out: dict = {"records": pending, "partitions": PARTITIONS,
                 "scheduled_entries": pending // PER_MS}
    pids = {n: cluster.procs[n].pid for n in sorted(cluster.procs)}
    for name, delayed in (("delayed", True), ("ordinary", False)):
        topic = f"delay-memory-{name}"
        with Admin(bootstrap) as admin:
            admin.create_topic(topic, partitions=PARTITIONS, replication_factor=3)
            admin.wait_for_topic_ready(topic, timeout=60)
        before = {n: proc_rss_bytes(pid) for n, pid in pids.items()}
        took, failed = _send_many(bootstrap, topic, pending, delayed)
        time.sleep(2)  # let the followers apply what they hold
        after = {n: proc_rss_bytes(pid) for n, pid in pids.items()}
        out[name] = {"send_s": took, "failed": failed,
                     "rss_before_mib": {n: round(b / 2**20, 1) for n, b in before.items()},
                     "rss_after_mib": {n: round(a / 2**20, 1) for n, a in after.items()},
                     "rss_growth_mib": {n: round((after[n] - before[n]) / 2**20, 1)
                                        for n in pids}}
        if delayed:
            out[name]["pending_gauge"] = {n: _pending_gauge(cluster, n, topic) for n in pids}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pending", type=int, default=1_000_000,
                        help="records pending in the memory step; 0: skip it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="raftka-delayed-") as tmp:
        cluster = Cluster(Path(tmp), 3, metrics=True)
        try:
            cluster.start_all()
            bootstrap = ",".join(cluster.peers.values())
            result = {"accuracy": accuracy(cluster, bootstrap, args.seconds)}
            print(json.dumps(result, indent=2), flush=True)
            if args.pending:
                result["memory"] = memory(cluster, bootstrap, args.pending)
                print(json.dumps(result["memory"], indent=2), flush=True)
        finally:
            cluster.stop_all()


if __name__ == "__main__":
    main()
