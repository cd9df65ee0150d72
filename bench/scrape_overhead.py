"""``python -m bench.scrape_overhead``: what scraping the Prometheus metrics costs the data
path (issue 17: "measure produce throughput and p99 at 1,000/s with a scrape every second
against none").

One fresh 3-node cluster (tests/harness.py, real node processes, every node with
``--metrics-listen``), a ballast topic so that every scrape carries a realistic number of
partition series (``--partitions``, default 100, replication factor 3: every node hosts
every replica), then, alternating so that drift of the machine hits both sides alike:

- latency: ``--seconds`` of acks=all produce at ``--rate`` records/s (100-byte records,
  one ``send()`` per record, ``linger_ms=0``, the bench's w3 settings), send-to-ack
  latency counted from when each record was due;
- throughput: ``--seconds`` of bulk produce (``send_many`` of 1,000 records,
  ``linger_ms=5``; the bench's w1 settings), records acknowledged per second;

each once with no scraper and once with a scraper that GETs every node's ``/metrics``
every second (as a Prometheus with ``scrape_interval: 1s`` would), repeated ``--rounds``
times, the order flipped every round (the log grows and RocksDB compacts as the run goes
on: whatever runs later is slower). Each throughput run writes to a topic of its own. Prints a table and the scrape sizes and durations; ``--json FILE`` writes them.
Needs only the test extras (no tqdm): ``.venv/bin/python -m bench.scrape_overhead``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from raftka import Admin, Producer
from bench._common import percentiles_ms
from tests.harness import Cluster

VALUE = (b'{"order":12345,"customer":"c-0042","items":[1,2,3],"total":99.5,'
         b'"currency":"EUR","note":"abcdefghij"}')[:100].ljust(100, b" ")


class Scraper:
    """GETs every node's /metrics every ``interval`` seconds, in a process of its own (as
    Prometheus would be: a scraper thread inside this process took the GIL from the
    producer being measured, which counted its own cost as the node's)."""

    def __init__(self, urls: list[str], interval: float = 1.0) -> None:
        self.urls = urls
        self.interval = interval
        self.durations: list[float] = []
        self.sizes: list[int] = []
        self.failures = 0
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._results, theirs = context.Pipe(duplex=False)
        self._process = context.Process(target=_scrape_loop, name="scraper", daemon=True,
                                        args=(urls, interval, self._stop, theirs))

    def __enter__(self) -> Scraper:
        self._process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.durations, self.sizes, self.failures = self._results.recv()
        self._process.join()


def _scrape_loop(urls: list[str], interval: float, stop: Any, results: Any) -> None:
    durations: list[float] = []
    sizes: list[int] = []
    failures = 0
    next_at = time.monotonic()
    while not stop.is_set():
        for url in urls:
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    body = response.read()
            except OSError:
                failures += 1
                continue
            durations.append(time.perf_counter() - started)
            sizes.append(len(body))
        next_at += interval
        stop.wait(max(0.0, next_at - time.monotonic()))
    results.send((durations, sizes, failures))


def latency_run(bootstrap: str, topic: str, rate: float, seconds: float) -> dict:
    samples: list[float] = []
    lock = threading.Lock()
    with Producer(bootstrap, acks="all", linger_ms=0) as producer:
        producer.send(topic, VALUE, partition=0).result(10)  # warm the connection
        start = time.perf_counter()
        total = int(rate * seconds)
        done = 0
        while done < total:
            now = time.perf_counter()
            due = min(total, int((now - start) * rate) + 1)
            if due > done:
                n, t0 = due - done, start + done / rate
                fut = (producer.send(topic, VALUE, partition=0) if n == 1 else
                       producer.send_many(topic, [VALUE] * n, partition=0))

                def record(f, n=n, t0=t0) -> None:
                    if f.exception() is None:
                        with lock:
                            samples.extend([time.perf_counter() - t0] * n)
                fut.add_done_callback(record)
                done = due
            else:
                time.sleep(max(0.0, start + done / rate - now))
        producer.flush(30)
        elapsed = time.perf_counter() - start
    return {**percentiles_ms(samples), "rate": round(total / elapsed)}


