"""How long does a partition move take, and what does it do to producers?
``python -m bench.reassignment [--mib 256] [--rate 500] [--throttle 0] [--producers 1]``

A fresh 4-node cluster (tests/harness.py). One partition (replication factor 3) is filled
with ``--mib`` batches of 1000 KiB of random bytes (under max.message.bytes); then
``--producers`` ``Producer``s (acks=all, ``--linger-ms``, each in its own thread) each send
``--rate`` records/s of ``--record-bytes``, paced, to the same partition (``--tick-ms`` > 0:
what is due is sent once per tick with ``send_many``, as w3 does at w1's settings; issue 19
asks for 3 producers at half of w1's rate: ``--producers 3 --rate 111529 --record-bytes 100
--linger-ms 5 --tick-ms 1``). After
``--before`` seconds the partition is moved so that its preferred leader leaves and the
fourth node joins (issue 19: learner, catch-up, promotion, leadership hand-over, removal);
the producers go on for ``--after`` seconds after the move finished. Printed: the move's
duration (reassign call to the metadata showing the new replicas) and the producers'
latency percentiles before and during the move (the send-to-ack latency, measured from
when each record was due), the load average at the end and, with ``--pacer-counters``, what
the catch-up pacer delayed and dropped. Not part of ``make test``; figures in README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import grpc

from raftka.client import Admin, Producer
from raftka.v1.recordbatch import Record, build_batch
from bench._common import pace, percentiles_ms
from tests.harness import Cluster

TOPIC = "moving"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="data in the partition (MiB)")
    parser.add_argument("--rate", type=float, default=500.0, help="records/s during the test")
    parser.add_argument("--before", type=float, default=10.0, help="seconds before the move")
    parser.add_argument("--after", type=float, default=5.0, help="seconds after it")
    parser.add_argument("--throttle", type=int, default=0,
                        help="catch-up bytes/s (0: the nodes' default pace)")
    parser.add_argument("--producers", type=int, default=1, help="producers, one thread each")
    parser.add_argument("--record-bytes", type=int, default=1024, help="record value size")
    parser.add_argument("--linger-ms", type=float, default=0.0, help="each producer's linger")
    parser.add_argument("--tick-ms", type=float, default=0.0,
                        help="send what is due at most once per tick (0: as it falls due)")
    parser.add_argument("--pacer-counters", action="store_true",
                        help="serve metrics and add the catch-up pacer's counters, summed "
                             "over the nodes (one exporter process more per node)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="raftka-bench-reassign-") as tmp:
        cluster = Cluster(Path(tmp), 4, metrics=args.pacer_counters)
        try:
            cluster.start_all()
            result = run(cluster, args)
            if args.pacer_counters:
                result.update(pacer_counters(cluster))
            print(json.dumps(result), flush=True)
        finally:
            cluster.stop_all()


def pacer_counters(cluster: Cluster) -> dict[str, float]:
    """raftka_catchup_*_total summed over the nodes (README, Monitoring)."""
    return cluster.counter_sums(r"^raftka_(catchup_\w+_total) (\S+)$")


def run(cluster: Cluster, args: argparse.Namespace) -> dict:
    bootstrap = ",".join(cluster.peers.values())
    cluster.create_topic(TOPIC, replicas=3)
    filled = time.perf_counter()
    for _ in range(args.mib):
        batch = build_batch([Record(None, os.urandom(1000 << 10))])
        for attempt in range(20):  # a leadership move on a loaded machine refuses a write
            try:
                cluster.produce(TOPIC, 0, batch)
                break
            except grpc.RpcError:
                if attempt == 19:
                    raise
                time.sleep(0.5)
    filled = time.perf_counter() - filled
    value = b"v" * args.record_bytes
    phases: dict[str, list[float]] = {"before": [], "during": [], "after": []}
    phase = ["before"]
    moved = {"seconds": 0.0, "started": 0.0}
    worst = [0.0, 0.0]  # the longest latency during the move, and when that record was due
    lock = threading.Lock()  # the samples lists are shared by the producers' callbacks
    producers = [Producer(bootstrap, acks="all", linger_ms=args.linger_ms)
                 for _ in range(args.producers)]
    with Admin(bootstrap) as admin:
        admin.set_reassignment_throttle(args.throttle)
        before = tuple(admin.describe_topic(TOPIC).partitions[0].replicas)
        newcomer = next(n for n in cluster.peers if n not in before)
        target = before[1:] + (newcomer,)

        def mover() -> None:
            time.sleep(args.before)
            phase[0] = "during"
            started = moved["started"] = time.perf_counter()
            admin.reassign_partition(TOPIC, 0, target)
            while tuple(admin.describe_topic(TOPIC).partitions[0].replicas) != target:
                time.sleep(0.05)
            moved["seconds"] = time.perf_counter() - started
            phase[0] = "after"

        def produce(producer: Producer) -> None:
            def send(n: int, t0: float) -> None:
                during = phase[0] == "during"
                samples = phases[phase[0]]

                def done(f: Future) -> None:
                    if f.exception() is None:
                        with lock:
                            latency = time.perf_counter() - t0
                            samples.extend([latency] * n)
                            if during and latency > worst[0]:
                                worst[:] = [latency, t0]
                fut: Future = (producer.send(TOPIC, value, partition=0) if n == 1 else
                               producer.send_many(TOPIC, [value] * n, partition=0))
                fut.add_done_callback(done)

            producer.send(TOPIC, value, partition=0).result(10)
            # pace until the move is done and --after seconds more
            while phase[0] != "after":
                pace(args.rate, 1.0, send, args.tick_ms / 1000)
            pace(args.rate, args.after, send, args.tick_ms / 1000)
            producer.flush(60)

        try:
            thread = threading.Thread(target=mover)
            thread.start()
            workers = [threading.Thread(target=produce, args=(p,)) for p in producers]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            thread.join()
        finally:
            for p in producers:
                p.close()
    load = os.getloadavg()
    return {"mib": args.mib, "fill_s": round(filled, 1), "move_s": round(moved["seconds"], 1),
            # where in the move the worst wait began (s after the reassign call)
            "during_worst_due_s": round(worst[1] - moved["started"], 1),
            "throttle_bytes_per_s": args.throttle, "producers": args.producers,
            "rate_each": args.rate, "record_bytes": args.record_bytes,
            "loadavg": [round(x, 1) for x in load],
            **{f"{name}_{k}": v for name, samples in phases.items()
               for k, v in percentiles_ms(samples).items() if k in ("count", "p50_ms", "p99_ms", "max_ms")}}


if __name__ == "__main__":
    main()
