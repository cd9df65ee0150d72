"""Where an acks=all record's latency goes at 1,000 records/s, stage by stage.

    .venv/bin/python -m bench.latency_stages [--seconds 10] [--rate 1000]
                                             [--clients raw,threaded,aio] [--no-trace]
                                             [--preload-seconds 0]

A fresh 3-node cluster (``tests/harness.py``) whose nodes run the stage tracer
(``bench/stage_trace.py``, loaded by ``bench/_stage_trace_site/sitecustomize.py``); one
topic per client: ``raw`` (unary Produce RPCs of one pre-built record, one in flight),
``threaded`` (``Producer.send`` with ``linger_ms=0``), ``aio`` (``raftka.aio.Producer``).
Each sends one record per 1/rate s. Afterwards the nodes stop gracefully (they write their
events) and every record is followed through the events of the client, the leader and
the follower whose acknowledgement arrived first; the table gives p50 / p99 of each stage
(ms) and of the whole. Stages do not add up to the whole at p99 (each has its own tail).
``--no-trace``: the same run without the tracer (its cost, a few µs per event, is then
out of the totals). ``--preload-seconds S``: first write S seconds of w1's shape (``send_many``
of 1,000 distinct records of 100 B or ``--preload-size``, ``linger_ms=5``, 1 MiB batches) into a
topic of its own with ``--preload-partitions`` partitions (round robin) and wait 5 s, as
``make bench``'s w3 runs on a cluster that has just taken w1 and w2 (``--preload-seconds 8
--preload-partitions 6`` is how retention's log reads on the event loop were found: they
tripled w3's p99 after w2's 6-partition run). Each table's last column is a stage's mean
over the slowest 1% of records: where the tail spent its time.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import bisect
import os
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from bench._common import pace
from bench.stage_trace import install_client

REPO = Path(__file__).resolve().parent.parent
VALUE = b"x" * 100


def _start_cluster(root: Path, trace_dir: Path | None):
    from tests.harness import Cluster

    if trace_dir is not None:
        os.environ["RAFTKA_STAGE_TRACE"] = str(trace_dir)
        site = str(REPO / "bench" / "_stage_trace_site")
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (site, os.environ.get("PYTHONPATH", "")) if p)
    root.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(root, 3)
    cluster.start_all()
    for key in ("RAFTKA_STAGE_TRACE", "PYTHONPATH"):
        os.environ.pop(key, None)
    return cluster


def _new_topic(bootstrap: str, cluster, name: str) -> str:
    from raftka.client import Admin

    with Admin(bootstrap) as admin:
        admin.create_topic(name, partitions=1, replication_factor=3)
    cluster.wait_leader(name, 0)
    return name


def _run_threaded(bootstrap: str, topic: str, rate: float, secs: float) -> list[tuple]:
    from raftka.client import Producer

    samples: list[tuple] = []  # (t_send, t_done, offset)
    with Producer(bootstrap, acks="all", linger_ms=0) as producer:
        producer.send(topic, VALUE, partition=0).result(10)
        now = time.monotonic_ns

        def send(n: int, _due: float) -> None:
            for _ in range(n):
                t0 = now()
                fut = producer.send(topic, VALUE, partition=0)
                fut.add_done_callback(lambda f, t0=t0: samples.append(
                    (t0, now(), f.result()[1])) if f.exception() is None else None)
        pace(rate, secs, send)
        producer.flush(30)
        _print_stats(producer.statistics())
    return samples


def _preload(bootstrap: str, cluster, seconds: float, size: int = 100,
             partitions: int = 1) -> None:
    from bench._raftka import distinct_values
    from raftka.client import Admin, Producer

    topic = "preload"
    with Admin(bootstrap) as admin:
        admin.create_topic(topic, partitions=partitions, replication_factor=3)
    for partition in range(partitions):
        cluster.wait_leader(topic, partition)
    values = distinct_values(size)
    written = 0
    with Producer(bootstrap, acks="all", linger_ms=5, batch_size=1000 * 1024) as producer:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            producer.send_many(topic, values, partition=written // len(values) % partitions)
            written += len(values)
        producer.flush(300)
    print(f"preload: {written:,} records in {seconds:.0f} s", flush=True)
    time.sleep(5.0)


def _print_stats(stats: dict) -> None:
    print("  producer: " + ", ".join(f"{k} {stats.get(k, 0)}" for k in (
        "requests", "retries", "sequence_resets")), flush=True)


def _run_aio(bootstrap: str, topic: str, rate: float, secs: float) -> list[tuple]:
    import raftka.aio

    samples: list[tuple] = []
    now = time.monotonic_ns

    async def main() -> None:
        async with raftka.aio.Producer(bootstrap, acks="all", linger_ms=0) as producer:
            await (await producer.send(topic, VALUE, partition=0))
            loop = asyncio.get_running_loop()
            start = loop.time()
            total = int(rate * secs)
            for i in range(total):
                delay = start + i / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                t0 = now()
                fut = await producer.send(topic, VALUE, partition=0)
                fut.add_done_callback(lambda f, t0=t0: samples.append(
                    (t0, now(), f.result()[1])) if f.exception() is None else None)
            await producer.flush()
            _print_stats(producer.statistics())
    asyncio.run(main())
    return samples


def _run_raw(cluster, topic: str, rate: float, secs: float) -> list[tuple]:
    import grpc

    from raftka.v1 import broker_pb2, broker_pb2_grpc
    from raftka.v1.recordbatch import build_batch

    request = broker_pb2.ProduceRequest(
        topic=topic, partition=0, acks=broker_pb2.ACKS_ALL,
        record_batches=build_batch([(None, VALUE)], compression="none"))
    samples: list[tuple] = []
    now = time.monotonic_ns
    channels = {nid: grpc.insecure_channel(addr) for nid, addr in cluster.peers.items()}
    stubs = {nid: broker_pb2_grpc.BrokerStub(ch).Produce for nid, ch in channels.items()}
    leader = [cluster.wait_leader(topic, 0)]

    def produce():
        """To the leader; a leader change is followed (that record is not a sample)."""
        try:
            return stubs[leader[0]](request, timeout=10)
        except grpc.RpcError:
            time.sleep(0.05)
            leader[0] = cluster.wait_leader(topic, 0)
            return None
    try:
        produce()

        def send(n: int, _due: float) -> None:
            for _ in range(n):
                t0 = now()
                response = produce()
                if response is not None:
                    samples.append((t0, now(), response.base_offset))
        pace(rate, secs, send)
    finally:
        for ch in channels.values():
            ch.close()
    return samples


# ------------------------------------------------------------------------ analysis
class _Events:
    """One node's events of one kind and group, by index: the earliest time at which an
    event covering index i (index >= i) happened."""

    def __init__(self, rows: list[tuple[int, int]]) -> None:
        rows.sort()
        self.idx = [i for i, _ in rows]
        self.first_t = [t for _, t in rows]
        for k in range(len(rows) - 2, -1, -1):  # suffix minimum of time
            self.first_t[k] = min(self.first_t[k], self.first_t[k + 1])

    def at(self, index: int) -> int | None:
        k = bisect.bisect_left(self.idx, index)
        return self.first_t[k] if k < len(self.idx) else None


def _load(trace_dir: Path) -> dict[str, list[tuple]]:
    nodes = {}
    for path in sorted(trace_dir.glob("node-*.events")):
        nodes[path.stem] = [ast.literal_eval(line) for line in path.read_text().splitlines()]
    return nodes


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(round(q * len(values) + 0.5)) - 1))]


def analyse(topic: str, samples: list[tuple], nodes: dict[str, list[tuple]],
            client_calls: list[tuple]) -> dict[str, list[float]]:
    """Stage durations (ms) of every record of ``topic`` followed end to end."""
    proposals = []  # (base, last, index, group, leader node)
    handler: dict[tuple[str, int], dict[str, int]] = defaultdict(dict)
    by_kind: dict[tuple[str, str, int, object], list] = defaultdict(list)
    for node, events in nodes.items():
        for kind, gid, index, extra, t in events:
            if kind == "propose":
                if extra[0] == topic:
                    proposals.append((extra[1], extra[2], index, gid, node, t))
            elif kind in ("h_in", "h_out"):
                if extra == topic:
                    handler[(node, index)][kind] = t
            elif kind in ("send_app", "recv_app", "send_resp", "recv_resp"):
                by_kind[(node, kind, gid, extra)].append((index, t))
            else:
                by_kind[(node, kind, gid, None)].append((index, t))
    index_of = {k: _Events(v) for k, v in by_kind.items()}
    proposals.sort()
    bases = [p[0] for p in proposals]
    calls = {base: (t0, t1) for _, _, base, t0, t1 in client_calls}
    node_ids = {name: int(name.split("-")[1]) for name in nodes}
    stages: dict[str, list[float]] = defaultdict(list)

    def ev(node, kind, gid, index, extra=None):
        e = index_of.get((node, kind, gid, extra))
        return None if e is None else e.at(index)

    for t_send, t_done, offset in samples:
        k = bisect.bisect_right(bases, offset) - 1
        if k < 0 or not proposals[k][0] <= offset <= proposals[k][1]:
            continue
        base, _, index, gid, leader, t_prop = proposals[k]
        h = handler.get((leader, base), {})
        call = calls.get(base)
        # the follower whose acknowledgement reached the leader first
        best = None
        for fnode, fid in node_ids.items():
            if fnode == leader:
                continue
            lid = node_ids[leader]
            t_resp = ev(leader, "recv_resp", gid, index, fid)
            if t_resp is not None and (best is None or t_resp < best[1]):
                best = (fnode, t_resp, fid, lid)
        if best is None or "h_in" not in h:
            continue
        fnode, t_recv_resp, fid, lid = best
        t = {
            "client send()": t_send,
            "client call": call[0] if call else None,
            "leader handler in": h["h_in"],
            "leader proposed": t_prop,
            "leader sent append": ev(leader, "send_app", gid, index, fid),
            "follower got append": ev(fnode, "recv_app", gid, index, lid),
            "follower pass": ev(fnode, "pass", gid, index),
            "follower fsync start": ev(fnode, "fsync0", gid, index),
            "follower fsync end": ev(fnode, "fsync1", gid, index),
            "follower sent ack": ev(fnode, "send_resp", gid, index, lid),
            "leader got ack": t_recv_resp,
            "leader applied": ev(leader, "apply", gid, index),
            "leader handler out": h.get("h_out"),
            "client answer": call[1] if call else None,
            "client future done": t_done,
        }
        names = [n for n, v in t.items() if v is not None]
        for a, b in zip(names, names[1:]):
            stages[f"{a} -> {b}"].append((t[b] - t[a]) / 1e6)
        own = [ev(leader, "fsync0", gid, index), ev(leader, "fsync1", gid, index),
               ev(leader, "synced", gid, index)]
        if None not in own:
            stages["(leader own) proposed -> fsync start"].append((own[0] - t_prop) / 1e6)
            stages["(leader own) fsync"].append((own[1] - own[0]) / 1e6)
            stages["(leader own) fsync end -> loop learns"].append((own[2] - own[1]) / 1e6)
            stages["(leader own) proposed -> durable on loop"].append((own[2] - t_prop) / 1e6)
        stages["TOTAL"].append((t_done - t_send) / 1e6)
    return stages


def _table(title: str, stages: dict[str, list[float]]) -> str:
    """p50 and p99 of each stage, and its mean over the slowest 1% of records (by their
    whole): stage p99s do not add up, the last column says where the tail records spent
    their time (stages a record lacks an event of are left out of it)."""
    total = stages.get("TOTAL", [])
    slowest = sorted(range(len(total)), key=total.__getitem__)[-max(1, len(total) // 100):]
    lines = [f"\n{title}", f"{'stage':58} {'p50':>7} {'p99':>7} {'n':>6} {'slowest 1%':>11}"]
    for name, values in stages.items():
        tail = (f"{sum(values[i] for i in slowest) / len(slowest):11.3f}"
                if total and len(values) == len(total) else f"{'':>11}")
        lines.append(f"{name:58} {_percentile(values, 0.5):7.3f} "
                     f"{_percentile(values, 0.99):7.3f} {len(values):6d} {tail}")
    return "\n".join(lines)


def _totals(samples: list[tuple]) -> str:
    lat = [(b - a) / 1e6 for a, b, _ in samples]
    return (f"p50 {_percentile(lat, 0.5):.2f} p99 {_percentile(lat, 0.99):.2f} "
            f"p99.9 {_percentile(lat, 0.999):.2f} ms (n={len(lat)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--clients", default="raw,threaded,aio")
    ap.add_argument("--no-trace", action="store_true")
    ap.add_argument("--preload-seconds", type=float, default=0.0)
    ap.add_argument("--preload-size", type=int, default=100, help="bytes per record")
    ap.add_argument("--preload-partitions", type=int, default=1)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="raftka-stages-"))
    trace_dir = None if args.no_trace else work / "trace"
    if trace_dir is not None:
        trace_dir.mkdir()
    client_calls: list[tuple] = []
    install_client(client_calls)
    cluster = _start_cluster(work / "cluster", trace_dir)
    results = {}
    try:
        bootstrap = ",".join(cluster.peers.values())
        if args.preload_seconds > 0:
            _preload(bootstrap, cluster, args.preload_seconds, args.preload_size,
                     args.preload_partitions)
        for client in args.clients.split(","):
            topic = _new_topic(bootstrap, cluster, f"stages-{client}")
            time.sleep(1.0)
            print(f"{client}: {args.rate:.0f}/s for {args.seconds:.0f} s "
                  f"(load {os.getloadavg()[0]:.2f})", flush=True)
            if client == "raw":
                samples = _run_raw(cluster, topic, args.rate, args.seconds)
            elif client == "threaded":
                samples = _run_threaded(bootstrap, topic, args.rate, args.seconds)
            elif client == "aio":
                samples = _run_aio(bootstrap, topic, args.rate, args.seconds)
            else:
                raise SystemExit(f"unknown client {client!r}: raw, threaded or aio")
            results[client] = (topic, samples, client_calls[:])
            client_calls.clear()
            print(f"  {_totals(samples)}", flush=True)
        for nid in list(cluster.procs):  # graceful: each node writes its events at exit
            cluster.terminate(nid, timeout=30)
    finally:
        cluster.stop_all()
    if trace_dir is None:
        return
    nodes = _load(trace_dir)
    for client, (topic, samples, calls) in results.items():
        print(_table(f"{client} ({_totals(samples)})", analyse(topic, samples, nodes, calls)))


if __name__ == "__main__":
    main()