def throughput_run(bootstrap: str, topic: str, seconds: float) -> dict:
    chunk = [VALUE] * 1000
    with Producer(bootstrap, acks="all", linger_ms=5, batch_size=1000 * 1024) as producer:
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            producer.send_many(topic, chunk, partition=0)
        producer.flush(60)
        elapsed = time.perf_counter() - start
        sent = producer.statistics()["records_sent"]
    return {"rate": round(sent / elapsed), "records": sent}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scrape_overhead",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="length of each latency run (throughput runs: a third of it)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=100,
                        help="ballast partitions (RF 3) so scrapes carry their series")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="raftka-scrape-") as root:
        cluster = Cluster(Path(root), 3, metrics=True)
        try:
            cluster.start_all()
            bootstrap = ",".join(cluster.peers.values())
            urls = [cluster.metrics_url(n) for n in cluster.peers]
            with Admin(bootstrap) as admin:
                admin.create_topic("ballast", partitions=args.partitions,
                                   replication_factor=3)
                admin.create_topic("lat", partitions=1, replication_factor=3)
                bulk = [f"bulk-{i}" for i in range(args.rounds * 2)]
                for name in bulk:
                    admin.create_topic(name, partitions=1, replication_factor=3)
                for name in ("ballast", "lat", *bulk):
                    admin.wait_for_topic_ready(name, timeout=120)
            for name in ("lat", *bulk):
                cluster.wait_preferred_leader(name, 0)
            results: dict[str, list[dict]] = {"latency none": [], "latency scrape": [],
                                              "throughput none": [], "throughput scrape": []}
            scrapes = {"durations": [], "sizes": [], "failures": 0}
            for round_number in range(args.rounds):
                for scraped in ((False, True) if round_number % 2 == 0 else (True, False)):
                    label = "scrape" if scraped else "none"
                    scraper = Scraper(urls) if scraped else None
                    if scraper is not None:
                        scraper.__enter__()
                    try:
                        results[f"latency {label}"].append(
                            latency_run(bootstrap, "lat", args.rate, args.seconds))
                        results[f"throughput {label}"].append(
                            throughput_run(bootstrap, bulk.pop(), args.seconds / 3))
                    finally:
                        if scraper is not None:
                            scraper.__exit__()
                            scrapes["durations"] += scraper.durations
                            scrapes["sizes"] += scraper.sizes
                            scrapes["failures"] += scraper.failures
        finally:
            cluster.stop_all()
    print(f"{args.rounds} rounds x {args.seconds:g} s per run; {args.partitions} ballast "
          f"partitions; scrape: every node's /metrics every 1 s")
    print(f"{'run':<20}{'p50 ms':>10}{'p99 ms':>10}{'p99.9 ms':>10}{'records/s':>12}")
    for kind in ("none", "scrape"):
        for lat in results[f"latency {kind}"]:
            print(f"{'latency ' + kind:<20}{lat['p50_ms']:>10}{lat['p99_ms']:>10}"
                  f"{lat['p999_ms']:>10}{lat['rate']:>12,}")
    for kind in ("none", "scrape"):
        for thr in results[f"throughput {kind}"]:
            print(f"{'throughput ' + kind:<20}{'':>10}{'':>10}{'':>10}{thr['rate']:>12,}")
    summary = {}
    for kind in ("none", "scrape"):
        lats = results[f"latency {kind}"]
        summary[kind] = {
            "p99_ms_median": statistics.median(r["p99_ms"] for r in lats),
            "throughput_median": statistics.median(r["rate"] for r in
                                                   results[f"throughput {kind}"]),
        }
    d = scrapes["durations"]
    scrape_info = {"count": len(d), "failures": scrapes["failures"],
                   **({"p50_ms": round(statistics.median(d) * 1000, 2),
                       "max_ms": round(max(d) * 1000, 2),
                       "bytes": round(statistics.median(scrapes["sizes"]))} if d else {})}
    print(f"medians: none p99 {summary['none']['p99_ms_median']} ms, "
          f"{summary['none']['throughput_median']:,} records/s; scrape p99 "
          f"{summary['scrape']['p99_ms_median']} ms, "
          f"{summary['scrape']['throughput_median']:,} records/s")
    print(f"scrapes: {scrape_info}")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "results": results, "summary": summary,
                                         "scrapes": scrape_info}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
