"""``python -m bench.security``: what TLS, mutual-TLS authentication and ACLs cost the data
path, and how closely a produce quota holds a producer (issue 16: "produce throughput and
p99 at 1,000/s against the same run without them"; "quota throttling holds a producer to
its rate within 10% over 10 s").

Two kinds of fresh 3-node cluster (tests/harness.py, real node processes): plain text,
and secured like ``raftka dev --auth`` (TLS on the client port with client certificates
required, mutual TLS on the peer port, mtls+password authentication, ACLs; the producer
is an ordinary principal with WRITE and DESCRIBE ACLs on its topic). For each, in rounds
whose order flips (the machine drifts; whatever runs later is slower):

- latency: ``--seconds`` of acks=all produce at ``--rate`` records/s (100-byte records,
  ``linger_ms=0``, the bench's w3 settings), send-to-ack latency from when each was due;
- throughput: a third as long of bulk produce (``send_many`` of 1,000 records,
  ``linger_ms=5``; w1's settings), records acknowledged per second.

Then, on a secured cluster: a quota of ``--quota-bytes`` per second for the producer, and
``--seconds`` of producing incompressible 1,000-byte records as fast as it can: the bytes
acknowledged per second against the quota (the quota counts request bytes: the records
plus their batch framing). Prints a table; ``--json FILE`` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from raftka import Acl, Admin, ClientSecurity, Producer
from bench._common import pace, percentiles_ms
from tests.harness import Cluster

VALUE = (b'{"order":12345,"customer":"c-0042","items":[1,2,3],"total":99.5,'
         b'"currency":"EUR","note":"abcdefghij"}')[:100].ljust(100, b" ")


def start(root: Path, secured: bool) -> tuple[Cluster, ClientSecurity | None]:
    if not secured:
        cluster = Cluster(root, 3)
        cluster.start_all()
        return cluster, None
    from tests.integration.test_security import Pki, _secured_cluster  # noqa: PLC0415
    pki = Pki(root)
    cluster = _secured_cluster(root, pki)
    cluster.start_all()
    bench = pki.client("bench")
    with Admin(",".join(cluster.peers.values()), security=pki.security(pki.admin)) as admin:
        admin.create_acls([Acl("User:bench", op, "TOPIC", "t", "PREFIXED")
                           for op in ("WRITE", "DESCRIBE")])
        admin.create_acls([Acl("User:bench", "ALL", "TOPIC", "q", "PREFIXED")])
    cluster.admin_security = pki.security(pki.admin)  # type: ignore[attr-defined]
    return cluster, pki.security(bench)


def create(cluster: Cluster, name: str, security: ClientSecurity | None) -> None:
    admin_security = getattr(cluster, "admin_security", None)
    with Admin(",".join(cluster.peers.values()), security=admin_security) as admin:
        admin.create_topic(name, partitions=1, replication_factor=3)
        admin.wait_for_topic_ready(name, 30)


def latency_run(bootstrap: str, topic: str, rate: float, seconds: float,
                security: ClientSecurity | None) -> dict:
    samples: list[float] = []
    lock = threading.Lock()
    with Producer(bootstrap, acks="all", linger_ms=0, security=security) as producer:
        producer.send(topic, VALUE, partition=0).result(30)  # warm up, metadata

        def send(n: int, due: float) -> None:
            fut = (producer.send(topic, VALUE, partition=0) if n == 1 else
                   producer.send_many(topic, [VALUE] * n, partition=0))

            def record(f, n=n, due=due) -> None:
                if f.exception() is None:
                    with lock:
                        samples.extend([time.perf_counter() - due] * n)
            fut.add_done_callback(record)
        sent, elapsed = pace(rate, seconds, send)
        producer.flush(30)
    return {**percentiles_ms(samples), "rate": round(sent / elapsed)}


def throughput_run(bootstrap: str, topic: str, seconds: float,
                   security: ClientSecurity | None) -> dict:
    chunk = [VALUE] * 1000
    with Producer(bootstrap, acks="all", linger_ms=5, batch_size=1000 * 1024,
                  security=security) as producer:
        producer.send(topic, VALUE, partition=0).result(30)
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            producer.send_many(topic, chunk, partition=0)
        producer.flush(60)
        elapsed = time.perf_counter() - started
        sent = producer.statistics()["records_sent"] - 1
    return {"rate": round(sent / elapsed)}


def quota_run(root: Path, quota: int, seconds: float) -> dict:
    cluster, security = start(root, secured=True)
    try:
        bootstrap = ",".join(cluster.peers.values())
        create(cluster, "q", security)
        with Admin(bootstrap, security=cluster.admin_security) as admin:  # type: ignore[attr-defined]
            admin.set_quota("User:bench", produce_bytes_per_s=quota)
        time.sleep(1.0)  # every node applies it (the bench has no per-node check)
        size = 1000
        acked = [0]
        lock = threading.Lock()
        with Producer(bootstrap, acks="all", linger_ms=5, security=security,
                      delivery_timeout_ms=int(seconds * 1000) + 60_000,
                      max_block_ms=int(seconds * 1000) + 60_000) as producer:
            producer.send("q", b"w", partition=0).result(30)
            time.sleep(1.5)  # the warm-up's burst refills: measure from a full bucket

            def done(f) -> None:
                if f.exception() is None:
                    with lock:
                        acked[0] += 1
            started = time.perf_counter()
            while time.perf_counter() - started < seconds:
                producer.send("q", os.urandom(size), partition=0).add_done_callback(done)
            with lock:
                in_time = acked[0]
            elapsed = time.perf_counter() - started
            producer.flush(120)
        rate = in_time * size / elapsed
        return {"quota_bytes_per_s": quota, "seconds": round(elapsed, 2),
                "payload_bytes_per_s": round(rate),
                "ratio_to_quota": round(rate / quota, 3)}
    finally:
        cluster.stop_all()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.security",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quota-bytes", type=int, default=200_000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    results: dict[str, list[dict]] = {"plain": [], "secured": []}
    with tempfile.TemporaryDirectory(prefix="raftka-security-bench-") as tmp:
        for round_ in range(args.rounds):
            order = ("plain", "secured") if round_ % 2 == 0 else ("secured", "plain")
            for kind in order:
                root = Path(tmp) / f"{round_}-{kind}"
                root.mkdir()
                cluster, security = start(root, kind == "secured")
                try:
                    bootstrap = ",".join(cluster.peers.values())
                    create(cluster, "t-lat", security)
                    create(cluster, "t-bulk", security)
                    lat = latency_run(bootstrap, "t-lat", args.rate, args.seconds, security)
                    thr = throughput_run(bootstrap, "t-bulk", args.seconds / 3, security)
                finally:
                    cluster.stop_all()
                results[kind].append({"latency": lat, "throughput": thr})
                print(f"round {round_} {kind:8s} throughput {thr['rate']:8d} rec/s   "
                      f"@{args.rate:.0f}/s p50 {lat['p50_ms']:7.2f} ms p99 {lat['p99_ms']:7.2f} ms",
                      flush=True)
        quota = quota_run(Path(tmp) / "quota", args.quota_bytes, args.seconds)
    summary = {}
    for kind, runs in results.items():
        summary[kind] = {
            "throughput_rec_s": statistics.median(r["throughput"]["rate"] for r in runs),
            "p99_ms": statistics.median(r["latency"]["p99_ms"] for r in runs),
            "p50_ms": statistics.median(r["latency"]["p50_ms"] for r in runs),
        }
    drop = 1 - summary["secured"]["throughput_rec_s"] / summary["plain"]["throughput_rec_s"]
    print(f"median throughput: plain {summary['plain']['throughput_rec_s']:.0f}, secured "
          f"{summary['secured']['throughput_rec_s']:.0f} rec/s ({drop:+.1%} lower secured); "
          f"p99 @{args.rate:.0f}/s: plain {summary['plain']['p99_ms']:.2f} ms, secured "
          f"{summary['secured']['p99_ms']:.2f} ms")
    print(f"quota {quota['quota_bytes_per_s']} B/s: producer got "
          f"{quota['payload_bytes_per_s']} B/s of records over {quota['seconds']} s "
          f"({quota['ratio_to_quota']:.3f} of the quota)")
    if args.json:
        args.json.write_text(json.dumps({"runs": results, "summary": summary,
                                         "quota": quota}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
